"""The agent loop's default executor: worker threads that never hold the process's exit.

``concurrent.futures.ThreadPoolExecutor`` joins its workers at interpreter exit (an atexit hook
on 3.8, ``threading._register_atexit`` since 3.9), so one ``run_in_executor`` call stuck in a
read of a hung file would keep a SIGTERM'd agent alive until systemd's SIGKILL. Here workers are
daemon threads: at exit they are dropped with the process. A subclass only because
``loop.set_default_executor`` requires a ThreadPoolExecutor (3.9+); none of its internals are used.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Any, Callable, List, Optional, Tuple

_Item = Optional[Tuple["concurrent.futures.Future[Any]", Callable[..., Any], tuple, dict]]


class DaemonExecutor(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, max_workers: int = 8, name: str = "edgeagent-worker") -> None:
        super().__init__(max_workers=1)  # never started: submit() below does the work
        self._limit = max_workers
        self._name = name
        self._queue: "queue.SimpleQueue[_Item]" = queue.SimpleQueue()
        self._workers: List[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any
               ) -> "concurrent.futures.Future[Any]":
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
            self._queue.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._workers) < self._limit:
                worker = threading.Thread(target=self._work, daemon=True,
                                          name="%s-%d" % (self._name, len(self._workers)))
                self._workers.append(worker)
                worker.start()
            return future

    def _work(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
            if item is None:
                self._queue.put(None)  # wake the next worker too
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # delivered to whoever awaits the future
                future.set_exception(e)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, **kwargs: Any) -> None:  # type: ignore[override]
        """Stop taking work; ``wait`` is not honoured on purpose (see the module docstring)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._queue.put(None)
        super().shutdown(wait=False)
