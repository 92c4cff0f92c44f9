"""One background thread that runs jobs in the order they were given (the per-row Parquet
writer, the accumulator stage of the local engine).

The first job that raises keeps its exception and the jobs after it are skipped; the
thread that submits jobs collects the exception with :meth:`SerialWorker.take_error` and
raises it itself (an exception must never end up printed by the thread machinery). The
queue is bounded, so the submitter can never run more than ``maxsize`` jobs ahead.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class SerialWorker:
    """A daemon thread named ``name`` running submitted callables one after the other."""

    def __init__(self, name: str, maxsize: int) -> None:
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                    self._error = exc

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` after the previous ones (blocks while the queue is full)."""
        self._queue.put(job)

    def take_error(self) -> BaseException | None:
        """The exception of the job that failed (once; None when none failed so far)."""
        exc, self._error = self._error, None
        return exc

    def close(self) -> None:
        """Let the queued jobs run, then end the thread (idempotent)."""
        if self.thread.is_alive():
            self._queue.put(None)
            self.thread.join()
