"""The ``english`` corpus (`qkv.data.english`): reST made plain, documents cut and split whole and stably, the
missing-documentation error, and a tiny LM run on it (held-out documents, bits/byte, a tokenizer given as a file)."""

import json
import random
import sys

import pytest

from helpers import assert_user_error
from qkv.cli.main import main
from qkv.data import english
from qkv.data.english import (
    Document,
    english_documents,
    english_split,
    is_val,
    multi30k_documents,
    rest_to_text,
    shakespeare_documents,
    split_documents,
)
from qkv.data.registry import DATASETS, pydoc_sources_dir
from qkv.data.text import load_corpus
from qkv.errors import QKVError
from qkv.tasks import load_run

SAMPLE = r""":tocdepth: 2

.. _json-intro:

************************
:mod:`json` --- Encoding
************************

.. module:: json
   :synopsis: Encode and decode the JSON format.

.. index:: single: JSON

**Source code:** :source:`Lib/json/__init__.py`

--------------

`JSON <https://json.org>`_, specified by :rfc:`7159`, see :pep:`8#naming` and
:ref:`the conversion table
<py-to-json-table>`.  Use ``*args`` with *care*\ s [#note]_.

.. note::
   Keys are always :class:`str`.

.. function:: dumps(obj, *, skipkeys=False, \
                    indent=None, **kw)

   Serialize *obj* (see :func:`~json.dump`).

   .. versionchanged:: 3.6
      All optional parameters are now keyword-only.

   .. deprecated-removed:: 3.11 3.13

   Example::

      >>> dumps({"a": 1})  # *kept*
      '{"a": 1}'

   .. code-block:: python
      :emphasize-lines: 1

      x = **y**

.. This is a comment
   spanning two lines.

:Author: Bob

>>> 1 + 1
2
"""

CLEANED = """json --- Encoding

Source code: Lib/json/__init__.py

JSON, specified by RFC 7159, see PEP 8 and
the conversion table.  Use *args with cares.

Note: Keys are always str.

dumps(obj, *, skipkeys=False, indent=None, **kw)

Serialize obj (see dump).

Changed in version 3.6: All optional parameters are now keyword-only.

Deprecated since version 3.11, will be removed in version 3.13.

Example:

   >>> dumps({"a": 1})  # *kept*
   '{"a": 1}'

   x = **y**

Author: Bob

>>> 1 + 1
2"""


def test_rest_to_text_keeps_the_prose_and_the_code_and_drops_the_markup():
    assert rest_to_text(SAMPLE) == CLEANED


@pytest.mark.parametrize(("rest", "text"), [
    (":meth:`title <Foo.bar>` and :c:func:`!PyObject_Call`", "title and PyObject_Call"),
    (":samp:`print({x})` and ``a  *b*``", "print(x) and a  *b*"),
    ("2 * 3 * 4 is **24**", "2 * 3 * 4 is 24"),
    (".. versionadded:: 3.2 Added *x*.", "New in version 3.2: Added x."),
    (".. seealso::\n\n   Module :mod:`pickle`", "See also: Module pickle"),
    ("Title\n=====\n\n\n\n.. toctree::\n   a.rst\n\nText ::\n\n   code", "Title\n\nText\n\n   code"),
])
def test_rest_to_text_pieces(rest, text):
    assert rest_to_text(rest) == text


def test_documents_are_cut_whole(tmp_path):
    speeches = [f"S{k}:\n" + "\n".join(f"line {k}.{j}" for j in range(k % 3 + 1)) for k in range(40)]
    docs = shakespeare_documents("\n\n".join(speeches) + "\n", min_lines=10)
    assert "\n\n".join(d.text for d in docs) == "\n\n".join(speeches)  # nothing lost, speeches never cut
    assert all(d.text.count("\n") + 1 >= 10 for d in docs[:-1])
    assert [d.name for d in docs[:2]] == ["tinyshakespeare/0000", "tinyshakespeare/0001"]

    (tmp_path / "train.en").write_text("".join(f"caption {i}\n" for i in range(450)), encoding="utf-8")
    docs = multi30k_documents(tmp_path / "train.en", per_doc=200)
    assert [(d.name, d.text.count("\n") + 1) for d in docs] == [
        ("multi30k/train.en/000", 200), ("multi30k/train.en/001", 200), ("multi30k/train.en/002", 50)]


def test_the_split_is_by_document_and_does_not_depend_on_order():
    docs = [Document(f"part/{i:03d}", f"text {i} " * 20) for i in range(300)]
    train, val = split_documents(docs, 0.1)
    names_train, names_val = {d.name for d in train}, {d.name for d in val}
    assert not names_train & names_val and names_train | names_val == {d.name for d in docs}
    assert 10 < len(val) < 50  # about 30 of 300
    assert all(is_val(d.name, 0.1) for d in val) and not any(is_val(d.name, 0.1) for d in train)

    shuffled = docs[:]
    random.Random(1).shuffle(shuffled)
    assert split_documents(shuffled, 0.1) == (train, val)  # the same sides, in the same order
    assert split_documents(shuffled[:150], 0.1)[1] == [d for d in val if d in shuffled[:150]]  # fewer documents
    assert {d.name for d in split_documents(docs, 0.2)[1]} > names_val  # a larger fraction only adds documents

    train_text, val_text = english_split(0.1, docs=shuffled)
    assert (train_text, val_text) == english_split(0.1, docs=docs)
    assert val_text == "\n\n".join(d.text for d in val)


def test_max_chars_keeps_each_side_its_share():
    docs = [Document(f"d{i}", chr(97 + i % 26) * 1000) for i in range(100)]
    train_text, val_text = english_split(0.2, docs=docs)
    small_train, small_val = english_split(0.2, 10_000, docs=docs)
    assert len(small_train) + len(small_val) == 10_000
    assert len(small_val) / 10_000 == pytest.approx(len(val_text) / (len(train_text) + len(val_text)), abs=1e-3)
    assert train_text.startswith(small_train) and val_text.startswith(small_val)


def test_missing_documentation_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_PYDOC_SOURCES", str(tmp_path / "none"))
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    with pytest.raises(QKVError, match=rf"apt-get install python{version}-doc`, or set QKV_PYDOC_SOURCES") as e:
        english_documents()
    assert "\n" not in str(e.value)


def test_english_is_a_listed_dataset(capsys, tmp_path, monkeypatch):
    assert DATASETS["english"].parts == ("tinyshakespeare", "multi30k")
    monkeypatch.setenv("QKV_PYDOC_SOURCES", str(tmp_path / "none"))
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("QKV_DATA_DIR", raising=False)
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "english " in out and "needs tinyshakespeare, multi30k: qkv data get english" in out


@pytest.fixture
def tiny_docs(tmp_path, monkeypatch, data_dir):
    """A folder of three made-up documentation files as QKV_PYDOC_SOURCES; the real multi30k and tinyshakespeare."""
    folder = tmp_path / "_sources"
    (folder / "library").mkdir(parents=True)
    for name in ("json", "csv", "zlib"):
        (folder / "library" / f"{name}.rst.txt").write_text(
            f":mod:`{name}` --- a module\n=========\n\n" + f"The ``{name}`` module does *things*.\n" * 40,
            encoding="utf-8")
    monkeypatch.setenv("QKV_PYDOC_SOURCES", str(folder))
    return folder


def test_the_parts_are_read(tiny_docs):
    docs = english_documents()
    parts = [d.name.split("/")[0] for d in docs]
    assert parts.count("pydoc") == 3 and parts.count("multi30k") == 145 and parts.count("tinyshakespeare") > 250
    assert docs[0] == Document("pydoc/library/csv", "csv --- a module\n\n" + "The csv module does things.\n" * 39
                               + "The csv module does things.")
    assert english_documents() is docs  # cached
    assert load_corpus("english", max_chars=50) == docs[0].text[:50]


TINY = ["--data.max_chars", "20000", "--model.d_model", "32", "--model.n_layers", "1", "--model.n_heads", "2",
        "--model.max_seq_len", "32", "--train.max_steps", "2", "--train.eval_interval", "2", "--train.eval_iters", "1",
        "--train.progress", "false", "--no-sample"]


def test_a_tiny_lm_run_holds_out_documents_and_reports_bits_per_byte(tiny_docs, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--preset", "shakespeare-char-cpu", "--out", str(run), "--data", "english", *TINY]) == 0
    out = capsys.readouterr().out
    meta = json.loads((run / "data" / "meta.json").read_text())
    train_text, val_text = english_split(0.1, 20_000)
    assert meta["split"] == "documents" and meta["chars"] == 20_000
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train_text), len(val_text))  # characters: one a token
    assert meta["bytes_per_token"] == len(val_text.encode()) / len(val_text)
    last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert last["val_bpb"] == pytest.approx(last["val_loss"] / 0.6931471805599453 / meta["bytes_per_token"])
    assert f"{last['val_bpb']:.3f} bits/byte" in out
    assert f"bigram baseline (add-0.1 counts of the training split): val loss {meta['bigram_val_loss']:.4f}" in out

    # a tokenizer given as a file (or the folder holding one) is used as it is, not trained
    again = tmp_path / "again"
    assert main(["train", "--preset", "shakespeare-char-cpu", "--out", str(again), "--data", "english",
                 "--data.tokenizer_file", str(run), *TINY]) == 0
    assert (again / "tokenizer.json").read_text() == (run / "tokenizer.json").read_text()
    capsys.readouterr()
    rc = main(["train", "--preset", "shakespeare-char-cpu", "--out", str(tmp_path / "bad"), "--data", "english",
               "--data.tokenizer_file", str(tmp_path / "nope.json"), *TINY])
    assert_user_error(rc, capsys.readouterr().err, f"data.tokenizer_file {tmp_path / 'nope.json'}: no such file")

    # a run made before bytes_per_token was recorded: no bits/byte, no error
    meta.pop("bytes_per_token")
    (run / "data" / "meta.json").write_text(json.dumps(meta))
    config = json.loads((run / "config.json").read_text())
    config["data_meta"].pop("bytes_per_token")
    (run / "config.json").write_text(json.dumps(config))
    result = load_run(run).evaluate()
    assert "bits_per_byte" not in result and "bits_per_char" in result


def test_the_real_documentation_when_installed():
    try:
        folder = pydoc_sources_dir()
    except QKVError:
        pytest.skip("no python3.X-doc on this machine")
    docs = english.pydoc_documents(folder / "library")
    assert len(docs) > 250
    text = {d.name: d.text for d in docs}["pydoc/json"]
    assert text.startswith("json --- JSON encoder and decoder\n\nSource code: Lib/json/__init__.py")
    assert ".. index::" not in text and ":class:`" not in text and "\n    >>> import json\n" in text
