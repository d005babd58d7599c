"""Explain mode's tests read the session's tiny runs (tests/serve_fixtures.py: lm, chat, translate, digits),
loaded once per module."""

import pytest

from qkv.tasks import load_run


@pytest.fixture(scope="module")
def runs(tiny_runs) -> dict:
    """name -> loaded run (`qkv.load_run`) of every tiny run."""
    return {name: load_run(path) for name, path in tiny_runs.items()}
