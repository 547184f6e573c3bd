"""CLI tests call main() in-process under capsys, which swaps sys.stderr per test."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _fresh_log_handler():
    """main() attaches its log handler to the stderr it first sees; a later test's capsys has closed
    that stream. Start every test without the handler so main() binds one to the current stderr."""
    logger = logging.getLogger("panopticdepth")
    saved = list(logger.handlers)
    logger.handlers.clear()
    yield
    logger.handlers[:] = saved
