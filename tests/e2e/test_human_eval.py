"""Human evaluation end to end through the real CLI, in-process, with tiny trained runs on one thread.

- ``qkv human-eval create`` on two translation runs and Multi30k: the summary, one private link per rater,
  the serve command; the stored candidates are what the runs translate with their own beam settings; raters
  simulated through `Store.submit` (system a scored higher), then ``report`` (text, --json, the plot next to
  the store), ``export`` (history included) and ``list``;
- chat and lm campaigns from a prompts file: the candidates are a fresh seeded chat session's reply and the
  run's seeded continuation; a report before any judgement; more items asked for than the file has;
- bad input: one-line errors, exit 2, nothing written (no store file, or the store unchanged).
"""

import csv
import json
import shlex
import shutil
from pathlib import Path

import pytest

from helpers import assert_picture, assert_user_error, preset, qkv, rate_campaign
from qkv.cli.main import main
from qkv.humaneval.store import Store
from serve_fixtures import TRANSLATE_ARGS, number_pairs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PRESET = preset("multi30k-de-en")

# tests/e2e/test_lm.py's tiny character model, 5 steps, 20-token samples
TINY_LM = """\
task = "lm"

[data]
source = "tinyshakespeare"
tokenizer = "char"
max_chars = 20000

[model]
max_seq_len = 32
d_model = 32
n_layers = 1
n_heads = 2
bias = false

[train]
max_steps = 5
batch_size = 4
warmup_steps = 1
eval_interval = 5
eval_iters = 1
log_interval = 1
device = "cpu"
threads = 1
progress = false

[sample]
max_new_tokens = 20
"""

PROMPTS = ["What is the capital of France?", "", "Who wrote Hamlet?", "What color is the sky?",
           "How many legs does a spider have?"]


def _train(argv: list[str]) -> None:
    assert main(["train", *argv, "--no-sample"]) == 0


@pytest.fixture(scope="module")
def runs(tiny_runs, shared_data, tmp_path_factory) -> dict[str, Path]:
    """Two translation runs (the session's tiny one, and 2 steps of it), a chat run (the session's), an lm run, and
    the session's diffusion run (which writes no text)."""
    folder = tmp_path_factory.mktemp("runs")
    s, t = number_pairs(folder)
    shutil.copytree(tiny_runs["translate"], folder / "big")  # system labels are run folder names
    shutil.copytree(tiny_runs["chat"], folder / "chat")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QKV_DATA_DIR", str(shared_data))
        mp.setenv("QKV_CACHE_DIR", str(folder / "cache"))
        _train(["--config", PRESET, "--out", str(folder / "small"), "--data.src", str(s), "--data.tgt", str(t),
                *TRANSLATE_ARGS, "--train.max_steps", "2"])
        (folder / "lm.toml").write_text(TINY_LM, encoding="utf-8")
        _train(["--config", str(folder / "lm.toml"), "--out", str(folder / "lm")])
    return {"small": folder / "small", "big": folder / "big", "lm": folder / "lm", "chat": folder / "chat",
            "digits": tiny_runs["digits"]}


@pytest.fixture
def prompts(tmp_path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------ translation
def test_a_translation_campaign_from_create_to_export(runs, tmp_path, capsys):
    from qkv import load_run

    db = tmp_path / "h.db"
    rc, out, err = qkv(capsys, "human-eval", "create", "mt", "--runs", runs["big"], runs["small"], "--data",
                       "multi30k", "--n", "12", "--raters", "2", "--seed", "7", "--db", db, "--url",
                       "http://example.org:9000/")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0] == (f"campaign mt: source-to-text, 2 system(s) (big, small), 12 items from multi30k de-en "
                        f"test_2016_flickr, 2 raters, 14 tasks each (2 quality control) -> {db}")
    with Store(db) as store:
        camp = store.campaign("mt")
        tokens = [r["token"] for r in camp["raters"]]
        assert lines[1:4] == [f"rater1: http://example.org:9000/rate/{tokens[0]}",
                              f"rater2: http://example.org:9000/rate/{tokens[1]}",
                              f"serve the rater pages: qkv serve --db {db} --host example.org --port 9000 "
                              "--allow-remote"]
        assert lines[4].startswith("note: the links point at example.org, beyond this machine") and len(lines) == 5
        assert [s["label"] for s in camp["systems"]] == ["big", "small"]
        assert camp["spec"]["seed"] == 7 and camp["spec"]["available"] == 1000
        items = store.items("mt")
        assert len(items) == 12 and all(it["reference"] for it in items)
        # the candidates are what each run translates with its own [decode] settings
        sources = [it["source"] for it in items]
        for label in ("big", "small"):
            run = load_run(runs[label])
            expected, _ = run.translate(sources, run.decoding())
            stored = [c["text"] for c in store.candidates("mt") if c["system"] == label and c["bad_of"] is None]
            assert stored == expected
        rate_campaign(store, "mt", lambda rater, system, item, bad: (
            (10.0, 20.0) if bad else (85.0 - item, 80.0) if system == "big" else (50.0 - item, 45.0)))
        rater = store.rater(tokens[0])
        task = store.task(rater.id, 3)  # rater1 changes one judgement: history
        store.submit(rater.id, task["task_id"], {"candidates": {str(c["id"]): {"accuracy": 60, "fluency": 60}
                                                                for c in task["candidates"]}, "preference": "tie"})

    rc, out, err = qkv(capsys, "human-eval", "report", "mt", "--db", db)
    assert rc == 0, err
    assert "judged 28 of 28 tasks (29 judgements, 1 revisions)" in out
    assert "Wilcoxon signed-rank, accuracy (item means, paired): big − small = " in out and "big is better" in out
    assert "Kendall τ vs sentence chrF++" in out and "quality control" in out
    plot = tmp_path / "human-eval-mt.png"
    assert out.rstrip().splitlines()[-1] == f"plot: {plot}"
    assert_picture(plot)

    rc, out, err = qkv(capsys, "human-eval", "report", "mt", "--db", db, "--json", "--plot", tmp_path / "p.png")
    assert rc == 0, err
    d = json.loads(out)
    acc = d["criteria"]["accuracy"]
    assert acc["systems"]["big"]["mean"] > acc["systems"]["small"]["mean"] and acc["wilcoxon"]["p"] < 0.01
    assert d["preferences"]["big"] >= 22 and d["revisions"] == 1 and (tmp_path / "p.png").is_file()

    rc, out, err = qkv(capsys, "human-eval", "export", "mt", "--db", db, "--out", tmp_path / "out")
    assert rc == 0, err
    csv_path, jsonl_path = tmp_path / "out" / "mt-judgements.csv", tmp_path / "out" / "mt-judgements.jsonl"
    assert out.splitlines() == [f"wrote {csv_path} (58 rows)", f"wrote {jsonl_path} (58 rows)"]
    rows = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 * 29 and sum(not r["latest"] for r in rows) == 2
    with open(csv_path, encoding="utf-8", newline="") as f:  # candidates may hold line breaks: parse, don't split
        records = list(csv.DictReader(f))
    assert len(records) == 58 and [r["candidate"] for r in records] == [r["candidate"] for r in rows]
    assert [(r["slot"], r["candidate_id"]) for r in records] == [(r["slot"], str(r["candidate_id"])) for r in rows]
    assert {r["slot"] for r in rows} == {"A", "B"}

    rc, out, err = qkv(capsys, "human-eval", "list", "--db", db)
    assert rc == 0 and out.startswith("mt: source-to-text, big, small; 12 items, 2 raters, 28/28 tasks judged, 29 judg")


SERVE_HINTS = [  # --url -> the printed command's (host, port, --allow-remote), and what a note must say
    ("http://127.0.0.1:8765", ("127.0.0.1", 8765, False), None),
    ("http://localhost:8765/", ("localhost", 8765, False), None),
    ("http://[::1]:8765", ("::1", 8765, False), None),
    ("http://192.0.2.7:9000", ("192.0.2.7", 9000, True), "beyond this machine"),
    ("http://127.0.0.1", ("127.0.0.1", 80, False), "has no port, so the links use http's default, 80"),
    ("https://example.org:8443", ("127.0.0.1", 8000, False), "qkv serve speaks plain HTTP"),
]


def test_the_serve_command_printed_by_create_answers_at_the_links(runs, prompts, tmp_path, capsys):
    """The links and the serve command printed by create name the same host and port: following the command
    literally serves the links (it used to leave the port out, so the server came up on 8000 whatever --url
    said). A URL without a port, or with https, is said so; one no rater could open is refused first."""
    from qkv.cli.main import build_parser

    db = tmp_path / "h.db"
    for k, (url, (host, port, remote), note) in enumerate(SERVE_HINTS):
        rc, out, err = qkv(capsys, "human-eval", "create", f"c{k}", "--runs", runs["small"], "--src", prompts,
                           "--n", "2", "--raters", "1", "--db", db, "--url", url)
        assert rc == 0, err
        lines = out.splitlines()
        assert lines[1].startswith(f"rater1: {url.rstrip('/')}/rate/")
        prefix = "serve the rater pages: "
        (command,) = [ln.removeprefix(prefix) for ln in lines if ln.startswith(prefix)]
        argv = shlex.split(command)
        assert argv[:2] == ["qkv", "serve"]
        args = build_parser()[0].parse_args(argv[1:])
        assert (args.host, args.port, args.allow_remote, args.db) == (host, port, remote, str(db)), command
        notes = [ln for ln in lines if ln.startswith("note: ")]
        assert (note is None and not notes) or (note is not None and any(note in n for n in notes)), (url, notes)
    for url, message in (("ftp://example.org/", "http:// or https://"), ("http://127.0.0.1:99999", "1..65535")):
        rc, _, err = qkv(capsys, "human-eval", "create", "bad", "--runs", runs["small"], "--src", prompts,
                         "--db", tmp_path / "bad.db", "--url", url)
        assert_user_error(rc, err, message)
    assert not (tmp_path / "bad.db").exists()


# ------------------------------------------------------------------------------------------------ chat and lm
def test_a_chat_campaign_and_a_report_before_any_judgement(runs, prompts, tmp_path, capsys):
    from qkv import load_run

    db = tmp_path / "h.db"
    rc, out, err = qkv(capsys, "human-eval", "create", "qa", "--runs", runs["chat"], "--src", prompts, "--n", "10",
                       "--db", db, "--seed", "3")
    assert rc == 0, err
    assert "campaign qa: chat, 1 system(s) (chat), 4 items from" in out
    assert "note: asked for 10 items but" in out and "has 4 non-empty sources: using all" in out
    assert len([ln for ln in out.splitlines() if ln.startswith("rater")]) == 3
    run = load_run(runs["chat"])
    with Store(db) as store:
        got = [c["text"] for c in store.candidates("qa") if c["bad_of"] is None]
        sources = [it["source"] for it in store.items("qa")]
    assert sources == [p for p in PROMPTS if p]
    # a fresh session per prompt, the run's sampling (temperature 0.8 here) with the campaign's seed
    assert got == ["".join(run.chat(run.sampling(seed=3)).reply(p)) for p in sources]
    rc, out, err = qkv(capsys, "human-eval", "report", "qa", "--db", db)
    assert rc == 0, err
    assert "judged 0 of 15 tasks" in out and "no judgements yet" in out


def test_an_lm_campaign_continues_each_prompt(runs, prompts, tmp_path, capsys):
    from qkv import load_run

    db = tmp_path / "h.db"
    rc, out, err = qkv(capsys, "human-eval", "create", "cont", "--runs", runs["lm"], runs["lm"], "--src", prompts,
                       "--db", db, "--raters", "1")
    assert rc == 0, err
    assert "campaign cont: continuation, 2 system(s) (lm, lm-2), 4 items" in out
    run = load_run(runs["lm"])
    with Store(db) as store:
        by_system = {s: [c["text"] for c in store.candidates("cont") if c["system"] == s and c["bad_of"] is None]
                     for s in ("lm", "lm-2")}
        sources = [it["source"] for it in store.items("cont")]
        rate_campaign(store, "cont", lambda *a: (50.0, 50.0))
    expected = [run.generate(p, run.sampling(seed=0, max_new_tokens=20)) for p in sources]
    assert by_system["lm"] == by_system["lm-2"] == expected and all(len(t) > 0 for t in expected)
    rc, out, err = qkv(capsys, "human-eval", "report", "cont", "--db", db)
    assert rc == 0, err
    assert "no difference: every item has the same mean for both systems" in out


# ------------------------------------------------------------------------------------------------ bad input
def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_INPUT = {
    "missing src": (lambda r, p, d: ["--runs", r["small"], "--src", d / "nope.txt"], "file not found"),
    "empty src": (lambda r, p, d: ["--runs", r["small"], "--src", _write(d / "e.txt", b"\n \n")], "is empty"),
    "binary src": (lambda r, p, d: ["--runs", r["small"], "--src", _write(d / "b.bin", b"\x00\x01ab\n")],
                   "looks binary"),
    "mismatched ref": (lambda r, p, d: ["--runs", r["small"], "--src", p, "--ref", _write(d / "r.txt", b"one\n")],
                       "has 5 lines but"),
    "unknown split": (lambda r, p, d: ["--runs", r["small"], "--data", "multi30k", "--split", "dev"],
                      "unknown multi30k split 'dev'"),
    "unknown dataset": (lambda r, p, d: ["--runs", r["small"], "--data", "wmt14"], "unknown parallel dataset"),
    "tasks differ": (lambda r, p, d: ["--runs", r["small"], r["chat"], "--src", p],
                     "the runs must write the same kind of text"),
    "diffusion": (lambda r, p, d: ["--runs", r["digits"], "--src", p],
                  "human evaluation compares runs that write text"),
    "three runs": (lambda r, p, d: ["--runs", r["small"], r["big"], r["small"], "--src", p], "1 or 2 runs, got 3"),
    "n zero": (lambda r, p, d: ["--runs", r["small"], "--src", p, "--n", "0"], "n must be positive, got 0 (--n)"),
    "raters zero": (lambda r, p, d: ["--runs", r["small"], "--src", p, "--raters", "0"],
                    "raters must be positive, got 0 (--raters)"),
    "data and src": (lambda r, p, d: ["--runs", r["small"], "--src", p, "--data", "multi30k"], "not both"),
    "neither": (lambda r, p, d: ["--runs", r["small"]], "give the items with"),
    "data for chat": (lambda r, p, d: ["--runs", r["chat"], "--data", "multi30k"],
                      "for runs that write text about a source"),
    "not a run": (lambda r, p, d: ["--runs", d, "--src", p], "file not found"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_writes_nothing(runs, prompts, tmp_path, capsys, case):
    args, message = BAD_INPUT[case]
    db = tmp_path / "h.db"
    rc, out, err = qkv(capsys, "human-eval", "create", "x", *args(runs, prompts, tmp_path), "--db", db)
    assert_user_error(rc, err, message)
    assert not db.exists() and not list(tmp_path.glob("h.db*"))


def test_runs_of_different_language_pairs_are_refused_for_multi30k(runs, tmp_path, capsys):
    other = tmp_path / "en-de"
    shutil.copytree(runs["small"], other)
    cfg = json.loads((other / "config.json").read_text(encoding="utf-8"))
    cfg["data"]["direction"] = "en-de"
    (other / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    db = tmp_path / "h.db"
    rc, _, err = qkv(capsys, "human-eval", "create", "x", "--runs", runs["small"], other, "--data", "multi30k",
                     "--db", db)
    assert_user_error(rc, err, "the runs read different data from multi30k (multi30k de-en test_2016_flickr, "
                      "multi30k en-de")
    assert not db.exists()


def test_a_failure_while_making_candidates_stores_nothing(runs, prompts, tmp_path, capsys, monkeypatch):
    """The second system fails half-way through: the store keeps only the campaign it had."""
    import qkv.humaneval.campaign as campaign

    db = tmp_path / "h.db"
    assert qkv(capsys, "human-eval", "create", "x", "--runs", runs["small"], "--src", prompts, "--db", db)[0] == 0
    real = campaign.make_candidates

    def failing(run, sources, seed, progress=None, done=0, total=None):
        if done:  # the second system
            raise campaign.QKVError(f"{run.path}: out of memory at prompt 2")
        return real(run, sources, seed, progress, done, total)

    monkeypatch.setattr(campaign, "make_candidates", failing)
    rc, _, err = qkv(capsys, "human-eval", "create", "y", "--runs", runs["small"], runs["big"], "--src", prompts,
                     "--db", db)
    assert_user_error(rc, err, "out of memory at prompt 2")
    with Store(db) as store:
        assert store.campaign_names() == ["x"] and [c["name"] for c in store.campaigns()] == ["x"]


def test_a_taken_name_leaves_the_store_unchanged(runs, prompts, tmp_path, capsys):
    db = tmp_path / "h.db"
    assert qkv(capsys, "human-eval", "create", "x", "--runs", runs["small"], "--src", prompts, "--db", db)[0] == 0
    before = db.read_bytes()
    rc, _, err = qkv(capsys, "human-eval", "create", "x", "--runs", runs["big"], "--src", prompts, "--db", db)
    assert_user_error(rc, err, "a campaign named 'x' already exists")
    with Store(db) as store:
        assert store.campaign_names() == ["x"] and store.campaign("x")["systems"][0]["label"] == "small"
    assert db.read_bytes() == before


def test_report_and_export_errors(tmp_path, capsys):
    rc, _, err = qkv(capsys, "human-eval", "report", "x", "--db", tmp_path / "none.db")
    assert_user_error(rc, err, "no human-evaluation store")
    text = _write(tmp_path / "notes.db", b"my notes\n" * 200)
    rc, _, err = qkv(capsys, "human-eval", "export", "x", "--db", text, "--out", tmp_path / "out")
    assert_user_error(rc, err, "not a qkv human-evaluation store")
    Store(tmp_path / "h.db", create=True).close()
    rc, _, err = qkv(capsys, "human-eval", "report", "nope", "--db", tmp_path / "h.db")
    assert_user_error(rc, err, "no campaign named 'nope'")
    assert not (tmp_path / "out").exists() and not (tmp_path / "human-eval-nope.png").exists()
