"""Graceful stop on SIGTERM / SIGINT: finish the current step, save a checkpoint, then exit.

A cluster scheduler pre-empts a job with SIGTERM (and kills it a little later); Ctrl-C sends
SIGINT. `StopSignals` turns the first of either into a request the training loop polls after each
step; a second signal gets the default behaviour back (Ctrl-C twice stops at once).
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Install with `install()`, poll `requested`, undo with `restore()` (idempotent)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.received is not None

    @property
    def exit_code(self) -> int:
        """Shell convention for a process ended by a signal: 128 + its number."""
        return 128 + int(self.received or signal.SIGINT)

    def install(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        name = signal.Signals(signum).name
        log.warning("%s received: stopping after the current step and saving a checkpoint "
                    "(send it again to stop at once)", name)  # fmt: skip
        self.restore()
