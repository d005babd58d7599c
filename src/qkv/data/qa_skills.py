"""Built-in chat data, generated on this machine (no download): ``qa-skills`` and ``pydoc-qa``.

**qa-skills** — conversations whose answers can be checked exactly. A first question is one of::

    skill      question                     answer
    add        What is 47 + 38?             85        (operands 0-99)
    sub        What is 91 - 17?             74        (operands 0-99, result >= 0)
    reverse    Reverse kowpe.               epwok     (3-7 random lowercase letters)
    length     How many letters in zifqa?   5
    convert    How many g in 7 kg?          7000      (m/cm, cm/mm, km/m, kg/g, L/mL; 1-99 of the larger
               How many m in 4000 mm?       4          unit, both directions)

and with probability `followup_prob` the conversation goes on with 1..`max_followups` follow-up turns
that refer to the previous answer::

    number N:  "And doubled?" -> 2N    "And plus K?" -> N + K (K in 1..9)
    word W:    "And reversed?" -> W reversed    "And in capitals?" -> W upper-cased (once)
               "And how many letters?" -> len(W)   (a number: numeric follow-ups may come next)

The split is by question (`qkv.data.chat.split_of` on the first question): a test question never appears
in training, so test exact match measures the skill, not memory. Generation is deterministic: the
conversations of a split depend only on (seed, split, n, fractions, skills, follow-up settings). Val and
test questions are distinct within their split; training questions may repeat. Questions are kept short
(a character model pays for every character of boilerplate) but stay plain English.

**pydoc-qa** — "What does json.dumps do?" answered with the first line of the function's docstring,
for the public functions of a fixed list of standard-library modules of *this* Python (via `inspect`),
split by function. The answer is the docstring's summary: the first sentence of its first paragraph
(usually its first line). Only summaries of 8-80 ASCII characters that are not a bare signature are kept,
so every conversation fits a 128-token character context. The answers are facts, not skills: test exact
match is only expected from a model that knows the standard library (e.g. fine-tuned from a pystdlib GPT).
"""

from __future__ import annotations

import inspect
import random
import re
import string
from collections.abc import Callable
from functools import lru_cache

from qkv.data.conversations import Conversation, conversation, split_of
from qkv.data.stdlib import stdlib_modules
from qkv.errors import QKVError

# (large unit, small unit, factor): "How many {small} in {x} {large}?" and the reverse direction
UNITS = [("m", "cm", 100), ("cm", "mm", 10), ("km", "m", 1000), ("kg", "g", 1000), ("L", "mL", 1000)]


def _word(rng: random.Random, lo: int = 3, hi: int = 7) -> str:
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(lo, hi)))


# Each skill: rng -> (question, answer, kind) with kind "number" or "word" (what follow-ups may ask).
def _add(rng):
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    return f"What is {a} + {b}?", str(a + b), "number"


def _sub(rng):
    a, b = sorted((rng.randint(0, 99), rng.randint(0, 99)), reverse=True)
    return f"What is {a} - {b}?", str(a - b), "number"


def _reverse(rng):
    w = _word(rng)
    return f"Reverse {w}.", w[::-1], "word"


def _length(rng):
    w = _word(rng)
    return f"How many letters in {w}?", str(len(w)), "number"


def _convert(rng):
    large, small, factor = rng.choice(UNITS)
    x = rng.randint(1, 99)
    if rng.random() < 0.5:
        return f"How many {small} in {x} {large}?", str(x * factor), "number"
    return f"How many {large} in {x * factor} {small}?", str(x), "number"


SKILLS: dict[str, Callable] = {"add": _add, "sub": _sub, "reverse": _reverse, "length": _length,
                               "convert": _convert}


def _followup(rng: random.Random, answer: str, kind: str) -> tuple[str, str, str]:
    """A follow-up question about the previous answer -> (question, answer, kind)."""
    if kind == "number":
        n = int(answer)
        if rng.random() < 0.5:
            return "And doubled?", str(2 * n), "number"
        k = rng.randint(1, 9)
        return f"And plus {k}?", str(n + k), "number"
    r = rng.random()
    if r < 0.4:
        return "And reversed?", answer[::-1], "word"
    if r < 0.8 and not answer.isupper():
        return "And in capitals?", answer.upper(), "word"
    return "And how many letters?", str(len(answer)), "number"


def qa_skills(split: str, n: int, *, seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
              followup_prob: float = 0.5, max_followups: int = 2, skills: tuple[str, ...] = ()) -> list[Conversation]:
    """`n` conversations of one split ("train", "val" or "test"); see the module docstring.

    skills: the first-question skills to draw from (names of `SKILLS`; empty = all of them).
    """
    if split not in ("train", "val", "test"):
        raise QKVError(f"unknown split {split!r}; valid: train, val, test")
    unknown = [s for s in skills if s not in SKILLS]
    if unknown:
        raise QKVError(f"unknown qa-skills skill {unknown[0]!r}; valid: {', '.join(SKILLS)}")
    rng = random.Random(f"qa-skills/{seed}/{split}" + (f"/{','.join(skills)}" if skills else ""))
    skills = [SKILLS[s] for s in skills] if skills else list(SKILLS.values())
    out: list[Conversation] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 200 * n + 1000:
            raise QKVError(f"qa-skills: cannot find {n} distinct {split} questions; ask for fewer")
        q, a, kind = rng.choice(skills)(rng)
        if split_of(q, val_fraction, test_fraction) != split or (split != "train" and q in seen):
            continue
        seen.add(q)
        messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        if max_followups and rng.random() < followup_prob:
            for _ in range(rng.randint(1, max_followups)):
                q, a, kind = _followup(rng, a, kind)
                messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        out.append(conversation(messages, f"qa-skills {split} #{len(out) + 1}"))
    return out


# --------------------------------------------------------------------------------------------- pydoc-qa
PYDOC_MODULES = (
    "base64", "binascii", "bisect", "calendar", "codecs", "colorsys", "copy", "csv", "datetime", "difflib",
    "fnmatch", "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html", "inspect", "itertools",
    "json", "keyword", "math", "operator", "os", "os.path", "pathlib", "platform", "pprint", "random", "re",
    "secrets", "shlex", "shutil", "statistics", "string", "struct", "tempfile", "textwrap", "time", "unicodedata",
    "urllib.parse", "uuid", "zlib",
)


def _summary(fn, name: str) -> str | None:
    """The first line of `fn`'s docstring if it makes a usable answer, else None."""
    doc = inspect.getdoc(fn)
    if not doc:
        return None
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())  # the summary paragraph, on one line
    line = re.split(r"(?<=\.)\s", paragraph, maxsplit=1)[0]  # its first sentence
    if line.startswith((name + "(", name + " (")) or "-->" in line or "->" in line:
        return None  # a bare signature, not a description
    if not 8 <= len(line) <= 80 or not line.isascii() or not line[0].isupper():
        return None
    return line


@lru_cache(maxsize=1)
def pydoc_pairs() -> tuple[tuple[str, str], ...]:
    """(qualified function name, docstring first line) for every kept function, sorted by name."""
    pairs: dict[str, str] = {}
    seen: set[int] = set()
    for modname, module in stdlib_modules(PYDOC_MODULES):
        for name, fn in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isfunction(fn) or inspect.isbuiltin(fn)) or id(fn) in seen:
                continue
            summary = _summary(fn, name)
            if summary is not None:
                seen.add(id(fn))
                pairs[f"{modname}.{name}"] = summary
    return tuple(sorted(pairs.items()))


def pydoc_qa(split: str, *, val_fraction: float = 0.1, test_fraction: float = 0.1) -> list[Conversation]:
    """Every pydoc-qa conversation of one split (by function name)."""
    out = []
    for qualname, summary in pydoc_pairs():
        if split_of(qualname, val_fraction, test_fraction) == split:
            messages = [{"role": "user", "content": f"What does {qualname} do?"},
                        {"role": "assistant", "content": summary}]
            out.append(conversation(messages, f"pydoc-qa {qualname}", key=qualname))
    return out
