"""The playground server under load: streaming speed against in-process decoding, first-token latency under
concurrency, and the judgements per second the human-evaluation store sustains.

    python bench/serve.py RUN_DIR [--tokens 256] [--repeats 5] [--threads 2] [--clients 1,8,32] [--seconds 10]

RUN_DIR is a GPT run (lm or chat). In one command, on one machine:

1. **Streaming vs in-process.** The same continuation (same prompt, settings and seed, `--tokens` tokens, no
   stop) decoded by `qkv generate`'s own code path in this process (`LMRun.stream`), and streamed by a
   `qkv serve` subprocess over HTTP (server-sent events with the top-5 per token, as the page asks), read by
   a client here; alternated `--repeats` times. Tokens/s is tokens over wall time, request to last token.
   Target: server ≥ 0.9× in-process.
2. **First-token latency** at each concurrency in `--clients`: that many clients, each sending generation
   requests (`--latency-tokens` tokens) one after another for `--seconds`; p50/p99 of the time from request
   to the first token, requests served, and 429s (the queue is sized to hold every client).
3. **Judgements/s.** A campaign of the run's continuations (`qkv human-eval create`, 8 raters) in a fresh
   SQLite store; judgements submitted over HTTP by 8 concurrent raters for `--seconds`: acknowledged
   judgements per second and p50/p99 latency, each acknowledged only after its commit (WAL, synchronous=FULL).

The server is a subprocess with `--threads` torch threads; this process uses as many for its decoding and is
idle while the server works (and vice versa), so the two never compete for the cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch
from machine import describe

REPO = Path(__file__).resolve().parents[1]


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`qkv serve` in a subprocess, up when entered, killed when left."""

    def __init__(self, runs: list[str], threads: int, queue: int, db: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "qkv", "serve", *runs, "--port", str(self.port), "--threads", str(threads),
               "--queue", str(queue), "--max-new-tokens", "4096"] + (["--db", db] if db else [])
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, OMP_NUM_THREADS=str(threads)))

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"qkv serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        sys.exit("qkv serve did not start in 120 s")

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def _events(lines):
    name = None
    for line in lines:
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


def stream_once(url: str, name: str, body: dict) -> tuple[int, float, float]:
    """(tokens, seconds to the first token, seconds in all) of one streamed generation."""
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx.stream("POST", f"{url}/api/runs/{name}/generate", json=body, timeout=600) as r:
        r.raise_for_status()
        for event, data in _events(r.iter_lines()):
            if event == "token" and data["id"] is not None:
                n += 1
                first = first or time.perf_counter() - t0
            elif event == "error":
                raise RuntimeError(data["error"])
    return n, first or 0.0, time.perf_counter() - t0


def bench_streaming(run_dir: str, args) -> None:
    import qkv

    run = qkv.load_run(run_dir)
    torch.set_num_threads(args.threads)
    sampling = run.sampling(temperature=0.8, top_k=None, top_p=None, seed=1, max_new_tokens=args.tokens)
    prompt = args.prompt
    body = {"prompt": prompt, "temperature": 0.8, "seed": 1, "max_new_tokens": args.tokens}
    name = Path(run_dir).name
    text = "".join(run.stream(prompt, sampling))  # warm-up (and the decode-layout copy, made once)
    rates: dict[str, list[float]] = {"in-process": [], "top 5": [], "top 0": []}
    with Server([run_dir], args.threads, queue=8) as srv:
        stream_once(srv.url, name, body)  # warm-up
        for _ in range(args.repeats):
            time.sleep(0.5)  # the other side's threads go idle first
            t0 = time.perf_counter()
            got = "".join(run.stream(prompt, sampling))
            rates["in-process"].append(args.tokens / (time.perf_counter() - t0))
            for top in (5, 0):
                time.sleep(0.5)
                n, _, seconds = stream_once(srv.url, name, body | {"top": top})
                rates[f"top {top}"].append(n / seconds)
    assert got == text
    med = {k: statistics.median(v) for k, v in rates.items()}
    runs = {k: ", ".join(f"{x:.0f}" for x in v) for k, v in rates.items()}
    print(f"\n1. streaming {args.tokens} tokens (median of {args.repeats}, alternating)")
    print(f"   qkv generate, in-process           : {med['in-process']:8.1f} tokens/s   ({runs['in-process']})")
    print(f"   qkv serve, SSE, top-5 per token    : {med['top 5']:8.1f} tokens/s   ({runs['top 5']})   "
          f"{med['top 5'] / med['in-process']:.3f}x")
    print(f"   qkv serve, SSE, text only (top 0)  : {med['top 0']:8.1f} tokens/s   ({runs['top 0']})   "
          f"{med['top 0'] / med['in-process']:.3f}x")
    print("   (target: server >= 0.9x in-process; the generate page asks for the top 5)")


async def _client(url: str, name: str, body: dict, until: float, out: dict) -> None:
    async with httpx.AsyncClient(timeout=600) as client:
        k = 0
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            first = None
            b = dict(body, seed=k)
            k += 1
            async with client.stream("POST", f"{url}/api/runs/{name}/generate", json=b) as r:
                if r.status_code == 429:
                    out["busy"] += 1
                    await asyncio.sleep(float(r.headers.get("retry-after", 1)))
                    continue
                if r.status_code >= 500:
                    out["5xx"] += 1
                    continue
                async for line in r.aiter_lines():
                    if first is None and line.startswith("event: token"):
                        first = time.perf_counter() - t0
            out["first"].append(first)
            out["total"].append(time.perf_counter() - t0)


def bench_latency(run_dir: str, args) -> None:
    name = Path(run_dir).name
    levels = [int(x) for x in args.clients.split(",")]
    print(f"\n2. first-token latency, {args.latency_tokens}-token generations, {args.seconds:g} s per level")
    print("   clients   requests   first token p50 / p99        whole request p50 / p99     429s  5xx")
    with Server([run_dir], args.threads, queue=max(levels) + 1) as srv:
        stream_once(srv.url, name, {"prompt": args.prompt, "max_new_tokens": 4})  # warm-up
        for c in levels:
            out = {"first": [], "total": [], "busy": 0, "5xx": 0}
            until = time.perf_counter() + args.seconds
            body = {"prompt": args.prompt, "max_new_tokens": args.latency_tokens, "temperature": 0.8}

            async def main(c=c, out=out, until=until, body=body):
                await asyncio.gather(*[_client(srv.url, name, body, until, out) for _ in range(c)])

            asyncio.run(main())
            f, t = [x for x in out["first"] if x is not None], out["total"]
            print(f"   {c:7d}   {len(t):8d}   {1000 * percentile(f, 50):8.1f} / {1000 * percentile(f, 99):8.1f} ms"
                  f"   {1000 * percentile(t, 50):9.1f} / {1000 * percentile(t, 99):8.1f} ms   {out['busy']:4d}"
                  f"  {out['5xx']:3d}")


def bench_judgements(run_dir: str, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prompts = Path(tmp) / "prompts.txt"
        import qkv

        run = qkv.load_run(run_dir)  # prompts the run's tokenizer can encode: 100 of its own short samples
        lines = [run.generate(args.prompt, run.sampling(seed=i, max_new_tokens=40)).replace("\n", " ").strip()
                 for i in range(100)]
        prompts.write_text("".join(f"{line}\n" for line in lines if line), encoding="utf-8")
        db = str(Path(tmp) / "bench.db")
        cmd = [sys.executable, "-m", "qkv", "human-eval", "create", "bench", "--runs", run_dir, "--src", str(prompts),
               "--n", "100", "--raters", "8", "--db", db]
        made = subprocess.run(cmd, capture_output=True, text=True)
        if made.returncode != 0:
            sys.exit(f"qkv human-eval create failed: {made.stderr}")
        tokens = [line.rsplit("/rate/", 1)[1].strip() for line in made.stdout.splitlines() if "/rate/" in line]
        with Server([], args.threads, queue=8, db=db) as srv:
            lat, acked, errors = [], [0], [0]
            until = time.perf_counter() + args.seconds

            async def rater(token: str):
                async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
                    status = (await client.get(f"/api/rate/{token}")).json()
                    k = 0
                    while time.perf_counter() < until:
                        task = (await client.get(f"/api/rate/{token}/tasks/{k % status['tasks']}")).json()
                        payload = {"candidates": {str(c["id"]): {"accuracy": (k * 7) % 101, "fluency": (k * 3) % 101,
                                                                 "spans": []} for c in task["candidates"]},
                                   "preference": "A" if status["pairwise"] else None}
                        t0 = time.perf_counter()
                        r = await client.post(f"/api/rate/{token}/tasks/{task['task_id']}", json=payload)
                        lat.append(time.perf_counter() - t0)
                        if r.status_code == 200:
                            acked[0] += 1
                        else:
                            errors[0] += 1
                        k += 1

            t0 = time.perf_counter()

            async def main():
                await asyncio.gather(*[rater(t) for t in tokens])

            asyncio.run(main())
            elapsed = time.perf_counter() - t0
        print(f"\n3. judgements over HTTP, {len(tokens)} concurrent raters, {args.seconds:g} s (SQLite WAL, "
              "synchronous=FULL, one commit per judgement)")
        print(f"   {acked[0]} acknowledged ({acked[0] / elapsed:.1f} judgements/s), {errors[0]} errors; submit latency "
              f"p50 {1000 * percentile(lat, 50):.1f} ms, p99 {1000 * percentile(lat, 99):.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", metavar="RUN_DIR", help="a GPT run (lm or chat)")
    ap.add_argument("--tokens", type=int, default=512, help="tokens per streamed generation in part 1")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server (qkv serve's "
                    "default: all cores but one)")
    ap.add_argument("--clients", default="1,8,32", help="concurrency levels of part 2")
    ap.add_argument("--latency-tokens", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each level of part 2, and of part 3")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: streaming, latency, judgements")
    args = ap.parse_args()
    print(describe(args.threads))
    import qkv

    args.prompt = qkv.load_run(args.run_dir).config.sample.prompt or "\n"  # text the run's tokenizer can encode
    print(f"run: {args.run_dir} | prompt {args.prompt!r}")
    skip = set(args.skip.split(","))
    if "streaming" not in skip:
        bench_streaming(args.run_dir, args)
    if "latency" not in skip:
        bench_latency(args.run_dir, args)
    if "judgements" not in skip:
        bench_judgements(args.run_dir, args)


if __name__ == "__main__":
    main()
