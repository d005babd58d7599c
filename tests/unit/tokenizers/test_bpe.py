"""BPETokenizer: round trips on any Unicode, special tokens, save/load, and GPT-2 file parity.

The GPT-2 reference is `tokenizers.ByteLevelBPETokenizer.from_file(vocab, merges)`, reading the very
files our code writes (or GPT-2-layout files built here): OpenAI's own files are not on disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import ByteLevelBPETokenizer, pre_tokenizers

from helpers import english_text
from qkv.errors import QKVError
from qkv.tokenizers import BPETokenizer, load_tokenizer, train_bpe
from qkv.tokenizers.bpe import GPT2_EOT, SPECIALS, _bytes_to_unicode

EDGE_STRINGS = {
    "empty": "",
    "one_char": "a",
    "emoji": "👋🌍",
    "cjk": "你好世界",
    "combining": "e\u0301 n\u0303 a\u0308\u0304",
    "whitespace": "line one\nline\ttwo\r\n\n\t ",
    "mixed": "Hello, 世界! 👋 café\n",
    "control": "\x00\x01\x7f\u200b\ufeff",
}
MULTILINGUAL = "Grüße aus Köln! 你好，世界。 こんにちは 👋🌍 naïve café — ñandú\n" * 20
PARITY_STRINGS = [
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "  leading and trailing spaces  ",
    "numbers 1234567 and punctuation?!... 'quotes' don't",
    "Grüße 你好 👋🌍 e\u0301",
    "tabs\tand\r\nnewlines\n\n",
]


@pytest.fixture(scope="module")
def corpus() -> str:
    """100,000 characters of made-up English (any English-like text does) and some of other scripts."""
    return english_text(100_000) + MULTILINGUAL


@pytest.fixture(scope="module")
def bpe(corpus: str) -> BPETokenizer:
    return train_bpe(corpus, vocab_size=600)


@pytest.fixture
def fresh_bpe(bpe: BPETokenizer, tmp_path: Path) -> BPETokenizer:
    """A private copy of `bpe` (through save/load) that a test may mutate."""
    bpe.save(tmp_path / "copy.json")
    tok = load_tokenizer(tmp_path / "copy.json")
    assert isinstance(tok, BPETokenizer)
    return tok


# ----------------------------------------------------------------------------------------------- training
def test_trained_specials_are_ids_0_to_3(bpe: BPETokenizer) -> None:
    assert [bpe.token_to_id(t) for t in SPECIALS] == [0, 1, 2, 3]
    assert (bpe.pad_id, bpe.bos_id, bpe.eos_id, bpe.unk_id) == (0, 1, 2, 3)
    assert bpe.specials == SPECIALS
    assert [bpe.id_to_token(i) for i in range(4)] == SPECIALS


def test_vocab_size_and_merges(bpe: BPETokenizer, corpus: str) -> None:
    assert bpe.vocab_size == 600
    ids = bpe.encode(corpus)
    assert max(ids) < bpe.vocab_size and min(ids) >= 4
    assert len(ids) < len(corpus.encode("utf-8")) / 2  # merges compress well below one id per byte
    assert bpe.token_to_id(" the") is not None  # a learned merge, looked up by its text


def test_small_corpus_may_stop_below_vocab_size() -> None:
    tok = train_bpe(["low lower lowest"] * 5, vocab_size=1000, min_frequency=2)
    assert 260 < tok.vocab_size < 1000
    assert tok.decode(tok.encode("lowest")) == "lowest"
    assert len(tok.encode("lowest")) < len("lowest")


@pytest.mark.parametrize("texts", ["", [], ["", ""]], ids=["empty_str", "no_texts", "empty_texts"])
def test_train_on_empty_input_is_an_error(texts) -> None:
    with pytest.raises(QKVError, match="empty input"):
        train_bpe(texts, vocab_size=300)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"vocab_size": 259}, "at least 260"), ({"min_frequency": 0}, "1")]
)
def test_bad_training_arguments_are_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(QKVError, match=match):
        train_bpe("some text", **kwargs)


def test_training_is_deterministic(corpus: str, bpe: BPETokenizer) -> None:
    again = train_bpe(corpus, vocab_size=600)
    assert again.encode(corpus[:5000]) == bpe.encode(corpus[:5000])


# -------------------------------------------------------------------------------------------- round trips
@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_roundtrip_any_unicode(bpe: BPETokenizer, s: str) -> None:
    ids = bpe.encode(s)
    assert all(0 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s


@settings(max_examples=100, deadline=None, database=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.sampled_from(SPECIALS)), max_size=8))
def test_roundtrip_with_special_strings_in_text(bpe: BPETokenizer, parts: list[str]) -> None:
    s = "".join(parts)
    assert bpe.decode(bpe.encode(s)) == s


@pytest.mark.parametrize("s", list(EDGE_STRINGS.values()), ids=list(EDGE_STRINGS))
def test_roundtrip_edge_strings(bpe: BPETokenizer, s: str) -> None:
    assert bpe.decode(bpe.encode(s)) == s


def test_special_strings_in_user_text_become_special_ids(bpe: BPETokenizer) -> None:
    ids = bpe.encode("hi<eos>there")
    assert ids == [*bpe.encode("hi"), bpe.eos_id, *bpe.encode("there")]
    assert bpe.decode(ids) == "hi<eos>there"


def test_decode_partial_character_gives_replacement_char(bpe: BPETokenizer) -> None:
    ids = bpe.encode("🦀")  # four bytes; only the F0 9F prefix it shares with 👋🌍 can be merged
    assert len(ids) > 1
    partial = bpe.decode(ids[:-1])
    assert partial and set(partial) == {"\ufffd"}


def test_decode_out_of_range_id_is_an_error(bpe: BPETokenizer) -> None:
    with pytest.raises(QKVError, match="id 600 at position 0 is out of range"):
        bpe.decode([600])


# -------------------------------------------------------------------------------------------- vocabulary
def test_byte_table_matches_the_library() -> None:
    table = _bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert set(table.values()) == set(pre_tokenizers.ByteLevel.alphabet())
    assert (table[ord(" ")], table[ord("\n")], table[0], table[ord("!")]) == ("Ġ", "Ċ", "Ā", "!")


def test_id_to_token_shows_decoded_text(bpe: BPETokenizer) -> None:
    the = bpe.token_to_id(" the")
    assert the is not None and bpe.id_to_token(the) == " the"
    assert bpe.hf_tokenizer.id_to_token(the) == "Ġthe"
    (nl,) = bpe.encode("\n")
    assert bpe.id_to_token(nl) == "\n"
    first_byte_of_ni = bpe.hf_tokenizer.token_to_id(_bytes_to_unicode()[0xE4])  # "你" is E4 BD A0
    assert bpe.id_to_token(first_byte_of_ni) == "\\xe4"


# ---------------------------------------------------------------------------------------- special tokens
def test_add_special_tokens_keeps_ids_and_encodes_single_tokens(fresh_bpe: BPETokenizer) -> None:
    tok = fresh_bpe
    text = "ROMEO: But, soft! what light through yonder window breaks? 你好 👋"
    before = tok.encode(text)
    tok.add_special_tokens(["<|user|>", "<|assistant|>", "«x»", "<eos>"])  # "<eos>" exists: skipped
    assert tok.encode(text) == before
    assert [tok.token_to_id(t) for t in ["<|user|>", "<|assistant|>", "«x»"]] == [600, 601, 602]
    assert tok.vocab_size == 603
    ids = tok.encode("<|user|>hi«x»<|assistant|>")
    assert ids == [600, *tok.encode("hi"), 602, 601]
    assert tok.decode(ids) == "<|user|>hi«x»<|assistant|>"  # "«x»" is not re-read as byte-level text
    assert tok.id_to_token(602) == "«x»"


def test_add_special_token_that_is_an_ordinary_entry_is_an_error(fresh_bpe: BPETokenizer) -> None:
    with pytest.raises(QKVError, match="already the ordinary vocabulary entry"):
        fresh_bpe.add_special_tokens(["é"])  # "é" spells byte 0xE9 in the byte-level alphabet
    assert fresh_bpe.vocab_size == 600


# ------------------------------------------------------------------------------------------- save / load
def test_save_load_round_trip(
    bpe: BPETokenizer, fresh_bpe: BPETokenizer, tmp_path: Path, corpus: str
) -> None:
    fresh_bpe.add_special_tokens(["<|user|>"])
    path = tmp_path / "run" / "tokenizer.json"
    fresh_bpe.save(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert (data["kind"], data["version"]) == ("bpe", 1)
    assert data["specials"] == {"bos": "<bos>", "eos": "<eos>", "pad": "<pad>", "unk": "<unk>"}
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    sample = corpus[:3000] + "<|user|>" + MULTILINGUAL[:200] + "<eos>"
    assert loaded.encode(sample) == fresh_bpe.encode(sample)
    assert loaded.encode(corpus[:3000]) == bpe.encode(corpus[:3000])
    assert loaded.vocab_size == 601 and loaded.token_to_id("<|user|>") == 600
    assert (loaded.pad_id, loaded.bos_id, loaded.eos_id, loaded.unk_id) == (0, 1, 2, 3)
    loaded.add_special_tokens(["<|assistant|>"])
    assert loaded.token_to_id("<|assistant|>") == 601


def test_load_malformed_bpe_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(
        json.dumps({"kind": "bpe", "version": 1, "tokenizer": {"model": {"type": "BPE"}}, "specials": {}})
    )
    with pytest.raises(QKVError, match="malformed bpe tokenizer"):
        load_tokenizer(path)
    path.write_text(
        json.dumps(
            {"kind": "bpe", "version": 1, "tokenizer": {"model": {"type": "WordPiece"}}, "specials": {}}
        )
    )
    with pytest.raises(QKVError, match="BPE model"):
        load_tokenizer(path)


# ------------------------------------------------------------------------------------------ GPT-2 format
def _reference_ids(vocab: Path, merges: Path, texts: list[str]) -> list[list[int]]:
    ref = ByteLevelBPETokenizer.from_file(str(vocab), str(merges))  # add_prefix_space=False by default
    return [ref.encode(t).ids for t in texts]


def test_gpt2_files_round_trip_matches_reference(bpe: BPETokenizer, tmp_path: Path) -> None:
    vocab, merges = bpe.to_gpt2_files(tmp_path / "hf")
    assert merges.read_text(encoding="utf-8").startswith("#version: 0.2\n")
    ours = BPETokenizer.from_gpt2_files(vocab, merges)
    expected = [bpe.encode(t) for t in PARITY_STRINGS]
    assert [ours.encode(t) for t in PARITY_STRINGS] == expected
    assert _reference_ids(vocab, merges, PARITY_STRINGS) == expected
    assert ours.specials == SPECIALS  # restored: not a byte and not the result of any merge
    assert (ours.pad_id, ours.bos_id, ours.eos_id, ours.unk_id) == (0, 1, 2, 3)
    assert ours.vocab_size == bpe.vocab_size


def test_gpt2_files_keep_added_special_tokens(fresh_bpe: BPETokenizer, tmp_path: Path) -> None:
    fresh_bpe.add_special_tokens(["<|user|>", "«x»"])
    ours = BPETokenizer.from_gpt2_files(*fresh_bpe.to_gpt2_files(tmp_path))
    text = "<|user|>hello«x»"
    assert ours.encode(text) == fresh_bpe.encode(text) == [600, *fresh_bpe.encode("hello"), 601]
    assert ours.decode(ours.encode(text)) == text


def _write_gpt2_layout(bpe: BPETokenizer, directory: Path) -> tuple[Path, Path]:
    """Files laid out like OpenAI's GPT-2: the 256 bytes at ids 0..255 in `bytes_to_unicode` order,
    one id per merge after them, ``<|endoftext|>`` last; the merges come from `bpe`."""
    _, merges = bpe.to_gpt2_files(directory)
    pairs = [line.split(" ") for line in merges.read_text(encoding="utf-8").splitlines()[1:]]
    vocab = {c: i for i, c in enumerate(_bytes_to_unicode().values())}
    for a, b in pairs:
        vocab.setdefault(a + b, len(vocab))
    vocab[GPT2_EOT] = len(vocab)
    path = directory / "vocab.json"
    path.write_text(json.dumps(vocab), encoding="utf-8")
    return path, merges


def test_gpt2_layout_ids_and_endoftext(bpe: BPETokenizer, tmp_path: Path) -> None:
    vocab_path, merges_path = _write_gpt2_layout(bpe, tmp_path)
    vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
    gpt2 = BPETokenizer.from_gpt2_files(vocab_path, merges_path)
    eot = vocab[GPT2_EOT]
    assert (gpt2.bos_id, gpt2.eos_id, gpt2.pad_id, gpt2.unk_id) == (eot, eot, None, None)
    assert gpt2.specials == [GPT2_EOT]
    assert gpt2.vocab_size == len(vocab)
    assert gpt2.encode("!") == [0]  # GPT-2's id for "!"
    assert [gpt2.encode(t) for t in PARITY_STRINGS] == _reference_ids(vocab_path, merges_path, PARITY_STRINGS)
    assert gpt2.encode(f"a{GPT2_EOT}b") == [*gpt2.encode("a"), eot, *gpt2.encode("b")]
    assert gpt2.decode(gpt2.encode(f"end{GPT2_EOT}")) == f"end{GPT2_EOT}"


def test_gpt2_files_errors(tmp_path: Path) -> None:
    vocab, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    with pytest.raises(QKVError, match="not found"):
        BPETokenizer.from_gpt2_files(vocab, merges)
    vocab.write_text(json.dumps({"a": 0, "b": 1, "ab": 2}))
    merges.write_text("#version: 0.2\na b c\n")
    with pytest.raises(QKVError, match=r"merges.txt:2: expected two space-separated tokens"):
        BPETokenizer.from_gpt2_files(vocab, merges)
    merges.write_text("#version: 0.2\na z\n")
    with pytest.raises(QKVError, match="cannot build a BPE model"):
        BPETokenizer.from_gpt2_files(vocab, merges)
    vocab.write_text("[1, 2]")
    with pytest.raises(QKVError, match="expected a JSON object"):
        BPETokenizer.from_gpt2_files(vocab, merges)
