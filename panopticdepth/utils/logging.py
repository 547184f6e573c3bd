"""Logging set-up shared by every command: one format, quiet library loggers."""

from __future__ import annotations

import logging
import sys

_FORMAT = "[%(asctime)s %(name)s] %(levelname)s: %(message)s"


def setup_logging(verbosity: int = 0, rank: int = 0) -> None:
    """Log INFO (or DEBUG with verbosity > 0) to stderr; non-zero ranks only log warnings."""
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    if rank != 0:
        level = logging.WARNING
    root = logging.getLogger("panopticdepth")
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.propagate = False
