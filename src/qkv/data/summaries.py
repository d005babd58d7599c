"""Summaries people wrote: the Python standard library's docstrings as (document, summary) pairs, from this Python.

Two corpora, both from the functions and methods of `MODULES` (their source and docstrings, via `inspect`):

- ``text``: a docstring of at least two sentences past its first. The summary is the first sentence; the document
  is the rest of the docstring, the body that says it at length::

      document  The text first has its whitespace collapsed. If it then fits in the *width*, it is returned as is.
                Otherwise, as many words as possible are joined and then the placeholder is appended: ...
      summary   Collapse and truncate the given text to fit in the given width.

- ``code``: the function's source with its docstring taken out is the document, the docstring's first sentence
  the summary (the task of the CodeSearchNet papers: say what code does)::

      document  def shorten(text, width, **kwargs):
                    w = TextWrapper(width=width, max_lines=1, **kwargs)
                    return w.fill(' '.join(text.strip().split()))
      summary   Collapse and truncate the given text to fit in the given width.

Whole modules are held out (`TEST_MODULES`, `VAL_MODULES`), so a test summary is about code and text no training
pair came from; a held-out pair whose summary is also a training summary word for word (``os.path`` and
``posixpath`` share functions) is dropped. A summary is one sentence of 4–30 words; a document has at most
`MAX_DOCUMENT` characters. The pairs are this Python's, so another version gives other pairs; the same Python always
gives the same ones, in the same order.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache

from qkv.data.stdlib import stdlib_modules
from qkv.errors import QKVError

MODULES = ("argparse", "base64", "bisect", "calendar", "configparser", "csv", "difflib", "email.utils", "fnmatch",
           "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "heapq", "html", "http.cookies",
           "imaplib", "inspect", "ipaddress", "json", "logging", "mailbox", "mimetypes", "ntpath", "optparse",
           "pathlib", "pkgutil", "platform", "plistlib", "posixpath", "pprint", "pydoc", "queue", "quopri",
           "random", "shlex", "shutil", "smtplib", "statistics", "string", "subprocess", "tarfile", "tempfile",
           "textwrap", "threading", "tokenize", "traceback", "urllib.parse", "urllib.request", "uuid", "warnings",
           "wave", "zipfile")
TEST_MODULES = ("statistics", "tarfile", "ipaddress", "textwrap", "json", "difflib")  # ~15% (text), ~10% (code)
VAL_MODULES = ("shutil", "queue", "email.utils", "uuid", "mimetypes")  # ~10% (text), ~5% (code)
CORPORA = ("text", "code")
MAX_DOCUMENT = 2000  # characters


@dataclass(frozen=True)
class Pair:
    document: str
    summary: str
    name: str  # module.function or module.Class.method
    module: str


def _split_of(module: str) -> str:
    return "test" if module in TEST_MODULES else "val" if module in VAL_MODULES else "train"


def _first_sentence(doc: str) -> tuple[str, str] | None:
    """(the docstring's first sentence, the rest of it, each on one line); None if it does not open with a sentence
    of 4–30 words."""
    flat = " ".join(doc.split())
    m = re.match(r"(.+?\.)(?:\s+|$)", flat)
    if not m or not 4 <= len(m[1].split()) <= 30 or not m[1][0].isupper():
        return None
    return m[1], flat[len(m[1]) :].strip()


def _without_docstring(fn) -> str | None:
    """The function's source, dedented, with its docstring's lines taken out; None if it has no source."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    node = tree.body[0] if tree.body else None
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or ast.get_docstring(node) is None:
        return None
    if len(node.body) < 2:  # nothing but the docstring (an abstract method, a stub)
        return None
    first = node.body[0]  # the docstring
    lines = source.splitlines()
    return "\n".join(lines[: first.lineno - 1] + lines[first.end_lineno :]).strip("\n")


def _functions(module):
    """(qualified name, function) of the module's own functions and its own classes' methods, sorted by name."""
    out = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(obj):
            out.append((f"{module.__name__}.{name}", obj))
        elif inspect.isclass(obj):
            for mname, meth in sorted(vars(obj).items()):
                if not mname.startswith("_") and inspect.isfunction(meth):
                    out.append((f"{module.__name__}.{name}.{mname}", meth))
    return out


@lru_cache(maxsize=1)
def _all_pairs() -> dict[str, tuple[Pair, ...]]:
    pairs: dict[str, list[Pair]] = {c: [] for c in CORPORA}
    seen: set[int] = set()
    for modname, module in stdlib_modules(MODULES):
        for qualname, fn in _functions(module):
            if id(fn) in seen:
                continue
            seen.add(id(fn))
            doc = inspect.getdoc(fn)
            opened = _first_sentence(doc) if doc else None
            if opened is None:
                continue
            summary, rest = opened
            if len(re.findall(r"[.!?](?:\s|$)", rest)) >= 2 and len(rest) <= MAX_DOCUMENT:
                pairs["text"].append(Pair(rest, summary, qualname, modname))
            code = _without_docstring(fn)
            if code is not None and len(code) <= MAX_DOCUMENT:
                pairs["code"].append(Pair(code, summary, qualname, modname))
    return {c: tuple(ps) for c, ps in pairs.items()}


def summary_pairs(corpus: str, split: str) -> list[Pair]:
    """The pairs of one corpus (``text`` or ``code``) and split (``train``, ``val``, ``test``: by module)."""
    if corpus not in CORPORA:
        raise QKVError(f"unknown summary corpus {corpus!r}; choose text or code")
    if split not in ("train", "val", "test"):
        raise QKVError(f"unknown split {split!r}; choose train, val or test")
    every = _all_pairs()[corpus]
    if split == "train":
        return [p for p in every if _split_of(p.module) == "train"]
    trained = {p.summary for p in every if _split_of(p.module) == "train"}
    return [p for p in every if _split_of(p.module) == split and p.summary not in trained]
