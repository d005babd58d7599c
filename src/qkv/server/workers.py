"""One generation worker per model, a bounded queue in front of it, and jobs that stream back to asyncio.

A model answers one request at a time: its worker is a thread that takes jobs from a `queue.Queue` of
fixed size and runs them in order. When the queue is full, `submit` raises `Busy`, which the server turns
into a 429: a client waits, the server never runs out of memory queueing work it cannot do. Its wait (the
message and Retry-After say the same) is the requests ahead — the queued jobs whose clients are still
there, and the running one — times the mean time of this worker's last `TIMED_JOBS` jobs that ran to their
end (a job its client stopped is cut short: it does not count). Before any job has ended, the running job's
time so far stands in for that mean, and the message says so: no number is made up.

A `Job` runs in the worker thread and talks to the event loop of the request that made it:

- ``job.emit(event, data)`` hands an event to the request (thread-safe); the request's response takes what
  has arrived in batches (`Job.batches`), so it streams tokens as they come (server-sent events) with one
  wake-up and one write per batch rather than per token;
- ``job.cancelled`` is set when the client goes away (or presses Stop); a job checks it between tokens and
  ends early, so a disconnected client stops its generation;
- the function's return value, or its `QKVError`, is the job's result (`await job.result()`).

Torch runs on the worker's thread, never on the event loop: the server keeps answering (rating pages,
429s, other models) while a model computes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from qkv.errors import QKVError

log = logging.getLogger("qkv.server")

_END = object()  # the last item a job puts on its event queue
TIMED_JOBS = 20  # Busy's estimate is the mean time of this many of a worker's last jobs


class Busy(Exception):
    """The model's queue is full; try again in `retry_after` seconds (`ModelWorker.wait` says why)."""

    def __init__(self, name: str, retry_after: int, why: str = ""):
        super().__init__(f"{name} is busy{': ' + why if why else ''}; retry in {retry_after} s")
        self.retry_after = retry_after


class Job:
    """One request's work on a model: `fn(job)` runs on the worker thread (see the module docstring)."""

    def __init__(self, fn: Callable[[Job], Any], loop: asyncio.AbstractEventLoop):
        self.fn, self.loop = fn, loop
        self.cancelled = threading.Event()
        self.future: asyncio.Future = loop.create_future()
        # events cross threads through a buffer: the worker appends; the loop is woken once per batch, not once
        # per token, so a fast model's tokens go out many to a write
        self._buffer: deque = deque()
        self._lock = threading.Lock()
        self._wake = asyncio.Event()
        self._woken = False
        self.done = asyncio.Event()  # set on the loop when the job has ended (its last events are buffered)
        self.cut_short = False  # it ended because its client left or pressed Stop (set on the worker thread)

    def emit(self, event: str, data: Any) -> None:
        """Send one event to the request (from the worker thread)."""
        self._push((event, data))

    def _push(self, item: Any) -> None:
        with self._lock:
            self._buffer.append(item)
            wake, self._woken = not self._woken, True
        if wake:
            self._post(self._wake.set)

    def _post(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the request's loop is closed: nobody is listening any more
            self.cancel()

    def cancel(self) -> None:
        self.cancelled.set()

    async def batches(self, keepalive: float | None = None) -> AsyncIterator[list[tuple[str, Any]]]:
        """The job's events, in batches of what has arrived, until it ends; an empty batch every `keepalive`
        seconds of silence. The job is cancelled if the consumer stops early (a client that left)."""
        try:
            while True:
                try:
                    await asyncio.wait_for(self._wake.wait(), keepalive)
                except asyncio.TimeoutError:
                    yield []
                    continue
                with self._lock:
                    items = list(self._buffer)
                    self._buffer.clear()
                    self._woken = False
                    self._wake.clear()
                if _END in items:
                    yield items[: items.index(_END)]
                    return
                if items:
                    yield items
        finally:
            self.cancel()

    async def stream(self) -> AsyncIterator[tuple[str, Any]]:
        """The job's events one by one, until it ends."""
        async for batch in self.batches():
            for item in batch:
                yield item

    async def result(self) -> Any:
        """The function's return value (or its exception)."""
        try:
            return await self.future
        finally:
            self.cancel()

    # called on the worker thread
    def _run(self) -> None:
        try:
            value, error = self.fn(self), None
        except QKVError as e:
            value, error = None, e
        except Exception as e:  # a bug: logged with its traceback, answered as a 500 by the server
            log.exception("job failed")
            value, error = None, e
        # read before _finish: once the request has its result it cancels the job (result, batches)
        self.cut_short = self.cancelled.is_set()
        self._finish(value, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if error is not None:
            self._push(("error", {"error": str(error), "internal": not isinstance(error, QKVError)}))
        self._push(_END)
        self._post(self._settle, value, error)

    def _settle(self, value: Any, error: BaseException | None) -> None:
        self.done.set()
        if self.future.done():
            return
        if error is None:
            self.future.set_result(value)
        else:
            self.future.set_exception(error)
            self.future.exception()  # retrieved: a streamed job's error went out as an event


class ModelWorker:
    """A thread that runs one model's jobs in order, behind a queue of at most `queue_size` waiting jobs."""

    def __init__(self, name: str, queue_size: int = 8):
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.name = name
        self.jobs: queue.Queue = queue.Queue(maxsize=queue_size)
        self.durations: deque[float] = deque(maxlen=TIMED_JOBS)  # seconds of the last jobs that ran to their end
        self.busy = False
        self._started: float | None = None  # when the running job started (time.perf_counter)
        self._thread = threading.Thread(target=self._loop, name=f"qkv-worker-{name}", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[Job], Any], loop: asyncio.AbstractEventLoop | None = None) -> Job:
        """Queue `fn` (run as ``fn(job)`` on this worker's thread); Busy if the queue is full."""
        job = Job(fn, loop or asyncio.get_running_loop())
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            seconds, why = self.wait()
            raise Busy(self.name, max(1, math.ceil(seconds)), why) from None
        return job

    def wait(self) -> tuple[float, str]:
        """How long a job submitted now would wait before it starts, in seconds, and the line that says how
        that was estimated: the requests ahead (queued jobs whose clients are still there, and the running
        one) × the mean time of the last jobs that ran to their end or, before any has, the running job's time
        so far."""
        with self.jobs.mutex:
            queued = sum(1 for j in self.jobs.queue if j is not None and not j.cancelled.is_set())
        started, durations = self._started, list(self.durations)
        running = int(started is not None)
        ahead = queued + running
        counts = f"{ahead} request{'s' * (ahead != 1)} ahead ({queued} queued, {running} running)"
        if durations:
            each = sum(durations) / len(durations)
            n = len(durations)
            return ahead * each, f"{counts}, {each:.1f} s each (the mean of its last {n} job{'s' * (n != 1)})"
        if started is not None:
            each = time.perf_counter() - started
            return ahead * each, (f"{counts}, {each:.1f} s each (no job has ended yet: the time the running one has "
                                  "taken so far)")
        return 0.0, f"{counts}; no job has run yet to time, and the next one starts now"

    @property
    def waiting(self) -> int:
        return self.jobs.qsize()

    def close(self) -> None:
        """Stop after the jobs already queued (the thread is a daemon: it never holds the process up)."""
        self.jobs.put(None)

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if job.cancelled.is_set():  # its client left while it waited
                job._finish(None, QKVError("cancelled"))
                continue
            self._started = t0 = time.perf_counter()
            self.busy = True
            try:
                job._run()
            finally:
                if not job.cut_short:  # a job its client stopped is not a job's time
                    self.durations.append(time.perf_counter() - t0)
                self._started = None
                self.busy = False
