"""`run_task`'s shared duties, for every task: the per-process thread split under torchrun, the refusal to
overwrite a trained run, and the resume check — the same one-line error from Python as from the CLI."""

import pytest
import torch

import qkv.tasks.runner as runner
from helpers import write_text
from qkv.cli.main import main
from qkv.errors import QKVError
from qkv.tasks import TASKS, get_task, run_task
from qkv.tasks.runner import saved_run_config
from qkv.training import distributed
from qkv.training.distributed import DistInfo


@pytest.mark.parametrize("task", list(TASKS))
@pytest.mark.parametrize(("threads", "expected"), [(None, 2), (3, 3)])
def test_each_process_gets_its_share_of_the_cores(task, threads, expected, monkeypatch, tmp_path):
    """Rank 0 of 4 processes on a 8-thread machine trains with 2 threads (unless train.threads says), and the
    main process says so; the task's own hooks are not reached (train_task is stubbed)."""
    monkeypatch.setattr(distributed, "setup", lambda device, parallel="ddp": (DistInfo(0, 4, 0), torch.device("cpu")))
    monkeypatch.setattr(distributed, "teardown", lambda info: None)
    seen = {}
    monkeypatch.setattr(runner, "train_task", lambda t, log=None: seen.setdefault("threads", torch.get_num_threads()))
    torch.set_num_threads(8)
    cfg = get_task(task).config_class()
    if threads is not None:
        cfg.train.threads = threads
        torch.set_num_threads(threads)  # what the Trainer would set; the split must leave it alone
    logs = []
    run_task(cfg, tmp_path / "run", log=logs.append)
    assert seen["threads"] == expected
    assert (f"torchrun: 4 processes, {expected} torch thread(s) each" in logs) == (threads is None)


def test_one_process_keeps_torchs_thread_count(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "train_task", lambda t, log=None: torch.get_num_threads())
    torch.set_num_threads(2)
    assert run_task(get_task("lm").config_class(), tmp_path / "run") == 2


TINY = ["--data.max_chars", "20000", "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2",
        "--model.max_seq_len", "32", "--train.max_steps", "4", "--train.eval_interval", "2", "--train.eval_iters", "1",
        "--train.progress", "false"]


@pytest.fixture
def tiny_run(tmp_path, capsys):
    """A 4-step run of the CPU Shakespeare preset on made-up text (any text will do here)."""
    run = tmp_path / "run"
    text = write_text(tmp_path / "text.txt", 20_000)
    assert main(["train", "--preset", "shakespeare-char-cpu", "--out", str(run), "--data", str(text), "--no-sample",
                 *TINY]) == 0
    capsys.readouterr()
    return run


def test_resuming_with_a_changed_config_is_refused_from_python_as_from_the_cli(tiny_run, capsys):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_run.iterdir())
    changed = saved_run_config(tiny_run, {"train": {"lr": 0.5}})
    with pytest.raises(QKVError) as python_error:
        run_task(changed, tiny_run, resume=True)
    assert main(["train", "--resume", str(tiny_run), "--train.lr", "0.5"]) == 2
    cli_error = capsys.readouterr().err.strip()
    assert cli_error == f"qkv train: error: {python_error.value}"
    assert "train.lr is 0.5 but the run was trained with 0.001" in cli_error
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tiny_run.iterdir()) == before  # nothing touched


def test_resuming_with_only_a_longer_budget_is_allowed(tiny_run):
    longer = saved_run_config(tiny_run, {"train": {"max_steps": 6}})
    trained = run_task(longer, tiny_run, resume=True)
    assert trained.result.step == 6


def test_a_trained_run_is_never_overwritten(tiny_run):
    with pytest.raises(QKVError, match="already holds a trained model; resume it"):
        run_task(saved_run_config(tiny_run), tiny_run)


def test_init_from_is_only_for_the_tasks_that_take_it(tiny_run, tmp_path):
    assert {name for name, task in TASKS.items() if task.supports_init_from} == {"lm", "chat", "translate", "code",
                                                                                 "code-gpt"}
    with pytest.raises(QKVError, match="not supported for the diffusion task"):
        run_task(get_task("diffusion").config_class(), tmp_path / "t", init_from=tiny_run)


def _tiny_configs(folder) -> dict:
    """Tiny run configs of lm, translate and autoencoder (the tasks that size their model in three different
    ways: to a tokenizer, to two tokenizers and a pad id, to images), on data made here."""
    from qkv.config import from_dict
    from serve_fixtures import number_pairs

    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"line {i} of a tiny corpus\n" for i in range(300)), encoding="utf-8")
    src, tgt = number_pairs(folder)
    small = {"max_steps": 2, "batch_size": 4, "eval_interval": 2, "log_interval": 1, "progress": False,
             "threads": 1, "warmup_steps": 1}
    return {
        "lm": from_dict(get_task("lm").config_class, {
            "data": {"source": str(corpus), "tokenizer": "char"}, "train": small | {"eval_iters": 1},
            "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 16}}),
        "translate": from_dict(get_task("translate").config_class, {
            "data": {"src": str(src), "tgt": str(tgt), "vocab_size": 300, "bleu_val_pairs": 0},
            "train": small | {"schedule_by": "steps", "max_minutes": None},
            "model": {"d_model": 16, "d_ff": 32, "n_encoder_layers": 1, "n_decoder_layers": 1, "n_heads": 2,
                      "max_seq_len": 32}}),
        "autoencoder": from_dict(get_task("autoencoder").config_class, {
            "data": {"source": "digits"}, "train": small, "model": {"width": 8, "downsample": 1}}),
    }


@pytest.mark.parametrize("task", ["lm", "translate", "autoencoder"])
def test_the_callers_config_is_never_changed_and_the_resolved_one_is_saved(task, tmp_path):
    """run_task sizes the model to the data and tokenizers in a new config (`Trained.config`), which is what
    config.json holds; the config it was given comes back exactly as it was."""
    import copy

    from qkv.config import to_dict
    from qkv.models.io import model_config_dict
    from qkv.runs import read_config

    cfg = _tiny_configs(tmp_path)[task]
    asked = copy.deepcopy(cfg)
    trained = run_task(cfg, tmp_path / "run", log=lambda msg: None)
    assert cfg == asked
    fitted = get_task(task).fitted_model_fields
    assert any(getattr(trained.config.model, f) != getattr(asked.model, f) for f in fitted)  # sized to the data
    saved = read_config(tmp_path / "run")
    assert model_config_dict(saved["model_type"], saved["model"]) == to_dict(trained.config.model)
    assert trained.model.config == trained.config.model
