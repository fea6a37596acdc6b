"""The package's logger: ``logging.getLogger("vitfree")`` and its children, one per module.

The library logs, it does not print.  So that a skipped image or a resumed run is never
silent, the ``vitfree`` logger comes with one handler that writes the message to the
*current* ``sys.stderr`` (looked up at each record, so redirections and test captures see
it), at level WARNING by default; the command line raises it to INFO.  It does not
propagate to the root logger, so a user's own logging set-up does not print every line
twice; :func:`use_root_logging` hands the records to the root logger instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["get_logger", "set_verbosity", "use_root_logging"]

ROOT = "vitfree"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler on whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


def _setup() -> logging.Logger:
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
        logger.propagate = False
    return logger


_setup()


def get_logger(name: str) -> logging.Logger:
    """The logger of module ``name`` (``vitfree.extract`` -> a child of ``vitfree``)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


def set_verbosity(level: int | str) -> None:
    """Level of vitfree's messages on stderr (``logging.INFO`` shows progress notes)."""
    logging.getLogger(ROOT).setLevel(level)


def use_root_logging() -> None:
    """Send vitfree's records to the root logger's handlers instead of stderr directly."""
    logger = logging.getLogger(ROOT)
    for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
        logger.removeHandler(h)
    logger.propagate = True
