"""What a client run against the test site printed, and how headless Chromium is started."""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.tls import PAGE

PAGE_TEXT = "trusted by trustinstaller"
assert PAGE_TEXT.encode() in PAGE

# Without the background-networking flags, Chromium's own connections fail on a closed network.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip


@dataclass
class Probe:
    """What one client run printed, and whether it reached the page."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def reached(self) -> bool:
        """The client exited 0 and printed the page."""
        return self.returncode == 0 and PAGE_TEXT in self.stdout

    def __str__(self) -> str:
        return (
            f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr[-3000:]}"
        )
