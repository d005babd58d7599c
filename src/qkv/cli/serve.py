"""``qkv serve RUN_DIR [RUN_DIR ...]``: the playground (and, with ``--db``, the human-evaluation pages).

    qkv serve runs/shakespeare runs/multi30k          # two runs, one page per task they support
    qkv serve runs/                                   # every run in a folder
    qkv serve runs/multi30k --db human-eval.db        # + the rater links of `qkv human-eval create`
    qkv serve runs/shakespeare --port 0                # any free port (the address is printed)

Open the printed address in a browser. The pages: generate (tokens stream; hover one for its id and the
top-5 next-token probabilities), chat, translate (beam n-best, cross-attention heatmaps), images (reverse
and forward process), attention, parameters. The JSON API is documented at /docs. The server binds
127.0.0.1 (this machine only); another address needs --allow-remote, and anyone who can reach it can use
the models. ``--port 0`` takes any free port; the printed addresses carry the one it got. The admin token
(for reports and exports over HTTP) is printed at start, or set with the environment variable
QKV_ADMIN_TOKEN; it goes in the header ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
from pathlib import Path

from qkv.errors import QKVError


def add_parser(sub, name):
    p = sub.add_parser(name, help="serve runs in a local web playground (and human-evaluation pages)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories, or folders of them")
    p.add_argument("--db", help="the human-evaluation store of `qkv human-eval create` (serves its rater pages)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--allow-remote", action="store_true", help="allow binding an address other than loopback")
    p.add_argument("--queue", type=int, default=8, help="requests waiting per model before 429 (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="cap on tokens per generation (default 1024)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args) -> int:
    try:
        import uvicorn

        from qkv.server import ServeConfig, create_app, load_runs
    except ModuleNotFoundError as e:
        raise QKVError(f"qkv serve needs the web extra ({e.name} is missing): pip install 'qkv[web]'") from None
    import torch

    if not args.runs and not args.db:
        raise QKVError("nothing to serve: give run directories, or --db FILE for human-evaluation pages")
    if not is_loopback(args.host) and not args.allow_remote:
        raise QKVError(f"--host {args.host} would expose the server beyond this machine; pass --allow-remote to "
                       "do so on purpose")
    if not 0 <= args.port < 65536:
        raise QKVError(f"--port must be in 0..65535 (0: any free port), got {args.port}")
    if args.db and not Path(args.db).is_file():
        raise QKVError(f"--db {args.db}: no such file (create a campaign with qkv human-eval create)")
    if args.db:
        from qkv.humaneval.store import Store

        Store(args.db).close()  # refuse a file that is not a qkv store now, not at the first rater's request
    if args.threads is not None and args.threads <= 0:
        raise QKVError(f"--threads must be positive, got {args.threads}")
    # one core is left to the event loop (and, on a laptop, the browser): on 2 cores, torch on both makes its
    # OpenMP threads spin against the server's own thread and streaming slows several-fold (bench/serve.py)
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 2) - 1))
    token = os.environ.get("QKV_ADMIN_TOKEN") or None
    config = ServeConfig(queue_size=args.queue, max_new_tokens=args.max_new_tokens,
                         db=Path(args.db) if args.db else None, **({"admin_token": token} if token else {}))
    sock = listen_socket(args.host, args.port)  # before the runs load: a port in use fails at once
    try:
        runs = load_runs(args.runs, queue_size=args.queue)
        app = create_app(runs, config)
    except BaseException:
        sock.close()
        raise
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{sock.getsockname()[1]}"  # the port bound, which --port 0 leaves to the system
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who can reach this address can use the models, and rater "
              "links are the only protection of the rating pages", file=sys.stderr)
    for s in runs.values():
        print(f"  {s.name:<24} {s.task:<12} {url}/runs/{s.name}/{s.pages[0]}")
    if args.db:
        print(f"  human evaluation: {args.db} (rater links from qkv human-eval create)")
    print(f"qkv serve: {url}/  (API docs: {url}/docs)")
    print(f"admin page: {url}/admin#token={config.admin_token}")
    sys.stdout.flush()
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=sock.getsockname()[1], log_level="warning",
                                           timeout_graceful_shutdown=2))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # Ctrl+C ends a server normally (as uvicorn.run has it)
        pass
    return 0 if server.started else 1  # uvicorn logged why it could not start


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), as uvicorn binds one (IPv6 when the host has a colon); port 0 gets a
    free port from the system. Passed to uvicorn, so the printed address is the one bound. QKVError if the
    address cannot be bound (in use, not this machine's)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        hint = "; --port 0 picks a free one" if e.errno == errno.EADDRINUSE else ""
        raise QKVError(f"cannot listen on {host}:{port}: {e.strerror or e}{hint}") from None
    sock.set_inheritable(True)
    return sock
