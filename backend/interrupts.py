"""SIGTERM handled the way Ctrl-C is, so a process stopped by a service manager or `kill` unwinds through the same
cleanup (items in flight written, build processes and folders removed) as one stopped at the keyboard."""

from __future__ import annotations

import signal
import threading


class interrupt_on_sigterm:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only; elsewhere handlers cannot be set)."""

    def __enter__(self) -> None:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)

    @staticmethod
    def _handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
