"""CharTokenizer: nanoGPT parity on tinyshakespeare, round trips, errors, special tokens, save/load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import english_text
from qkv.errors import QKVError
from qkv.tokenizers import CharTokenizer, load_tokenizer, train_char

# What nanoGPT's data/shakespeare_char/prepare.py prints as "all the unique characters" of tinyshakespeare.
NANOGPT_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Text for the tests that need some (only the parity test reads the corpus): every character is in NANOGPT_CHARS.
TEXT = english_text(6000)

EDGE_STRINGS = {
    "empty": "",
    "one_char": "a",
    "emoji": "👋🌍",
    "cjk": "你好世界",
    "combining": "e\u0301 n\u0303 a\u0308\u0304",  # e + COMBINING ACUTE, n + TILDE, a + DIAERESIS + MACRON
    "whitespace": "line one\nline\ttwo\r\n\n\t ",
    "mixed": "Hello, 世界! 👋 café\n",
}
# A vocabulary that covers every edge string, so each must round-trip exactly.
EDGE_TOK = train_char("".join(EDGE_STRINGS.values()))


@pytest.fixture(scope="module")
def shakespeare_tok() -> CharTokenizer:
    """The tokenizer nanoGPT's shakespeare_char builds (its 65 characters), without reading the corpus."""
    return train_char(NANOGPT_CHARS)


# ----------------------------------------------------------------------------------------- nanoGPT parity
def test_nanogpt_parity_on_tinyshakespeare(shared_data: Path) -> None:
    # nanoGPT: chars = sorted(list(set(data))); stoi = {ch: i for i, ch in enumerate(chars)}
    shakespeare = (shared_data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    shakespeare_tok = train_char(shakespeare)
    chars = sorted(set(shakespeare))
    stoi = {ch: i for i, ch in enumerate(chars)}
    assert shakespeare_tok.vocab_size == 65
    assert "".join(shakespeare_tok.chars) == NANOGPT_CHARS
    ids = shakespeare_tok.encode(shakespeare)
    assert ids == [stoi[c] for c in shakespeare]
    assert shakespeare_tok.decode(ids) == shakespeare
    assert shakespeare_tok.encode("First Citizen:") == [18, 47, 56, 57, 58, 1, 15, 47, 58, 47, 64, 43, 52, 10]


def test_no_special_tokens_by_default(shakespeare_tok: CharTokenizer) -> None:
    assert shakespeare_tok.specials == []
    ids = (shakespeare_tok.bos_id, shakespeare_tok.eos_id, shakespeare_tok.pad_id, shakespeare_tok.unk_id)
    assert ids == (None, None, None, None)


# --------------------------------------------------------------------------------------------- round trips
@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=st.sampled_from(EDGE_TOK.chars)))
def test_roundtrip_strings_over_vocabulary(s: str) -> None:
    ids = EDGE_TOK.encode(s)
    assert len(ids) == len(s)
    assert EDGE_TOK.decode(ids) == s


@pytest.mark.parametrize("s", list(EDGE_STRINGS.values()), ids=list(EDGE_STRINGS))
def test_roundtrip_edge_strings(s: str) -> None:
    assert EDGE_TOK.decode(EDGE_TOK.encode(s)) == s


def test_combining_marks_are_separate_code_points() -> None:
    tok = train_char("e\u0301")
    assert tok.chars == ["e", "\u0301"]
    assert tok.encode("\u0301e") == [1, 0]


def test_token_to_id_and_id_to_token_are_inverse() -> None:
    for i in range(EDGE_TOK.vocab_size):
        assert EDGE_TOK.token_to_id(EDGE_TOK.id_to_token(i)) == i
    assert EDGE_TOK.token_to_id("not a token") is None


# ---------------------------------------------------------------------------------------- errors and unk
def test_out_of_vocabulary_character_is_named(shakespeare_tok: CharTokenizer) -> None:
    message = "character 'é' (U+00E9) at position 12 is not in the 65-character vocabulary"
    with pytest.raises(QKVError, match=re.escape(message)):
        shakespeare_tok.encode("O Romeo, café!")


def test_out_of_vocabulary_position_counts_special_tokens() -> None:
    tok = train_char("abc")
    tok.add_special_tokens(["<|user|>"])
    with pytest.raises(QKVError, match=re.escape("character '👋' (U+1F44B) at position 10 ")):
        tok.encode("<|user|>ab👋")


def test_unk_maps_unknown_characters() -> None:
    tok = train_char(NANOGPT_CHARS, unk=True)
    assert tok.unk_id == 65
    assert tok.vocab_size == 66
    assert tok.encode("café") == [tok.token_to_id(c) for c in "caf"] + [65]
    assert tok.decode(tok.encode("café")) == "caf<unk>"


def test_empty_training_text_is_an_error() -> None:
    with pytest.raises(QKVError, match="empty"):
        train_char("")


def test_decode_out_of_range_id_is_an_error() -> None:
    tok = train_char("ab")
    with pytest.raises(QKVError, match=re.escape("id 2 at position 1 is out of range for vocabulary size 2")):
        tok.decode([0, 2])
    with pytest.raises(QKVError, match="id -1"):
        tok.decode([-1])


# ---------------------------------------------------------------------------------------- special tokens
def test_add_special_tokens_keeps_ids_and_encodes_single_tokens(shakespeare_tok: CharTokenizer) -> None:
    tok = CharTokenizer(shakespeare_tok.chars)  # a copy, so the shared fixture is not mutated
    text = "ROMEO:\nBut, soft! what light through yonder window breaks?"
    before = tok.encode(text)
    tok.add_special_tokens(["<|user|>", "<|assistant|>", "<eos>"])
    assert tok.encode(text) == before
    assert [tok.token_to_id(t) for t in ["<|user|>", "<|assistant|>", "<eos>"]] == [65, 66, 67]
    assert tok.eos_id == 67 and tok.bos_id is None
    ids = tok.encode("<|user|>hi<|assistant|>yo<eos>")
    assert ids == [65, *tok.encode("hi"), 66, *tok.encode("yo"), 67]
    assert tok.decode(ids) == "<|user|>hi<|assistant|>yo<eos>"
    assert tok.id_to_token(66) == "<|assistant|>"


def test_add_special_tokens_skips_existing_and_appends_in_order() -> None:
    tok = train_char("abc")
    tok.add_special_tokens(["<s>", "a", "<s>", "</s>"])  # "a" is already a character, "<s>" repeats
    assert tok.vocab_size == 5
    assert tok.specials == ["<s>", "</s>"]
    tok.add_special_tokens(["<s>"])
    assert tok.vocab_size == 5
    with pytest.raises(QKVError, match="non-empty"):
        tok.add_special_tokens([""])


def test_special_tokens_match_longest_first() -> None:
    tok = train_char("xyz<>")
    tok.add_special_tokens(["<x>", "<x>y"])
    short, long = tok.token_to_id("<x>"), tok.token_to_id("<x>y")
    assert tok.encode("<x>y") == [long]
    assert tok.encode("<x>z") == [short, tok.token_to_id("z")]
    assert tok.encode("<<x>") == [tok.token_to_id("<"), short]


# ------------------------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("unk", [False, True])
def test_save_load_round_trip(tmp_path: Path, unk: bool) -> None:
    tok = train_char(TEXT[:5000], unk=unk)
    tok.add_special_tokens(["<|user|>", "<eos>"])
    path = tmp_path / "tok" / "tokenizer.json"
    tok.save(path)
    assert json.loads(path.read_text())["kind"] == "char"
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.vocab_size == tok.vocab_size
    assert loaded.specials == tok.specials
    assert loaded.eos_id == tok.eos_id and loaded.unk_id == tok.unk_id
    sample = TEXT[:2000] + "<|user|>" + TEXT[100:300] + "<eos>"
    assert loaded.encode(sample) == tok.encode(sample)
    if unk:
        assert loaded.encode("é") == [tok.unk_id]
    else:
        with pytest.raises(QKVError, match="U\\+00E9"):
            loaded.encode("é")
    assert not [p for p in path.parent.iterdir() if p.name != "tokenizer.json"]  # no temp files left


def test_load_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(QKVError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "malformed JSON"),
        ('{"kind": "wordpiece", "version": 1}', "not a qkv tokenizer"),
        ('{"kind": "char", "version": 99, "vocab": ["a"], "unk": false, "specials": []}', "version"),
        ('{"kind": "char", "version": 1, "unk": false, "specials": []}', "malformed char tokenizer"),
        ('{"kind": "char", "version": 1, "vocab": "ab", "unk": false, "specials": []}', "vocab"),
        (
            '{"kind": "char", "version": 1, "vocab": ["ab"], "unk": false, "specials": []}',
            "single characters",
        ),
        ('{"kind": "char", "version": 1, "vocab": ["a"], "unk": true, "specials": []}', "<unk>"),
    ],
)
def test_load_malformed_file_is_an_error(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_text(content)
    with pytest.raises(QKVError, match=match):
        load_tokenizer(path)
