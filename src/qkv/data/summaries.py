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
``posixpath`` share functions) is dropped.

Where Debian's ``python3.11-doc`` is installed (`DOCS_DIR`, or the folder in ``QKV_PYDOC_DIR``), ``text`` also takes
the library reference's entries (``.. function::``, ``.. method::``, ``.. class::``: about 6,000), read from its
reStructuredText sources as plain prose (roles and literals unwrapped; notes, version marks, tables and examples left
out), with the same first-sentence rule and the same modules held out (`Pair.source` says which).

A summary is one sentence of 4–30 words; a document has at most
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


# Debian's python3.11-doc: the library reference's reStructuredText sources (QKV_PYDOC_DIR overrides the folder)
DOCS_DIR = "/usr/share/doc/python3.11/html/_sources/library"


@dataclass(frozen=True)
class Pair:
    document: str
    summary: str
    name: str  # module.function or module.Class.method
    module: str
    source: str = "docstring"  # "docstring", or "docs": an entry of the library reference (python3.11-doc)


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


ENTRY = re.compile(r"^(\s*)\.\. (?:function|method|class|classmethod|staticmethod|decorator|exception)::\s*(.+)$")
# :func:`~json.dumps` -> dumps, :func:`json.dumps` -> json.dumps, :ref:`the table <t>` -> the table
ROLE = re.compile(r":[a-z:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def _plain(line: str) -> str:
    """One line of reStructuredText as plain text: roles, literals and emphasis unwrapped."""
    line = ROLE.sub(lambda m: m[1].rsplit(".", 1)[-1] if m[0].split("`")[1].startswith("~") else m[1], line)
    line = re.sub(r"``([^`]+)``", r"\1", line)
    line = re.sub(r"\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*", lambda m: m[1] or m[2], line)
    return line.replace("\\", "")


def _entry_text(lines: list[str], start: int, indent: int) -> str:
    """The prose of the entry whose directive is lines[start]: its body's own paragraphs, on one line each joined,
    without nested directives (notes, version marks, nested entries) or literal blocks (examples)."""
    k = start + 1
    while k < len(lines) and lines[k - 1].rstrip().endswith("\\"):  # a signature continued with a backslash
        k += 1
    while k < len(lines) and lines[k].strip() and len(lines[k]) - len(lines[k].lstrip()) > indent \
            and not lines[k].lstrip().startswith(":"):  # more signatures of the same entry
        k += 1
    base, out, skip_deeper_than = None, [], None
    for line in lines[k:]:
        if not line.strip():
            continue
        at = len(line) - len(line.lstrip())
        if at <= indent:
            break  # the entry is over
        if skip_deeper_than is not None:
            if at > skip_deeper_than:
                continue
            skip_deeper_than = None
        base = at if base is None else base
        if at > base:
            continue  # a quotation or a block inside the body
        text = line.strip()
        if text[:1] in "+|=" or text.startswith((".. ", ":")):  # a table, a nested directive, a field list
            skip_deeper_than = at
            continue
        if text.endswith("::"):  # a literal block follows
            text = text[:-2].rstrip() + (":" if text[:-2].strip() else "")
            skip_deeper_than = at
        out.append(_plain(text))
    return " ".join(" ".join(out).split())


def _doc_entries() -> list[tuple[str, str, str]]:
    """(module, module.name, text) of every function, method and class entry of the library reference (Debian's
    python3.11-doc); empty where it is not installed."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("QKV_PYDOC_DIR") or DOCS_DIR)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.rst.txt")):
        module = path.name.removesuffix(".rst.txt")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for k, line in enumerate(lines):
            m = ENTRY.match(line)
            if not m:
                continue
            name = re.match(r"[\w.]+", m[2])
            text = _entry_text(lines, k, len(m[1]))
            if name and text:
                out.append((module, f"{module}.{name[0]}", text))
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
    for modname, name, text in _doc_entries():
        opened = _first_sentence(text)
        if opened is None:
            continue
        summary, rest = opened
        if len(re.findall(r"[.!?](?:\s|$)", rest)) >= 2 and len(rest) <= MAX_DOCUMENT:
            pairs["text"].append(Pair(rest, summary, name, modname, "docs"))
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
