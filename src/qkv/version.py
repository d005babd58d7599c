"""qkv's version: ``qkv --version``, ``qkv.__version__``.

Run from a source checkout (``src/qkv`` beside a ``pyproject.toml`` of project "qkv": an editable install, or
``PYTHONPATH=src``), it is that pyproject's version, so the checkout being run is the one reported even when
another qkv is installed; otherwise the installed package's metadata.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from qkv.config import load_toml
from qkv.errors import QKVError


def _checkout_version() -> str | None:
    here = Path(__file__).resolve()
    root = here.parents[2]
    if here.parent.parent.name != "src" or not (root / "pyproject.toml").is_file():
        return None
    try:
        project = load_toml(root / "pyproject.toml").get("project", {})
    except QKVError:
        return None
    return project.get("version") if project.get("name") == "qkv" else None


def version() -> str:
    """"X.Y.Z" (from a source checkout's pyproject.toml, else the installed metadata; "unknown" without either)."""
    found = _checkout_version()
    if found:
        return found
    try:
        return metadata.version("qkv")
    except metadata.PackageNotFoundError:
        return "unknown"
