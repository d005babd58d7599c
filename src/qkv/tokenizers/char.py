"""Character-level tokenizer: one id per character, as in nanoGPT's ``data/shakespeare_char/prepare.py``.

The vocabulary is the sorted set of characters (Unicode code points) of the training text, so the ids
are exactly nanoGPT's ``stoi = {ch: i for i, ch in enumerate(sorted(set(data)))}``; tinyshakespeare
gives 65 characters. Special tokens come after the characters, in the order they were added::

    tok = train_char("hello")              # ids: e=0 h=1 l=2 o=3
    tok.encode("hole")                     # [1, 3, 2, 0]
    tok.add_special_tokens(["<|user|>"])   # id 4
    tok.encode("<|user|>hel")              # [4, 1, 0, 2]   (longest special match, then characters)
    tok.decode([4, 1, 0, 2])               # "<|user|>hel"
    tok.encode("hé")                       # QKVError: character 'é' (U+00E9) at position 1 is not in the
                                           #           4-character vocabulary ...

With ``train_char(text, unk=True)`` a ``"<unk>"`` special token is added (id = number of characters)
and unknown characters map to it instead of raising; decoding then gives ``"<unk>"`` back, so that
round trip is lossy by design.

Special-token strings that appear in the text being encoded become their special id (that is how a
chat template's ``"<|user|>"`` is recognised); decoding renders them back, so ``decode(encode(s)) == s``
still holds for any `s` made of vocabulary characters.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from qkv.errors import QKVError
from qkv.tokenizers.base import Tokenizer, _check_ids, _check_new_specials

UNK = "<unk>"


class CharTokenizer(Tokenizer):
    """Characters ``0..len(chars)-1``, then special tokens. Build with `train_char`."""

    kind = "char"

    def __init__(self, chars: Sequence[str], unk: bool = False, specials: Sequence[str] = ()) -> None:
        super().__init__()
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise QKVError("character vocabulary entries must be single characters")
        if len(set(chars)) != len(chars):
            raise QKVError("character vocabulary has duplicate entries")
        self._chars: list[str] = chars
        self._unk = bool(unk)
        self._itos: list[str] = list(chars)  # id -> token
        self._stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}  # token -> id
        self._specials: list[str] = []
        self._special_re: re.Pattern[str] | None = None  # matches any multi-character special token
        self.add_special_tokens(list(specials))
        if self._unk and UNK not in self._stoi:
            self.add_special_tokens([UNK])

    # ------------------------------------------------------------------------------------------- sizes
    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    @property
    def chars(self) -> list[str]:
        """The character vocabulary (sorted for a trained tokenizer), without special tokens."""
        return list(self._chars)

    @property
    def specials(self) -> list[str]:
        """Special tokens in id order; the first has id ``len(chars)``."""
        return list(self._specials)

    # ------------------------------------------------------------------------------------ encode/decode
    def encode(self, text: str) -> list[int]:
        """Text -> ids: special tokens first (leftmost, then longest), every other character on its own.

        Example with vocab ``e h l o`` and special ``<s>`` (id 4): ``"h<s>e"`` -> ``[1, 4, 0]``.
        """
        if self._special_re is None:
            return self._encode_chars(text, 0)
        ids: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            ids.extend(self._encode_chars(text[pos : m.start()], pos))
            ids.append(self._stoi[m.group()])
            pos = m.end()
        ids.extend(self._encode_chars(text[pos:], pos))
        return ids

    def _encode_chars(self, piece: str, offset: int) -> list[int]:
        """Characters of `piece` (which starts at `offset` in the caller's text) -> ids."""
        stoi = self._stoi
        try:
            return [stoi[c] for c in piece]
        except KeyError:
            pass
        if self._unk:
            unk_id = stoi[UNK]
            return [stoi.get(c, unk_id) for c in piece]
        i, c = next((i, c) for i, c in enumerate(piece) if c not in stoi)
        raise QKVError(
            f"character {c!r} (U+{ord(c):04X}) at position {offset + i} is not in the "
            f"{len(self._chars)}-character vocabulary (train with unk=True to map them to <unk>)"
        ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; a special id renders as its string. Example (vocab ``e h l o``): [1, 0] -> "he"."""
        itos = self._itos
        return "".join(itos[i] for i in _check_ids(ids, len(itos)))

    def token_bytes(self, i: int) -> bytes:
        (i,) = _check_ids([i], len(self._itos))
        return self._itos[i].encode("utf-8")

    # -------------------------------------------------------------------------------------- vocabulary
    def token_to_id(self, token: str) -> int | None:
        return self._stoi.get(token)

    def id_to_token(self, i: int) -> str:
        """The character (or special-token string) with id `i`."""
        (i,) = _check_ids([i], len(self._itos))
        return self._itos[i]

    def add_special_tokens(self, tokens: list[str]) -> None:
        """Append new special tokens; a token that already has an id (a character or special) is skipped."""
        for t in _check_new_specials(tokens):
            if t in self._stoi:
                continue
            self._stoi[t] = len(self._itos)
            self._itos.append(t)
            self._specials.append(t)
        multi = sorted((t for t in self._specials if len(t) > 1), key=len, reverse=True)
        # Longest first: Python's regex alternation takes the first alternative that matches at a position.
        self._special_re = re.compile("|".join(map(re.escape, multi))) if multi else None

    # ---------------------------------------------------------------------------------------- save/load
    def _state(self) -> dict[str, Any]:
        return {"vocab": list(self._chars), "unk": self._unk, "specials": list(self._specials)}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> CharTokenizer:
        vocab, unk, specials = state["vocab"], state["unk"], state["specials"]
        if not isinstance(vocab, list) or not isinstance(specials, list) or not isinstance(unk, bool):
            raise QKVError("char tokenizer needs 'vocab' (list), 'unk' (bool) and 'specials' (list)")
        if unk and UNK not in specials:
            raise QKVError(f"char tokenizer has unk=true but no {UNK!r} in 'specials'")
        tok = cls(vocab, unk=unk, specials=specials)
        if tok.specials != specials:
            raise QKVError("char tokenizer 'specials' overlap the character vocabulary or repeat")
        return tok


def train_char(text: str, unk: bool = False) -> CharTokenizer:
    """A `CharTokenizer` whose vocabulary is the sorted set of characters in `text`.

    Example: ``train_char("hello").chars == ["e", "h", "l", "o"]``. With ``unk=True``, ``"<unk>"`` gets
    id ``len(chars)`` and unknown characters encode to it instead of raising QKVError.
    """
    if not isinstance(text, str):
        raise QKVError(f"train_char needs a str, got {type(text).__name__}")
    if not text:
        raise QKVError("cannot train a character tokenizer on empty text")
    return CharTokenizer(sorted(set(text)), unk=unk)
