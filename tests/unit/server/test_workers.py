"""The model worker: one job at a time in order, a bounded queue (Busy with Retry-After), results and errors
back on the event loop, cancelled jobs skipped."""

import asyncio
import threading
from types import SimpleNamespace

import pytest

from qkv.errors import QKVError
from qkv.server import workers
from qkv.server.workers import Busy, ModelWorker


def test_jobs_run_one_at_a_time_in_order_and_return_their_results():
    worker = ModelWorker("m", queue_size=8)
    running, order, overlap = [0], [], []

    def make(i):
        def fn(job):
            running[0] += 1
            overlap.append(running[0])
            order.append(i)
            running[0] -= 1
            return i * i
        return fn

    async def main():
        jobs = [worker.submit(make(i)) for i in range(6)]
        return [await j.result() for j in jobs]

    assert asyncio.run(main()) == [0, 1, 4, 9, 16, 25]
    assert order == list(range(6)) and max(overlap) == 1


def test_a_full_queue_is_busy_with_a_retry_after():
    worker = ModelWorker("m", queue_size=2)
    release = threading.Event()

    async def main():
        first = worker.submit(lambda job: release.wait(10))
        await asyncio.sleep(0.05)  # the worker takes it: the queue is empty again
        queued = [worker.submit(lambda job: 1), worker.submit(lambda job: 2)]
        with pytest.raises(Busy) as e:
            worker.submit(lambda job: 3)
        assert e.value.retry_after >= 1 and "busy" in str(e.value)
        release.set()
        return [await first.result()] + [await j.result() for j in queued]

    assert asyncio.run(main()) == [True, 1, 2]


class FakeClock:
    """The worker's perf_counter: time moves only when a job says it took some."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def takes(clock: FakeClock, seconds: float, stopped: bool = False, then: threading.Event | None = None):
    """A job that takes `seconds` of fake time (its client stops it at that point if `stopped`), then waits
    for `then` (really) if given."""
    def fn(job):
        clock.now += seconds
        if stopped:
            job.cancel()
        if then is not None:
            then.wait(10)
        return seconds
    return fn


async def fill(worker: ModelWorker, running) -> Busy:
    """Start `running`, fill the queue behind it, and return the Busy of one more job."""
    worker.submit(running)
    while not worker.busy or worker.jobs.qsize():  # until `running` itself is taken (a job before it may still be
        await asyncio.sleep(0.005)  # finishing: busy, with `running` queued)
    for _ in range(worker.jobs.maxsize):
        worker.submit(lambda job: None)
    with pytest.raises(Busy) as e:
        worker.submit(lambda job: None)
    return e.value


def test_busy_says_the_wait_of_the_jobs_ahead_at_their_measured_time(monkeypatch):
    """Jobs of 1.5–2 s, 8 queued and one running: the old estimate said "6 s of queued work" here (a black-box
    run saw "4 s" for 12–16 s of work), from a mean that began at a made-up 1 s and counted generations their
    clients stopped early. The wait is the 9 jobs ahead × the mean time of the last jobs that ran to their
    end, and Retry-After is that number."""
    clock = FakeClock()
    monkeypatch.setattr(workers, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    worker = ModelWorker("m", queue_size=8)
    release = threading.Event()

    async def main():
        for job in [worker.submit(takes(clock, s)) for s in (1.5, 2.0, 1.5, 2.0)]:
            await job.result()
        for job in [worker.submit(takes(clock, 0.1, stopped=True)) for _ in range(4)]:
            await job.result()
        try:
            return await fill(worker, takes(clock, 0.0, then=release))
        finally:
            release.set()

    busy = asyncio.run(main())
    assert 9 * 1.5 <= busy.retry_after <= 9 * 2.0 + 1
    assert "9 requests ahead (8 queued, 1 running)" in str(busy) and f"retry in {busy.retry_after} s" in str(busy)


def test_before_any_job_has_ended_the_running_one_is_the_measure(monkeypatch):
    """No job timed yet: no made-up mean (it was 1 s); the running job's time so far stands in, and the
    message says so."""
    clock = FakeClock()
    monkeypatch.setattr(workers, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    worker = ModelWorker("m", queue_size=4)
    release = threading.Event()

    async def main():
        try:
            return await fill(worker, takes(clock, 6.0, then=release))
        finally:
            release.set()

    busy = asyncio.run(main())
    assert busy.retry_after == 5 * 6
    assert "no job has ended yet" in str(busy) and f"retry in {busy.retry_after} s" in str(busy)


def test_events_stream_and_errors_reach_the_request():
    worker = ModelWorker("m")

    def fn(job):
        for i in range(3):
            job.emit("token", i)
        raise QKVError("the prompt is too long")

    async def main():
        job = worker.submit(fn)
        events = [e async for e in job.stream()]
        with pytest.raises(QKVError, match="too long"):
            await job.future
        return events

    events = asyncio.run(main())
    assert events[:3] == [("token", 0), ("token", 1), ("token", 2)]
    assert events[3] == ("error", {"error": "the prompt is too long", "internal": False})


def test_a_cancelled_job_that_has_not_started_never_runs():
    worker = ModelWorker("m")
    release, ran = threading.Event(), []

    async def main():
        blocker = worker.submit(lambda job: release.wait(10))
        await asyncio.sleep(0.05)
        waiting = worker.submit(lambda job: ran.append(1))
        waiting.cancel()  # its client left while it waited
        release.set()
        await blocker.result()
        with pytest.raises(QKVError, match="cancelled"):
            await waiting.future

    asyncio.run(main())
    assert ran == []


def test_a_running_job_sees_its_cancellation():
    worker = ModelWorker("m")
    started, steps = threading.Event(), []

    def fn(job):
        started.set()
        for i in range(1000):
            if job.cancelled.wait(0.005):
                return "stopped"
            steps.append(i)
        return "finished"

    async def main():
        job = worker.submit(fn)
        await asyncio.to_thread(started.wait, 5)
        job.cancel()
        return await job.future

    assert asyncio.run(main()) == "stopped"
    assert len(steps) < 1000
