"""The engine's event loop: one per process, in a daemon thread of its own, that every provider call runs on.

Why a thread of its own, not the caller's: the CLI's main thread keeps its signal semantics (a handler that
only sets a flag runs at once, because the main thread waits in short slices), and the web face's request
threads have no loop to give. Both hand coroutines to this loop and wait for their results; thousands of calls
can then be in flight at once without a thread each.

While a loop runs, the garbage collector is tuned for many short-lived calls (prelabel.gc_policy).

A loop does not survive fork(): a child would hand coroutines to a loop no thread runs, and hang. `submit`
refuses in a process other than the one that built the loop, with an error saying to build the engine after
the fork (as `prelabel serve` does, per worker).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from prelabel import gc_policy

T = TypeVar("T")

# How often a waiting caller wakes: short enough that a signal handler in the main thread runs promptly.
WAIT_SLICE_S = 0.2


class LoopClosed(RuntimeError):
    """The engine was closed: no more work can be handed to its loop."""


class EngineLoop:
    """An asyncio loop in a daemon thread; `run` hands it a coroutine from any other thread and waits."""

    def __init__(self, name: str = "prelabel-loop") -> None:
        self._pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self._closed = False
        gc_policy.hold()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule the coroutine on the loop; its future can be waited for from any thread."""
        if os.getpid() != self._pid:
            coroutine.close()
            raise RuntimeError(
                "the engine was built before this process was forked; build it in the process that uses it"
            )
        if self._closed:
            coroutine.close()
            raise LoopClosed("the engine is closed")
        if self.in_loop_thread:  # waiting here for the loop's own work would wait forever
            coroutine.close()
            raise RuntimeError("the engine's blocking calls cannot be made from its own event loop: await instead")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """The coroutine's result (or its exception). Waits in short slices, so a main thread still runs its
        signal handlers while it waits; at `timeout` the coroutine is cancelled and TimeoutError raised."""
        future = self.submit(coroutine)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return future.result(timeout=WAIT_SLICE_S)
            except concurrent.futures.TimeoutError:
                if deadline is not None and time.monotonic() > deadline:
                    future.cancel()
                    raise TimeoutError(f"not finished within {timeout:.0f} s") from None

    def close(self, cleanup: Coroutine[Any, Any, None] | None = None, timeout: float = 10.0) -> None:
        """Run `cleanup`, cancel what is still running (started calls past a request's deadline), and stop the
        loop and its thread. Safe to call twice, and in a forked child (where it only forgets the loop)."""
        if self._closed:
            if cleanup is not None:
                cleanup.close()
            return
        if os.getpid() != self._pid:
            self._closed = True
            if cleanup is not None:
                cleanup.close()
            return

        async def finish() -> None:
            if cleanup is not None:
                await cleanup
            current = asyncio.current_task()
            pending = [task for task in asyncio.all_tasks() if task is not current]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)

        try:
            self.run(finish(), timeout=timeout * 2)
        except Exception:  # closing must not raise past the caller's own error; what was written stays written
            pass
        finally:
            self._closed = True
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=timeout)
            if not self._thread.is_alive():
                self.loop.close()
            gc_policy.release()
