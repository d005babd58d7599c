"""The training presets shipped inside the package (`qkv.presets`): every one loads and validates as its task's
run config and describes itself in one line; ``qkv presets`` lists them; ``qkv train --preset`` trains one, and
mixing it up with --config, or with the model sizes of ``qkv params --preset``, is a one-line error."""

from pathlib import Path

import pytest

import qkv
from helpers import assert_user_error
from helpers import qkv as run_qkv
from qkv.config import from_dict
from qkv.presets import PRESET_DIR, describe, load_preset, preset_names, preset_path
from qkv.tasks import get_task

NAMES = preset_names()


def test_the_presets_are_the_packages_toml_files():
    assert PRESET_DIR == Path(qkv.__file__).parent / "presets"
    assert NAMES == sorted(p.stem for p in PRESET_DIR.glob("*.toml"))
    assert {"demo-pystdlib", "shakespeare-char-cpu", "multi30k-de-en", "chat-qa-skills", "digits-dit",
            "shapes-caption"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_is_a_valid_run_config(name):
    raw = load_preset(name)
    cfg = from_dict(get_task(raw.get("task", "lm")).config_class, raw)
    assert cfg.task == raw.get("task", "lm")


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_describes_itself_in_its_first_line(name):
    text = preset_path(name).read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first.startswith("# ") and describe(name) == first[2:].strip()
    assert 20 <= len(describe(name)) <= 112, describe(name)
    assert "configs/" not in text  # the commands in its comments use --preset


def test_qkv_presets_lists_each_preset_on_one_line(capsys):
    rc, out, err = run_qkv(capsys, "presets")
    assert rc == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    for line, name in zip(lines, NAMES, strict=True):
        assert line.endswith(describe(name))


def test_qkv_presets_name_prints_the_file(capsys):
    rc, out, _ = run_qkv(capsys, "presets", "multi30k-de-en")
    assert rc == 0 and out == preset_path("multi30k-de-en").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["presets", "nope"], ["unknown preset 'nope'", "demo-pystdlib", "shapes-text-dit"]),
        (["train", "--preset", "shakespear"], ["unknown preset 'shakespear'", "shakespeare-char-cpu"]),
        (["train", "--preset", "../pyproject"], ["unknown preset '../pyproject'"]),
        (["train", "--preset", "demo-pystdlib", "--config", "my.toml"], ["--preset NAME or --config FILE, not both"]),
        (["train", "--config", "configs/demo-pystdlib.toml"], ["configs/demo-pystdlib.toml", "--preset demo-pystdlib"]),
        (["train", "--config", "mine.toml"], ["config file not found: mine.toml"]),
        (["train"], ["--preset NAME", "--config FILE"]),
        (["params", "--preset", "demo-pystdlib"], ["unknown model size 'demo-pystdlib'", "gpt2", "qkv train --preset"]),
    ],
)
def test_preset_mistakes_are_one_line(argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = run_qkv(capsys, *argv)
    assert_user_error(rc, err, *needles)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_train_preset_trains_into_runs_name(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_qkv(capsys, "train", "--preset", "demo-pystdlib", "--no-sample", "--data.max_chars", "20000",
                           "--data.val_max_tokens", "200", "--train.max_steps", "2", "--train.eval_interval", "2",
                           "--train.eval_iters", "1", "--model.n_layers", "1", "--train.progress", "false")
    assert rc == 0, err
    run = Path("runs") / "demo-pystdlib"
    assert (tmp_path / run / "config.json").is_file() and (tmp_path / run / "model.safetensors").is_file()
    assert f"run dir: {run}" in out
