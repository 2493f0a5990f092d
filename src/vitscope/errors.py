"""Errors a user can act on: each names the file or config key at fault."""

from __future__ import annotations


class VitscopeError(Exception):
    """Base class of every error vitscope raises on purpose."""


class ConfigError(VitscopeError, ValueError):
    """A config key holds a value that cannot be used."""


class CheckpointNotFound(VitscopeError, FileNotFoundError):
    """A configured checkpoint file does not exist."""


class CheckpointError(VitscopeError, ValueError):
    """A checkpoint exists but cannot be loaded into the configured model."""


class ModelError(VitscopeError, ValueError):
    """A model cannot provide what was asked of it."""


class DatasetError(VitscopeError, ValueError):
    """A dataset root, layout or image is missing or unreadable."""


class DumpError(VitscopeError, ValueError):
    """A dump is missing a product, or two dumps cannot be compared."""


class OutputError(VitscopeError, OSError):
    """An output file could not be written (disk full, file size limit, quota); nothing was left behind."""
