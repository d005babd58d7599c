"""Word alignments from cross-attention: subword merging, hard links on a hand-built matrix (EOS excluded), AER /
precision / recall against the formula, and the batched scorer against a per-sentence reference."""

import pytest
import torch

from qkv.data.alignment import Alignments
from qkv.evaluation.alignment import (
    aer,
    alignment_report,
    alignment_scores,
    diagonal_scores,
    hard_links,
    label_words,
    link_counts,
    scores_from_counts,
    token_words,
    word_attention,
)
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.tokenizers import train_bpe


class PieceTokenizer:
    """A tokenizer over a fixed list of pieces (what `token_words` reads: token_bytes and the special ids)."""

    pad_id, bos_id, unk_id = None, None, None

    def __init__(self, pieces):
        self.pieces = pieces
        self.eos_id = pieces.index("<eos>")

    def token_bytes(self, i):
        return self.pieces[i].encode("utf-8")


SRC = PieceTokenizer(["Ein", " Ha", "us", " .", "<eos>"])  # words: Ein, Haus, . (+ EOS)
TGT = PieceTokenizer(["A", " ho", "use", " .", "<eos>"])  # words: A, house, . (+ EOS)
# rows: the steps that produced A, ' ho', 'use', ' .', EOS; columns: Ein, ' Ha', 'us', ' .', EOS
ATTENTION = torch.tensor([
    [0.60, 0.10, 0.10, 0.10, 0.10],
    [0.30, 0.25, 0.25, 0.10, 0.10],  # piece by piece 'Ein' wins (0.30), but 'Haus' has 0.50 in all
    [0.00, 0.05, 0.05, 0.10, 0.80],  # most mass on the source EOS, which is never a link
    [0.10, 0.10, 0.10, 0.60, 0.10],
    [0.00, 0.00, 0.00, 0.10, 0.90],  # the EOS row: not a target word
])


def test_words_from_tokens_and_from_labels_agree():
    assert token_words(SRC, range(5)) == [("Ein", [0]), ("Haus", [1, 2]), (".", [3]), ("<eos>", [4])]
    assert token_words(SRC, range(5), keep_specials=False) == [("Ein", [0]), ("Haus", [1, 2]), (".", [3])]
    assert label_words(["Ein", "▁Ha", "us", "▁.", "<eos>"], {"<eos>"}) == token_words(SRC, range(5))


def test_source_pieces_sum_and_target_pieces_average():
    src_words = token_words(SRC, range(5), keep_specials=False)
    tgt_words = token_words(TGT, range(4), keep_specials=False)
    words = word_attention(ATTENTION[:4], src_words, tgt_words)  # (3 target words, 3 source words)
    expected = torch.tensor([[0.60, 0.20, 0.10],
                             [0.15, 0.30, 0.10],  # mean of the ' ho' and 'use' rows, 'Ha' + 'us' summed
                             [0.10, 0.20, 0.60]])
    torch.testing.assert_close(words, expected)
    with_eos = word_attention(ATTENTION, token_words(SRC, range(5)), token_words(TGT, range(5)))
    torch.testing.assert_close(with_eos.sum(-1), torch.ones(4))  # with the specials, word rows sum to 1


def test_hard_links_of_a_hand_built_matrix():
    src_words = token_words(SRC, range(5), keep_specials=False)
    tgt_words = token_words(TGT, range(4), keep_specials=False)
    (links,) = hard_links(word_attention(ATTENTION[:4], src_words, tgt_words))
    assert links == {(0, 0), (1, 1), (2, 2)}  # A-Ein, house-Haus (not Ein, not EOS), .-.
    stacked = torch.stack([ATTENTION[:4], ATTENTION[:4].flip(-1)])  # (2, T, S): a second "head"
    first, second = hard_links(word_attention(stacked, src_words, tgt_words))
    assert first == links and second != links
    assert hard_links(torch.zeros(2, 0, 3)) == [set(), set()]


def test_aer_precision_recall_on_a_hand_made_example():
    hyp = {(0, 0), (1, 1), (2, 1)}
    sure = {(0, 0), (1, 2)}
    possible = sure | {(1, 1)}
    assert link_counts(hyp, sure, possible) == (3, 2, 1, 2)
    # |A| = 3, |S| = 2, |A∩S| = 1, |A∩P| = 2: AER = 1 - (1 + 2) / (3 + 2) = 0.4, P = 2/3, R = 1/2
    assert aer(hyp, sure, possible) == pytest.approx(0.4)
    assert scores_from_counts(3, 2, 1, 2) == pytest.approx({"aer": 0.4, "precision": 2 / 3, "recall": 0.5})
    # one link kind (S = P): AER = 1 - F1 of precision 1/3 and recall 1/2
    p, r = 1 / 3, 1 / 2
    assert aer(hyp, sure) == pytest.approx(1 - 2 * p * r / (p + r))
    assert aer(sure, sure) == 0.0 and aer(set(), sure) == 1.0


def test_the_diagonal_baseline():
    """3 source words, 2 target words: target 0 -> source round(0) = 0, target 1 -> source round(1.5) = 2."""
    ref = Alignments(["a b c"], ["x y"], [frozenset({(0, 0), (1, 1)})], [frozenset({(0, 0), (1, 1)})])
    assert diagonal_scores(ref) == pytest.approx({"aer": 0.5, "precision": 0.5, "recall": 0.5})


SENTENCES = [("Ein Mann fährt Fahrrad.", "A man rides a bike."), ("Zwei Hunde rennen.", "Two dogs run."),
             ("Eine Frau mit einem roten Hut singt auf der Straße.", "A woman in a red hat sings in the street."),
             ("Kinder!", "Kids!"), ("Ein Hund, eine Katze und ein Vogel.", "A dog, a cat and a bird.")]


@pytest.fixture(scope="module")
def model_and_tok():
    tok = train_bpe([s for pair in SENTENCES for s in pair] * 5, vocab_size=300)
    torch.manual_seed(0)
    m = Seq2Seq(Seq2SeqConfig(vocab_size=tok.vocab_size, max_seq_len=40, d_model=32, n_heads=2,
                              n_encoder_layers=1, n_decoder_layers=2, dropout=0.0)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.3)  # peaked attention that differs between heads
    return m, tok


def _own_links(m, tok, layer, head):
    """The model's links for each pair, one sentence at a time (no batching, no padding)."""
    out = []
    for s, t in SENTENCES:
        s_ids, t_ids = tok.encode(s) + [tok.eos_id], tok.encode(t)
        src = torch.tensor([s_ids])
        w = m.cross_attention_maps(src, torch.ones_like(src, dtype=torch.bool), torch.tensor([[tok.bos_id] + t_ids]))
        ww = word_attention(w[layer][0, head, : len(t_ids)], token_words(tok, s_ids, False), token_words(tok, t_ids,
                                                                                                         False))
        out.append(frozenset(hard_links(ww)[0]))
    return out


@torch.no_grad()
def test_batched_scores_match_a_reference_made_of_one_heads_own_links(model_and_tok):
    """With the reference set to layer 1 / head 0's own links (found sentence by sentence), the batched, padded
    scorer must give that head AER 0, precision = recall = 1, and the other entries something else."""
    m, tok = model_and_tok
    links = _own_links(m, tok, layer=1, head=0)
    ref = Alignments([s for s, _ in SENTENCES], [t for _, t in SENTENCES], links, links)
    r = alignment_scores(m, tok, tok, ref, batch_tokens=40)  # small batches: several, each padded
    by = {(row["layer"], row["head"]): row for row in r["scores"]}
    assert set(by) == {(lay, h) for lay in (0, 1) for h in (0, 1, "mean")}
    assert by[1, 0]["aer"] == 0.0 and by[1, 0]["precision"] == 1.0 and by[1, 0]["recall"] == 1.0
    assert any(row["aer"] > 0 for key, row in by.items() if key != (1, 0))
    assert r["best"]["aer"] == 0.0 and r["sure_links"] == sum(map(len, links)) and r["one_link_kind"]
    lines = alignment_report(r)
    assert "S = P: one link kind" in lines[0] and lines[-1].startswith("best: decoder layer")
    assert any(line.split()[:3] == ["1", "0", "0.00"] for line in lines)


def test_labels_of_bytes_cut_mid_character_are_pieces_of_words():
    """An untrained model can write a byte that is half a character; its label is an escape (\\x86). Read as the
    text "\\", "x", "86" it split into three words that owned no piece, so explain alignment's word rows summed to
    0 instead of 1 (found on a tiny summarize run)."""
    from qkv.evaluation.alignment import label_words, membership

    words = label_words(["\\x86", "\\x86", "▁eins", "<eos>"], {"<eos>"})
    m = membership(words, 4)
    assert (m.sum(dim=0) >= 1).all() and (m.sum(dim=1) == 1).all()  # every word owns a piece, every piece one word
    assert words[-2:] == [("eins", [2]), ("<eos>", [3])]
