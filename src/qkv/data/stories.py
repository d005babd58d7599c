"""Story worlds in the manner of bAbI (Weston et al. 2015): people move between places and carry objects in short
stories, and a question about the story follows. Generated here, from fixed seeds; nothing is downloaded.

    passage   Mary went to the kitchen. John picked up the apple. John travelled to the garden. Mary got the milk.
    question  Where is the apple?
    answer    garden        (family "two": John has the apple, and John is in the garden)

Families (each its own split, one model for all; bAbI's task numbers in brackets):

    family     asks                                      needs
    single     Where is Mary?                            her last move [1]
    two        Where is the apple?  (being carried)      who has it, and where they are [2]
    three      Where is the apple?  (put down)           who had it, where they went, where they put it down [3]
    counting   How many objects is Mary carrying?        every pick-up and drop of hers [7]: none/one/two/three
    lists      What is Mary carrying?                    the same, named [8]: "apple, milk" (any order)
    yes-no     Is Mary in the kitchen?                   her last move [6]
    negation   Is Mary in the kitchen?                   a last fact that may say "Mary is no longer in ..." [9]
    before     Where was Mary before the garden?         the move before her last one to the garden [3, 14]
    size       Does the box fit in the chest?            a chain of "bigger than" facts, by transitivity [18]
    position   Is the triangle to the left of the disc?  a chain of left/right facts, by transitivity [17]

Held-out worlds: the training split draws names and places from one list, ``test`` and ``paraphrase`` from
another, never seen in training. Held-out wording: every family has training question templates and paraphrase
templates; ``paraphrase`` asks with the latter only, so its questions were never phrased that way in training.

An answer that is a place (single, two, three, before) is also a span of the passage: `Example.span` holds the
character offsets of the mention that answers it (the supporting fact's), for the extractive head; other answers
(yes/no, counts, lists) are written, not pointed at (`span` is None).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import permutations

from qkv.errors import QKVError

FAMILIES = ("single", "two", "three", "counting", "lists", "yes-no", "negation", "before", "size", "position")
SPLITS = ("train", "val", "test", "paraphrase")

NAMES = {"train": ("Mary", "John", "Sandra", "Daniel", "Fred", "Julie", "Bill", "Emma", "Oliver", "Lucy", "Peter",
                   "Anna", "Tom", "Grace", "Harry", "Sofia"),
         "held-out": ("Yann", "Ada", "Kofi", "Mei", "Ravi", "Ines", "Omar", "Noor")}
PLACES = {"train": ("kitchen", "garden", "office", "bathroom", "hallway", "bedroom", "cellar", "garage", "attic",
                    "library"),
          "held-out": ("studio", "balcony", "pantry", "workshop", "porch", "lobby")}
OBJECTS = ("apple", "milk", "football", "book", "key", "cup", "hat", "lamp")
CONTAINERS = ("box", "chest", "suitcase", "chocolate", "crate", "basket", "bag", "drawer")  # size family
SHAPES = ("triangle", "square", "circle", "disc", "star", "cross", "ring", "cube")  # position family
COUNTS = ("none", "one", "two", "three")

MOVE = ("{p} went to the {l}.", "{p} journeyed to the {l}.", "{p} moved to the {l}.", "{p} travelled to the {l}.")
GET = ("{p} picked up the {o}.", "{p} got the {o}.", "{p} grabbed the {o}.")
DROP = ("{p} dropped the {o}.", "{p} put down the {o}.", "{p} discarded the {o}.")
NOT_IN = ("{p} is no longer in the {l}.", "{p} is not in the {l}.")

# family -> (training templates, paraphrase templates); they never share a wording
QUESTIONS = {
    "single": (("Where is {p}?", "Where is {p} now?"), ("In which room is {p}?", "What place is {p} in?")),
    "two": (("Where is the {o}?",), ("In which room is the {o}?", "Where can the {o} be found?")),
    "three": (("Where is the {o}?",), ("In which room is the {o}?", "Where can the {o} be found?")),
    "counting": (("How many objects is {p} carrying?",), ("How many things does {p} have?",
                                                          "How many items is {p} holding?")),
    "lists": (("What is {p} carrying?",), ("What does {p} have?", "Which things is {p} holding?")),
    "yes-no": (("Is {p} in the {l}?",), ("Is {p} in the {l} right now?", "Is {p} currently in the {l}?")),
    "negation": (("Is {p} in the {l}?",), ("Is {p} in the {l} right now?", "Is {p} currently in the {l}?")),
    "before": (("Where was {p} before the {l}?",), ("Which room was {p} in before going to the {l}?",
                                                    "Before the {l}, where was {p}?")),
    "size": (("Does the {a} fit in the {b}?",), ("Is the {a} smaller than the {b}?",
                                                 "Can the {a} go inside the {b}?")),
    "position": (("Is the {a} to the left of the {b}?",), ("Is the {a} left of the {b}?",
                                                           "Does the {a} lie to the left of the {b}?")),
}


@dataclass(frozen=True)
class Example:
    """One story and one question about it."""

    passage: str
    question: str
    answers: tuple[str, ...]  # every right answer (SQuAD scores the best; lists: every order)
    family: str
    span: tuple[int, int] | None  # passage[start:end] is the answer's supporting mention, or None
    template: str  # the question's template (which wording)


class _Story:
    """A passage being written, sentence by sentence, keeping where each sentence starts."""

    def __init__(self):
        self.text = ""

    def say(self, sentence: str, mention: str | None = None) -> tuple[int, int] | None:
        """Append a sentence; the (start, end) of `mention`'s last occurrence in it, if given."""
        start = len(self.text) + (1 if self.text else 0)
        self.text = f"{self.text} {sentence}" if self.text else sentence
        if mention is None:
            return None
        at = sentence.rindex(mention)
        return start + at, start + at + len(mention)


class _World:
    """People who move and carry things: the facts of a story, and the state they leave."""

    def __init__(self, rng: random.Random, names: tuple[str, ...], places: tuple[str, ...]):
        self.rng, self.names, self.places = rng, names, places
        self.story = _Story()
        self.where: dict[str, tuple[str, tuple[int, int]]] = {}  # person -> (place, span of its mention)
        self.moves: dict[str, list[tuple[str, tuple[int, int]]]] = {}  # person -> every (place, span), in order
        self.holds: dict[str, list[str]] = {}  # person -> objects, in the order picked up
        self.dropped: dict[str, tuple[str, tuple[int, int]]] = {}  # object -> (place, span of that place)

    def move(self, p: str, exclude: str | None = None) -> None:
        here = self.where.get(p, (None,))[0]
        place = self.rng.choice([x for x in self.places if x not in (here, exclude)])
        span = self.story.say(self.rng.choice(MOVE).format(p=p, l=place), place)
        self.where[p] = (place, span)
        self.moves.setdefault(p, []).append((place, span))

    def get(self, p: str) -> str | None:
        free = [o for o in OBJECTS if not any(o in h for h in self.holds.values()) and o not in self.dropped]
        if not free or p not in self.where or len(self.holds.get(p, [])) >= len(COUNTS) - 1:  # hands full
            return None
        o = self.rng.choice(free)
        self.story.say(self.rng.choice(GET).format(p=p, o=o))
        self.holds.setdefault(p, []).append(o)
        return o

    def drop(self, p: str) -> str | None:
        if not self.holds.get(p):
            return None
        o = self.rng.choice(self.holds[p])
        self.holds[p].remove(o)
        self.story.say(self.rng.choice(DROP).format(p=p, o=o))
        self.dropped[o] = self.where[p]
        return o

    def wander(self, steps: int, people: list[str]) -> None:
        """`steps` random facts: mostly moves, some pick-ups and drops."""
        for _ in range(steps):
            p = self.rng.choice(people)
            r = self.rng.random()
            if r < 0.6 or p not in self.where:
                self.move(p)
            elif r < 0.85:
                self.get(p)
            else:
                self.drop(p)


def _ask(rng: random.Random, family: str, paraphrase: bool, **slots) -> tuple[str, str]:
    template = rng.choice(QUESTIONS[family][1 if paraphrase else 0])
    return template.format(**slots), template


def _order_facts(rng: random.Random, items: list[str], relation: str) -> tuple[_Story, list[str]]:
    """A hidden order of `items` (smallest or leftmost first) told as facts between neighbours, shuffled."""
    order = items[:]
    rng.shuffle(order)
    facts = []
    for a, b in zip(order, order[1:], strict=False):  # a < b: a is smaller than b, or left of b
        if relation == "size":
            facts.append(rng.choice((f"The {b} is bigger than the {a}.", f"The {a} fits inside the {b}.")))
        else:
            facts.append(rng.choice((f"The {a} is to the left of the {b}.", f"The {b} is to the right of the {a}.")))
    rng.shuffle(facts)
    story = _Story()
    for f in facts:
        story.say(f)
    return story, order


def story_example(rng: random.Random, family: str, split: str = "train") -> Example:
    """One example of `family`, drawn from `rng`, in the world of `split` (held-out names and places for test and
    paraphrase) and asked in its wording (paraphrase templates for paraphrase)."""
    if family not in FAMILIES:
        raise QKVError(f"unknown story family {family!r}; choose one of {', '.join(FAMILIES)}")
    if split not in SPLITS:
        raise QKVError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    world_of = "train" if split in ("train", "val") else "held-out"
    para = split == "paraphrase"
    if family in ("size", "position"):
        items = rng.sample(CONTAINERS if family == "size" else SHAPES, rng.randint(3, 5))
        story, order = _order_facts(rng, items, family)
        i, j = rng.sample(range(len(order)), 2)
        a, b = order[i], order[j]
        question, template = _ask(rng, family, para, a=a, b=b)
        return Example(story.text, question, ("yes" if i < j else "no",), family, None, template)

    names = list(rng.sample(NAMES[world_of], rng.randint(2, 4)))
    world = _World(rng, NAMES[world_of], PLACES[world_of])
    world.wander(rng.randint(2, 5), names)
    p = rng.choice(names)
    if family in ("single", "yes-no"):
        world.move(p)
        world.wander(rng.randint(0, 3), [n for n in names if n != p] or names)
        place, span = world.where[p]
        if family == "single":
            question, template = _ask(rng, family, para, p=p)
            return Example(world.story.text, question, (place,), family, span, template)
        asked = place if rng.random() < 0.5 else rng.choice([x for x in PLACES[world_of] if x != place])
        question, template = _ask(rng, family, para, p=p, l=asked)
        return Example(world.story.text, question, ("yes" if asked == place else "no",), family, None, template)
    if family == "negation":
        world.move(p)
        place = world.where[p][0]
        if rng.random() < 0.5:
            world.story.say(rng.choice(NOT_IN).format(p=p, l=place))
            answer = "no"
        else:
            answer = "yes"
        world.wander(rng.randint(0, 2), [n for n in names if n != p] or names)
        question, template = _ask(rng, family, para, p=p, l=place)
        return Example(world.story.text, question, (answer,), family, None, template)
    if family in ("two", "three"):
        world.move(p)
        o = world.get(p)
        if o is None:  # every object is taken: a fresh draw
            return story_example(rng, family, split)
        for _ in range(rng.randint(1, 2)):
            world.move(p)
        if family == "three":
            world.holds[p].remove(o)
            world.story.say(rng.choice(DROP).format(p=p, o=o))
            world.dropped[o] = world.where[p]
            world.move(p)  # the carrier leaves: the object stays where it was put down
            place, span = world.dropped[o]
        else:
            place, span = world.where[p]
        world.wander(rng.randint(0, 2), [n for n in names if n != p] or names)
        question, template = _ask(rng, family, para, o=o)
        return Example(world.story.text, question, (place,), family, span, template)
    if family in ("counting", "lists"):
        world.move(p)
        for _ in range(rng.randint(0, 3)):
            world.get(p)
            if rng.random() < 0.3:
                world.drop(p)
            if rng.random() < 0.5:
                world.move(p)
        held = world.holds.get(p, [])
        if family == "counting":
            question, template = _ask(rng, family, para, p=p)
            return Example(world.story.text, question, (COUNTS[len(held)],), family, None, template)
        answers = tuple(", ".join(order) for order in permutations(held)) if held else ("nothing",)
        question, template = _ask(rng, family, para, p=p)
        return Example(world.story.text, question, answers, family, None, template)
    # before: the move before p's last move to some place
    for _ in range(rng.randint(2, 4)):
        world.move(p)
    visits = world.moves[p]
    k = rng.randint(1, len(visits) - 1)  # ask about visits[k]; the answer is visits[k - 1]
    target = visits[k][0]
    if sum(v[0] == target for v in visits) > 1:  # the asked place visited twice: ambiguous, draw again
        return story_example(rng, family, split)
    place, span = visits[k - 1]
    question, template = _ask(rng, family, para, p=p, l=target)
    return Example(world.story.text, question, (place,), family, span, template)


def story_examples(family: str, split: str, n: int, seed: int = 0) -> list[Example]:
    """`n` examples of one family and split; the same (family, split, n, seed) always gives the same list."""
    if n < 0:
        raise QKVError(f"n must be at least 0, got {n}")
    rng = random.Random(f"stories-{seed}-{family}-{split}")
    return [story_example(rng, family, split) for _ in range(n)]
