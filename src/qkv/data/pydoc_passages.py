"""Reading real text: questions about the Python standard library's own documentation, answered by spans of it.

A passage is one function's signature and docstring, as this Python has them (`inspect`)::

    passage   textwrap.shorten(text, width, **kwargs): Collapse and truncate the given text to fit in the given
              width. The text first has its whitespace collapsed. If it then fits in the *width*, it is returned
              as is. Otherwise, as many words as possible are joined and then the placeholder is appended: ...

and the questions are generated from it, each answered by a span of the passage:

    kind        question                                         answer (a span)
    does        What does textwrap.shorten do?                   Collapse and truncate the given text to fit in
                                                                 the given width     (the docstring's first sentence)
    returns     What does os.path.splitext return?               (root, ext)         ("Return ..." sentences)
    default     What is the default of width in textwrap.fill?   70                  (from the signature)
    first-arg   What is the first argument of shutil.copy?       src

Whole modules are held out: the test modules' functions are never trained on (`TEST_MODULES`, `VAL_MODULES`;
every other module of `MODULES` trains). A kind is only asked where its answer can be found: no "Return"
sentence, no question about what is returned. The passages are this Python's docstrings, so another Python
version gives other passages; the same Python always gives the same ones.
"""

from __future__ import annotations

import inspect
import re
from functools import lru_cache

from qkv.data.stdlib import stdlib_modules
from qkv.data.stories import Example
from qkv.errors import QKVError

MODULES = ("os.path", "shutil", "textwrap", "glob", "fnmatch", "json", "statistics", "difflib", "base64", "html",
           "urllib.parse", "calendar", "heapq", "bisect", "random", "functools", "copy", "pprint", "tempfile",
           "zipfile", "tarfile", "csv", "gzip", "shlex", "inspect", "operator")
TEST_MODULES = ("statistics", "base64", "textwrap", "json")  # about 15% of the questions
VAL_MODULES = ("calendar", "glob", "shlex")  # about 8%
KINDS = ("does", "returns", "default", "first-arg")
MAX_PASSAGE = 600  # characters: whole sentences up to this many


def _split_of(module: str) -> str:
    return "test" if module in TEST_MODULES else "val" if module in VAL_MODULES else "train"


def _sentences(text: str) -> list[str]:
    """A docstring's text on one line, cut after each ". " (a sentence ends with a full stop and a space)."""
    return [s for s in re.split(r"(?<=\.)\s+", " ".join(text.split())) if s]


def _passage(qualname: str, fn) -> tuple[str, str, inspect.Signature | None] | None:
    """(passage, its signature text, the signature) of a documented function; None if it has no docstring."""
    doc = inspect.getdoc(fn)
    if not doc or not doc.strip():
        return None
    try:
        sig = inspect.signature(fn)
        head = f"{qualname}{sig}"
    except (TypeError, ValueError):  # a builtin without a text signature
        sig, head = None, qualname
    body = ""
    for sentence in _sentences(doc.split("\n\n")[0] if len(doc) > MAX_PASSAGE else doc):
        if len(head) + 2 + len(body) + len(sentence) + 1 > MAX_PASSAGE:
            break
        body = f"{body} {sentence}" if body else sentence
    if not body or not body[0].isupper():  # a docstring that opens with a signature or nothing readable
        return None
    return f"{head}: {body}", head, sig


def _questions(qualname: str, passage: str, head: str, sig) -> list[tuple[str, str, int]]:
    """(kind, question, answer) triples with the answer's offset in the passage."""
    body_at = len(head) + 2
    body = passage[body_at:]
    out = []
    first = _sentences(body)[0].rstrip(".")
    if 3 <= len(first.split()) <= 20:
        out.append(("does", f"What does {qualname} do?", first, body_at + body.index(first)))
    for sentence in _sentences(body):
        m = re.match(r"Returns? (.+?)\.?$", sentence)
        if m and 1 <= len(m[1].split()) <= 12:
            out.append(("returns", f"What does {qualname} return?", m[1], body_at + body.index(sentence) + m.start(1)))
            break
    if sig is not None:
        params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if params:
            name = params[0].name
            at = head.index("(") + 1
            if head.startswith(name, at):
                out.append(("first-arg", f"What is the first argument of {qualname}?", name, at))
        for p in params:
            if p.default is p.empty:
                continue
            text = f"{p.name}={p.default!r}"
            if text in head and len(repr(p.default)) <= 20:
                out.append(("default", f"What is the default of {p.name} in {qualname}?", repr(p.default),
                            head.index(text) + len(p.name) + 1))
                break
    return [(k, q, a, at) for k, q, a, at in out if passage[at : at + len(a)] == a]


@lru_cache(maxsize=1)
def _all_examples() -> tuple[tuple[str, Example], ...]:
    """(module, example) of every question about every documented public function of `MODULES`."""
    out, seen = [], set()
    for modname, module in stdlib_modules(MODULES):
        for name, fn in sorted(vars(module).items()):
            if name.startswith("_") or id(fn) in seen:
                continue
            if not (inspect.isfunction(fn) or inspect.isbuiltin(fn) or inspect.ismethod(fn)):
                continue
            home = getattr(fn, "__module__", None) or ""
            if home.lstrip("_") != module.__name__.lstrip("_"):  # imported from elsewhere (statistics.sqrt is math's)
                continue
            seen.add(id(fn))
            qualname = f"{modname}.{name}"
            made = _passage(qualname, fn)
            if made is None:
                continue
            passage, head, sig = made
            for kind, question, answer, at in _questions(qualname, passage, head, sig):
                out.append((modname, Example(passage, question, (answer,), f"pydoc-{kind}", (at, at + len(answer)),
                                             kind)))
    return tuple(out)


def pydoc_examples(split: str) -> list[Example]:
    """Every question of one split: ``train``, ``val`` or ``test`` (whole modules held out, `TEST_MODULES`)."""
    if split not in ("train", "val", "test"):
        raise QKVError(f"unknown split {split!r}; choose train, val or test")
    return [ex for module, ex in _all_examples() if _split_of(module) == split]
