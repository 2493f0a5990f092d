"""Logging set-up for workflow scripts."""

from __future__ import annotations

import logging
import sys
from typing import TextIO


def to_file(path: str | None, level: int = logging.INFO) -> TextIO:
    """Send the ``vitscope`` logger (and warnings) to ``path``; return the stream.

    The stream is also what progress bars should write to, so a rule's log
    holds its progress. With ``path=None`` the log goes to stderr.
    """
    stream: TextIO = open(path, "a", buffering=1) if path else sys.stderr  # noqa: SIM115
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("vitscope")
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers[:] = [handler]
    if path:
        _log_uncaught(root)
    return stream


def _log_uncaught(logger: logging.Logger) -> None:
    """Also write an uncaught exception to the log, so a failed job's log says why
    (a vitscope error as its one-line message, anything else with its traceback)."""
    from .errors import VitscopeError

    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if isinstance(value, VitscopeError):
            logger.error("%s: %s", kind.__name__, value)
        else:
            logger.error("uncaught exception", exc_info=(kind, value, traceback))
        previous(kind, value, traceback)

    sys.excepthook = hook
