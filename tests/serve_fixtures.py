"""Tiny runs of every task, and a server on loopback, shared by the server's API, load and browser tests.

`make_runs(folder)` trains, in a few seconds on one thread:
- ``lm``: a char GPT that learned one line by heart, ``<img src=x onerror=alert(1)>`` — so whatever it
  generates contains markup, which the pages must show as text and never run;
- ``chat``: the six question/answer pairs of tests/chat_fixtures.py, as tests/e2e/test_chat.py trains them;
- ``translate``: a 1-layer encoder–decoder on synthetic number pairs (weights to decode with);
- ``digits``: a 1-layer class-conditional DiT (a few steps: images to sample, not good ones);
- and, when asked for (the `more_runs` fixture): ``caption`` (a 1-layer captioner of 16×16 one-object scenes),
  ``shapes`` (a 1-layer text-conditioned DiT) and ``autoencoder`` — 4 steps each, weights to read, not good ones;
  ``speech``: a 2-layer transcriber that learned FSDD's "zero", "one" and "two" of one speaker (30 clips, 240
  steps, ~15 s; tests/speech_fixtures.py), so it transcribes them right.

`make_pipeline(folder, stages)` lays tiny runs out as a chat pipeline's folder: a run directory per stage, the
tokenizer folder (no run), stages not trained yet (a config.json and no weights), and pipeline.json.

`LiveServer` runs `qkv.server` with uvicorn in a thread on a free loopback port (what the browser tests drive;
the kill -9 test runs `qkv serve` in a subprocess instead).
"""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

from chat_fixtures import write_pairs, write_toml
from helpers import preset
from qkv.cli.main import main

REPO = Path(__file__).resolve().parents[1]
XSS = "<img src=x onerror=alert(1)>"

LM_TOML = """\
task = "lm"

[data]
source = "{corpus}"
tokenizer = "char"
val_fraction = 0.1

[model]
max_seq_len = 48
d_model = 48
n_layers = 2
n_heads = 2
bias = false

[train]
max_steps = 150
batch_size = 8
lr = 5e-3
min_lr = 5e-4
warmup_steps = 5
eval_interval = 150
eval_iters = 2
log_interval = 50
seed = 1337
threads = 1
progress = false

[sample]
prompt = "<"
temperature = 0.0
max_new_tokens = 40
"""

TRANSLATE_ARGS = [
    "--data.vocab_size", "300", "--data.batch_tokens", "200", "--data.bleu_val_pairs", "0",
    "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "2",
    "--model.n_heads", "2", "--model.max_seq_len", "48", "--model.dropout", "0.0",
    "--train.schedule_by", "steps", "--train.max_minutes", "none", "--train.warmup_steps", "2",
    "--train.max_steps", "30", "--train.decay_steps", "30", "--train.eval_interval", "30", "--train.log_interval", "10",
    "--train.threads", "1", "--train.progress", "false", "--train.precision", "fp32", "--no-sample",
]

DIGITS_ARGS = [
    "--train.threads", "1", "--train.progress", "false", "--train.max_minutes", "none", "--train.schedule_by", "steps",
    "--train.compile", "false", "--no-sample", "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2",
    "--train.batch_size", "16", "--train.max_steps", "4", "--train.warmup_steps", "2", "--train.eval_interval", "4",
    "--train.log_interval", "2", "--sample.eval_samples", "0", "--diffusion.n_timesteps", "100",
]


SMALL = ["--train.threads", "1", "--train.progress", "false", "--train.max_minutes", "none", "--train.schedule_by",
         "steps", "--train.precision", "fp32", "--no-sample", "--train.max_steps", "4", "--train.warmup_steps", "2",
         "--train.eval_interval", "4", "--train.log_interval", "2"]
CAPTION_ARGS = [*SMALL, "--data.counts", "[1]", "--data.holdout_counts", "[]", "--data.image_size", "16",
                "--data.val_scenes", "6", "--data.test_scenes", "4", "--model.patch_size", "8", "--model.d_model", "32",
                "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--model.n_heads", "2",
                "--model.max_seq_len", "40", "--train.batch_size", "8", "--train.decay_steps", "4"]
SHAPES_ARGS = [*SMALL, "--train.compile", "false", "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads",
               "2", "--model.text_d_model", "32", "--model.text_n_layers", "1", "--model.text_n_heads", "2",
               "--train.batch_size", "16", "--sample.eval_samples", "0", "--diffusion.n_timesteps", "100"]
AUTOENCODER_ARGS = [*SMALL, "--model.width", "8", "--model.downsample", "1", "--train.batch_size", "16"]
QA_ARGS = [*SMALL, "--data.stories_per_family", "4", "--data.eval_per_family", "2", "--data.pydoc_repeats", "1",
           "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers",
           "1", "--model.n_heads", "2", "--train.batch_size", "8", "--train.decay_steps", "4",
           "--train.eval_pairs", "0"]
SUMMARIZE_ARGS = [*SMALL, "--data.max_train_pairs", "60", "--data.max_val_pairs", "6", "--data.vocab_size", "300",
                  "--data.batch_tokens", "2000", "--data.rouge_val_pairs", "0", "--model.d_model", "32", "--model.d_ff",
                  "64", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--model.n_heads", "2",
                  "--model.max_seq_len", "128", "--train.decay_steps", "4"]

CODE_ARGS = [*SMALL, "--data.train_programs", "200", "--data.eval_programs", "8", "--data.vocab_size", "300",
             "--data.pass_val_problems", "0", "--train.batch_size", "8", "--train.decay_steps", "4",
             "--train.optimizer", "adamw", "--train.lr", "1e-3"]
CODE_MODEL = ["--model.d_model", "32", "--model.d_ff", "64", "--model.n_heads", "2"]
CODE_ENCDEC_ARGS = [*CODE_ARGS, *CODE_MODEL, "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1"]
CODE_GPT_ARGS = [*CODE_ARGS, *CODE_MODEL, "--model.n_layers", "2"]


def number_pairs(folder: Path, n: int = 80) -> tuple[Path, Path]:
    """n line-aligned synthetic "translations": German number words -> English ones."""
    de = "null eins zwei drei vier fünf sechs sieben acht neun".split()
    en = "zero one two three four five six seven eight nine".split()
    src, tgt = [], []
    for i in range(n):
        digits = [int(c) for c in str(1000 + 7 * i)[1:]]
        src.append("die " + " ".join(de[d] for d in digits) + " .")
        tgt.append("the " + " ".join(en[d] for d in digits) + " .")
    s, t = folder / "train.de", folder / "train.en"
    s.write_text("\n".join(src) + "\n", encoding="utf-8")
    t.write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return s, t


def make_runs(folder: Path, tasks: tuple[str, ...] = ("lm", "chat", "translate", "digits")) -> dict[str, Path]:
    """Train the tiny runs of `tasks` under `folder` (see the module docstring); name -> run directory."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = {}
    if "lm" in tasks:
        corpus = folder / "xss.txt"
        corpus.write_text("".join(f"{XSS} {i % 10}\n" for i in range(400)), encoding="utf-8")
        toml = folder / "lm.toml"
        toml.write_text(LM_TOML.format(corpus=corpus), encoding="utf-8")
        runs["lm"] = _train(["--config", str(toml)], folder / "lm")
    if "chat" in tasks:
        toml = write_toml(folder, write_pairs(folder))
        runs["chat"] = _train(["--config", str(toml), "--no-sample"], folder / "chat")
    if "translate" in tasks:
        s, t = number_pairs(folder)
        runs["translate"] = _train(["--config", preset("multi30k-de-en"), "--data.src", str(s),
                                    "--data.tgt", str(t), *TRANSLATE_ARGS], folder / "translate")
    if "digits" in tasks:
        runs["digits"] = _train(["--config", preset("digits-dit"), *DIGITS_ARGS],
                                folder / "digits")
    if "caption" in tasks:
        runs["caption"] = _train(["--config", preset("shapes-caption"), *CAPTION_ARGS], folder / "caption")
    if "shapes" in tasks:
        runs["shapes"] = _train(["--config", preset("shapes-text-dit"), *SHAPES_ARGS], folder / "shapes")
    if "autoencoder" in tasks:
        runs["autoencoder"] = _train(["--config", preset("shapes-autoencoder"), *AUTOENCODER_ARGS],
                                     folder / "autoencoder")
    if "qa" in tasks:
        runs["qa"] = _train(["--config", preset("qa-stories"), *QA_ARGS], folder / "qa")
    if "summarize" in tasks:
        runs["summarize"] = _train(["--config", preset("summarize-code"), *SUMMARIZE_ARGS], folder / "summarize")
    if "code" in tasks:
        runs["code"] = _train(["--config", preset("code-encdec"), *CODE_ENCDEC_ARGS], folder / "code")
    if "code-gpt" in tasks:
        runs["code-gpt"] = _train(["--config", preset("code-gpt"), *CODE_GPT_ARGS], folder / "code-gpt")
    if "speech" in tasks:
        from speech_fixtures import SPEECH_ARGS, digit_clips, digit_folder

        data = digit_folder(folder / "speech-data", digit_clips())
        runs["speech"] = _train(["--config", preset("fsdd-digits"), "--data.source", str(data), *SPEECH_ARGS],
                                folder / "speech")
    return runs


def _train(args: list[str], out: Path) -> Path:
    rc = main(["train", "--out", str(out), *args])
    assert rc == 0, f"training {out.name} failed"
    return out


def make_pipeline(folder: Path, stages: dict[str, Path | None], final: str | None = "rl") -> Path:
    """A chat pipeline's folder as the pipeline writes it: ``tokenizer/`` (tokenizer.json and meta.json, no run),
    then each of `stages` (name -> the run directory copied there, or None: a stage still training, with only its
    config.json), and pipeline.json listing them all in order, with `final`."""
    folder.mkdir(parents=True)
    tok = folder / "tokenizer"
    tok.mkdir()
    first = next(r for r in stages.values() if r is not None)
    shutil.copy(first / "tokenizer.json", tok / "tokenizer.json")
    (tok / "meta.json").write_text('{"vocab_size": 0}', encoding="utf-8")
    for name, run in stages.items():
        if run is None:
            (folder / name).mkdir()
            shutil.copy(first / "config.json", folder / name / "config.json")
        else:
            shutil.copytree(run, folder / name, ignore=shutil.ignore_patterns("optimizer.safetensors", "*.png"))
    listed = [{"name": "tokenizer", "dir": "tokenizer"}] + [{"name": n, "dir": n} for n in stages]
    (folder / "pipeline.json").write_text(json.dumps({"stages": listed, "final": final}), encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``with LiveServer(app) as url:`` — the app served by uvicorn on 127.0.0.1 in a daemon thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
