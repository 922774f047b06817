"""trustinstaller: make a browser session's custom root CAs trusted, once, then lock."""

__version__ = "0.1.0"

__all__ = ["__version__"]
