"""Translation end to end through the real CLI, in-process (`qkv.cli.main.main`), on Multi30k de→en.

- a few hundred steps of a small model on a Multi30k slice bring the validation loss under a measured
  threshold, from the shipped preset with overrides;
- round trip train -> translate (stdin and --input) -> eval -> attention in a temp dir; the BLEU that
  `qkv eval` prints equals sacrebleu's corpus_bleu on the hypothesis file it wrote and the reference file;
- exact resume of a translation run (dropout on, token-count batches);
- bad input: mismatched and empty parallel files, an unknown language pair, empty stdin for translate.
Everything runs on one thread.
"""

import gzip
import io
import json
import os
import re
from pathlib import Path

import pytest
import sacrebleu

from qkv.cli.main import main

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PRESET = str(REPO / "configs" / "multi30k-de-en.toml")

# The learning run: the preset's recipe shrunk to 0.8M parameters, 8,000 training pairs, 500 steps.
# Measured (1 thread, 2 busy cores, ~31 s of training):
#   qkv train --config configs/multi30k-de-en.toml --out RUN --no-sample <LEARN_ARGS below>
#   -> val_loss 4.65 (step 100), 3.68 (200), 3.42 (300), 3.30 (400), 3.234 (500); val BLEU 3.3, chrF++ 18.2
# An untrained model scores ln(1000) ≈ 6.9. The test asks for val_loss < 3.45 at step 500.
LEARN_ARGS = [
    "--data.max_train_pairs", "8000", "--data.max_val_pairs", "300", "--data.bleu_val_pairs", "100",
    "--data.vocab_size", "1000", "--data.batch_tokens", "1000",
    "--model.d_model", "128", "--model.d_ff", "256", "--model.n_encoder_layers", "2",
    "--model.n_decoder_layers", "2", "--model.max_seq_len", "64", "--model.dropout", "0.0",
    "--train.max_steps", "500", "--train.schedule_by", "steps", "--train.max_minutes", "10",
    "--train.warmup_steps", "30", "--train.lr", "3e-3", "--train.min_lr", "3e-4", "--train.eval_interval", "250",
    "--train.full_eval_interval", "500", "--train.threads", "1", "--train.progress", "false",
    "--model.embed_std", "0.02",  # the threshold below was measured at this init (the preset uses 1/√C)
]
VAL_LOSS_THRESHOLD = 3.45

# A tiny run for the resume test and the bad-input tests (seconds).
TINY_ARGS = [
    "--data.vocab_size", "300", "--data.batch_tokens", "200", "--data.bleu_val_pairs", "0",
    "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1",
    "--model.max_seq_len", "48", "--model.dropout", "0.1",
    "--train.schedule_by", "steps", "--train.max_minutes", "none", "--train.warmup_steps", "2",
    "--train.decay_steps", "12", "--train.eval_interval", "6", "--train.log_interval", "1",
    "--train.threads", "1", "--train.progress", "false",
]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """$QKV_DATA_DIR (set by `make test`), else the checkout's sibling ../shared/data."""
    folder = Path(os.environ.get("QKV_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (folder / "multi30k" / "train.de.gz").is_file():
        pytest.fail(f"multi30k not found under {folder}; set QKV_DATA_DIR (make test does)")
    return folder


@pytest.fixture(autouse=True)
def _offline_data(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_DATA_DIR", str(data_dir))
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))  # nothing may be downloaded or cached


@pytest.fixture(scope="module")
def learned_run(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("translate") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QKV_DATA_DIR", str(data_dir))
        mp.setenv("QKV_CACHE_DIR", str(run.parent / "cache"))
        assert main(["train", "--config", PRESET, "--out", str(run), "--no-sample", *LEARN_ARGS]) == 0
    return run


# ------------------------------------------------------------------------------------------------ helpers
def qkv(capsys, *argv, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """Run `qkv argv...` in-process: (exit code, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def assert_user_error(rc: int, err: str, *needles: str) -> None:
    """Exit code 2, one line on stderr naming the problem, no traceback."""
    assert rc == 2, f"exit code {rc}, stderr: {err}"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line error, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


def pairs(tmp_path: Path, n: int = 60, gz: bool = False) -> tuple[Path, Path]:
    """n synthetic line-aligned "translations" (the target spells the source's numbers in words)."""
    words = "null eins zwei drei vier fünf sechs sieben acht neun".split()
    english = "zero one two three four five six seven eight nine".split()
    src, tgt = [], []
    for i in range(n):
        digits = [int(d) for d in f"{i * 7919 % 10007:05d}"[: 2 + i % 4]]
        src.append(" ".join(words[d] for d in digits) + ".")
        tgt.append(" ".join(english[d] for d in digits) + ".")
    s, t = tmp_path / ("src.de.gz" if gz else "src.de"), tmp_path / "tgt.en"
    data = "".join(x + "\n" for x in src).encode()
    s.write_bytes(gzip.compress(data) if gz else data)
    t.write_text("".join(x + "\n" for x in tgt), encoding="utf-8")
    return s, t


# ------------------------------------------------------------------------------------------------ learning
def test_multi30k_slice_lowers_val_loss_below_threshold(learned_run):
    records = metrics(learned_run)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [250, 500]
    last = evals[-1]
    assert last["val_loss"] < VAL_LOSS_THRESHOLD, f"val loss {last['val_loss']:.4f}"
    assert evals[0]["val_loss"] > last["val_loss"]
    assert last["val_ppl"] == pytest.approx(2.718281828 ** last["val_loss"], rel=1e-6)
    assert last["val_bleu"] > 1.0 and last["val_chrf++"] > 10.0  # it translates something
    assert "train_nll" in last and last["train_nll"] < 4.0  # unsmoothed NLL is logged beside the smoothed loss
    cfg = json.loads((learned_run / "config.json").read_text())
    assert cfg["model_type"] == "seq2seq" and cfg["task"] == "translate"
    assert cfg["model"]["vocab_size"] == 1000 and cfg["train"]["label_smoothing"] == 0.1
    assert cfg["decode"]["beam"] == 4 and cfg["data"]["direction"] == "de-en"


# ------------------------------------------------------------------------------------------------ round trip
def test_translate_from_stdin_and_file(learned_run, capsys, monkeypatch, tmp_path):
    src = "Ein Mann fährt Fahrrad.\n\nZwei Hunde spielen im Schnee.\n"
    rc, out, err = qkv(capsys, "translate", learned_run, "--beam", "2", stdin=src, monkeypatch=monkeypatch)
    assert rc == 0, err
    lines = out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""  # one line per input line, order kept
    assert lines[0] and lines[2] and lines[0] != lines[2]
    assert "man" in lines[0].lower().split()  # measured: "A man in a red shirt is sitting on the grass."
    (tmp_path / "in.txt").write_text(src, encoding="utf-8")
    rc, out2, _ = qkv(capsys, "translate", learned_run, "--beam", "2", "--input", tmp_path / "in.txt")
    assert rc == 0 and out2 == out


def test_translate_empty_stdin_prints_nothing(learned_run, capsys, monkeypatch, tmp_path):
    rc, out, err = qkv(capsys, "translate", learned_run, stdin="", monkeypatch=monkeypatch)
    assert (rc, out, err) == (0, "", "")
    (tmp_path / "empty.txt").write_bytes(b"")
    rc, out, _ = qkv(capsys, "translate", learned_run, "--input", tmp_path / "empty.txt")
    assert (rc, out) == (0, "")


def test_eval_bleu_equals_sacrebleu_on_the_same_files(learned_run, capsys, tmp_path, data_dir):
    hyps_file = tmp_path / "hyps.txt"
    rc, out, err = qkv(capsys, "eval", learned_run, "--data", "multi30k", "--split", "test_2016_flickr",
                       "--beam", "2", "--max-pairs", "120", "--json", "--hyps-out", hyps_file)
    assert rc == 0, err
    res = json.loads(out)
    hyps = hyps_file.read_text(encoding="utf-8").split("\n")[:-1]
    refs = gzip.decompress((data_dir / "multi30k" / "test_2016_flickr.en.gz").read_bytes()).decode().split("\n")[:120]
    assert len(hyps) == 120 == res["sentences"]
    assert res["bleu"]["score"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert res["chrf++"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    assert res["bleu_tok_lc"]["score"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score)
    assert res["bleu"]["score"] > 0.5
    assert res["bleu"]["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "older papers" in res["bleu_tok_lc"]["label"]
    assert res["perplexity"] == pytest.approx(2.718281828 ** res["loss"], rel=1e-6)
    assert 2.0 < res["loss"] < 4.5 and res["beam"] == 2 and res["target_tokens"] > 1000

    # the same numbers in the text report, with signatures and the label
    rc, text, _ = qkv(capsys, "eval", learned_run, "--data", "multi30k", "--split", "test_2016_flickr",
                      "--beam", "2", "--max-pairs", "120")
    assert rc == 0
    assert f"sacreBLEU {res['bleu']['score']:6.2f}  {res['bleu']['signature']}" in text
    assert "chrF++" in text and "nw:2" in text
    assert re.search(r"tokenized \(13a\), lower-cased BLEU \(for comparison with older papers\): [\d.]+", text)
    assert f"loss {res['loss']:.4f}" in text


def test_eval_with_src_ref_files_and_gpt_branch_untouched(learned_run, capsys, tmp_path):
    s, t = tmp_path / "s.txt", tmp_path / "r.txt"
    s.write_text("Ein Hund rennt.\nEine Frau lacht.\n", encoding="utf-8")
    t.write_text("A dog runs.\nA woman laughs.\n", encoding="utf-8")
    rc, out, err = qkv(capsys, "eval", learned_run, "--src", s, "--ref", t, "--beam", "1", "--json")
    assert rc == 0, err
    assert json.loads(out)["sentences"] == 2
    t.write_text("A dog runs.\n", encoding="utf-8")
    rc, _, err = qkv(capsys, "eval", learned_run, "--src", s, "--ref", t)
    assert_user_error(rc, err, "2 lines", "has 1")
    rc, _, err = qkv(capsys, "eval", learned_run, "--src", s)
    assert_user_error(rc, err, "--src and --ref")


def test_attention_plot(learned_run, capsys, tmp_path):
    out = tmp_path / "align.png"
    rc, text, err = qkv(capsys, "attention", learned_run, "--src", "Ein Mann fährt Fahrrad.", "--out", out)
    assert rc == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "translation:" in text and "cross-attention, decoder layer 1, mean over heads" in text
    rc, text, _ = qkv(capsys, "attention", learned_run, "--src", "Ein Hund.", "--layer", "0", "--head", "2",
                      "--out", tmp_path / "h.png")
    assert rc == 0 and "decoder layer 0, head 2" in text
    rc, _, err = qkv(capsys, "attention", learned_run, "--text", "hello", "--out", tmp_path / "x.png")
    assert_user_error(rc, err, "--src")
    rc, _, err = qkv(capsys, "attention", learned_run, "--src", "Hund", "--head", "9", "--out", tmp_path / "x.png")
    assert_user_error(rc, err, "--head 9 is out of range")


def test_other_commands_refuse_a_seq2seq_run(learned_run, capsys):
    rc, _, err = qkv(capsys, "generate", learned_run, "--prompt", "A")
    assert_user_error(rc, err, "seq2seq")


# ------------------------------------------------------------------------------------------------ resume
def test_resume_reproduces_the_continuous_run_exactly(tmp_path, capsys):
    s, t = pairs(tmp_path, gz=True)
    files = ["--data.src", s, "--data.tgt", t]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", straight, "--no-sample", *files, *TINY_ARGS,
                     "--train.max_steps", "12")
    assert rc == 0, err
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", resumed, "--no-sample", *files, *TINY_ARGS,
                     "--train.max_steps", "6")
    assert rc == 0, err
    rc, _, err = qkv(capsys, "train", "--resume", resumed, "--train.max_steps", "12", "--no-sample")
    assert rc == 0, err
    assert "at step 6" in err
    a = {r["step"]: r["loss"] for r in metrics(straight) if "loss" in r}
    b = {r["step"]: r["loss"] for r in metrics(resumed) if "loss" in r}
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert max(abs(a[k] - b[k]) for k in a) <= 1e-6
    assert a[12] < a[1]
    rc, _, err = qkv(capsys, "train", "--resume", resumed, "--train.label_smoothing", "0.2", "--no-sample")
    assert_user_error(rc, err, "train.label_smoothing")


# ------------------------------------------------------------------------------------------------ bad input
def test_mismatched_parallel_files(tmp_path, capsys):
    s, t = pairs(tmp_path, n=10)
    t.write_text("".join(f"line {i}\n" for i in range(7)), encoding="utf-8")
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", tmp_path / "run", "--data.src", s,
                     "--data.tgt", t, *TINY_ARGS)
    assert_user_error(rc, err, "10 lines", "has 7", "src.de", "tgt.en")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_empty_parallel_file(tmp_path, capsys):
    s, t = pairs(tmp_path, n=10)
    s.write_bytes(b"")
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", tmp_path / "run", "--data.src", s,
                     "--data.tgt", t, *TINY_ARGS)
    assert_user_error(rc, err, "src.de", "empty")


def test_unknown_language_pair(tmp_path, capsys):
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", tmp_path / "run", "--data.direction", "de-es",
                     *TINY_ARGS)
    assert_user_error(rc, err, "unknown language pair 'de-es'", "de-en, fr-en, en-de, en-fr")


def test_only_one_file_given(tmp_path, capsys):
    s, _ = pairs(tmp_path, n=10)
    rc, _, err = qkv(capsys, "train", "--config", PRESET, "--out", tmp_path / "run", "--data.src", s, *TINY_ARGS)
    assert_user_error(rc, err, "both src and tgt")


def test_unknown_task(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('task = "summarize"\n', encoding="utf-8")
    rc, _, err = qkv(capsys, "train", "--config", cfg, "--out", tmp_path / "run")
    assert_user_error(rc, err, "unknown task 'summarize'", "lm, translate")
