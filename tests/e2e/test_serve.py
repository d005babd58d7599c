"""`qkv serve` as a process: it binds loopback unless told otherwise, every acknowledged judgement survives a
kill -9, and a bounded load on loopback (20 clients) gets no 5xx and loses no acknowledged rating."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from helpers import assert_user_error, qkv, toy_campaign
from qkv.humaneval.store import Store
from serve_fixtures import free_port

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.slow
ADMIN = "s" * 32
LOAD_SECONDS = float(os.environ.get("QKV_LOAD_SECONDS", "10"))


class ServeProcess:
    """``qkv serve ARGS`` in a subprocess on a free loopback port, up when entered, killed when left."""

    def __init__(self, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, QKV_ADMIN_TOKEN=ADMIN, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "qkv", "serve", *args, "--port", str(self.port),
                                      "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)

    def __enter__(self) -> ServeProcess:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"qkv serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("qkv serve did not come up in 60 s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __exit__(self, *exc):
        self.kill()
        self.proc.stdout.close()
        self.proc.stderr.close()


def admin_rows(url: str, name: str) -> list[dict]:
    r = httpx.get(f"{url}/api/admin/campaigns/{name}/export.jsonl", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


def payload(task: dict, accuracy: float) -> dict:
    scores = {"accuracy": accuracy, "fluency": 50, "spans": []}
    return {"candidates": {str(c["id"]): scores for c in task["candidates"]},
            "preference": "A" if len(task["candidates"]) == 2 else None}


# ------------------------------------------------------------------------------------------------ binding
def test_serve_refuses_other_addresses_without_allow_remote(tiny_runs, capsys):
    rc, _, err = qkv(capsys, "serve", tiny_runs["lm"], "--host", "0.0.0.0")
    assert_user_error(rc, err, "--allow-remote")
    rc, _, err = qkv(capsys, "serve")
    assert_user_error(rc, err, "nothing to serve")
    rc, _, err = qkv(capsys, "serve", "--db", "/nonexistent/he.db")
    assert_user_error(rc, err, "no such file")


def test_serve_on_another_address_warns(tiny_runs, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "serve", str(tiny_runs["lm"]), "--host", "0.0.0.0",
                             "--allow-remote", "--port", str(port), "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/runs", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("no server")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert "warning: serving on 0.0.0.0" in err
    assert f"http://0.0.0.0:{port}/runs/lm/generate" in out and "admin page:" in out


def test_port_0_serves_on_a_free_port_and_prints_it(tmp_path):
    """``--port 0`` (any free port) used to be refused: now the system picks the port, and the printed addresses
    are the ones that answer."""
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        token = toy_campaign(store, "demo", n_items=2, raters=1)["raters"][0]["token"]
    env = dict(os.environ, QKV_ADMIN_TOKEN=ADMIN, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "serve", "--db", str(db), "--port", "0", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        printed, deadline = [], time.monotonic() + 60
        while not any(line.startswith("admin page: ") for line in printed):
            assert time.monotonic() < deadline, f"no address printed in 60 s: {printed}"
            try:
                printed.append(lines.get(timeout=0.5))
            except queue.Empty:
                assert proc.poll() is None, f"qkv serve exited {proc.returncode}: {proc.stderr.read()}"
        (url,) = [m[1] for line in printed if (m := re.match(r"qkv serve: (http://127\.0\.0\.1:\d+)/ ", line))]
        assert int(url.rsplit(":", 1)[1]) > 0 and printed[-1].startswith(f"admin page: {url}/admin#token=")
        r = None
        for _ in range(100):  # printed just before uvicorn starts accepting: a bounded wait
            try:
                r = httpx.get(f"{url}/api/rate/{token}", timeout=2)
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r is not None and r.status_code == 200 and r.json()["campaign"] == "demo"
        r = httpx.get(f"{url}/api/admin/campaigns", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
        assert r.status_code == 200 and [c["name"] for c in r.json()] == ["demo"]
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_a_taken_port_is_a_one_line_error(tiny_runs, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        rc, _, err = qkv(capsys, "serve", tiny_runs["lm"], "--port", port, "--threads", "1")
    assert_user_error(rc, err, f"cannot listen on 127.0.0.1:{port}", "--port 0 picks a free one")
    rc, _, err = qkv(capsys, "serve", tiny_runs["lm"], "--port", "70000")
    assert_user_error(rc, err, "--port must be in 0..65535")


# ------------------------------------------------------------------------------------------------ kill -9
def test_every_acknowledged_judgement_survives_kill_9(tmp_path):
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        camp = toy_campaign(store, "crash", n_items=40, raters=6)
    tokens = [r["token"] for r in camp["raters"]]
    acked: list[tuple[int, float]] = []  # (judgement id, the accuracy it carried)
    lock = threading.Lock()
    stop = threading.Event()

    def rater(token: str, k0: int):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            tasks = client.get(f"/api/rate/{token}").json()["tasks"]
            k = 0
            while not stop.is_set():
                accuracy = (k0 + 13 * k) % 101
                try:
                    task = client.get(f"/api/rate/{token}/tasks/{k % tasks}").json()
                    r = client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=payload(task, accuracy))
                except httpx.HTTPError:
                    return  # the server is gone: this one was never acknowledged
                assert r.status_code == 200, r.text
                with lock:
                    acked.append((r.json()["judgement_id"], accuracy))
                k += 1

    with ServeProcess("--db", str(db)) as server:
        threads = [threading.Thread(target=rater, args=(t, 7 * i)) for i, t in enumerate(tokens)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(acked) < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill()  # SIGKILL while the raters are still submitting
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert len(acked) >= 150

    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with ServeProcess("--db", str(db)) as server:
        rows = admin_rows(server.url, "crash")
    stored = {}
    for r in rows:
        stored.setdefault(r["judgement_id"], set()).add(r["accuracy"])
    missing = [j for j, _ in acked if j not in stored]
    assert not missing, f"{len(missing)} acknowledged judgements lost: {missing[:10]}"
    assert all(stored[j] == {a} for j, a in acked)


# ------------------------------------------------------------------------------------------------ load
def test_a_bounded_load_on_loopback(tiny_runs, tmp_path, capsys):
    """20 clients for QKV_LOAD_SECONDS (default 10): 16 raters submitting, 4 clients streaming generations.
    No 5xx, no error but 429 (the model's queue is small on purpose), every acknowledged rating stored."""
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        camp = toy_campaign(store, "load", n_items=40, raters=16)
    tokens = [r["token"] for r in camp["raters"]]
    stats = {"submit": [], "first_token": [], "acked": [], "status": {}}

    async def rater(client, token, until):
        tasks = (await client.get(f"/api/rate/{token}")).json()["tasks"]
        k = 0
        while time.monotonic() < until:
            task = (await client.get(f"/api/rate/{token}/tasks/{k % tasks}")).json()
            t0 = time.perf_counter()
            r = await client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=payload(task, k % 101))
            stats["submit"].append(time.perf_counter() - t0)
            stats["status"][r.status_code] = stats["status"].get(r.status_code, 0) + 1
            if r.status_code == 200:
                stats["acked"].append(r.json()["judgement_id"])
            k += 1

    async def generator(client, until):
        while time.monotonic() < until:
            t0 = time.perf_counter()
            async with client.stream("POST", "/api/runs/lm/generate",
                                     json={"prompt": "<", "max_new_tokens": 24, "temperature": 1.0}) as r:
                stats["status"][r.status_code] = stats["status"].get(r.status_code, 0) + 1
                if r.status_code == 429:
                    await asyncio.sleep(0.2)
                    continue
                first = None
                async for line in r.aiter_lines():
                    if first is None and line.startswith("event: token"):
                        first = time.perf_counter() - t0
                stats["first_token"].append(first)

    with ServeProcess(str(tiny_runs["lm"]), "--db", str(db), "--queue", "2") as server:
        async def main():
            until = time.monotonic() + LOAD_SECONDS
            async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
                await asyncio.gather(*[rater(client, t, until) for t in tokens],
                                     *[generator(client, until) for _ in range(4)])

        asyncio.run(main())
        rows = admin_rows(server.url, "load")
        health = httpx.get(f"{server.url}/api/health").json()
    assert set(stats["status"]) <= {200, 429}, stats["status"]
    stored = {r["judgement_id"] for r in rows}
    assert stats["acked"] and set(stats["acked"]) <= stored
    assert stats["first_token"] and health["runs"]["lm"]["jobs"] > 0

    def pct(xs, q):
        xs = sorted(x for x in xs if x is not None)
        return 1000 * xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]

    with capsys.disabled():
        print(f"\nload test, 20 clients for {LOAD_SECONDS:g} s: {len(stats['acked'])} judgements acknowledged "
              f"(submit p50 {pct(stats['submit'], 50):.1f} ms, p99 {pct(stats['submit'], 99):.1f} ms); "
              f"{len(stats['first_token'])} generations (first token p50 {pct(stats['first_token'], 50):.1f} ms, "
              f"p99 {pct(stats['first_token'], 99):.1f} ms); statuses {stats['status']}")
