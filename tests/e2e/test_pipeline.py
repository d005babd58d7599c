"""The chat pipeline end to end with every stage a few steps (`qkv pipeline`): tokenizer -> base -> SFT -> RL ->
report, each stage an ordinary run the next reads; a pipeline killed in the middle of its base stage resumes at
that stage and from its last checkpoint; a finished pipeline skips its stages; bad configs are one-line errors
before anything is written. What the tiny models learn is not asserted (a few steps learn nothing): the
wiring is."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkv.cli.main import main
from qkv.runs import load_json

TINY = """
out = "{out}"
[tokenizer]
vocab_size = 300
max_chars = 120000
[base]
model = {{d_model = 32, n_layers = 1, n_heads = 2, max_seq_len = 96}}
data = {{val_max_tokens = 2000}}
train = {{max_steps = {base_steps}, batch_size = 4, eval_interval = 20, eval_iters = 1, progress = false, threads = 1}}
[sft.data]
{data}[sft.train]
max_steps = 6
batch_size = 4
eval_interval = 6
progress = false
threads = 1
[rl.data]
{data}[rl.train]
objective = "reinforce"
max_steps = 2
batch_size = 2
eval_interval = 2
progress = false
threads = 1
lr = 1e-5
[rl.rl]
samples_per_prompt = 2
max_new_tokens = 12
[report]
max_questions = 6
samples = 1
"""
DATA = """source = "skills"
train_size = 120
val_size = 12
test_size = 12
values_size = 12
em_conversations = 6
too_long = "drop"
rl_size = 24
"""


@pytest.fixture(autouse=True)
def tiny_docs(tmp_path, monkeypatch):
    """Three made-up documentation files stand in for python3.11-doc (QKV_PYDOC_SOURCES): the pipeline's wiring
    does not need the real 12 MB, and a machine without the package runs this test too."""
    folder = tmp_path / "_sources" / "library"
    folder.mkdir(parents=True)
    for name in ("json", "csv", "zlib"):
        (folder / f"{name}.rst.txt").write_text(f":mod:`{name}` --- a module\n=========\n\n"
                                                + f"The ``{name}`` module does *things* with data.\n" * 60,
                                                encoding="utf-8")
    monkeypatch.setenv("QKV_PYDOC_SOURCES", str(folder.parent))


def write_config(tmp_path: Path, base_steps: int = 20) -> tuple[Path, Path]:
    out = tmp_path / "pipe"
    cfg = tmp_path / "pipe.toml"
    cfg.write_text(TINY.format(out=out, base_steps=base_steps, data=DATA), encoding="utf-8")
    return cfg, out


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if '"step"' in line]


def test_killed_pipeline_resumes_at_its_stage_and_step(tmp_path, shared_data, capsys):
    cfg, out = write_config(tmp_path, base_steps=600)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "qkv", "pipeline", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    state_file = out / "base" / "trainer_state.json"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists() and load_json(state_file)["step"] >= 20:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = load_json(state_file)["step"]
    assert 20 <= killed_at < 600
    state = load_json(out / "pipeline.json")
    assert [(s["name"], s["status"]) for s in state["stages"]] == [
        ("tokenizer", "done"), ("base", "running"), ("sft", "pending"), ("rl", "pending")]

    assert main(["pipeline", "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "[1/4] tokenizer: done earlier" in printed
    assert "[2/4] base: resuming" in printed and f"resuming {out / 'base'} from its last checkpoint" in printed
    assert "[4/4] rl: done in" in printed and "pipeline done in" in printed
    state = load_json(out / "pipeline.json")
    assert all(s["status"] == "done" for s in state["stages"]) and state["final"] == "rl"
    assert [s["attempts"] for s in state["stages"]] == [1, 2, 1, 1]
    steps = _steps(out / "base")
    assert steps[-1] == 600 and load_json(state_file)["step"] == 600
    resumed = steps[steps.index(killed_at) + 1:] if killed_at in steps else steps
    assert resumed and min(resumed) > killed_at - 20  # no step before the checkpoint is trained twice... after it
    # every stage is an ordinary run that reads the one before
    assert load_json(out / "sft" / "config.json")["data_meta"]["init_from"] == str(out / "base")
    assert load_json(out / "rl" / "config.json")["train"]["objective"] == "reinforce"
    rl_evals = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()
                if "train_reward" in line]
    assert rl_evals and 0 <= rl_evals[-1]["train_reward"] <= 1 and "train_useful_prompts" in rl_evals[-1]
    report = (out / "report.md").read_text()
    for part in ("Machine", "Time per stage", "Bloat", "Metrics by stage", "Samples at each stage",
                 "validation bits per byte", "held-out phrasings: arithmetic", "held-out values: mean over skills",
                 "centred mean", "| base | SFT | RL |"):
        assert part in report, part
    assert (out / "report.html").read_text().startswith("<!doctype html>")

    # run again: every stage is done, the report is written again
    assert main(["pipeline", "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("done earlier") == 4


@pytest.mark.parametrize("section, message", [
    ("[base]\ntrain = {bogus = 1}", "bogus"),
    ("[base]\ntrain = {lr = 1e-3}\n[rl]\ntrain = {objective = 'reinforce'}", r"\[rl\] fine-tunes"),
    ("[sft]\ndata = {source = 'skills'}", r"needs a \[base\] section"),
    ("[base]\ntask = 'chat'", "is a lm run"),
    ("[base]\ntrain = {lr = 1e-3}\n[sft]\ndata = {source = 'skills', skills = ['add']}", "unknown skill"),
    ("[tokenizer]\nvocab_size = 100\n[base]\ntrain = {lr = 1e-3}", "at least 260"),
])
def test_bad_configs_are_one_line_errors(tmp_path, capsys, section, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(f'out = "{tmp_path / "never"}"\n' + section, encoding="utf-8")
    assert main(["pipeline", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert re.search(message, err), err
    assert not (tmp_path / "never").exists()


def test_missing_config(tmp_path, capsys):
    assert main(["pipeline", "--config", str(tmp_path / "none.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err
