"""``qkv --version`` and ``qkv.__version__``: this checkout's pyproject version when run from source, the installed
metadata otherwise (the wheel smoke test, .ci/wheel-smoke, runs the installed case for real)."""

import sys
from importlib import metadata

import qkv
from helpers import REPO
from helpers import qkv as run_qkv
from qkv import version as version_module

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]


def test_qkv_version_prints_the_checkouts_version(capsys):
    rc, out, err = run_qkv(capsys, "--version")
    assert rc == 0 and err == ""
    assert out == f"qkv {PYPROJECT_VERSION}\n"
    assert PYPROJECT_VERSION.count(".") == 2 and all(part.isdigit() for part in PYPROJECT_VERSION.split("."))


def test_the_package_attribute_agrees():
    assert qkv.__version__ == PYPROJECT_VERSION


def test_outside_a_checkout_the_installed_metadata_answers(monkeypatch):
    monkeypatch.setattr(version_module, "_checkout_version", lambda: None)
    monkeypatch.setattr(version_module.metadata, "version", lambda name: {"qkv": "9.8.7"}[name])
    assert version_module.version() == "9.8.7"

    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(version_module.metadata, "version", not_installed)
    assert version_module.version() == "unknown"
