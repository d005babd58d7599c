"""BAD candidates: degraded copies that tell an attentive rater from one who clicks at random.

Graham et al. (2013, "Continuous measurement scales in human evaluation of machine translation") made
crowd-sourced Direct Assessment trustworthy by rating, unannounced, a *degraded* copy of some outputs next
to the original: a rater who reads gives the copy a lower score. WMT's Appraise builds the copies this way
(``_create_bad_ref`` in AppraiseDev/Appraise ``Scripts/create_wmt22_tasks.py``): replace one random phrase
of the segment by a phrase of the same length taken at random from another segment. The phrase grows with
the segment, so the damage is visible but the rest of the text still reads as the original:

    words in the candidate   ≤3   4–5   6–8   9–15   16–20   >20
    words replaced            1     2     3      4       5     6

``degrade("A man rides a red bicycle down the street .", ["Two dogs play in the snow ."], rng)`` replaces 4
of its 10 words, e.g. ``"A man rides play in the snow the street ."``.

Where this differs from Appraise, and why:

- Appraise replaces 2 words of a 2–3-word segment, which erases it; here short candidates lose one word, so a
  BAD copy of a short answer still shares most of it with the original.
- Appraise draws the position with ``choice(range(seg_len - bad_len))``, which never reaches the last
  phrase; here every position is possible.
- Words are found as runs of non-space characters and replaced one for one, keeping every space and line
  break, so a BAD copy of a multi-line language-model continuation keeps its layout and looks like the
  others (controls must look exactly like normal tasks). Appraise splits on single spaces and rejoins.
- The result always differs from the original: another donor (or another position) is tried when the
  replacement happens to equal the words it replaces; when no donor can change the text (every donor equal
  to it, e.g. a tiny model that says the same thing for every input) the phrase is deleted instead; an empty
  candidate is replaced by a whole donor. Appraise does not check.
- Character-based scripts (Appraise doubles the length and counts characters) are not handled: qkv's
  campaigns are in German, English and French.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

_WORD = re.compile(r"\S+")
# (most words in the segment, words replaced); more than 20 words: 6
_PHRASE_LENGTHS = ((3, 1), (5, 2), (8, 3), (15, 4), (20, 5))
_TRIES_PER_DONOR = 3


def phrase_length(n_words: int) -> int:
    """How many words a BAD copy replaces in a segment of `n_words` words (table in the module docstring)."""
    for most, length in _PHRASE_LENGTHS:
        if n_words <= most:
            return length
    return 6


def degrade(text: str, donors: Sequence[str], rng: random.Random) -> str:
    """A BAD copy of `text`: one phrase replaced by a phrase of the same length from one of `donors` (other
    items' candidates or references). Always differs from `text`; the same `rng` state gives the same copy.

    ValueError if `text` is empty and no donor has a word (nothing to build a different text from).
    """
    words = [m.span() for m in _WORD.finditer(text)]
    pool = [d for d in donors if _WORD.search(d)]
    pool = rng.sample(pool, len(pool))  # the donors in a random order, each tried in turn
    if not words:  # nothing to replace: a whole donor sentence is the BAD copy
        for donor in pool:
            if donor.strip() != text:
                return donor.strip()
        raise ValueError("cannot degrade an empty text without a non-empty donor")
    length = min(phrase_length(len(words)), len(words))
    for donor in pool:
        donor_words = donor.split()
        for _ in range(_TRIES_PER_DONOR):
            pos = rng.randrange(len(words) - length + 1)
            at = rng.randrange(max(1, len(donor_words) - length + 1))
            bad = _replace(text, words[pos:pos + length], donor_words[at:at + length])
            if bad != text:
                return bad
    # no donor changes the text: delete a phrase instead (at least one word goes, so the copy differs)
    pos = rng.randrange(len(words) - length + 1)
    before, after = text[:words[pos][0]].rstrip(), text[words[pos + length - 1][1]:].lstrip()
    return before + (" " if before and after else "") + after


def _replace(text: str, spans: list[tuple[int, int]], phrase: list[str]) -> str:
    """`text` with the words at `spans` replaced by the words of `phrase`, one for one, keeping the spacing
    between them (a line break inside the phrase stays a line break); a shorter phrase drops the last words."""
    seps = [text[a[1]:b[0]] for a, b in zip(spans, spans[1:], strict=False)]
    middle = "".join(w + sep for w, sep in zip(phrase[:-1], seps, strict=False)) + phrase[-1] if phrase else ""
    return text[:spans[0][0]] + middle + text[spans[-1][1]:]
