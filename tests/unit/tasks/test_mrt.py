"""Minimum risk training (`qkv.tasks.mrt`) against its references: the costs are sacrebleu's sentence scores,
the expected risk's gradient is the paper's α·Q·(Δ − R) and matches finite differences through the model, the
loss's logged figures are what they say, and MRT alone (no token loss) teaches a toy reversal task.

The toy task: sequences of 3–8 number words, reversed; a word-level "tokenizer" (`WordTok`) decodes ids to
words so that sacrebleu sees whole words.
"""

import pytest
import sacrebleu
import torch

from qkv.data.translation import collate
from qkv.errors import QKVError
from qkv.generation.seq2seq import SequenceDecoding, greedy_decode
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.tasks import mrt as M
from qkv.tasks.mrt import Candidate, MRTConfig
from qkv.tasks.translate import TranslateRunConfig
from qkv.training.losses import smoothed_loss

WORDS = "zero one two three four five six seven eight nine".split()
PAD, BOS, EOS = 0, 1, 2


class WordTok:
    """What `mrt_loss` needs of a target tokenizer: the special ids, the size, and ids -> text."""

    pad_id, bos_id, eos_id = PAD, BOS, EOS
    vocab_size = 3 + len(WORDS)

    def decode(self, ids):
        return " ".join(WORDS[i - 3] for i in ids)


TOK = WordTok()


def reverse_batch(n: int, g: torch.Generator) -> dict:
    src, tgt = [], []
    for length in torch.randint(3, 9, (n,), generator=g).tolist():
        x = torch.randint(3, TOK.vocab_size, (length,), generator=g).tolist()
        src.append(x + [EOS])
        tgt.append(x[::-1])
    return collate(src, tgt, PAD, BOS, EOS)


def tiny_model(d_model=64, layers=2) -> Seq2Seq:
    return Seq2Seq(Seq2SeqConfig(vocab_size=TOK.vocab_size, pad_id=PAD, max_seq_len=24, d_model=d_model,
                                 n_encoder_layers=layers, n_decoder_layers=layers, n_heads=2, d_ff=2 * d_model,
                                 dropout=0.0))


def xent(logits, targets):
    return smoothed_loss(logits, targets, 0.0)


# ------------------------------------------------------------------------------------------------ the costs
PAIRS = [("the cat sat on the mat", "the cat sat on the mat"), ("a cat sat on a mat .", "the cat sat on the mat"),
         ("", "the cat sat"), ("dog", "the cat sat"), ("the the the the", "the cat"), ("Sat.", "sat .")]


def test_costs_are_one_minus_sacrebleus_sentence_scores():
    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    bleu = [sacrebleu.sentence_bleu(h, [r]).score for h, r in PAIRS]
    chrf = [sacrebleu.sentence_chrf(h, [r], word_order=2).score for h, r in PAIRS]
    assert M.score(hyps, refs, "bleu") == (bleu, [1 - s / 100 for s in bleu])
    assert M.score(hyps, refs, "chrf") == (chrf, [1 - s / 100 for s in chrf])
    assert bleu[0] == pytest.approx(100.0) and bleu[2] == 0.0 and 0 < bleu[1] < 100 and len(set(bleu)) > 3


def test_the_logged_candidate_metric_is_sacrebleus_on_the_decoded_candidates():
    """Beam candidates are deterministic: decode them again here, score them with sacrebleu, and compare with
    what `mrt_loss` logged; the logged risk is Σ Q·Δ with Q from a separate teacher-forced pass."""
    torch.manual_seed(0)
    model = tiny_model(32, 1)
    batch = reverse_batch(5, torch.Generator().manual_seed(3))
    cfg = MRTConfig(candidates=3, method="beam", nll_weight=0.3, alpha=0.7)
    loss, info = M.mrt_loss(model, batch, cfg, TOK, SequenceDecoding(), xent)
    found = M.candidates(model, batch["src"], batch["src_mask"], BOS, EOS, cfg, SequenceDecoding(), TOK.vocab_size)
    refs = [TOK.decode([t for t in row if t not in (-100, EOS)]) for row in batch["tgt_out"].tolist()]
    scores = [sacrebleu.sentence_bleu(TOK.decode(u.tokens), [refs[b]]).score for b, us in enumerate(found) for u in us]
    assert info["cand_bleu"] == (sum(scores), len(scores))
    assert info["candidates"] == (len(scores), 5) and all(1 <= len(us) <= 3 for us in found)
    with torch.no_grad():  # R(x) from scratch, one sentence and one candidate at a time
        risks = []
        for b, us in enumerate(found):
            n = int(batch["src_mask"][b].sum())
            logp = []
            for u in us:
                full = [BOS, *u.tokens, *([EOS] if u.finished else [])]
                logits = model(batch["src"][b : b + 1, :n], batch["src_mask"][b : b + 1, :n],
                               torch.tensor([full[:-1]])).logits
                logp.append(logits[0].log_softmax(-1)[torch.arange(len(full) - 1), torch.tensor(full[1:])].sum())
            q = (cfg.alpha * torch.stack(logp)).softmax(0)
            cost = torch.tensor([1 - sacrebleu.sentence_bleu(TOK.decode(u.tokens), [refs[b]]).score / 100 for u in us])
            risks.append(float((q * cost).sum()))
    assert info["risk"][1] == 5
    assert info["risk"][0] == pytest.approx(sum(risks), abs=1e-5)
    nll = xent(model(batch["src"], batch["src_mask"], batch["tgt_in"])[0], batch["tgt_out"])[1]
    assert loss.item() == pytest.approx(0.7 * sum(risks) / 5 + 0.3 * nll.item(), abs=1e-5)


# ------------------------------------------------------------------------------------------------ the gradient
def test_risk_gradient_is_alpha_q_times_cost_minus_risk():
    """Two sources with 2 and 3 candidates (the padded slot of the first must weigh nothing)."""
    torch.set_default_dtype(torch.float64)
    logp = torch.tensor([-1.0, -2.5, -0.3, -4.0, -1.1], requires_grad=True)
    cost = torch.tensor([0.2, 0.9, 0.5, 0.1, 0.7])
    owner = torch.tensor([0, 0, 1, 1, 1])
    alpha = 0.8
    risk = M.expected_risk(logp, cost, owner, 2, alpha)
    risk.sum().backward()
    for rows, b in ((slice(0, 2), 0), (slice(2, 5), 1)):
        q = (alpha * logp[rows]).softmax(0).detach()
        assert risk[b].item() == pytest.approx(float((q * cost[rows]).sum()), abs=1e-12)
        torch.testing.assert_close(logp.grad[rows], alpha * q * (cost[rows] - risk[b]), rtol=0, atol=1e-12)


def test_mrt_gradient_matches_finite_differences(monkeypatch):
    """∂L/∂W of the MRT loss (λ = 0: the risk alone) on one source with two candidates — one ended by EOS, one
    cut by the length limit — equals central finite differences (float64, torch.autograd.gradcheck), for one
    weight matrix of the decoder and for the output layer."""
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    base = tiny_model(8, 1)
    batch = collate([[5, 7, 4, EOS]], [[4, 7, 5]], PAD, BOS, EOS)
    two = [[Candidate((4, 7, 5), True), Candidate((4, 9, 9, 8), False)]]
    monkeypatch.setattr(M, "candidates", lambda *args, **kwargs: two)
    cfg = MRTConfig(candidates=2, nll_weight=0.0, alpha=0.5)
    cost = M.score(["four seven five", "four nine nine eight"], ["four seven five"] * 2, "bleu")[1]
    assert cost[0] == pytest.approx(0.0, abs=1e-12) and cost[1] > 0.5

    class WithWeight(torch.nn.Module):  # the model with one parameter replaced by the tensor gradcheck varies
        def __init__(self, name, w):
            super().__init__()
            self.name, self.w = name, w

        def forward(self, *args):
            return torch.func.functional_call(base, {self.name: self.w}, args)

    for name in ("decoder.0.mlp.up.weight", "lm_head.weight"):
        w = dict(base.named_parameters(remove_duplicate=False))[name].detach().clone().requires_grad_(True)
        loss = lambda w, name=name: M.mrt_loss(WithWeight(name, w), batch, cfg, TOK, SequenceDecoding(),  # noqa: E731
                                               xent)[0]
        assert loss(w).item() > 0.01  # the second candidate costs > 0.5 and has real weight
        assert torch.autograd.gradcheck(loss, (w,), eps=1e-6, atol=1e-7)


# ------------------------------------------------------------------------------------------------ learning
# Measured with torch 2.13.0+cpu, 1 thread: a 2+2-layer d_model 64 model trained with cross-entropy until a
# batch's NLL is below 0.9 (127–229 steps), then MRT alone (λ = 0, beam 4, α = 1, Adam lr 1e-3, 32 sentences a
# step). Expected risk of the beam candidates / mean greedy sentence BLEU on 64 held-out sentences, before ->
# after 30 MRT steps, seeds 0, 1, 2, 3: 0.565 -> 0.298 / 50.1 -> 85.1; 0.513 -> 0.399 / 64.3 -> 77.4;
# 0.487 -> 0.354 / 60.5 -> 81.1; 0.689 -> 0.380 / 34.8 -> 75.0 (~5 s). The test runs seed 0 and asks for
# half the smallest change measured: risk down by 0.05, BLEU up by 6.
MRT_STEPS, MIN_RISK_DROP, MIN_BLEU_GAIN = 30, 0.05, 6.0


def test_mrt_alone_lowers_the_risk_and_raises_bleu_on_a_toy_reversal():
    torch.manual_seed(0)
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98))
    for _ in range(400):  # cross-entropy until the model half knows the task
        batch = reverse_batch(32, g)
        loss, nll, _ = xent(model(batch["src"], batch["src_mask"], batch["tgt_in"])[0], batch["tgt_out"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if nll.item() < 0.9:
            break
    held_out = reverse_batch(64, torch.Generator().manual_seed(99))
    refs = [TOK.decode([t for t in row if t not in (-100, EOS)]) for row in held_out["tgt_out"].tolist()]
    cfg = MRTConfig(candidates=4, method="beam", alpha=1.0, nll_weight=0.0)

    def measure() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            _, info = M.mrt_loss(model, held_out, cfg, TOK, SequenceDecoding(), xent)
            out = greedy_decode(model, held_out["src"], held_out["src_mask"], BOS, EOS, 1.0, 2)
        model.train()
        bleu = sum(M.score([TOK.decode(o) for o in out], refs, "bleu")[0]) / len(refs)
        return info["risk"][0] / info["risk"][1], bleu

    risk0, bleu0 = measure()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    for _ in range(MRT_STEPS):
        loss, _ = M.mrt_loss(model, reverse_batch(32, g), cfg, TOK, SequenceDecoding(), xent)
        opt.zero_grad()
        loss.backward()
        opt.step()
    risk1, bleu1 = measure()
    assert risk1 < risk0 - MIN_RISK_DROP, (risk0, risk1)
    assert bleu1 > bleu0 + MIN_BLEU_GAIN, (bleu0, bleu1)


# ------------------------------------------------------------------------------------------------ the config
@pytest.mark.parametrize(("section", "error"), [
    ({"candidates": 1}, "mrt: candidates must be >= 2"),
    ({"metric": "ter"}, "mrt.metric: 'ter' is not one of bleu, chrf"),
    ({"method": "greedy"}, "mrt.method: 'greedy' is not one of sample, beam"),
    ({"alpha": 0}, "mrt: alpha must be positive"),
    ({"nll_weight": 1.5}, "mrt: nll_weight must be in [0, 1]"),
    ({"temperature": 0}, "mrt: temperature must be positive"),
])
def test_bad_mrt_settings_are_one_line_errors(section, error):
    from qkv.config import from_dict

    with pytest.raises(QKVError) as e:
        from_dict(TranslateRunConfig, {"mrt": section})
    assert error in str(e.value) and "\n" not in str(e.value)


def test_the_objective_is_xent_or_mrt():
    from qkv.config import from_dict

    assert from_dict(TranslateRunConfig, {}).train.objective == "xent"
    with pytest.raises(QKVError, match="train.objective: 'risk' is not one of xent, mrt"):
        from_dict(TranslateRunConfig, {"train": {"objective": "risk"}})
