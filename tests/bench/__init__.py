"""Benchmarks: commands that print numbers (``make bench``), never timed assertions."""
