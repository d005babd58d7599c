"""Summaries from the standard library: every summary is its docstring's first sentence, a code document is the
function's own source without the docstring (and still parses), a text document is the rest of the docstring,
whole modules are held out and no held-out summary is a training summary; the same Python gives the same pairs."""

import ast
import importlib
import inspect
from functools import reduce

import pytest

from qkv.data.summaries import MAX_DOCUMENT, TEST_MODULES, VAL_MODULES, summary_pairs
from qkv.errors import QKVError


def _function(pair):
    module = importlib.import_module(pair.module)
    return reduce(getattr, pair.name[len(pair.module) + 1 :].split("."), module)


@pytest.mark.parametrize("corpus", ["text", "code"])
def test_every_summary_is_the_docstrings_first_sentence(corpus):
    for pair in summary_pairs(corpus, "test") + summary_pairs(corpus, "train")[:200]:
        if pair.source == "docs":
            continue  # the library reference's entries: test_documentation_entries
        doc = " ".join(inspect.getdoc(_function(pair)).split())
        assert doc.startswith(pair.summary) and pair.summary.endswith(".")
        assert 4 <= len(pair.summary.split()) <= 30 and len(pair.document) <= MAX_DOCUMENT
        if corpus == "text":
            assert doc == f"{pair.summary} {pair.document}"  # the rest of the docstring, nothing else
            assert pair.summary not in pair.document or doc.count(pair.summary) > 1


def test_a_code_document_is_the_source_without_its_docstring_and_still_parses():
    for pair in summary_pairs("code", "test") + summary_pairs("code", "val"):
        tree = ast.parse(pair.document)  # taking the docstring out left valid Python
        fn = tree.body[0]
        assert isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and pair.name.endswith(fn.name)
        assert ast.get_docstring(fn) is None
        source_lines = set(inspect.getsource(_function(pair)).strip().splitlines())
        body = [line.strip() for line in pair.document.splitlines()[1:] if line.strip()]
        assert body and all(any(line == s.strip() for s in source_lines) for line in body)


@pytest.mark.parametrize("corpus", ["text", "code"])
def test_whole_modules_are_held_out_and_no_held_out_summary_was_trained_on(corpus):
    split = {s: summary_pairs(corpus, s) for s in ("train", "val", "test")}
    assert {p.module for p in split["test"]} <= set(TEST_MODULES) and {p.module for p in split["val"]} <= \
        set(VAL_MODULES)
    assert not {p.module for p in split["train"]} & (set(TEST_MODULES) | set(VAL_MODULES))
    trained = {p.summary for p in split["train"]}
    assert not trained & {p.summary for p in split["test"] + split["val"]}
    assert len(split["train"]) > 3 * len(split["test"]) > 0 and split["val"]


def test_the_same_python_gives_the_same_pairs_and_bad_names_are_one_line():
    assert summary_pairs("code", "test") == summary_pairs("code", "test")
    with pytest.raises(QKVError, match="unknown summary corpus 'poems'"):
        summary_pairs("poems", "test")
    with pytest.raises(QKVError, match="unknown split 'dev'"):
        summary_pairs("text", "dev")


def test_documentation_entries_are_plain_prose_split_by_module(tmp_path, monkeypatch):
    """A library-reference entry (reStructuredText) gives its first sentence as the summary and the rest of its own
    prose as the document: roles and literals unwrapped, the signature, notes, examples and nested entries left
    out."""
    from qkv.data import summaries

    (tmp_path / "json.rst.txt").write_text("""
.. function:: dumps(obj, *, skipkeys=False, \\
                    indent=None)

   Serialize *obj* to a JSON formatted :class:`str` using ``dumps``.  The
   arguments have the same meaning as in :func:`~json.dump`.

   .. note::

      Keys are always strings. This is a note.

   If *indent* is given, the output is indented::

      >>> print(dumps([1]))

   It returns a string. Keys are sorted when asked.

.. function:: loads(s)

   Deserialize s to an object. Too short.
""", encoding="utf-8")
    (tmp_path / "zipapp.rst.txt").write_text("""
.. class:: Archive(path)

   Create a new archive in a file on disk. It holds modules. It can be run. It is a zip file.
""", encoding="utf-8")
    monkeypatch.setenv("QKV_PYDOC_DIR", str(tmp_path))
    summaries._all_pairs.cache_clear()
    try:
        test = [p for p in summary_pairs("text", "test") if p.source == "docs"]
        train = [p for p in summary_pairs("text", "train") if p.source == "docs"]
    finally:
        summaries._all_pairs.cache_clear()
    assert [(p.name, p.summary) for p in test] == [
        ("json.dumps", "Serialize obj to a JSON formatted str using dumps.")]
    assert test[0].document == ("The arguments have the same meaning as in dump. If indent is given, the output is "
                                "indented: It returns a string. Keys are sorted when asked.")
    assert [(p.name, p.module) for p in train] == [("zipapp.Archive", "zipapp")]  # json is a test module
