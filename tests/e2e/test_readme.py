"""The Python examples of the README and of the Python API guide (docs/guides/python-api.md), run as written:
their code blocks execute against small runs of each kind, made here under the run-directory names the pages use
(runs/shakespeare, runs/multi30k-de-en, runs/chat-qa-skills, runs/digits-dit, runs/shapes-caption, runs/fsdd-digits,
runs/qa, runs/sum-code, the scenes/ folder `qkv data scenes` writes and a shorten.py). The guide's training block
runs too, shrunk to a few steps by wrapping `run_task` (its lines and names stay the guide's)."""

import re

import pytest
import torch

from helpers import REPO
from qkv.cli.main import main

pytestmark = pytest.mark.slow

COMMON = ["--train.max_steps", "3", "--train.eval_interval", "3", "--train.schedule_by", "steps",
          "--train.max_minutes", "none", "--train.progress", "false", "--no-sample"]
GPT = ["--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2"]
RUNS = {
    "runs/shakespeare": ["--preset", "shakespeare-char-cpu", *GPT, "--data.max_chars", "30000",
                         "--train.eval_iters", "1"],
    "runs/multi30k-de-en": ["--preset", "multi30k-de-en", "--data.max_train_pairs", "400",
                            "--data.max_val_pairs", "20", "--data.bleu_val_pairs", "0", "--data.vocab_size", "300",
                            "--model.d_model", "32", "--model.d_ff", "64", "--model.n_encoder_layers", "1",
                            "--model.n_decoder_layers", "1", "--train.precision", "fp32"],
    "runs/chat-qa-skills": ["--preset", "chat-qa-skills", *GPT, "--data.train_size", "40",
                            "--data.val_size", "8", "--data.test_size", "4", "--data.em_conversations", "2"],
    "runs/digits-dit": ["--preset", "digits-dit", *GPT[:4], "--sample.eval_samples", "0"],
    "runs/shapes-caption": ["--preset", "shapes-caption", "--model.d_model", "32",
                            "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--data.val_scenes",
                            "4", "--train.batch_size", "4", "--train.precision", "fp32"],
    "runs/fsdd-digits": ["--preset", "fsdd-digits", "--model.d_model", "32", "--model.n_heads", "2",
                         "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--data.val_size", "4",
                         "--train.batch_size", "4", "--train.precision", "fp32"],
    "runs/qa": ["--preset", "qa-stories", "--data.stories_per_family", "4", "--data.eval_per_family", "2",
                "--data.pydoc_repeats", "1", "--model.d_model", "32", "--model.d_ff", "64", "--model.n_heads", "2",
                "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1", "--train.batch_size", "8",
                "--train.eval_pairs", "0", "--train.precision", "fp32"],
    "runs/sum-code": ["--preset", "summarize-code", "--data.max_train_pairs", "60", "--data.max_val_pairs", "6",
                      "--data.vocab_size", "300", "--data.batch_tokens", "2000", "--data.rouge_val_pairs", "0",
                      "--model.d_model", "32", "--model.d_ff", "64", "--model.n_heads", "2", "--model.max_seq_len",
                      "128", "--model.n_encoder_layers", "1", "--model.n_decoder_layers", "1",
                      "--train.precision", "fp32"],
}


GUIDE = REPO / "docs" / "guides" / "python-api.md"


def python_blocks(page=GUIDE) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)


def readme_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Python API"):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "README's Python API section holds one block (the guide holds the rest)"
    return blocks[0]


@pytest.fixture(scope="module")
def runs_here(tmp_path_factory, shared_data):
    folder = tmp_path_factory.mktemp("readme")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QKV_DATA_DIR", str(shared_data))
        mp.chdir(folder)
        for run, args in RUNS.items():
            assert main(["train", *map(str, args), *COMMON, "--out", run]) == 0, run
        assert main(["data", "scenes", "--out", "scenes", "--n", "3"]) == 0
        (folder / "shorten.py").write_text("def shorten(text, width):\n    return text[:width]\n", encoding="utf-8")
    return folder


def test_the_pages_have_the_blocks_this_test_runs():
    blocks = python_blocks()
    assert len(blocks) == 4 and "qkv.load_run" in blocks[0] and "create_app" in blocks[1] and "run_task" in blocks[2]
    assert len(readme_block().strip().splitlines()) <= 12  # the front page's example stays short


def test_the_readme_example_runs(runs_here, monkeypatch, capsys):
    monkeypatch.chdir(runs_here)
    scope: dict = {}
    exec(compile(readme_block(), "README.md", "exec"), scope)  # noqa: S102 - the README's own code
    assert scope["images"].shape == (16, 1, 8, 8) and scope["images"].abs().max() <= 1.0
    assert len(scope["english"]) == 1 and scope["n_truncated"] == 0
    assert "bits_per_char" in capsys.readouterr().out


def test_the_inference_example_runs(runs_here, monkeypatch, capsys):
    monkeypatch.chdir(runs_here)
    scope: dict = {}
    exec(compile(python_blocks()[0], str(GUIDE), "exec"), scope)  # noqa: S102 - the guide's own code
    assert scope["images"].shape == (16, 1, 8, 8) and scope["images"].abs().max() <= 1.0
    assert scope["amap"].weights.shape == (12, 12) and len(scope["english"]) == 1
    assert len(scope["captions"]) == 2 and scope["where"].weights.shape[1] == 64  # 64 patches per word
    assert len(scope["answers"]) == 1 and scope["answers"][0] in "Mary went to the garden."  # a span of it
    assert len(scope["summaries"]) == 1 and scope["notes"] == [""]
    out = capsys.readouterr().out
    assert "bits_per_char" in out and "translation:" in out


def test_the_serving_example_runs(runs_here, monkeypatch, capsys):
    from helpers import rate_campaign, toy_campaign
    from qkv.humaneval import Store

    monkeypatch.chdir(runs_here)
    with Store("human-eval.db", create=True) as store:
        if "demo" not in store.campaign_names():
            toy_campaign(store, "demo", n_items=6, raters=2)
            rate_campaign(store, "demo", lambda rater, system, item, bad: (70, 60) if system == "a" else (50, 40))
    scope: dict = {}
    exec(compile(python_blocks()[1], str(GUIDE), "exec"), scope)  # noqa: S102
    paths = set(scope["app"].openapi()["paths"])
    assert {"/api/runs/{name}/generate", "/api/rate/{token}"} <= paths
    assert sorted(scope["app"].state.runs) == ["multi30k-de-en", "shakespeare"]
    assert scope["report"]["criteria"]["accuracy"]["systems"]["a"]["mean"] == 70
    assert "campaign demo" in capsys.readouterr().out


def test_the_training_example_runs(runs_here, monkeypatch, tmp_path):
    import qkv.tasks

    real = qkv.tasks.run_task
    calls = []

    def small(cfg, run_dir, **kw):  # the guide's call, shrunk: a few steps on a slice, in a fresh directory
        cfg.train.max_steps, cfg.train.eval_interval, cfg.train.progress = 2, 2, False
        cfg.data.max_chars, cfg.model.n_layers = 20000, 1
        calls.append(run_dir)
        return real(cfg, tmp_path / run_dir, **kw)

    monkeypatch.setattr(qkv.tasks, "run_task", small)
    scope: dict = {}
    exec(compile(python_blocks()[2], str(GUIDE), "exec"), scope)  # noqa: S102
    assert calls == ["runs/shakespeare"] and scope["trained"].result.step == 2


def test_the_building_blocks_example_runs():
    scope: dict = {}
    exec(compile(python_blocks()[3], str(GUIDE), "exec"), scope)  # noqa: S102
    assert scope["weights"].shape == (2, 4, 5, 5) and torch.isfinite(scope["loss"])
