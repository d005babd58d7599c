"""Questions about the standard library's documentation: every answer is the span it says it is, each kind reads
what it claims (the summary sentence, a "Return" sentence, the signature), whole modules are held out, and the
same Python gives the same questions."""

import inspect
import re
from importlib import import_module

import pytest

from qkv.data.pydoc_passages import KINDS, MAX_PASSAGE, TEST_MODULES, VAL_MODULES, pydoc_examples
from qkv.errors import QKVError


@pytest.fixture(scope="module")
def splits():
    return {s: pydoc_examples(s) for s in ("train", "val", "test")}


def _function(ex):
    qualname = ex.passage.split("(", 1)[0].split(":", 1)[0]
    module, name = qualname.rsplit(".", 1)
    return import_module(module), getattr(import_module(module), name), qualname


def test_every_answer_is_the_span_it_points_at_and_fits_the_passage(splits):
    for ex in (e for exs in splits.values() for e in exs):
        start, end = ex.span
        assert ex.passage[start:end] == ex.answers[0]
        assert len(ex.passage) <= MAX_PASSAGE


def test_each_kind_reads_what_it_claims(splits):
    seen = set()
    for ex in splits["train"][:400] + splits["test"]:
        module, fn, qualname = _function(ex)
        kind = ex.template
        seen.add(kind)
        doc = " ".join(inspect.getdoc(fn).split())
        if kind == "does":
            assert ex.question == f"What does {qualname} do?"
            assert doc.startswith(ex.answers[0])  # the docstring's opening sentence
        elif kind == "returns":
            assert re.search(r"Returns? " + re.escape(ex.answers[0]), doc)
        elif kind == "first-arg":
            assert ex.answers[0] == next(iter(inspect.signature(fn).parameters))
        else:
            name = re.fullmatch(r"What is the default of (\w+) in .+\?", ex.question)[1]
            assert repr(inspect.signature(fn).parameters[name].default) == ex.answers[0]
    assert seen == set(KINDS)


def test_whole_modules_are_held_out(splits):
    modules = {s: {_function(e)[2].rsplit(".", 1)[0] for e in exs} for s, exs in splits.items()}
    assert modules["test"] == set(TEST_MODULES) and modules["val"] == set(VAL_MODULES)
    assert not modules["train"] & (set(TEST_MODULES) | set(VAL_MODULES))
    n = {s: len(exs) for s, exs in splits.items()}
    assert n["train"] > 4 * n["test"] > 0 and n["val"] > 0


def test_only_a_modules_own_functions_are_asked_about(splits):
    asked = set()
    for ex in (e for exs in splits.values() for e in exs):
        module, fn, qualname = _function(ex)
        assert fn.__module__.lstrip("_") == module.__name__.lstrip("_"), qualname  # not another module's import
        asked.add(qualname)
    assert "statistics.sqrt" not in asked and "statistics.median" in asked  # sqrt is math's, imported there


def test_the_same_python_gives_the_same_questions_and_a_bad_split_is_one_line(splits):
    assert pydoc_examples("test") == splits["test"]
    with pytest.raises(QKVError, match="unknown split 'dev'"):
        pydoc_examples("dev")
