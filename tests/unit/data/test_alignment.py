"""Reference alignments: the word definition (shared with the tokens), Pharaoh links, grow-diag-final-and, the
sha256-keyed cache, bad input, and eflomal itself on a corpus with an obvious word-for-word mapping."""

import importlib.util
import random
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qkv.data.alignment as alignment
from helpers import assert_user_error, qkv
from qkv.data.alignment import (
    AlignerSettings,
    Alignments,
    align_parts,
    cache_key,
    format_links,
    grow_diag_final_and,
    load_alignments,
    parse_links,
    read_alignment_file,
    split_words,
    token_links,
    words_of_pieces,
)
from qkv.errors import QKVError
from qkv.tokenizers import train_bpe

HAS_EFLOMAL = importlib.util.find_spec("eflomal") is not None
needs_eflomal = pytest.mark.skipif(not HAS_EFLOMAL, reason="eflomal is not installed (pip install 'qkv[align]')")


def test_words_are_letter_digit_and_other_runs_with_clitics():
    assert split_words("Ein Mann's T-Shirt.") == ["Ein", "Mann", "'s", "T", "-", "Shirt", "."]
    assert split_words("Zwei Hunde, 3 Bälle!?") == ["Zwei", "Hunde", ",", "3", "Bälle", "!?"]
    assert split_words("  ") == []


def test_pieces_group_into_words():
    pieces = [b"die", b" ", b"dr", b"ei", b" eins", b" .", b"<eos>"]
    special = [False] * 6 + [True]
    assert words_of_pieces(pieces, special) == [("die", [0]), ("drei", [1, 2, 3]), ("eins", [4]), (".", [5]),
                                                ("<eos>", [6])]
    # a character split across two byte-level pieces (ü = C3 BC), and trailing spaces joining the last word
    assert words_of_pieces([b"Gr", b"\xc3", b"\xbcn", b" ", b"!", b"  "]) == [("Grün", [0, 1, 2]), ("!", [3, 4, 5])]


@pytest.fixture(scope="module")
def bpe():
    text = ["Ein Mann's T-Shirt, 3 Bälle!", "Zwei Hunde rennen über grünes Gras.", "A man's hat costs 20 €."] * 10
    return train_bpe(text, vocab_size=320)


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aäbß €'sT-.,!?1209 \n") + ["😀", "日"]), max_size=40))
def test_bpe_tokens_never_straddle_two_words(bpe, text):
    """The tokens of any text, grouped by words_of_pieces, spell exactly the words split_words gives the aligner."""
    ids = bpe.encode(text)
    words = words_of_pieces([bpe.token_bytes(i) for i in ids])
    assert [w for w, _ in words if w != "▁"] == split_words(text)
    assert sorted(k for _, pieces in words for k in pieces) == list(range(len(ids)))  # every token in one word


def test_token_links_spread_word_links_over_pieces():
    assert token_links([[0], [1, 2]], [[0, 1], [2]], {(1, 0)}) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert token_links([[0]], [[0]], {(0, 0), (3, 0)}) == [(0, 0)]  # a link to a word cut off is dropped


def test_pharaoh_links_round_trip_and_bad_link_is_one_line():
    sure, possible = parse_links("0-0 1?2 2p1 3-1")
    assert sure == {(0, 0), (3, 1)} and possible == {(0, 0), (1, 2), (2, 1), (3, 1)}
    assert format_links({(3, 1), (0, 0)}) == "0-0 3-1"
    with pytest.raises(QKVError, match="'1:2' is not a link") as err:
        parse_links("0-0 1:2", "gold.txt line 4")
    assert "\n" not in str(err.value)


def test_grow_diag_final_and_on_a_hand_made_pair():
    """fwd ∩ rev = {0-0, 1-1}; grow adds 2-0 (a diagonal neighbour of 1-1 covering source word 2) but not 1-0
    (both words aligned); final-and adds 3-3 (both words unaligned) and then not 3-2 (source word 3 taken)."""
    fwd = {(0, 0), (1, 1), (2, 0), (1, 0), (3, 3)}
    rev = {(0, 0), (1, 1), (3, 2)}
    assert grow_diag_final_and(fwd, rev, 4, 4) == {(0, 0), (1, 1), (2, 0), (3, 3)}
    assert grow_diag_final_and(fwd, fwd, 4, 4) == fwd  # one direction twice: its own links


# ------------------------------------------------------------------------------------------------ the cache
def _diagonal_aligner(calls):
    def fake(src_words, tgt_words, settings, started=None):
        calls.append(len(src_words))
        links = [{(j, j) for j in range(min(len(s.split()), len(t.split())))}
                 for s, t in zip(src_words, tgt_words, strict=True)]
        return links, [set(x) for x in links]

    return fake


PAIRS = {"train": (["a b .", "c d ."], ["A B .", "C D ."]), "test": (["b a"], ["B A"])}


def test_cache_key_changes_with_every_input():
    base = cache_key(PAIRS, AlignerSettings())
    assert cache_key(PAIRS, AlignerSettings()) == base and len(base) == 64
    changed = {"text": {**PAIRS, "test": (["b a"], ["B A !"])}, "part name": {"train": PAIRS["train"],
                                                                             "val": PAIRS["test"]}}
    for what, parts in changed.items():
        assert cache_key(parts, AlignerSettings()) != base, what
    assert cache_key(PAIRS, AlignerSettings(null_prior=0.3)) != base
    assert cache_key(PAIRS, AlignerSettings(model=2)) != base


def test_second_call_reads_the_cache_and_new_inputs_recompute(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(alignment, "run_eflomal", _diagonal_aligner(calls))
    first = align_parts(PAIRS, describe={"train": "toy"})
    assert calls == [3] and first.path.parent == tmp_path / "alignments"
    assert {f.name for f in first.path.iterdir()} == {"src.txt", "tgt.txt", "fwd.txt", "rev.txt", "links.txt",
                                                       "alignment.json"}
    again = align_parts(PAIRS)
    assert calls == [3] and again.path == first.path and again.sure == first.sure  # read back, not recomputed
    assert first.part("test").src == ["b a"] and first.part("test").sure == [frozenset({(0, 0), (1, 1)})]
    assert first.meta["describe"] == {"train": "toy"} and first.meta["symmetrization"] == "grow-diag-final-and"
    other = align_parts({**PAIRS, "test": (["a b"], ["A B"])})
    assert calls == [3, 3] and other.path != first.path
    align_parts(PAIRS, AlignerSettings(n_samplers=1))
    assert calls == [3, 3, 3]


def test_damaged_cache_and_mismatched_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(alignment, "run_eflomal", _diagonal_aligner([]))
    folder = align_parts(PAIRS).path
    (folder / "links.txt").write_text("0-0 1-1 2-2\n0-0\n", encoding="utf-8")  # 2 link lines for 3 pairs
    with pytest.raises(QKVError, match="has 2 alignment lines but the data has 3 sentence pairs") as err:
        load_alignments(folder)
    assert "\n" not in str(err.value)
    with pytest.raises(QKVError, match="2 source lines but 1 target lines"):
        align_parts({"train": (["a", "b"], ["A"])})

    gold = tmp_path / "gold.txt"
    src, tgt = ["a b .", "c d ."], ["A B .", "C D ."]
    gold.write_text("0-0 1-1 2-2\n", encoding="utf-8")
    with pytest.raises(QKVError, match="has 1 alignment lines but the data has 2 sentence pairs") as err:
        read_alignment_file(gold, src, tgt)
    assert "\n" not in str(err.value)
    gold.write_text("0-0 1-1 2-2\n0-0 3-1\n", encoding="utf-8")
    with pytest.raises(QKVError, match=r"line 2: link 3-1 is outside the sentence pair \(3 source words"):
        read_alignment_file(gold, src, tgt)
    gold.write_text("0-0 1?1 2-2\n0-0\n", encoding="utf-8")
    ok = read_alignment_file(gold, src, tgt)
    assert ok.sure[0] == {(0, 0), (2, 2)} and ok.possible[0] == {(0, 0), (1, 1), (2, 2)}


def test_take_and_find():
    al = Alignments(["x", "y", "z"], ["X", "Y", "Z"], [frozenset()] * 3, [frozenset()] * 3,
                    {"train": (0, 2), "test": (2, 3)})
    assert al.take(2).parts == {"train": (0, 2)} and len(al.take(2)) == 2
    assert al.find(" y ") == 1 and al.find("w") is None
    with pytest.raises(QKVError, match="no part 'val'"):
        al.part("val")


def test_without_eflomal_the_cli_says_so_in_one_line_before_any_work(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(sys.modules, "eflomal", None)  # `import eflomal` now fails, as when it is not installed
    (tmp_path / "s.txt").write_text("ein Hund\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("a dog\n", encoding="utf-8")
    rc, out, err = qkv(capsys, "data", "alignments", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt")
    assert_user_error(rc, err, "reference alignments need eflomal, which is not installed", "qkv[align]")
    assert out == "" and not (tmp_path / "cache").exists()


def test_the_cli_needs_a_dataset_or_two_files(capsys, tmp_path):
    rc, _, err = qkv(capsys, "data", "alignments", "--src", str(tmp_path / "a.txt"))
    assert_user_error(rc, err, "give both --src and --tgt")
    rc, _, err = qkv(capsys, "data", "alignments")
    assert_user_error(rc, err, "name a dataset (multi30k) or give --src FILE --tgt FILE")


# ------------------------------------------------------------------------------------------------ eflomal
DE_EN = {"hund": "dog", "katze": "cat", "mann": "man", "frau": "woman", "rot": "red", "blau": "blue",
         "läuft": "runs", "springt": "jumps", "groß": "big", "klein": "small", "haus": "house", "baum": "tree"}


def _word_for_word(n: int, seed: int = 0) -> tuple[list[str], list[str], list[set]]:
    """n pairs of 3-7 random words; the target is the word-for-word translation, with the first two words
    swapped in every other pair (so position alone does not tell): (sources, targets, gold links)."""
    rng = random.Random(seed)
    words = sorted(DE_EN)
    src, tgt, gold = [], [], []
    for k in range(n):
        s = [rng.choice(words) for _ in range(rng.randint(3, 7))]
        order = [1, 0, *range(2, len(s))] if k % 2 else list(range(len(s)))  # target position j <- source order[j]
        src.append(" ".join(s))
        tgt.append(" ".join(DE_EN[s[i]] for i in order))
        gold.append({(i, j) for j, i in enumerate(order)})
    return src, tgt, gold


@needs_eflomal
def test_eflomal_recovers_an_obvious_word_for_word_mapping(tmp_path, monkeypatch):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path))
    src, tgt, gold = _word_for_word(300)
    al = align_parts({"train": (src, tgt)}, AlignerSettings(n_samplers=1))
    hits = sum(len(a & g) for a, g in zip(al.sure, gold, strict=True))
    n_gold, n_hyp = sum(map(len, gold)), sum(map(len, al.sure))
    assert hits / n_gold > 0.9 and hits / n_hyp > 0.9, (hits, n_gold, n_hyp)


@needs_eflomal
def test_data_alignments_cli_caches_and_says_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QKV_CACHE_DIR", str(tmp_path / "cache"))
    src, tgt, _ = _word_for_word(60, seed=1)
    (tmp_path / "s.txt").write_text("\n".join(src) + "\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    args = ("data", "alignments", "--src", tmp_path / "s.txt", "--tgt", tmp_path / "t.txt")
    rc, out, _ = qkv(capsys, *args)
    assert rc == 0 and out.startswith("aligning 60 sentence pairs with eflomal")
    assert f"cache: {tmp_path / 'cache' / 'alignments'}" in out and "60 sentence pairs" in out
    rc, again, _ = qkv(capsys, *args)
    assert rc == 0 and "read back from the cache" in again and "aligning" not in again
    (tmp_path / "t.txt").write_text("\n".join(tgt[:-1]) + "\n", encoding="utf-8")
    rc, _, err = qkv(capsys, *args)
    assert_user_error(rc, err, "differ in length", "60", "59")
