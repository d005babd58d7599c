"""Byte-level BPE tokenizer (GPT-2's scheme), wrapping the Rust `tokenizers` library.

Text is split by GPT-2's regex (`ByteLevel` pre-tokenizer, ``add_prefix_space=False``), each piece's
UTF-8 bytes are spelled with one printable character per byte (`_bytes_to_unicode`: space -> ``"Ġ"``,
newline -> ``"Ċ"``), and learned merges join them. Every byte is in the base vocabulary, so any string
encodes without an unknown token and ``decode(encode(s)) == s`` for every `s`.

Two ways to get one:

- ``train_bpe(texts, vocab_size=8000)``: special tokens ``<pad> <bos> <eos> <unk>`` get ids 0..3,
  the 256 byte tokens follow, then one id per merge. (``<unk>`` exists for a uniform interface;
  byte-level BPE never produces it.)
- ``BPETokenizer.from_gpt2_files(vocab_json, merges_txt)``: GPT-2 format, ids identical to GPT-2's
  (``"Hello world"`` -> ``[15496, 995]`` with OpenAI's files). ``<|endoftext|>`` plays both ``bos`` and
  ``eos``; there is no ``pad`` or ``unk``. `to_gpt2_files` writes the same format back.

Special-token strings in user text: ``encode("a<eos>b")`` gives ``[..., eos_id, ...]``, because a
special token is matched as one unit anywhere in the text (chat templates rely on this). `decode`
renders a special id as its string, so the round trip still holds; but text that merely *contains*
``"<eos>"`` gets the eos id, so callers that must not let users inject control tokens should filter
such strings before encoding.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from qkv.errors import QKVError
from qkv.tokenizers.base import DEFAULT_ROLES, Tokenizer, _check_ids, _check_new_specials

# Special tokens of a qkv-trained BPE, at ids 0..3 in this order.
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
GPT2_EOT = "<|endoftext|>"
# The smallest useful vocabulary: the specials plus one token per byte (no merges).
MIN_VOCAB_SIZE = len(SPECIALS) + 256


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (``encoder.py`` ``bytes_to_unicode``).

    Printable Latin-1 bytes map to themselves; the other 68 bytes go to U+0100 upwards in order.
    Example: ``b"!"[0] -> "!"``, ``0x00 -> "Ā"`` (U+0100), ``0x0A ("\\n") -> "Ċ"``, ``0x20 (" ") -> "Ġ"``.
    """
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


@functools.cache
def _unicode_to_bytes() -> dict[str, int]:
    return {c: b for b, c in _bytes_to_unicode().items()}


def _byte_level(text: str) -> str:
    """Text -> its byte-level spelling. Example: ``" é"`` (bytes 20 C3 A9) -> ``"ĠÃ©"``."""
    table = _bytes_to_unicode()
    return "".join(table[b] for b in text.encode("utf-8"))


def _new_hf_tokenizer(model: models.Model) -> HFTokenizer:
    """The byte-level pipeline around `model`, as GPT-2 and `tokenizers.ByteLevelBPETokenizer` set it up."""
    tok = HFTokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _special(token: str) -> AddedToken:
    return AddedToken(token, special=True, normalized=False)


class BPETokenizer(Tokenizer):
    """Byte-level BPE. Build with `train_bpe`, `BPETokenizer.from_gpt2_files` or `load_tokenizer`."""

    kind = "bpe"

    def __init__(self, tokenizer: HFTokenizer, roles: dict[str, str | None] | None = None) -> None:
        super().__init__(roles)
        self._tok = tokenizer
        self._refresh_specials()

    def _refresh_specials(self) -> None:
        # id -> content for every special added token (these bypass the byte-level decoder in `decode`).
        self._special_ids: dict[int, str] = {
            i: t.content for i, t in self._tok.get_added_tokens_decoder().items() if t.special
        }
        self._special_tokens: dict[str, int] = {c: i for i, c in self._special_ids.items()}

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The wrapped `tokenizers.Tokenizer` (read it; changing it directly can break id stability)."""
        return self._tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def specials(self) -> list[str]:
        """Special tokens in id order."""
        return [self._special_ids[i] for i in sorted(self._special_ids)]

    # ------------------------------------------------------------------------------------ encode/decode
    def encode(self, text: str) -> list[int]:
        """Text -> ids; special-token strings in `text` become their id (see the module docstring)."""
        if not isinstance(text, str):
            raise QKVError(f"encode needs a str, got {type(text).__name__}")
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text. Runs of ordinary ids go through the byte-level decoder; special ids render as
        their string verbatim (the library's decoder would re-read a special like ``"«x»"`` as bytes).
        A run that ends mid-character (e.g. one id of a multi-byte emoji) decodes to U+FFFD.
        """
        ids = _check_ids(ids, self.vocab_size)
        parts: list[str] = []
        run: list[int] = []
        for i in ids:
            special = self._special_ids.get(i)
            if special is None:
                run.append(i)
                continue
            if run:
                parts.append(self._tok.decode(run, skip_special_tokens=False))
                run = []
            parts.append(special)
        if run:
            parts.append(self._tok.decode(run, skip_special_tokens=False))
        return "".join(parts)

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token `i`: its byte-level spelling mapped back (``"Ġthe"`` -> ``b" the"``); a
        special token gives its string's UTF-8. Part of a character for some ids (one byte of an emoji)."""
        (i,) = _check_ids([i], self.vocab_size)
        if i in self._special_ids:
            return self._special_ids[i].encode("utf-8")
        piece = self._tok.id_to_token(i)
        if piece is None:  # a hole in an imported vocabulary: the library decodes it to nothing
            return b""
        table = _unicode_to_bytes()
        # a character outside the byte table (an odd imported entry) stands for its own UTF-8, as in the
        # library's ByteLevel decoder
        return b"".join(bytes([table[c]]) if c in table else c.encode("utf-8") for c in piece)

    # -------------------------------------------------------------------------------------- vocabulary
    def token_to_id(self, token: str) -> int | None:
        """The id of a special token, or of the vocabulary entry whose decoded text is `token`.

        Takes decoded text, like `id_to_token` returns: ``token_to_id(" the")`` finds GPT-2's ``"Ġthe"``.
        """
        if token in self._special_tokens:
            return self._special_tokens[token]
        return self._tok.model.token_to_id(_byte_level(token))

    def id_to_token(self, i: int) -> str:
        """The text of token `i`: ``" the"`` for GPT-2's ``"Ġthe"``; bytes that are not complete UTF-8
        on their own show as escapes (the first of the three bytes of "你" shows as ``"\\xe4"``).
        """
        (i,) = _check_ids([i], self.vocab_size)
        if i in self._special_ids:
            return self._special_ids[i]
        piece = self._tok.id_to_token(i)
        if piece is None:  # a hole in an imported vocabulary
            return f"<id {i}>"
        table = _unicode_to_bytes()
        if not all(c in table for c in piece):
            return piece
        return bytes(table[c] for c in piece).decode("utf-8", errors="backslashreplace")

    def add_special_tokens(self, tokens: list[str]) -> None:
        """Append special tokens at ids ``vocab_size, vocab_size + 1, ...``; existing specials are skipped.

        A token whose text is already an ordinary vocabulary entry (say ``"é"``, which is also the
        byte-level spelling of byte 0xE9) is a QKVError: it could not get a new id without changing
        what existing text encodes to.
        """
        for t in _check_new_specials(tokens):
            if t in self._special_tokens:
                continue
            existing = self._tok.model.token_to_id(t)
            if existing is not None:
                raise QKVError(
                    f"cannot add special token {t!r}: it is already the ordinary vocabulary entry {existing}"
                )
            expected = self.vocab_size
            self._tok.add_special_tokens([_special(t)])
            got = self._tok.token_to_id(t)
            if got != expected:  # the library's id rule changed; ids would no longer be append-only
                raise RuntimeError(f"special token {t!r} got id {got}, expected {expected}")
        self._refresh_specials()

    # ---------------------------------------------------------------------------------------- save/load
    def _state(self) -> dict[str, Any]:
        return {"tokenizer": json.loads(self._tok.to_str()), "specials": dict(self._roles)}

    @classmethod
    def _from_state(cls, state: dict[str, Any]) -> BPETokenizer:
        inner, roles = state["tokenizer"], state["specials"]
        if not isinstance(inner, dict) or inner.get("model", {}).get("type") != "BPE":
            raise QKVError("bpe tokenizer needs 'tokenizer' holding a tokenizers-library BPE model")
        if not isinstance(roles, dict) or not all(v is None or isinstance(v, str) for v in roles.values()):
            raise QKVError("bpe tokenizer 'specials' must map roles to token strings or null")
        return cls(HFTokenizer.from_str(json.dumps(inner)), roles=roles)

    # -------------------------------------------------------------------------------- GPT-2 file format
    @classmethod
    def from_gpt2_files(cls, vocab_json_path: str | Path, merges_txt_path: str | Path) -> BPETokenizer:
        """Load GPT-2-format ``vocab.json`` (token -> id) and ``merges.txt`` (``#version`` line, then
        one ``"a b"`` merge per line, highest priority first).

        Vocabulary entries that are neither a single byte nor the result of a merge (``<|endoftext|>``,
        or the specials `to_gpt2_files` wrote) become special tokens. Roles: ``<bos>``/``<eos>``/
        ``<pad>``/``<unk>`` where present, else ``<|endoftext|>`` serves as both bos and eos.
        """
        vocab_path, merges_path = Path(vocab_json_path), Path(merges_txt_path)
        for p in (vocab_path, merges_path):
            if not p.is_file():
                raise QKVError(f"file not found: {p}")
        try:
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise QKVError(f"{vocab_path}: malformed JSON ({e})") from None
        if not isinstance(vocab, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
        ):
            raise QKVError(f"{vocab_path}: expected a JSON object mapping token strings to integer ids")
        merges: list[tuple[str, str]] = []
        try:
            lines = merges_path.read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as e:
            raise QKVError(f"{merges_path}: not UTF-8 ({e})") from None
        for lineno, line in enumerate(lines, start=1):
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            pair = line.split(" ")
            if len(pair) != 2 or not all(pair):
                raise QKVError(f"{merges_path}:{lineno}: expected two space-separated tokens, got {line!r}")
            merges.append((pair[0], pair[1]))
        try:
            tok = _new_hf_tokenizer(models.BPE(vocab=vocab, merges=merges))
        except Exception as e:  # the Rust library reports e.g. a merge whose parts are not in the vocabulary
            raise QKVError(f"{merges_path}: cannot build a BPE model ({e})") from None

        reachable = set(_bytes_to_unicode().values()) | {a + b for a, b in merges}
        specials = sorted((t for t in vocab if t not in reachable), key=vocab.__getitem__)
        if specials:
            tok.add_special_tokens([_special(t) for t in specials])
        roles = {role: (name if name in specials else None) for role, name in DEFAULT_ROLES.items()}
        for role in ("bos", "eos"):
            if roles[role] is None and GPT2_EOT in specials:
                roles[role] = GPT2_EOT
        return cls(tok, roles=roles)

    def to_gpt2_files(self, directory: str | Path) -> tuple[Path, Path]:
        """Write ``vocab.json`` and ``merges.txt`` into `directory` (atomically); returns their paths.

        Special tokens, including ones added later, are written into ``vocab.json`` at their ids, so
        `from_gpt2_files` restores them. GPT-2 tooling (``tokenizers.ByteLevelBPETokenizer.from_file``,
        ``transformers`` GPT-2 tokenizers) reads these files.
        """
        from qkv.runs import atomic_write_bytes

        directory = Path(directory)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        vocab_sorted = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
        merges = json.loads(self._tok.to_str())["model"]["merges"]
        # tokenizers >= 0.20 stores merges as [a, b] pairs, older versions as "a b" strings.
        lines = [m if isinstance(m, str) else f"{m[0]} {m[1]}" for m in merges]
        vocab_path, merges_path = directory / "vocab.json", directory / "merges.txt"
        atomic_write_bytes(vocab_path, json.dumps(vocab_sorted, ensure_ascii=False).encode("utf-8"))
        atomic_write_bytes(
            merges_path, ("#version: 0.2\n" + "".join(f"{m}\n" for m in lines)).encode("utf-8")
        )
        return vocab_path, merges_path


def train_bpe(texts: Iterable[str] | str, vocab_size: int = 8000, min_frequency: int = 2) -> BPETokenizer:
    """Learn a byte-level BPE with at most `vocab_size` ids (specials and the 256 bytes included).

    A pair is merged only if it occurs at least `min_frequency` times, so a small corpus can end with
    fewer than `vocab_size` ids. Takes about a second for 1M characters (the Rust trainer).
    Example: ``train_bpe("low lower lowest " * 50, vocab_size=270).encode("lowest")`` is a few ids,
    with ``<pad> <bos> <eos> <unk>`` at 0..3.
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise QKVError(
            f"BPE vocab_size must be at least {MIN_VOCAB_SIZE} (4 specials + 256 bytes), got {vocab_size}"
        )
    if min_frequency < 1:
        raise QKVError(f"BPE min_frequency must be at least 1, got {min_frequency}")
    if isinstance(texts, str):
        texts = [texts]
    n_chars = 0

    def counted() -> Iterator[str]:
        nonlocal n_chars
        for t in texts:
            if not isinstance(t, str):
                raise QKVError(f"train_bpe needs strings, got {type(t).__name__}")
            n_chars += len(t)
            yield t

    tok = _new_hf_tokenizer(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[_special(t) for t in SPECIALS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(counted(), trainer=trainer)
    if n_chars == 0:
        raise QKVError("cannot train a BPE tokenizer on empty input")
    return BPETokenizer(tok)
