"""Chat skills asked in many phrasings, with whole phrasings and whole values held out: the ``skills`` source.

The chat task's ``qa-skills`` asks each skill one way ("Reverse kowpe."): a model trained on it answers that
wording and nothing else. Here every skill has 16 to 21 phrasings (arithmetic 20 or so per operation); the last
three of each list are never trained on, and neither are the held-out values (numbers and words chosen by a hash,
whatever the seed). No training phrasing is a near copy of a held-out one (no "Take away {b} from {a}." beside the
held-out "Take {b} away from {a}.")::

    skill       a phrasing                                   answer (what exact match compares)
    arithmetic  What is 37 plus 45?                          <<37+45=82>>82        the calculator call first
                Take 18 away from 64.                        <<64-18=46>>46
    compare     Which is larger, 37 or 52?                   52                    a 2-way choice
    reverse     Write 'kowpe' backwards.                     k-o-w-p-e reversed is e-p-w-o-k: epwok
    count       How many letters does 'kowpe' have?          k-o-w-p-e: 5
    spell       Spell 'kowpe'.                               k-o-w-p-e
    explain     What does this Python function do?           Given a string: reverse it, then drop the vowels.
                def f(s): ...  (one or two lines of `qkv.data.programs`' blocks)

Replies show their working where a small model needs it: a BPE token holds several letters, so reversing or
counting a word goes through its spelling first (nanochat's SpellingBee does the same), and arithmetic goes
through the calculator tool (`qkv.generation.calculator`): the model turns the wording into an expression and
copies the result. Exact match compares the *final answer* (`qkv.data.chat_template.final_answer`: the text
after the last ": ", without calculator calls); numbers compare as numbers.

Splits (`skill_conversations`), one generator, all deterministic in (seed, split, n):

    train       training phrasings × training values, a third of them with a courtesy added ("Hey, ", " Thanks.")
                or a lower-case start, so that no wording is learnt as one fixed string
    val         the same distribution, other draws (the validation loss while training)
    test        held-out phrasings × training values              ("phrasings" in reports)
    values      training phrasings × held-out values              ("values")
    rl          training phrasings × wider training values: numbers to 999, words of up to 8 letters (the
                reinforcement prompts: a fine-tuned model still gets some wrong, so its samples disagree and teach)

Held-out values: numbers 10..99 whose hash falls in the held-out eighth (an arithmetic or compare question holds
out if either operand does), words likewise, and for ``explain`` the block pairs `qkv.data.programs` holds out
(blocks seen in training, never together).
"""

from __future__ import annotations

import hashlib
import random
import string
from collections.abc import Callable

from qkv.data.conversations import Conversation, conversation

SKILLS = ("arithmetic", "compare", "reverse", "count", "spell", "explain")
CHOICES = {"compare": 2}  # a k-way choice: chance is 1/k (ChatCORE's baseline); the others are open (0)
HELD_OUT_PHRASINGS = 3  # the last three phrasings of each list
SPLITS = ("train", "val", "test", "values", "rl")

OPS = {  # the last three of each list are held out
    "+": ("What is {a} plus {b}?", "What is {a} + {b}?", "Add {a} and {b}.", "{a} + {b} = ?", "Compute {a} + {b}.",
          "What's the sum of {a} and {b}?", "How much is {a} plus {b}?", "Please add {a} to {b}.",
          "Calculate {a}+{b}.", "What is the sum of {a} and {b}?", "Sum {a} and {b}.", "{a} plus {b} is what?",
          "Work out {a} + {b}.", "Add up {a} and {b}.", "If you add {b} to {a}, what do you get?",
          "Tell me {a} plus {b}.", "Increase {a} by {b}.", "{a} and {b} added together make what?",
          "What do you get when you add {a} and {b}?", "Find the total of {a} and {b}.",
          "I have {a} apples and get {b} more. How many apples do I have?"),
    "-": ("What is {a} minus {b}?", "What is {a} - {b}?", "Subtract {b} from {a}.", "{a} - {b} = ?",
          "Compute {a} - {b}.", "What's {a} take away {b}?", "How much is {a} minus {b}?", "Calculate {a}-{b}.",
          "What is the difference {a} - {b}?", "Work out {a} - {b}.", "{a} minus {b} is what?",
          "Decrease {a} by {b}.", "If you subtract {b} from {a}, what is left?",
          "Tell me {a} minus {b}.", "What remains when {b} is subtracted from {a}?", "Reduce {a} by {b}.",
          "{a} take away {b} equals what?",
          "Take {b} away from {a}.", "What is {b} less than {a}?", "I had {a} coins and spent {b}. How many are left?"),
    "*": ("What is {a} times {b}?", "What is {a} * {b}?", "Multiply {a} by {b}.", "{a} * {b} = ?",
          "Compute {a} * {b}.", "What's the product of {a} and {b}?", "How much is {a} times {b}?",
          "Calculate {a}*{b}.", "What do you get when you multiply {a} and {b}?", "Work out {a} * {b}.",
          "{a} times {b} is what?", "Multiply {a} and {b} together.", "What is the product of {a} and {b}?",
          "Tell me {a} times {b}.", "If you multiply {a} by {b}, what do you get?", "Find the product of {a} and {b}.",
          "Times {a} by {b}.",
          "Find {a} multiplied by {b}.", "What is {a} lots of {b}?",
          "There are {a} boxes of {b} pens. How many pens is that?"),
}
PHRASINGS: dict[str, tuple[str, ...]] = {  # the last three of each list are held out
    "compare": ("Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?", "Is {a} or {b} greater?",
                "What is the larger of {a} and {b}?", "Pick the larger number: {a}, {b}.",
                "Which is greater, {a} or {b}?", "Of {a} and {b}, which is more?", "Tell me the bigger of {a} and {b}.",
                "Which is the maximum of {a} and {b}?", "Which is bigger, {a} or {b}?", "Larger of {a} and {b}?",
                "Choose the bigger number: {a} or {b}.", "What is the max of {a} and {b}?",
                "Which of {a} and {b} is larger?", "Is {a} bigger than {b}? Give the larger one.",
                "Name the greater number, {a} or {b}.", "Which one is more, {a} or {b}?",
                "{a} or {b}: which is higher?", "Between {a} and {b}, which number is larger?",
                "Give the greater one of {a} and {b}."),
    "reverse": ("Reverse {w}.", "Reverse the word '{w}'.", "What is {w} backwards?", "Write '{w}' backwards.",
                "Spell {w} in reverse.", "Can you reverse '{w}'?", "Give me {w} reversed.",
                "What does '{w}' look like reversed?", "Flip the letters of {w}.", "Reverse the string {w}.",
                "Write {w} in reverse order.", "What is '{w}' spelled backwards?", "Reverse this word: {w}",
                "Backwards, how is '{w}' written?", "Please reverse {w}.", "Invert the order of letters in {w}.",
                "{w} reversed is what?", "Read '{w}' from right to left.",
                "Turn '{w}' around.", "Please write {w} back to front.", "Reverse the letters in '{w}'."),
    "count": ("How many letters in {w}?", "How many letters does '{w}' have?", "How long is the word {w}?",
              "Count the letters in '{w}'.", "What is the length of {w}?", "How many characters are in '{w}'?",
              "Tell me how many letters {w} has.", "Count the characters of {w}.", "What's the letter count of '{w}'?",
              "How many letters are there in {w}?", "Length of '{w}'?", "Count how many letters {w} has.",
              "How many characters long is '{w}'?",
              "Please count the letters of {w}.", "{w} has how many letters?", "How long is '{w}' in letters?",
              "How many letters make up '{w}'?", "Give the number of letters in {w}.",
              "What is the number of letters of the word {w}?"),
    "spell": ("Spell {w}.", "Spell '{w}'.", "How do you spell {w}?", "Spell out the word '{w}'.",
              "Spell {w} letter by letter.", "Can you spell '{w}'?", "Write {w} one letter at a time.",
              "Give the letters of '{w}'.", "What are the letters of {w}?",
              "Letter by letter, how is '{w}' written?", "List the letters of {w}.",
              "How is {w} spelled?", "Spell this: {w}",
              "Please spell '{w}' for me.", "Split {w} into its letters.", "Which letters is '{w}' made of?"),
    "explain": ("What does this Python function do?\n{code}", "What does this function do?\n{code}",
                "Explain this code:\n{code}", "Describe this function:\n{code}", "{code}\nWhat does it do?",
                "Summarize what this does:\n{code}", "Tell me what this Python does:\n{code}",
                "In one sentence, what does this compute?\n{code}", "{code}\nExplain it.",
                "What does the following code do?\n{code}", "Explain what this function computes:\n{code}",
                "{code}\nWhat does this function compute?", "Briefly, what does this do?\n{code}",
                "Describe the behaviour of this code:\n{code}", "{code}\nSummarize it.",
                "Can you explain this function?\n{code}",
                "What is this function for?\n{code}", "Read this code and say what it does:\n{code}",
                "{code}\nDescribe what this function returns."),
}
# training questions only: a courtesy before or after, or a lower-case start (the held-out wordings stay bare)
PREFIXES = ("Please, ", "Hey, ", "Quick question: ", "Hi! ", "Can you help? ", "I need this: ")
SUFFIXES = (" Thanks.", " Thank you!", " Please.", " Quickly.")


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def held_out_value(value: str) -> bool:
    """Whether a number or word is held out (one value in eight, by a hash: the same on every machine)."""
    return _hash(f"value:{value}") % 8 == 0


def phrasings(skill: str, held_out: bool) -> tuple[str, ...]:
    """The training phrasings of `skill` (all but the last three of each list), or the held-out ones."""
    lists = OPS.values() if skill == "arithmetic" else [PHRASINGS[skill]]
    cut = -HELD_OUT_PHRASINGS
    return tuple(p for ps in lists for p in (ps[cut:] if held_out else ps[:cut]))


def _word(rng: random.Random, wide: bool = False) -> str:
    """3-6 random lower-case letters (wide: 3-8)."""
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 8 if wide else 6)))


def _number(rng: random.Random, wide: bool = False) -> int:
    """10-99 (wide: 10-999)."""
    return rng.randint(10, 999 if wide else 99)


def spelled(word: str) -> str:
    return "-".join(word)


# Each skill: (rng, phrasing chooser, held_out_values) -> (question, reply) or None when the draw is on the wrong
# side of the value split (the caller draws again).
def _arithmetic(rng, pick, held):
    op = rng.choice("+-*")
    a, b = _number(rng, pick.wide), (_number(rng, pick.wide) if op != "*" else rng.randint(2, 99 if pick.wide else 19))
    if op == "-" and a < b:
        a, b = b, a
    if (held_out_value(str(a)) or held_out_value(str(b))) != held:
        return None
    template = pick([p for p in phrasings("arithmetic", pick.held_out) if p in OPS[op]])
    result = {"+": a + b, "-": a - b, "*": a * b}[op]
    return template.format(a=a, b=b), f"<<{a}{op}{b}={result}>>{result}"


def _compare(rng, pick, held):
    a, b = rng.sample(range(10, 1000 if pick.wide else 100), 2)
    if (held_out_value(str(a)) or held_out_value(str(b))) != held:
        return None
    return pick(phrasings("compare", pick.held_out)).format(a=a, b=b), str(max(a, b))


def _word_skill(reply: Callable[[str], str], skill: str):
    def make(rng, pick, held):
        w = _word(rng, pick.wide)
        if held_out_value(w) != held:
            return None
        return pick(phrasings(skill, pick.held_out)).format(w=w), reply(w)
    return make


def _explain(rng, pick, held):
    from qkv.data.programs import GIVEN, VARIABLE, held_out_pairs, random_chain

    pairs = sorted(held_out_pairs(), key=sorted)
    chain = random_chain(2, rng, frozenset(), must=rng.choice(pairs)) if held else \
        random_chain(rng.choice((1, 2)), rng, frozenset(pairs))
    if chain is None:
        return None
    kind = chain[0][0].takes
    v = VARIABLE[kind]
    lines = [f"def f({v}):"]
    for block, params in chain:
        out = VARIABLE[block.gives]
        lines.append(f"    {out} = {block.code.format(v=v, **params)}")
        v = out
    lines.append(f"    return {v}")
    text = ", then ".join(b.phrase.format(**p) for b, p in chain)
    return pick(phrasings("explain", pick.held_out)).format(code="\n".join(lines)), f"Given {GIVEN[kind]}: {text}."


MAKERS = {
    "arithmetic": _arithmetic,
    "compare": _compare,
    "reverse": _word_skill(lambda w: f"{spelled(w)} reversed is {spelled(w[::-1])}: {w[::-1]}", "reverse"),
    "count": _word_skill(lambda w: f"{spelled(w)}: {len(w)}", "count"),
    "spell": _word_skill(spelled, "spell"),
    "explain": _explain,
}


def _decorate(question: str, rng: random.Random) -> str:
    """A training question, sometimes with a courtesy before or after it or a lower-case start."""
    r = rng.random()
    if r < 0.15:
        question = rng.choice(PREFIXES) + question
    elif r < 0.3:
        question = question + rng.choice(SUFFIXES)
    if rng.random() < 0.1:
        question = question[0].lower() + question[1:]
    return question


class _Picker:
    """rng.choice over a phrasing list, remembering which side of the phrasing split it draws from (and whether
    the values are the wide ones)."""

    def __init__(self, rng: random.Random, held_out: bool, wide: bool = False):
        self.rng, self.held_out, self.wide = rng, held_out, wide

    def __call__(self, options):
        return self.rng.choice(list(options))


def skill_conversations(split: str, n: int, *, seed: int = 0, skills: tuple[str, ...] = SKILLS) -> list[Conversation]:
    """`n` single-turn conversations of `split` (module docstring), the skills in turn; each knows its skill.

    The same (split, n, seed, skills) always gives the same conversations; train and val draw from different
    streams, so val questions are other draws of the training distribution (a few may coincide by chance)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    unknown = [s for s in skills if s not in SKILLS]
    if unknown:
        raise ValueError(f"unknown skill(s) {', '.join(unknown)}; valid: {', '.join(SKILLS)}")
    rng = random.Random(f"skills:{seed}:{split}")
    pick = _Picker(rng, held_out=split == "test", wide=split == "rl")
    held_values = split == "values"
    out = []
    for i in range(n):
        skill = skills[i % len(skills)]
        made = None
        while made is None:
            made = MAKERS[skill](rng, pick, held_values)
        question, answer = made
        if split in ("train", "val"):
            question = _decorate(question, rng)
        c = conversation([{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
                         f"skills {split} #{i + 1}")
        c.skill = skill
        out.append(c)
    return out
