"""`qkv report` end to end, in-process, on a tiny trained run of every kind (the session's lm, chat, translate and
digits runs, and a caption, an autoencoder and a speech run trained here, all on one thread):

- the report of each builds, prints its two paths, and holds the sections its capabilities call for (samples and
  the attention picture chosen by capability; a note where a run has neither);
- the lm run writes ``<img src=x onerror=alert(1)>``: it is in the page as escaped text, never as an element;
- headless Chromium opens the pages from disk with no console error and no request but the page itself, and a
  speech run's recordings load in their players;
- `qkv train` writes the report (without samples under --no-sample), and a report that fails is a note, not a
  failed training;
- --eval adds the run's own evaluation with its signatures, --db the human-evaluation campaigns that compared it;
- bad input is a one-line error and writes nothing;
- `qkv serve` serves the report at /runs/{name}/report (404 where there is none) and links it.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import markdown
import pytest
import torch

from helpers import assert_user_error, preset, qkv, rate_campaign
from qkv.cli.main import main
from serve_fixtures import LM_TOML, XSS, LiveServer, make_runs

pytestmark = pytest.mark.slow

SECTIONS = ["training", "evaluations", "samples", "attention", "parameters", "data", "config", "machine"]
THREAD = ["--train.threads", "1", "--train.progress", "false", "--train.max_minutes", "none",
          "--train.schedule_by", "steps", "--train.precision", "fp32"]
# tests/e2e/test_caption.py's tiny captioner, 6 steps
CAPTION = ["--data.counts", "[1, 2]", "--data.holdout_counts", "[3]", "--data.image_size", "16", "--data.val_scenes",
           "8", "--data.test_scenes", "4", "--model.patch_size", "8", "--model.d_model", "32",
           "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--model.n_heads", "2",
           "--model.max_seq_len", "40", "--train.batch_size", "8", "--train.warmup_steps", "2", "--train.decay_steps",
           "6", "--train.eval_interval", "6", "--train.log_interval", "2", "--train.max_steps", "6"]
AUTOENCODER = ["--data.shapes_n", "200", "--model.width", "8", "--train.max_steps", "4", "--train.eval_interval", "4",
               "--train.log_interval", "2", "--train.warmup_steps", "1"]

# what each run's samples and attention sections must show (its capabilities decide): needles in the section's
# text, the number of pictures in it, and a needle in the attention picture's alt text (None: a note instead)
EXPECT = {
    "lm": (["The prompt", "greedy (temperature 0)", "sampled: temperature"], 0, "self-attention, layer 1"),
    "chat": (["question", "reply (greedy)", "reference", "What is the capital of France?"], 0, "self-attention"),
    "translate": (["source", "output", "reference", "die ", "the "], 0, "cross-attention, decoder layer 1"),
    "digits": (["8 samples: DDIM, 10 steps"], 8, None),
    "caption": (["output", "reference", "greedy"], 3, "cross-attention, decoder layer 0"),
    "autoencoder": (["Nothing to sample", "an autoencoder run"], 0, None),
    "speech": (["transcript", "reference", "zero", "recording 1 ("], 0, "cross-attention, decoder layer 0"),
}


class Page(HTMLParser):
    """A report page read back: its sections (id -> its text, the attributes of its pictures, its table rows), and
    all its elements."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: dict[str, dict] = {}
        self.elements: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self._current = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.elements.append((tag, attrs))
        if tag == "section":
            self._current = self.sections.setdefault(attrs["id"], {"text": "", "imgs": [], "rows": 0})
        elif tag == "img" and self._current is not None:
            self._current["imgs"].append(attrs)
        elif tag == "tr" and self._current is not None:
            self._current["rows"] += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self._current = None

    def handle_data(self, data):
        self.text.append(data)
        if self._current is not None:
            self._current["text"] += data


def _train(argv: list[str]) -> None:
    assert main(["train", *argv]) == 0


@pytest.fixture(scope="module")
def runs(tiny_runs, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("report-runs")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(["--config", preset("shapes-caption"), "--out", str(folder / "caption"), "--no-sample", *THREAD,
                *CAPTION])
        _train(["--config", preset("shapes-autoencoder"), "--out", str(folder / "autoencoder"), *THREAD, *AUTOENCODER])
        speech = make_runs(folder, ("speech",))["speech"]  # FSDD's "zero", "one", "two", learned by heart
    finally:
        torch.set_num_threads(n)
    return {**tiny_runs, "caption": folder / "caption", "autoencoder": folder / "autoencoder", "speech": speech}


@pytest.fixture(scope="module")
def reports(runs, tmp_path_factory) -> dict[str, dict]:
    """`qkv report RUN --out DIR` of every run: {out, stdout, html, md, page (parsed)}."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name, run in runs.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc = main(["report", str(run), "--out", str(folder / name)])
        assert rc == 0, name
        html = (folder / name / "report.html").read_text(encoding="utf-8")
        out[name] = {"out": folder / name, "stdout": buf.getvalue(), "html": html, "page": Page(html),
                     "md": (folder / name / "report.md").read_text(encoding="utf-8")}
    return out


# ------------------------------------------------------------------------------------------------ what it holds
@pytest.mark.parametrize("name", list(EXPECT))
def test_the_report_of_every_kind_holds_the_sections_its_capabilities_call_for(reports, runs, name):
    r = reports[name]
    assert r["stdout"].splitlines() == [str(r["out"] / "report.html"), str(r["out"] / "report.md")]
    page = r["page"]
    assert list(page.sections) == SECTIONS
    needles, pictures, attention = EXPECT[name]
    samples = page.sections["samples"]
    for needle in needles:
        assert needle in samples["text"], f"{needle!r} not in the samples of {name}: {samples['text'][:500]}"
    assert len(samples["imgs"]) == pictures
    alts = [img["alt"] for img in page.sections["attention"]["imgs"]]
    if attention is None:
        assert not alts and "No attention picture" in page.sections["attention"]["text"]
    else:
        assert any(attention in alt for alt in alts), alts
    # every picture is inline, and a real PNG
    for img in (img for sec in page.sections.values() for img in sec["imgs"]):
        assert img["src"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert "loss curves" in [img["alt"] for img in page.sections["training"]["imgs"]]
    # the evaluation records of metrics.jsonl, each a row
    records = [json.loads(line) for line in (runs[name] / "metrics.jsonl").read_text().splitlines()]
    evals = [rec for rec in records if "eval_s" in rec]
    assert evals and page.sections["evaluations"]["rows"] == 1 + len(evals)  # the header, then a row each
    assert f"{evals[-1]['step']}" in page.sections["evaluations"]["text"]
    # parameters, machine and config
    assert "total" in page.sections["parameters"]["text"]
    assert "CPU" in page.sections["machine"]["text"] and "train.precision = 'fp32'" in page.sections["machine"]["text"]
    assert "[model]" in page.sections["config"]["text"]
    # the Markdown twin: the same sections, and its link to the loss curves resolves from where it is
    md = r["md"]
    for title in ("## Training", "## Evaluations", "## Samples", "## Attention", "## Parameters", "## Machine"):
        assert title in md
    link = md.split("![loss curves](", 1)[1].split(")", 1)[0]
    assert (r["out"] / link).resolve() == (runs[name] / "loss.png").resolve()


def test_model_text_is_escaped_text_never_markup(reports):
    r = reports["lm"]
    samples = r["page"].sections["samples"]["text"]
    assert XSS in samples  # the model wrote it, and the page shows it as characters
    assert XSS not in r["html"] and "&lt;img src=x onerror=alert(1)&gt;" in r["html"]
    assert all(tag != "img" or attrs["src"].startswith("data:") for tag, attrs in r["page"].elements)
    assert not any(k.startswith("on") for _, attrs in r["page"].elements for k in attrs)
    assert not any(tag in ("script", "link", "iframe") for tag, _ in r["page"].elements)
    # the Markdown twin, rendered as a forge or a docs site would: the same text, no element made of it
    rendered = Page(markdown.markdown(r["md"], extensions=["tables", "fenced_code"]))
    assert XSS in "".join(rendered.text)
    assert not any(k.startswith("on") for _, attrs in rendered.elements for k in attrs)
    assert [attrs["src"].rsplit("/", 1)[-1] for tag, attrs in rendered.elements if tag == "img"] == ["loss.png"]


@pytest.mark.parametrize("name", ["lm", "translate", "caption", "speech"])
def test_the_page_renders_in_chromium_with_no_error_and_no_request_but_itself(reports, browser, name, tmp_path):
    url = (reports[name]["out"] / "report.html").resolve().as_uri()
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    requests, console, errors, dialogs = [], [], [], []

    def route(r):
        requests.append(r.request.url)
        r.continue_() if r.request.url == url else r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url, wait_until="load")
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    assert requests == [url]  # the file itself, nothing else (data: pictures are not requests)
    assert not console and not errors and not dialogs, (console, errors, dialogs)
    assert page.locator("h1").inner_text() == f"{name}: report"
    # every picture decoded (a broken data: URL would be 0 wide), and the inline style applies
    widths = page.locator("img").evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert widths and all(w > 0 for w in widths)
    assert page.locator("section").first.evaluate("s => getComputedStyle(s).borderTopLeftRadius") == "8px"
    if name == "lm":
        assert XSS in page.locator("#samples").inner_text()
    if name == "speech":  # every recording loads in its player under the page's policy (media-src data:)
        players = page.locator("audio")
        assert players.count() == 4  # three samples, and the recording beside the attention picture
        deadline = time.monotonic() + 15
        while not players.evaluate_all("as => as.every(a => a.duration > 0)"):  # NaN until loaded
            assert time.monotonic() < deadline, "a recording of the report never loaded"
            time.sleep(0.05)
        assert players.evaluate_all("as => as.every(a => a.paused && a.error === null && a.controls)")
    context.close()


# ------------------------------------------------------------------------------------------------ qkv train
def test_qkv_train_writes_the_report_without_samples_under_no_sample(tiny_runs):
    lm = Page((tiny_runs["lm"] / "report.html").read_text(encoding="utf-8"))  # trained with samples
    assert list(lm.sections) == SECTIONS and XSS in lm.sections["samples"]["text"]
    assert (tiny_runs["lm"] / "report.md").is_file()
    tr = Page((tiny_runs["translate"] / "report.html").read_text(encoding="utf-8"))  # trained with --no-sample
    assert list(tr.sections) == [s for s in SECTIONS if s != "samples"]
    assert "cross-attention" in tr.sections["attention"]["imgs"][0]["alt"]


def test_a_report_that_fails_is_a_note_not_a_failed_training(tmp_path, capsys, monkeypatch):
    from qkv import report

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(report, "write_report", broken)
    corpus = tmp_path / "text.txt"
    corpus.write_text("".join(f"{XSS} {i % 10}\n" for i in range(200)), encoding="utf-8")
    toml = tmp_path / "lm.toml"
    toml.write_text(LM_TOML.format(corpus=corpus).replace("max_steps = 150", "max_steps = 5")
                    .replace("eval_interval = 150", "eval_interval = 5"), encoding="utf-8")
    rc, out, err = qkv(capsys, "train", "--config", toml, "--out", tmp_path / "run")
    assert rc == 0
    assert "note: the report was not written (RuntimeError: boom)" in err
    assert (tmp_path / "run" / "model.safetensors").is_file() and not (tmp_path / "run" / "report.html").exists()
    assert "report:" not in out


# ------------------------------------------------------------------------------------------------ --eval, --db
def test_eval_adds_the_runs_own_evaluation_and_its_signatures(runs, tmp_path, capsys):
    rc, _, err = qkv(capsys, "report", runs["caption"], "--eval", "--out", tmp_path)
    assert rc == 0, err
    sec = Page((tmp_path / "report.html").read_text(encoding="utf-8")).sections["evaluations"]
    assert "qkv report --eval: run.evaluate() with its defaults" in sec["text"]
    assert "BLEU-4" in sec["text"] and "CIDEr-D" in sec["text"]  # run.report(result)
    assert "nrefs:" in sec["text"]  # sacreBLEU's signature, from the result
    assert '"groups"' in sec["text"]  # the result as JSON
    rc, _, err = qkv(capsys, "report", runs["lm"], "--eval", "--out", tmp_path / "lm")
    assert rc == 0, err
    assert "perplexity" in Page((tmp_path / "lm" / "report.html").read_text()).sections["evaluations"]["text"]


def test_db_adds_the_campaigns_that_compared_the_run(runs, tmp_path, capsys):
    from qkv.humaneval.campaign import plan_campaign
    from qkv.humaneval.store import Store

    run = runs["translate"]
    items = [(i, f"die eins {i} .", f"the one {i} .") for i in range(6)]
    outputs = [[f"the one {i} ." for i in range(6)], [f"one {XSS} {i}" for i in range(6)]]
    db = tmp_path / "he.db"
    with Store(db, create=True) as store:
        systems = [("tiny", str(run.resolve())), ("other", "/runs/other")]
        store.add_campaign(plan_campaign("used", "source-to-text", {"source": "toy"}, systems, items, outputs, 2, 0))
        store.add_campaign(plan_campaign("unused", "source-to-text", {"source": "toy"}, [("x", "/runs/x")], items,
                                         outputs[:1], 1, 0))
        rate_campaign(store, "used", lambda rater, system, item, bad: (80, 70) if system == "tiny" else (30, 40))
    rc, _, err = qkv(capsys, "report", run, "--db", db, "--out", tmp_path / "out")
    assert rc == 0, err
    page = Page((tmp_path / "out" / "report.html").read_text(encoding="utf-8"))
    assert list(page.sections) == [*SECTIONS[:4], "human-eval", *SECTIONS[4:]]
    sec = page.sections["human-eval"]
    assert "Campaign used" in sec["text"] and "unused" not in sec["text"]
    assert "tiny (this run)" in sec["text"] and "80.0 [80.0, 80.0]" in sec["text"]
    assert "Wilcoxon signed-rank" in sec["text"] and len(sec["imgs"]) == 1
    # a store where no campaign compared it says so
    with Store(tmp_path / "other.db", create=True) as store:
        store.add_campaign(plan_campaign("unused", "source-to-text", {"source": "toy"}, [("x", "/runs/x")], items,
                                         outputs[:1], 1, 0))
    rc, _, err = qkv(capsys, "report", run, "--db", tmp_path / "other.db", "--out", tmp_path / "out2")
    assert rc == 0, err
    assert "No campaign in" in Page((tmp_path / "out2" / "report.html").read_text()).sections["human-eval"]["text"]


# ------------------------------------------------------------------------------------------------ bad input
def _bad_metrics(runs, tmp_path):
    run = shutil.copytree(runs["lm"], tmp_path / "run")
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 151, "loss"\n')
    return [run]


BAD = {
    "not a run": (lambda runs, tmp: [tmp / "empty"], "run directory not found"),
    "no config": (lambda runs, tmp: [(tmp / "folder").mkdir() or tmp / "folder"], "config.json"),
    "malformed metrics": (_bad_metrics, "metrics.jsonl:"),
    "out is a file": (lambda runs, tmp: [runs["lm"], "--out", (tmp / "f").write_text("x") and tmp / "f"],
                      "is not a folder (--out)"),
    "no store": (lambda runs, tmp: [runs["lm"], "--db", tmp / "none.db", "--out", tmp / "out"],
                 "no human-evaluation store"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_one_line_error_and_writes_nothing(runs, tmp_path, capsys, case):
    make, needle = BAD[case]
    args = make(runs, tmp_path)
    files = lambda: {p: p.stat().st_mtime_ns for folder in (tmp_path, runs["lm"]) for p in folder.rglob("*")}  # noqa: E731
    before = files()
    rc, out, err = qkv(capsys, "report", *args)
    assert_user_error(rc, err, needle)
    assert not out
    assert files() == before  # nothing written, nothing touched


# ------------------------------------------------------------------------------------------------ qkv serve
@pytest.fixture(scope="module")
def served(runs, tmp_path_factory):
    """A server with the lm run (which has a report) and a copy of the digits run without one."""
    from qkv.server import ServeConfig, create_app, load_runs

    bare = shutil.copytree(runs["digits"], tmp_path_factory.mktemp("bare") / "bare")
    for name in ("report.html", "report.md"):
        (bare / name).unlink(missing_ok=True)
    return create_app(load_runs([runs["lm"], bare]), ServeConfig())


def test_the_server_serves_the_report_and_says_which_runs_have_one(served, runs):
    from fastapi.testclient import TestClient

    from qkv.report.render import CSP

    client = TestClient(served)
    r = client.get("/runs/lm/report")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.content == (runs["lm"] / "report.html").read_bytes()
    assert r.headers["content-security-policy"] == CSP
    assert client.get("/api/runs/lm").json()["report"] is True
    r = client.get("/runs/bare/report")
    assert r.status_code == 404 and "has no report yet" in r.json()["error"]
    assert client.get("/api/runs/bare").json()["report"] is False
    assert client.get("/runs/nope/report").status_code == 404
    assert client.get("/runs/lm/generate").status_code == 200  # the pages are still the pages


def test_the_playground_links_the_report(served, browser):
    with LiveServer(served) as url:
        context = browser.new_context()  # the server's own Content-Security-Policy, not bypassed
        page = context.new_page()
        failed = []  # answers over 400 (but the browser's own favicon.ico, which the server has none of)
        page.on("response", lambda r: failed.append(r.url) if r.status >= 400 and "favicon" not in r.url else None)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/")
        page.locator("a[href='/runs/lm/report']").wait_for()
        assert page.locator("a[href='/runs/bare/report']").count() == 0
        page.goto(f"{url}/runs/lm/params")
        page.locator("header nav a", has_text="report").click()
        page.wait_for_url(f"{url}/runs/lm/report")
        assert page.locator("h1").inner_text() == "lm: report"
        # the report's inline style applies under the policy the server sends with it
        assert page.locator("section").first.evaluate("s => getComputedStyle(s).borderTopLeftRadius") == "8px"
        assert not errors and not failed, (errors, failed)
        context.close()
