"""This Python's standard library as data (pydoc-qa, the pydoc passages, the summaries): its modules, by name."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from types import ModuleType


def stdlib_modules(names: Iterable[str]) -> Iterator[tuple[str, ModuleType]]:
    """(name, module) of each module named that this Python has, in the order given; one it was built without (no
    `_tkinter`, no `lzma`) is skipped."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        yield name, module
