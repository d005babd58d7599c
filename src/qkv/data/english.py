"""The ``english`` corpus: real English, offline, as named documents, split **by document**.

Three parts, each cut into documents (a name and a text):

======================  ==========================================================  ====  ==========
part                    what                                                        docs  characters
======================  ==========================================================  ====  ==========
``pydoc/...``           the Python 3.11 documentation (Debian's python3.11-doc),     497   9,170,663
                        its reST sources as plain text (`rest_to_text`), one
                        document per file: ``pydoc/library/json``
``multi30k/...``        Multi30k's English training captions (29,000 lines), 200    145   1,801,093
                        a document, one a line: ``multi30k/train.en/000``
``tinyshakespeare/...`` tinyshakespeare's speeches (blank-line separated), whole     313   1,114,767
                        speeches grouped into documents of at least 100 lines
all                                                                                  955  12,086,523
======================  ==========================================================  ====  ==========

(Measured on python3.11-doc 3.11.2-6+deb12u8 by `english_documents`.) The documentation is three-quarters of the
text: the corpus reads like technical English, with its code blocks kept as they are. Loading cleans ~12 MB of
reST once per process (1.2 s here; then `functools.lru_cache` keeps the documents).

**The split.** A document is validation when a hash of its name falls below `val_fraction` (`is_val`): the same
document lands on the same side whatever the order, the number or the size of the others, and no document is on
both sides. With ``val_fraction = 0.1``, 78 of the 955 documents validate (42 pydoc, 11 multi30k, 25
tinyshakespeare): 912,127 characters, 7.5% of the text. `english_split` joins each side's documents with a blank
line in a fixed order (a second hash of the names: a shuffle every machine repeats), so the first characters of
either side already mix the three parts.

**max_chars** (quick runs, tests) keeps both sides in proportion: the corpus is scaled to `max_chars` characters in
all, each side cut to its share (the first characters of its shuffled documents).

    >>> rest_to_text("Title\\n=====\\n\\nUse :func:`len` on ``x``, *always*.\\n\\n.. index:: len\\n")
    'Title\\n\\nUse len on x, always.'
    >>> train, val = split_documents([Document(f"doc{i}", str(i)) for i in range(6)], val_fraction=0.5)
    >>> [d.name for d in train], [d.name for d in val]
    (['doc2', 'doc4'], ['doc5', 'doc0', 'doc3', 'doc1'])
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from qkv.data.files import read_text
from qkv.data.registry import pydoc_sources_dir, resolve
from qkv.errors import QKVError

MULTI30K_SENTENCES = 200  # Multi30k English lines per document
SHAKESPEARE_LINES = 100  # a tinyshakespeare document is whole speeches, at least this many lines


class Document(NamedTuple):
    name: str  # "pydoc/library/json", "multi30k/train.en/003", "tinyshakespeare/0042": what the split hashes
    text: str


# ------------------------------------------------------------------------------------------- reST -> text
# Directives whose line, options and body all go: indexes, metadata, includes, tables of contents.
_DROP = {"index", "toctree", "module", "currentmodule", "moduleauthor", "sectionauthor", "codeauthor", "highlight",
         "tabularcolumns", "include", "literalinclude", "testsetup", "testcleanup", "raw", "image", "figure",
         "audit-event", "audit-event-table", "productionlist", "program", "default-role", "role", "sidebar",
         "c:namespace", "c:namespace-push", "c:namespace-pop", "limited-api-list", "miscnews"}
# Directives whose body is code, kept verbatim (the directive line goes).
_CODE = {"code-block", "sourcecode", "code", "doctest", "testcode", "testoutput", "parsed-literal"}
# Notes: the body stays, after a label (as Sphinx renders them).
_LABELS = {"note": "Note", "warning": "Warning", "seealso": "See also", "important": "Important", "tip": "Tip",
           "caution": "Caution", "attention": "Attention", "hint": "Hint", "danger": "Danger", "error": "Error",
           "impl-detail": "CPython implementation detail", "availability": "Availability", "admonition": ""}
_VERSIONS = {"versionadded": "New in version {}", "versionchanged": "Changed in version {}",
             "deprecated": "Deprecated since version {}",
             "deprecated-removed": "Deprecated since version {}, will be removed in version {}"}
# Object descriptions: their argument is a signature, kept as a line (`dump(obj, fp, *, ...)`); the body stays.
_OBJECTS = {"function", "method", "class", "attribute", "data", "exception", "decorator", "decoratormethod",
            "classmethod", "staticmethod", "abstractmethod", "coroutinefunction", "coroutinemethod", "property",
            "awaitablefunction", "awaitablemethod", "describe", "object", "cmdoption", "option", "envvar",
            "opcode", "pdbcommand", "2to3fixer", "type", "monitoring-event"}

_METADATA = {"orphan", "tocdepth", "nosearch"}  # file-wide fields (":tocdepth: 2"): dropped
_FIELD = re.compile(r":([A-Za-z][\w -]*):(?:\s+(.*))?")  # a field list line, ":Author: A. M. Kuchling"
_DIRECTIVE = re.compile(r"\.\.\s+([\w:.-]+)::(.*)$")
_OPTION = re.compile(r":[\w -]+:(\s|$)")
_RULE = re.compile(r"([!-/:-@\[-`{-~])\1{2,}$|[=\s]*=[=\s]*$|\+[-=+]+\+$")  # ===== ----- +---+---+ ===  ===
_INLINE = re.compile(
    r"``(?P<lit>.+?)``(?!`)"  # ``literal``
    r"|(?<![\w`]):(?P<role>(?:[A-Za-z][\w+-]*:)+)`(?P<rbody>[^`]+)`"  # :role:`target`, :role:`title <target>`
    r"|`(?P<ref>[^`]+)`__?"  # `text <url>`_, `label`_, `text`__
    r"|`(?P<dflt>[^`]+)`"  # `default role`
    r"|(?<![\w*\\])\*\*(?=\S)(?P<strong>.+?)(?<=\S)\*\*(?![\w*])"  # **strong**
    r"|(?<![\w*\\])\*(?=[^\s*])(?P<em>.+?)(?<=[^\s*\\])\*(?![\w*])"  # *emphasis*
    r"|\s*\[#?[\w-]*\]_(?!\w)"  # footnote reference [#note]_ / [1]_: dropped
    r"|\\(?P<esc>.)",  # backslash escape: the character itself ("\ " -> "")
    re.DOTALL,
)


def _target(role: str, body: str) -> str:
    """What an interpreted role shows: the title of ``title <target>``, else the target (``~a.b`` -> ``b``,
    ``!x`` -> ``x``); ``:pep:`8``` -> ``PEP 8``, ``:rfc:`7159``` -> ``RFC 7159``."""
    m = re.fullmatch(r"(.*?)\s*<([^<>]*)>", body, re.DOTALL)
    if m and m.group(1):
        return m.group(1)
    body = (m.group(2) if m else body).lstrip("!")
    kind = role.rstrip(":").rsplit(":", 1)[-1]
    if kind in ("pep", "rfc"):
        return f"{kind.upper()} {body.split('#')[0]}"
    if kind == "samp":
        return body.replace("{", "").replace("}", "")
    if body.startswith("~"):
        return body[1:].rsplit(".", 1)[-1]
    return body


def _inline(m: re.Match) -> str:
    g = m.groupdict()
    if g["lit"] is not None:
        return g["lit"]
    if g["role"] is not None:
        return _target(g["role"], g["rbody"])
    if g["ref"] is not None:
        ref = re.fullmatch(r"(.*?)\s*<[^<>]*>", g["ref"], re.DOTALL)
        return ref.group(1) if ref and ref.group(1) else g["ref"]
    if g["dflt"] is not None:
        return g["dflt"]
    for key in ("strong", "em"):
        if g[key] is not None:
            return _INLINE.sub(_inline, g[key])  # a literal or a role inside the emphasis
    return "" if g["esc"] is None or g["esc"] == " " else g["esc"]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _unmark(s: str) -> str:
    """A line without its literal-block mark: "Example::" -> "Example:", "text ::" -> "text", "::" -> ""."""
    return s[:-2].rstrip() if s == "::" or s[:-2].endswith(" ") else s[:-1]



def rest_to_text(source: str) -> str:
    """Plain text from a reST document of the Python documentation (one file of python3.X-doc's ``_sources``).

    - heading under/overlines, transitions and table rules (``=====``, ``-----``) go;
    - comments, link targets (``.. _label:``) and metadata directives (``.. index::``, ``.. module::``,
      ``.. toctree::``, ...) go with their bodies and options;
    - notes keep their text after a label (``.. note:: x`` -> ``Note: x``); version marks read as Sphinx renders
      them (``.. versionadded:: 3.2`` + text -> ``New in version 3.2: text``); an object description keeps its
      signature as a line (``.. function:: dumps(obj, *, ...)`` -> ``dumps(obj, *, ...)``);
    - inline markup becomes its text: ``:role:`target``` -> target, ``:role:`title <target>``` -> title,
      ````literal```` -> literal, ``*emph*`` / ``**strong**`` -> text, ```text <url>`_`` -> text;
    - prose loses its indentation; code (the indented block after ``::``, ``.. code-block::`` bodies, ``>>>``
      sessions) is kept verbatim, indented as it was relative to the text that introduced it; ``Example::``
      reads ``Example:``;
    - runs of blank lines become one.

    >>> print(rest_to_text('''.. _intro:
    ...
    ... Intro
    ... =====
    ...
    ... .. function:: f(x, *args)
    ...
    ...    Return :class:`int` *x* via :ref:`the table <tbl>`.
    ...
    ...    .. versionadded:: 3.2
    ...       The *args*.
    ...
    ... Example::
    ...
    ...    f(**kw)  # *not* emphasis
    ... '''))
    Intro
    <BLANKLINE>
    f(x, *args)
    <BLANKLINE>
    Return int x via the table.
    <BLANKLINE>
    New in version 3.2: The args.
    <BLANKLINE>
    Example:
    <BLANKLINE>
       f(**kw)  # *not* emphasis
    """
    lines = source.expandtabs(8).splitlines()
    out: list[str] = []
    para: list[str] = []  # the prose paragraph being read (stripped lines), marked up until flushed
    literal_at = None  # a literal block follows, indented more than this
    label_at: int | None = None  # a label ("Note:", "New in version 3.2:") waits for its body, indented more

    def flush() -> None:
        nonlocal label_at
        label_at = None
        if para:
            out.extend(_INLINE.sub(_inline, "\n".join(para)).split("\n"))
            para.clear()

    para_indent = 0
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        i += 1
        if not line:
            if label_at is None:  # a label waits for its text across the blank line
                flush()
                out.append("")
            continue
        ind, s = _indent(line), line.strip()
        if label_at is not None and ind <= label_at:  # the directive had no body: "New in version 3.2."
            para[-1] = para[-1][:-1] + "."
            flush()
            out.append("")
        if literal_at is not None:
            if ind > literal_at:  # code: verbatim, blank lines inside it kept
                flush()
                out.append(line[literal_at:])
                while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > literal_at):
                    out.append(lines[i].rstrip()[literal_at:])
                    i += 1
                literal_at = None
                continue
            literal_at = None  # no indented block after all
        if s == ".." or s.startswith(".. "):
            flush()
            # the directive's block: its argument lines, options, body — everything indented more than it
            block_end = i
            while block_end < len(lines) and (not lines[block_end].strip() or _indent(lines[block_end]) > ind):
                block_end += 1
            m = _DIRECTIVE.fullmatch(s)
            if m is None:  # a comment, a link target, a substitution; a footnote keeps its text
                note = re.fullmatch(r"\.\.\s+\[#?[\w-]*\]\s*(.*)", s)
                if note is None:
                    i = block_end
                elif note.group(1):
                    para.append(note.group(1))
                continue
            name, arg = m.group(1), m.group(2).strip()
            args = [arg] if arg else []  # the argument: the rest of the line and the lines after it up to a blank
            arg_indent = ind
            if name not in _CODE:
                while i < block_end and lines[i].strip() and not _OPTION.match(lines[i].strip()):
                    args.append(lines[i].strip())
                    arg_indent = _indent(lines[i])
                    i += 1
            if args and args[-1].endswith("::") and name not in _OBJECTS:  # "... where ::" then code
                args[-1] = _unmark(args[-1])
                literal_at = arg_indent
            while i < block_end and _OPTION.match(lines[i].strip()):  # :synopsis: and the like: dropped
                i += 1
            if name in _DROP:
                i = block_end
            elif name in _CODE:
                literal_at = ind
            elif name in _VERSIONS or name in _LABELS:
                if name in _VERSIONS:
                    n = 2 if name == "deprecated-removed" else 1
                    words = (args[0] if args else "").split(maxsplit=n)
                    label = _VERSIONS[name].format(*(words[:n] + [""] * n))
                    args[:1] = words[n:]
                else:
                    label = _LABELS[name] or (args.pop(0) if args else "")
                if args:
                    para.extend([f"{label}: {args[0]}", *args[1:]])
                else:
                    para.append(f"{label}:")
                    label_at = ind
            elif name in _OBJECTS or ":" in name:  # signatures, one a line (a "\" ends a continued one)
                out.extend(re.sub(r"\s*\\\n\s*", " ", "\n".join(args)).split("\n"))
            elif name != "only":  # anything else (rubric, list-table, centered, ...): the argument as prose, the
                para.extend(args)  # body read on; "only:: html" keeps its body alone
            continue
        if _RULE.fullmatch(s):
            flush()
            continue
        if s.startswith(">>>") and (not para or label_at is not None):  # doctest block: verbatim up to a blank line
            flush()
            out.append(line[ind:])
            while i < len(lines) and lines[i].strip():
                out.append(lines[i].rstrip()[ind:])
                i += 1
            continue
        field = _FIELD.fullmatch(s)
        if field:  # ":Author: X" -> "Author: X"; ":tocdepth: 2" goes
            if field.group(1) in _METADATA:
                continue
            s = f"{field.group(1)}: {field.group(2) or ''}".rstrip()
        if s.endswith("::"):  # code follows
            literal_at = min(ind, para_indent) if para else ind
            s = _unmark(s)
            if not s:
                flush()
                continue
        if label_at is not None:
            para[-1] = f"{para[-1]} {s}"
            label_at = None
        else:
            if not para:
                para_indent = ind
            para.append(s)
    if label_at is not None:
        para[-1] = para[-1][:-1] + "."
    flush()
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# ------------------------------------------------------------------------------------------- the parts
def pydoc_documents(folder: Path) -> list[Document]:
    """One document per ``*.rst.txt`` file under `folder`, its text cleaned (`rest_to_text`); empty ones left out."""
    docs = []
    for path in sorted(folder.rglob("*.rst.txt")):
        text = rest_to_text(path.read_text(encoding="utf-8", errors="replace"))
        if text:
            docs.append(Document("pydoc/" + path.relative_to(folder).as_posix().removesuffix(".rst.txt"), text))
    return docs


def multi30k_documents(path: Path, per_doc: int = MULTI30K_SENTENCES) -> list[Document]:
    """Multi30k's English captions (one a line), `per_doc` lines per document: ``multi30k/train.en/000``, ..."""
    lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    stem = path.name.removesuffix(".gz")
    return [Document(f"multi30k/{stem}/{k // per_doc:03d}", "\n".join(lines[k : k + per_doc]))
            for k in range(0, len(lines), per_doc)]


def shakespeare_documents(text: str, min_lines: int = SHAKESPEARE_LINES) -> list[Document]:
    """tinyshakespeare cut at speeches (blank-line separated), whole speeches grouped into documents of at least
    `min_lines` lines (the last one may be shorter): ``tinyshakespeare/0000``, ...

    >>> [d.text for d in shakespeare_documents("A:\\nhi\\n\\nB:\\nho\\n\\nA:\\nbye\\n", min_lines=3)]
    ['A:\\nhi\\n\\nB:\\nho', 'A:\\nbye']
    """
    docs, group, n = [], [], 0
    for speech in (s.strip("\n") for s in re.split(r"\n\s*\n", text)):
        if not speech.strip():
            continue
        group.append(speech)
        n += speech.count("\n") + 1
        if n >= min_lines:
            docs.append("\n\n".join(group))
            group, n = [], 0
    if group:
        docs.append("\n\n".join(group))
    return [Document(f"tinyshakespeare/{k:04d}", d) for k, d in enumerate(docs)]


@lru_cache(maxsize=4)
def _documents(pydoc: Path, multi30k: Path, shakespeare: Path) -> tuple[Document, ...]:
    return (*pydoc_documents(pydoc), *multi30k_documents(multi30k / "train.en.gz"),
            *shakespeare_documents(read_text(shakespeare / "input.txt")))


def english_documents() -> tuple[Document, ...]:
    """Every document of the corpus, the three parts in turn (cleaned once per process and folder set)."""
    pydoc = pydoc_sources_dir()  # QKVError: apt-get install python3.X-doc (or set QKV_PYDOC_SOURCES)
    return _documents(pydoc, resolve("multi30k"), resolve("tinyshakespeare"))


# ------------------------------------------------------------------------------------------- the split
def _unit(name: str, salt: bytes) -> float:
    """A number in [0, 1) from a hash of `name` (blake2b; the same on every machine and run)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8, salt=salt).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def is_val(name: str, val_fraction: float) -> bool:
    """Whether the document called `name` validates: its hash falls below `val_fraction`."""
    return _unit(name, b"split") < val_fraction


def split_documents(docs, val_fraction: float) -> tuple[list[Document], list[Document]]:
    """(train, validation) documents, each side in the fixed shuffled order (a hash of the names): the result does
    not depend on the order of `docs`."""
    if not 0.0 < val_fraction < 1.0:
        raise QKVError(f"val_fraction must be in (0, 1), got {val_fraction}")
    ordered = sorted(docs, key=lambda d: (_unit(d.name, b"order"), d.name))
    train = [d for d in ordered if not is_val(d.name, val_fraction)]
    val = [d for d in ordered if is_val(d.name, val_fraction)]
    if not train or not val:
        raise QKVError(f"{len(ordered)} documents with val_fraction {val_fraction}: "
                       f"{'no training' if not train else 'no validation'} document; change val_fraction")
    return train, val


def join_documents(docs) -> str:
    return "\n\n".join(d.text for d in docs)


def english_split(val_fraction: float, max_chars: int | None = None, docs=None) -> tuple[str, str]:
    """(train text, validation text) of the corpus (or of `docs`): documents split by `is_val`, joined with a blank
    line. `max_chars` caps the two together, each side keeping its share of the characters."""
    train, val = split_documents(english_documents() if docs is None else docs, val_fraction)
    train_text, val_text = join_documents(train), join_documents(val)
    total = len(train_text) + len(val_text)
    if max_chars is not None and total > max_chars:
        n_val = max(1, round(max_chars * len(val_text) / total))
        train_text, val_text = train_text[: max(1, max_chars - n_val)], val_text[:n_val]
    return train_text, val_text
