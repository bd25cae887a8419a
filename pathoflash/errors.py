"""PathoFlash's exception hierarchy.

Every error a user can cause by pointing PathoFlash at the wrong thing derives from :class:`PathoflashError`
and also from the builtin that fits (``FileNotFoundError``, ``ValueError`` …), so ``except OSError`` still
works for callers who do not know our names. Messages are one line: what was wrong, and what to do.
"""

from __future__ import annotations

from pathlib import Path


class PathoflashError(Exception):
    """Base class of every error PathoFlash raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path is not None else message)


class SlideError(PathoflashError):
    """A slide file could not be used."""


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The path does not exist, or is a directory where a file was expected."""


class SlideReadError(SlideError, OSError):
    """The file exists but could not be read (empty, truncated, corrupt)."""


class UnsupportedSlideError(SlideError, ValueError):
    """The file is not a whole-slide image format OpenSlide reads."""


class MissingMppError(SlideError, ValueError):
    """The slide has no microns-per-pixel metadata and none was given."""


class TileReadError(SlideError, OSError):
    """Tiles of a readable slide stayed unreadable (raised only in strict mode)."""


class StoreError(PathoflashError, OSError):
    """A tile store is unusable (wrong layout, foreign files, unwritable)."""


class CheckpointError(PathoflashError, ValueError):
    """A model checkpoint is missing, malformed or does not match the architecture."""


class ConfigError(PathoflashError, ValueError):
    """An option value is out of range or inconsistent."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "MissingMppError",
    "PathoflashError",
    "SlideError",
    "SlideNotFoundError",
    "SlideReadError",
    "StoreError",
    "TileReadError",
    "UnsupportedSlideError",
]
