"""Training presets shipped with qkv: one TOML file per recipe, ``qkv train --preset NAME``.

    qkv presets                          # each preset and what it trains, one line each
    qkv presets demo-pystdlib > my.toml  # a preset's file, to start a config of your own (--config my.toml)

A preset is a run config like any other (`qkv.config`): ``task = "..."`` picks the task, the sections set its
options, and any key can be overridden on the command line. Its first line is a one-line ``# description``.
These are not the model sizes of ``qkv params --preset`` (GPT-2, GPT-3: `qkv.models.presets`).

    >>> load_preset("demo-pystdlib")["task"]
    'lm'
"""

from __future__ import annotations

from pathlib import Path

from qkv.config import load_toml
from qkv.errors import QKVError

PRESET_DIR = Path(__file__).parent  # shipped as package data: the *.toml files beside this module


def preset_names() -> list[str]:
    """Every preset's name (its file name without .toml), sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def preset_path(name: str) -> Path:
    """The file of preset `name`, or a one-line QKVError listing the presets."""
    path = PRESET_DIR / f"{name}.toml"
    if "/" in name or "\\" in name or not path.is_file():
        raise QKVError(f"unknown preset {name!r}; presets: {', '.join(preset_names())} (qkv presets describes them)")
    return path


def load_preset(name: str) -> dict:
    """Preset `name` as a dict (the TOML file's tables), ready for `qkv.config.from_dict`."""
    return load_toml(preset_path(name))


def describe(name: str) -> str:
    """The preset's one-line description: the first line of its file, without the ``#``."""
    first = preset_path(name).read_text(encoding="utf-8").splitlines()[:1]
    return first[0].lstrip("#").strip() if first and first[0].startswith("#") else ""
