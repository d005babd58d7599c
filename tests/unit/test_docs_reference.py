"""docs/reference/ is generated from the code (scripts/gen_reference.py): the committed pages must be what the
script writes now, so a new flag, config key, default or `# comment` shows up in the docs in the same commit."""

import importlib.util

from helpers import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", REPO / "scripts" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_pages_are_what_the_script_writes():
    gen = _generator()
    stale = gen.stale(gen.pages())
    assert not stale, (
        "docs/reference/ is out of date with the code: "
        + ", ".join(str(p.relative_to(REPO)) for p in stale)
        + f"\nregenerate with: {gen.REGENERATE}   (then commit docs/reference/)"
    )


def test_every_command_and_every_task_has_a_page():
    from qkv.cli.main import COMMANDS
    from qkv.tasks import TASKS

    gen = _generator()
    pages = gen.pages()
    cli = pages[gen.REFERENCE / "cli.md"]
    assert all(f"## `qkv {name}`" in cli for name in COMMANDS)
    assert {p.stem for p in pages if p.parent.name == "config"} == {*TASKS, "index"}
    translate = pages[gen.REFERENCE / "config" / "translate.md"]
    # a key, its type, the task's own default and the comment beside the field in the source
    assert "| `label_smoothing` | float | `0.1` |" in translate
    assert "| `max_steps` | int | `2000` | optimizer steps |" in pages[gen.REFERENCE / "config" / "lm.md"]


def test_field_comments_come_from_the_line_or_the_lines_above():
    from qkv.training.config import TrainConfig

    gen = _generator()
    assert gen.field_comment(TrainConfig, "lr") == "peak learning rate, reached after warmup"
    assert gen.field_comment(TrainConfig, "optimizer").startswith('"muon": torch.optim.Muon')
    assert gen.field_comment(TrainConfig, "beta1") == ""
