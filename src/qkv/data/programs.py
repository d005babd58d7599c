"""Synthetic programs with hidden tests: code generation's data, generated offline from fixed seeds.

A program is a chain of k building blocks over strings, integer lists and integers. Each block is one line of
Python that reads the previous line's variable (``s`` a string, ``xs`` a list, ``n`` an integer) and writes the
next one's; the docstring says the same chain in English and shows two doctest examples; the hidden tests are
five more inputs whose outputs come from running the reference chain (in this process: it is qkv's own code,
never a model's). The prompt is what HumanEval gives a model — the signature and the docstring — and the
completion is the function's body:

    def solve(s):                                            <- prompt
        \"\"\"Given a string: reverse it, then drop the vowels.

        >>> solve('tiger')
        'rgt'
        >>> solve('bake')
        'kb'
        \"\"\"
        s = s[::-1]                                          <- completion (the reference)
        s = ''.join(c for c in s if c not in 'aeiou')
        return s

Splits (`program_splits`), all from one seed, no evaluation program's code in training:

    train          k = 1, 2 or 3 blocks, never two blocks of a held-out pair in one program; a program may come
                   back with other examples (there are few one-block programs)
    val            the same distribution, programs training never has (the training-time evaluation)
    compositions   k = 2 programs made of a held-out pair: blocks seen in training, never together
    k3             k = 3 programs of seen pairs (the reinforcement target)
    length         k = 4 programs of seen pairs: longer chains than any in training

A held-out pair is an unordered pair of blocks (``reverse`` with ``drop_vowels``, whatever their order) that can
follow each other; `held_out_pairs` picks a fixed share of the pairs so that every block keeps most partners.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from qkv.errors import QKVError

STR, LIST, INT = "str", "list", "int"
VARIABLE = {STR: "s", LIST: "xs", INT: "n"}  # each type's variable in the body
GIVEN = {STR: "a string", LIST: "a list of integers"}  # how the docstring names the input
ENTRY_POINT = "solve"
VOWELS = "aeiou"


@dataclass(frozen=True)
class Block:
    """One building block: a line ``out = <code>`` from a value of type `takes` to one of type `gives`.

    `phrase` and `code` hold ``{v}`` (the input variable) and the block's parameters (``{m}`` a number, ``{a}``
    ``{b}`` letters); `fn(value, params)` is the same operation in Python, which makes the tests' outputs."""

    name: str
    takes: str
    gives: str
    phrase: str
    code: str
    fn: Callable
    params: tuple[str, ...] = ()


def _block(name, takes, gives, phrase, code, fn, *params) -> Block:
    return Block(name, takes, gives, phrase, code, fn, params)


BLOCKS: tuple[Block, ...] = (
    # string -> string
    _block("reverse", STR, STR, "reverse it", "{v}[::-1]", lambda v, p: v[::-1]),
    _block("upper", STR, STR, "make it upper case", "{v}.upper()", lambda v, p: v.upper()),
    _block("drop_vowels", STR, STR, "drop the vowels", "''.join(c for c in {v} if c not in 'aeiou')",
           lambda v, p: "".join(c for c in v if c not in VOWELS)),
    _block("replace", STR, STR, "replace every '{a}' with '{b}'", "{v}.replace('{a}', '{b}')",
           lambda v, p: v.replace(p["a"], p["b"]), "a", "b"),
    _block("first_chars", STR, STR, "keep the first {m} characters", "{v}[:{m}]", lambda v, p: v[: p["m"]], "m"),
    _block("double", STR, STR, "double every character", "''.join(c * 2 for c in {v})",
           lambda v, p: "".join(c * 2 for c in v)),
    _block("sort_chars", STR, STR, "sort its characters", "''.join(sorted({v}))", lambda v, p: "".join(sorted(v))),
    _block("dedupe_chars", STR, STR, "drop repeated characters, keeping the first of each",
           "''.join(dict.fromkeys({v}))", lambda v, p: "".join(dict.fromkeys(v))),
    _block("rotate", STR, STR, "move the first character to the end", "{v}[1:] + {v}[:1]",
           lambda v, p: v[1:] + v[:1]),
    # string -> list
    _block("letter_numbers", STR, LIST, "turn each letter into its place in the alphabet",
           "[ord(c) - 96 for c in {v}]", lambda v, p: [ord(c) - 96 for c in v]),
    # list -> list
    _block("keep_evens", LIST, LIST, "keep the even numbers", "[x for x in {v} if x % 2 == 0]",
           lambda v, p: [x for x in v if x % 2 == 0]),
    _block("keep_odds", LIST, LIST, "keep the odd numbers", "[x for x in {v} if x % 2 == 1]",
           lambda v, p: [x for x in v if x % 2 == 1]),
    _block("square", LIST, LIST, "square each number", "[x * x for x in {v}]", lambda v, p: [x * x for x in v]),
    _block("sort_desc", LIST, LIST, "sort them in descending order", "sorted({v}, reverse=True)",
           lambda v, p: sorted(v, reverse=True)),
    _block("sort_asc", LIST, LIST, "sort them in ascending order", "sorted({v})", lambda v, p: sorted(v)),
    _block("first_items", LIST, LIST, "take the first {m} numbers", "{v}[:{m}]", lambda v, p: v[: p["m"]], "m"),
    _block("dedupe", LIST, LIST, "drop repeated numbers, keeping the first of each", "list(dict.fromkeys({v}))",
           lambda v, p: list(dict.fromkeys(v))),
    _block("add_each", LIST, LIST, "add {m} to each number", "[x + {m} for x in {v}]",
           lambda v, p: [x + p["m"] for x in v], "m"),
    _block("times_each", LIST, LIST, "multiply each number by {m}", "[x * {m} for x in {v}]",
           lambda v, p: [x * p["m"] for x in v], "m"),
    _block("reverse_list", LIST, LIST, "reverse the list", "{v}[::-1]", lambda v, p: v[::-1]),
    _block("keep_greater", LIST, LIST, "keep the numbers greater than {m}", "[x for x in {v} if x > {m}]",
           lambda v, p: [x for x in v if x > p["m"]], "m"),
    # list -> integer, list -> string
    _block("sum", LIST, INT, "add them all up", "sum({v})", lambda v, p: sum(v)),
    _block("count", LIST, INT, "count them", "len({v})", lambda v, p: len(v)),
    _block("largest", LIST, INT, "take the largest (0 if there is none)", "max({v}, default=0)",
           lambda v, p: max(v, default=0)),
    _block("join", LIST, STR, "join the numbers with commas", "','.join(str(x) for x in {v})",
           lambda v, p: ",".join(str(x) for x in v)),
    # integer -> integer, integer -> string
    _block("plus", INT, INT, "add {m}", "{v} + {m}", lambda v, p: v + p["m"], "m"),
    _block("times", INT, INT, "multiply by {m}", "{v} * {m}", lambda v, p: v * p["m"], "m"),
    _block("mod", INT, INT, "take the remainder after dividing by {m}", "{v} % {m}", lambda v, p: v % p["m"], "m"),
    _block("digits", INT, STR, "write the number as text", "str({v})", lambda v, p: str(v)),
)
BY_NAME = {b.name: b for b in BLOCKS}
PARAM_RANGE = {"first_chars": (2, 5), "first_items": (2, 5), "add_each": (1, 9), "times_each": (2, 4),
               "keep_greater": (2, 6), "plus": (1, 9), "times": (2, 4), "mod": (3, 9)}


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt a model completes, the reference completion, and the hidden tests (Python
    statements run after the program, in its namespace; each passes if it raises nothing)."""

    task_id: str
    prompt: str
    completion: str
    tests: tuple[str, ...]
    entry_point: str = ENTRY_POINT
    blocks: tuple[str, ...] = ()
    split: str = ""

    @property
    def k(self) -> int:
        return len(self.blocks)

    def program(self, completion: str | None = None) -> str:
        """The prompt with `completion` (default: the reference) after it: what the sandbox runs."""
        return self.prompt + (self.completion if completion is None else completion)


# ------------------------------------------------------------------------------------------------ one program
def _params(block: Block, rng: random.Random) -> dict:
    p = {}
    if "m" in block.params:
        lo, hi = PARAM_RANGE[block.name]
        p["m"] = rng.randint(lo, hi)
    if "a" in block.params:
        p["a"] = rng.choice("aeiourst")
        p["b"] = rng.choice([c for c in "abcdefghijklmnopqrstuvwxyz" if c != p["a"]])
    return p


def random_input(kind: str, rng: random.Random):
    """A string of 4-9 lower-case letters (vowels frequent) or a list of 4-8 digits."""
    if kind == STR:
        letters = "aeiou" * 3 + "bcdfghklmnprstvwyz"
        return "".join(rng.choice(letters) for _ in range(rng.randint(4, 9)))
    return [rng.randint(0, 9) for _ in range(rng.randint(4, 8))]


def run_chain(chain: list[tuple[Block, dict]], value):
    for block, params in chain:
        value = block.fn(value, params)
    return value


def render(chain: list[tuple[Block, dict]], inputs: list, index: int, split: str) -> Problem:
    """The prompt, reference completion and tests of a chain; `inputs[:2]` are the docstring's examples, the
    rest the hidden tests."""
    kind = chain[0][0].takes
    var = VARIABLE[kind]
    phrases = [b.phrase.format(**p) for b, p in chain]
    text = ", then ".join(phrases)
    lines, v = [], var
    for block, params in chain:
        out = VARIABLE[block.gives]
        lines.append(f"    {out} = {block.code.format(v=v, **params)}\n")
        v = out
    completion = "".join(lines) + f"    return {v}\n"
    examples = "".join(f"    >>> {ENTRY_POINT}({x!r})\n    {run_chain(chain, x)!r}\n" for x in inputs[:2])
    prompt = (f"def {ENTRY_POINT}({var}):\n    \"\"\"Given {GIVEN[kind]}: {text}.\n\n{examples}    \"\"\"\n")
    tests = tuple(f"assert {ENTRY_POINT}({x!r}) == {run_chain(chain, x)!r}" for x in inputs[2:])
    return Problem(f"{split}/{index}", prompt, completion, tests, ENTRY_POINT, tuple(b.name for b, _ in chain), split)


def _pairs_of(names) -> set[frozenset]:
    return {frozenset((a, b)) for i, a in enumerate(names) for b in names[i + 1:] if a != b}


@cache
def adjacent_pairs() -> tuple[frozenset, ...]:
    """Every unordered pair of different blocks that can follow each other (one's output is the other's input)."""
    pairs = {frozenset((a.name, b.name)) for a in BLOCKS for b in BLOCKS if a is not b and a.gives == b.takes}
    return tuple(sorted(pairs, key=sorted))


def held_out_pairs(fraction: float = 0.12, seed: int = 0) -> frozenset[frozenset]:
    """A fixed `fraction` of the adjacent pairs, each block in at most two of them."""
    rng = random.Random(seed)
    pairs = list(adjacent_pairs())
    rng.shuffle(pairs)
    chosen, uses = [], {b.name: 0 for b in BLOCKS}
    for pair in pairs:
        if len(chosen) >= round(fraction * len(pairs)):
            break
        if all(uses[n] < 2 for n in pair):
            chosen.append(pair)
            for n in pair:
                uses[n] += 1
    return frozenset(chosen)


def random_chain(k: int, rng: random.Random, avoid: frozenset, must: frozenset | None = None
                 ) -> list[tuple[Block, dict]] | None:
    """A type-correct chain of k blocks starting from a string or a list, no block twice in a row, no pair in
    `avoid`; with `must` (a pair), exactly its two blocks in some order (k = 2). None if the walk got stuck."""
    if must is not None:
        a, b = (BY_NAME[n] for n in sorted(must))
        order = [(a, b), (b, a)]
        order = [o for o in order if o[0].gives == o[1].takes and o[0].takes in GIVEN]
        if not order:
            return None
        first, second = rng.choice(order)
        return [(first, _params(first, rng)), (second, _params(second, rng))]
    kind = rng.choice([STR, LIST])
    chain: list[tuple[Block, dict]] = []
    for _ in range(k):
        names = [c.name for c, _ in chain]
        options = [b for b in BLOCKS if b.takes == kind and (not names or b.name != names[-1])
                   and not any(frozenset((b.name, n)) in avoid for n in names if n != b.name)]
        if not options:
            return None
        block = rng.choice(options)
        chain.append((block, _params(block, rng)))
        kind = block.gives
    return chain


def usable(chain, inputs) -> bool:
    """Whether a chain's outputs tell programs apart: at least 3 different outputs over the 7 inputs, none longer
    than 60 characters as Python writes them."""
    outs = [repr(run_chain(chain, x)) for x in inputs]
    return len(set(outs)) >= 3 and max(map(len, outs)) <= 60


# ------------------------------------------------------------------------------------------------ the splits
@dataclass(frozen=True)
class ProgramSpec:
    """How many programs each split has, and the seed: everything `program_splits` depends on."""

    train: int = 30000
    eval: int = 200  # problems in each evaluation split (val, compositions, k3, length)
    held_out_fraction: float = 0.12
    seed: int = 0


SPLITS = ("train", "val", "compositions", "k3", "length")
_K_WEIGHTS = (1, 3, 4)  # training programs with k = 1, 2, 3 blocks, in these proportions


@cache
def program_splits(spec: ProgramSpec = ProgramSpec()) -> dict[str, tuple[Problem, ...]]:
    """Every split of the synthetic programs (module docstring). The same spec gives the same problems,
    character for character, on any machine."""
    rng = random.Random(spec.seed)
    held = held_out_pairs(spec.held_out_fraction, spec.seed)
    seen_code: set[str] = set()
    out: dict[str, list[Problem]] = {name: [] for name in SPLITS}

    def draw(split: str, n: int, k_of: Callable[[], int], avoid: frozenset, must_of=None) -> None:
        """`n` problems of `split`; an evaluation problem's code is new, a training problem's code is no
        evaluation problem's (training may repeat a program with other examples: k = 1 has few programs)."""
        tries = 0
        while len(out[split]) < n:
            tries += 1
            if tries > 200 * n + 1000:
                raise QKVError(f"could not make {n} {split} programs (made {len(out[split])})")
            chain = random_chain(k_of(), rng, avoid, must_of() if must_of else None)
            if chain is None:
                continue
            inputs = [random_input(chain[0][0].takes, rng) for _ in range(7)]
            if not usable(chain, inputs):
                continue
            problem = render(chain, inputs, len(out[split]), split)
            if problem.completion in seen_code:
                continue
            if split != "train":
                seen_code.add(problem.completion)
            out[split].append(problem)

    held_list = sorted(held, key=sorted)
    draw("compositions", spec.eval, lambda: 2, frozenset(), lambda: rng.choice(held_list))
    draw("length", spec.eval, lambda: 4, held)
    draw("k3", spec.eval, lambda: 3, held)
    draw("val", spec.eval, lambda: rng.choices((1, 2, 3), _K_WEIGHTS)[0], held)
    draw("train", spec.train, lambda: rng.choices((1, 2, 3), _K_WEIGHTS)[0], held)
    return {name: tuple(problems) for name, problems in out.items()}


# ------------------------------------------------------------------------------------------------ HumanEval
def humaneval_problems(path: str | Path | None = None) -> tuple[Problem, ...]:
    """HumanEval's 164 problems (Chen et al. 2021; MIT): each prompt, its canonical solution as the reference
    completion, and one test, its ``check(entry_point)``. `path` defaults to the registry's copy."""
    if path is None:
        from qkv.data.registry import resolve

        path = resolve("humaneval") / "HumanEval.jsonl.gz"
    path = Path(path)
    if not path.is_file():
        raise QKVError(f"file not found: {path}")
    try:
        rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8") if line.strip()]
    except (OSError, EOFError, json.JSONDecodeError) as e:
        raise QKVError(f"{path}: not a HumanEval .jsonl.gz file ({e})") from None
    need = {"task_id", "prompt", "canonical_solution", "test", "entry_point"}
    problems = []
    for i, row in enumerate(rows):
        if not need <= set(row):
            raise QKVError(f"{path}: line {i + 1} lacks {', '.join(sorted(need - set(row)))}")
        problems.append(Problem(row["task_id"], row["prompt"], row["canonical_solution"],
                                (f"{row['test']}\ncheck({row['entry_point']})",), row["entry_point"], (), "humaneval"))
    if not problems:
        raise QKVError(f"{path}: no problems")
    return tuple(problems)


STOP_SEQUENCES = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#", '\n"""', "\nassert ")


def trim_completion(text: str) -> str:
    """A completion cut at the first line that starts a new top-level statement (Codex's stop sequences): the
    function's body only."""
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    return text[:cut] + ("\n" if cut < len(text) else "")


def doctest_tests(prompt: str) -> list[str]:
    """The examples of a prompt's docstring as tests: ``>>> solve('ab')`` followed by ``'BA'`` becomes
    ``assert (solve('ab')) == ('BA')`` (read by the standard library's doctest parser from the last function's
    docstring, or from the whole text when it does not parse); QKVError if there are none."""
    import ast
    import doctest

    text = prompt
    try:
        functions = [n for n in ast.walk(ast.parse(prompt)) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        text = (ast.get_docstring(functions[-1]) if functions else None) or prompt
    except SyntaxError:
        pass
    try:
        examples = doctest.DocTestParser().get_examples(text)
    except ValueError as e:
        raise QKVError(f"the docstring's examples cannot be read: {e}") from None
    tests = [f"assert ({ex.source.strip()}) == ({ex.want.strip()})" for ex in examples if ex.want.strip()]
    if not tests:
        raise QKVError("the prompt has no examples to test against (lines like >>> f(1) followed by the result)")
    return tests
