"""``qkv human-eval create | report | export | list``: run a human evaluation of one or two trained runs.

- ``create NAME --runs RUN_A [RUN_B] (--data DATA [--split S] | --src FILE [--ref FILE]) [--n 100]
  [--raters 3] [--seed 0] [--db human-eval.db] [--url http://127.0.0.1:8000]``: sample the items, make every
  system's candidates, store the campaign, print one private link per rater and the command to serve them
  (``qkv serve`` with the host and port of --url, so the links reach it). DATA is a dataset the runs know
  (multi30k), a folder they read (a speech folder: audio/*.wav + transcripts.jsonl), or ``validation`` (the runs'
  own held-out pairs); a src file holds one source per line (an image's or a WAV file's path for runs that read
  images or recordings);
- ``report NAME [--db FILE] [--json] [--plot FILE]``: means with 95% CIs, z-scores, the Wilcoxon test and
  preferences (two systems), Krippendorff's α, Kendall τ against chrF++ and BLEU, error spans, quality control
  per rater; the plot goes next to the store (human-eval-NAME.png) unless --plot says where;
- ``export NAME --out DIR [--db FILE]``: every judgement, history included, as DIR/NAME-judgements.csv and .jsonl;
- ``list [--db FILE]``: the campaigns in the store, with their counts.

The protocol and the statistics are described in `qkv.humaneval`.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from urllib.parse import urlsplit

from qkv.errors import QKVError

DEFAULT_DB = "human-eval.db"


def add_parser(sub, name):
    p = sub.add_parser(name, help="human evaluation: create a campaign, report its results, export them",
                       description=__doc__)
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    c = actions.add_parser("create", help="sample items, make the candidates, store a campaign, print rater links")
    c.add_argument("name", help="the campaign's name (letters, digits, . _ -)")
    c.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="one or two run directories")
    c.add_argument("--data", help="sources with references: multi30k (translation runs), a folder the runs read "
                                  "(a speech folder: audio/*.wav + transcripts.jsonl), or validation (the runs' own "
                                  "held-out pairs)")
    c.add_argument("--split", help="multi30k split (default test_2016_flickr)")
    c.add_argument("--src", metavar="FILE", help="sources or prompts, one per line (runs that read images or "
                                                 "recordings: one image or WAV path per line)")
    c.add_argument("--ref", metavar="FILE", help="their references, line-aligned with --src")
    c.add_argument("--n", type=int, default=100, help="items to sample (default 100)")
    c.add_argument("--raters", type=int, default=3, help="raters, each rating every item (default 3)")
    c.add_argument("--seed", type=int, default=0, help="seeds the items, the sampling, the controls, the order")
    c.add_argument("--db", default=DEFAULT_DB, help=f"the store (default {DEFAULT_DB}; created if missing)")
    c.add_argument("--url", default="http://127.0.0.1:8000",
                   help="where raters will reach qkv serve: the links' base (default http://127.0.0.1:8000)")
    c.add_argument("--device", default="cpu")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")

    r = actions.add_parser("report", help="the statistics of a campaign")
    r.add_argument("name")
    r.add_argument("--db", default=DEFAULT_DB)
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--plot", metavar="FILE", help="where the PNG goes (default: human-eval-NAME.png next to --db)")

    e = actions.add_parser("export", help="every judgement (history included) as CSV and JSONL")
    e.add_argument("name")
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--db", default=DEFAULT_DB)

    ls = actions.add_parser("list", help="the campaigns in a store")
    ls.add_argument("--db", default=DEFAULT_DB)


def _progress_bar(enabled: bool):
    """A progress(done, total) callable drawing a tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="candidates", unit="", file=sys.stderr, disable=None if enabled else True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def serve_command(url: str, db: str) -> tuple[str, list[str]]:
    """The ``qkv serve`` command that answers at `url` (the base of the rater links) and notes on what it
    cannot do by itself; QKVError, before anything is made, for a URL no rater could open.

    >>> serve_command("http://127.0.0.1:8765/", "h.db")
    ('qkv serve --db h.db --host 127.0.0.1 --port 8765', [])
    """
    from qkv.cli.serve import is_loopback

    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise QKVError(f"--url {url}: the port must be a number in 1..65535")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise QKVError(f"--url {url}: give the address raters will open, http:// or https:// and a host, like "
                       "http://127.0.0.1:8000")
    host, argv, notes = parts.hostname, ["qkv", "serve", "--db", str(db)], []
    if parts.path.strip("/"):
        notes.append(f"the links start with the path {parts.path.rstrip('/')}/, but qkv serve answers at /: a proxy "
                     "in front must take the path off")
    if parts.scheme == "https":
        where = f"{host}:{port}" if port else host
        notes.append(f"--url is https: qkv serve speaks plain HTTP, so the links need a proxy with TLS at {where} "
                     "that forwards to qkv serve (this command serves it on 127.0.0.1:8000)")
        return shlex.join(argv), notes
    if port is None:
        port = 80
        notes.append(f"--url {url} has no port, so the links use http's default, 80 (binding it may need root); "
                     "give --url http://HOST:PORT to choose another")
    argv += ["--host", host, "--port", str(port)]
    if not is_loopback(host):
        argv.append("--allow-remote")
        notes.append(f"the links point at {host}, beyond this machine: --allow-remote serves there, and anyone who "
                     f"can reach {host}:{port} can use the server (a rater link is a rating page's only protection)")
    return shlex.join(argv), notes


def _create(args) -> int:
    from qkv.humaneval import CampaignSpec, create_campaign

    serve, serve_notes = serve_command(args.url, args.db)  # a bad --url is refused before the slow part
    spec = CampaignSpec(args.name, args.runs, data=args.data, split=args.split, src=args.src, ref=args.ref,
                        n=args.n, raters=args.raters, seed=args.seed)
    made = create_campaign(args.db, spec, progress=_progress_bar(not args.no_progress), device=args.device)
    print(f"campaign {made.name}: {made.kind}, {len(made.systems)} system(s) ({', '.join(made.systems)}), "
          f"{made.items} items from {made.source}, {len(made.raters)} raters, "
          f"{made.items + made.controls} tasks each ({made.controls} quality control) -> {args.db}")
    for note in made.notes:
        print(f"note: {note}")
    url = args.url.rstrip("/")
    for name, token in made.raters:
        print(f"{name}: {url}/rate/{token}")
    print(f"serve the rater pages: {serve}")
    for note in serve_notes:
        print(f"note: {note}")
    return 0


def _report(args) -> int:
    from qkv.humaneval import Store, build_report, format_report, plot_report

    with Store(args.db) as store:
        d = build_report(store, args.name)
    plot = Path(args.plot) if args.plot else Path(args.db).parent / f"human-eval-{args.name}.png"
    plot_report(d, plot)
    if args.json:
        print(json.dumps(d, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print(format_report(d))
        print(f"plot: {plot}")
    return 0


def _export(args) -> int:
    from qkv.humaneval import Store
    from qkv.humaneval.report import export_rows, write_export

    with Store(args.db) as store:
        rows = export_rows(store, args.name)
    for path in write_export(rows, args.name, args.out):
        print(f"wrote {path} ({len(rows)} rows)")
    return 0


def _list(args) -> int:
    from qkv.humaneval import Store

    with Store(args.db) as store:
        campaigns = store.campaigns()
    if not campaigns:
        print(f"{args.db}: no campaigns")
    for c in campaigns:
        print(f"{c['name']}: {c['kind']}, {', '.join(c['systems'])}; {c['items']} items, {c['raters']} raters, "
              f"{c['judged']}/{c['tasks']} tasks judged, {c['judgements']} judgements; created {c['created']}")
    return 0


def run(args) -> int:
    return {"create": _create, "report": _report, "export": _export, "list": _list}[args.action](args)
