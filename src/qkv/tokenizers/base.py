"""The `Tokenizer` interface shared by the character and byte-level BPE tokenizers, and `load_tokenizer`.

A tokenizer maps text to a list of integer ids and back. Both kinds keep two promises:

- **Ids are stable.** `add_special_tokens` appends new tokens at the end; no existing id ever changes,
  so a model trained with a tokenizer stays valid after a chat template adds ``"<|user|>"``.
- **Save is one JSON file**, written atomically: ``{"kind": "char" | "bpe", "version": 1, ...}``.
  `load_tokenizer` reads it back and dispatches on ``kind``.

Special tokens have *roles*: ``bos``, ``eos``, ``pad`` and ``unk``. Each role names a token string
(``"<eos>"`` by default) or nothing; `eos_id` etc. return that token's id, or None when the tokenizer
has no such token. Example (character tokenizer)::

    tok = train_char("hello")          # vocab: e h l o -> ids 0..3
    tok.eos_id                         # None: no "<eos>" yet
    tok.add_special_tokens(["<eos>"])  # appended: id 4
    tok.eos_id                         # 4
    tok.encode("he<eos>")              # [1, 0, 4]  (special tokens match as one token inside text)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from qkv.errors import QKVError
from qkv.runs import load_json

FORMAT_VERSION = 1

# The roles a special token can play, and the token string each role uses unless a tokenizer says otherwise.
DEFAULT_ROLES: dict[str, str | None] = {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}

# kind -> class; filled by `Tokenizer.__init_subclass__` when char.py and bpe.py are imported
# (the package __init__ imports both, so the registry is complete before anyone can call load_tokenizer).
_KINDS: dict[str, type[Tokenizer]] = {}


class Tokenizer(ABC):
    """Text <-> ids. Subclasses set `kind` and implement the abstract methods below."""

    kind: ClassVar[str]

    def __init__(self, roles: dict[str, str | None] | None = None) -> None:
        # role -> token string (or None); a role whose token is not in the vocabulary has id None.
        self._roles: dict[str, str | None] = dict(DEFAULT_ROLES if roles is None else roles)
        unknown = set(self._roles) - set(DEFAULT_ROLES)
        if unknown:
            raise QKVError(
                f"unknown special-token role(s) {sorted(unknown)}; valid: {', '.join(DEFAULT_ROLES)}"
            )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            _KINDS[cls.kind] = cls

    # ----------------------------------------------------------------------------------------- interface
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: every id is in ``range(vocab_size)``."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Text -> ids. Special-token strings inside `text` become their single special id."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; special tokens render as their string, so ``decode(encode(s)) == s``."""

    def token_bytes(self, i: int) -> bytes:
        """The UTF-8 bytes id `i` stands for. A byte-level token may hold part of a character, so
        ``decode(ids)`` is these bytes joined and decoded; streaming decoders use it to emit text
        token by token without re-decoding (`qkv.generation.streaming`)."""
        return self.decode([i]).encode("utf-8")

    @abstractmethod
    def token_to_id(self, token: str) -> int | None:
        """The id of one token (a special token like ``"<eos>"``, or one vocabulary entry), else None."""

    @abstractmethod
    def id_to_token(self, i: int) -> str:
        """A printable label for id `i` (attention-plot axes); special tokens give their string."""

    @abstractmethod
    def add_special_tokens(self, tokens: list[str]) -> None:
        """Append `tokens` as special tokens at the end of the vocabulary, skipping ones already there."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Everything but ``kind``/``version`` that `save` writes; `_from_state` must accept it back."""

    @classmethod
    @abstractmethod
    def _from_state(cls, state: dict[str, Any]) -> Tokenizer:
        """Rebuild from `_state()`'s output; may raise KeyError/TypeError/ValueError on malformed input."""

    # ------------------------------------------------------------------------------------ special roles
    def _role_id(self, role: str) -> int | None:
        token = self._roles.get(role)
        return None if token is None else self.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._role_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._role_id("eos")

    @property
    def pad_id(self) -> int | None:
        return self._role_id("pad")

    @property
    def unk_id(self) -> int | None:
        return self._role_id("unk")

    # ---------------------------------------------------------------------------------------- save/load
    def save(self, path: str | Path) -> None:
        """Write this tokenizer as one JSON file, atomically (readers see the old file or the new one)."""
        # Imported here: qkv.models.io pulls in torch and the models, which `tokenizers` must not need
        # at import time (imports point one way: tokenizers depends only on config/errors).
        from qkv.runs import atomic_write_json

        atomic_write_json(Path(path), {"kind": self.kind, "version": FORMAT_VERSION, **self._state()})

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _check_ids(ids: Sequence[int], vocab_size: int) -> list[int]:
    """`ids` as plain ints, or QKVError naming the first one outside ``range(vocab_size)``.

    Example: ``_check_ids([0, 5], 4)`` -> QKVError "id 5 at position 1 is out of range for vocabulary size 4".
    """
    out = [int(i) for i in ids]
    for pos, i in enumerate(out):
        if not 0 <= i < vocab_size:
            raise QKVError(f"id {i} at position {pos} is out of range for vocabulary size {vocab_size}")
    return out


def _check_new_specials(tokens: list[str]) -> list[str]:
    """Validate a list of special tokens and drop duplicates, keeping first-seen order."""
    if isinstance(tokens, str):
        raise QKVError(f"add_special_tokens takes a list of strings, got the string {tokens!r}")
    out: list[str] = []
    for t in tokens:
        if not isinstance(t, str) or not t:
            raise QKVError(f"special tokens must be non-empty strings, got {t!r}")
        if t not in out:
            out.append(t)
    return out


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer JSON written by `Tokenizer.save`; QKVError if it is missing or malformed."""
    path = Path(path)
    data = load_json(path)  # QKVError on a missing file or invalid JSON
    kind = data.get("kind")
    if kind not in _KINDS:
        raise QKVError(f"{path}: not a qkv tokenizer (kind {kind!r}; valid: {', '.join(sorted(_KINDS))})")
    if data.get("version") != FORMAT_VERSION:
        raise QKVError(f"{path}: unsupported tokenizer format version {data.get('version')!r}")
    try:
        return _KINDS[kind]._from_state(data)
    except QKVError as e:
        raise QKVError(f"{path}: {e}") from None
    except Exception as e:  # KeyError/TypeError/ValueError from the dict, or the Rust library's own errors
        raise QKVError(f"{path}: malformed {kind} tokenizer ({type(e).__name__}: {e})") from None
