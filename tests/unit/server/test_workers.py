"""The model worker: one job at a time in order, a bounded queue (Busy with Retry-After), results and errors
back on the event loop, cancelled jobs skipped."""

import asyncio
import threading

import pytest

from qkv.errors import QKVError
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
