"""The chat task's training pieces: gradients reaching masked positions are exactly zero, the loss is the
mean over the answer tokens, an all-masked batch is a QKVError and not a NaN, and growing a base model's
vocabulary keeps its rows and logits."""


import pytest
import torch

from chat_fixtures import CONV, char_tok
from qkv.data.chat import ChatBatches, collate_chat
from qkv.data.chat_template import (
    chat_tokens,
    render,
    targets_from,
)
from qkv.errors import QKVError
from qkv.models.gpt import GPT, GPTConfig
from qkv.tasks.chat import chat_loss, grow_vocab
from qkv.training.config import TrainConfig
from qkv.training.trainer import Trainer


def _batch(tok, convs, answer_only=True):
    xs, ys = zip(*(targets_from(*render(c, tok), answer_only) for c in convs), strict=True)
    return collate_chat(list(xs), list(ys), pad_id=chat_tokens(tok).end)


def _logit_grads(model, batch):
    """d loss / d logits (B, L, V) for chat_loss on `batch`."""
    captured = {}

    def hook(_module, _inputs, out):
        out.retain_grad()
        captured["logits"] = out

    handle = model.lm_head.register_forward_hook(hook)
    loss, _ = chat_loss(model, batch)
    handle.remove()
    loss.backward()
    return captured["logits"].grad


@pytest.mark.parametrize("answer_only", [True, False])
def test_gradients_from_masked_positions_are_exactly_zero(answer_only):
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2))
    convs = [CONV, CONV[1:3]]  # different lengths: the second row is padded
    batch = _batch(tok, convs, answer_only)
    grad = _logit_grads(model, batch)  # (B, L, V)
    masked = batch["targets"] == -100  # (B, L)
    assert (grad[masked] == 0).all(), "a position without a target sent gradient"
    assert (grad[~masked].abs().sum(-1) > 0).all(), "every position with a target must send gradient"
    answer = ~_batch(tok, convs, True)["targets"].eq(-100)
    if answer_only:
        assert torch.equal(~masked, answer)
    else:  # the ablation learns from the prompt too: only padding is masked
        assert (~masked).sum() > answer.sum()


def test_loss_is_the_mean_over_answer_tokens():
    """chat_loss is the mean cross-entropy over exactly the assistant targets (content + <|end|>)."""
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2))
    batch = _batch(tok, [CONV])
    loss, info = chat_loss(model, batch)
    assert info["answer_tokens"] == 6  # "42" + <|end|> + "84" + <|end|>
    y = batch["targets"]
    logits, _ = model(batch["idx"])
    manual = torch.nn.functional.cross_entropy(logits[y != -100], y[y != -100])
    torch.testing.assert_close(loss, manual)


def test_all_masked_batch_raises_not_nan():
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=1, n_heads=2))
    batch = _batch(tok, [CONV])
    batch["targets"].fill_(-100)
    with pytest.raises(QKVError, match="every target is masked"):
        chat_loss(model, batch)
    # and through the trainer: the error stops training instead of a NaN loss
    x, y = targets_from(*render(CONV, tok))
    data = ChatBatches([x], [[-100] * len(y)], 1, pad_id=0)
    cfg = TrainConfig(max_steps=2, batch_size=1, warmup_steps=0, eval_interval=1, progress=False, device="cpu")
    with pytest.raises(QKVError, match="every target is masked"):
        Trainer(model, chat_loss, data, cfg).fit()




@pytest.mark.parametrize("tie", [True, False])
def test_grow_vocab_keeps_old_rows_and_logits(tie):
    """Growing the vocabulary copies every old embedding and LM-head row (and every other weight) bit for bit,
    starts the new rows at the mean of the old ones, and so keeps the logits of the old ids."""
    base = GPT(GPTConfig(vocab_size=20, max_seq_len=16, d_model=32, n_layers=1, n_heads=2, tie_embeddings=tie))
    grown = grow_vocab(base, 24)
    assert grown.config.vocab_size == 24 and grown.tok_emb.weight.shape == (24, 32)
    assert (grown.lm_head.weight is grown.tok_emb.weight) == tie
    grown_sd, base_sd = grown.state_dict(), base.state_dict()
    assert grown_sd.keys() == base_sd.keys()
    for name, w in base_sd.items():
        if name in ("tok_emb.weight", "lm_head.weight"):
            assert torch.equal(grown_sd[name][:20], w), name
            torch.testing.assert_close(grown_sd[name][20:], w.mean(0).expand(4, -1))
        else:
            assert torch.equal(grown_sd[name], w), name
    idx = torch.randint(0, 20, (2, 10))
    # the heads are matmuls of different widths (24 vs 20 columns): BLAS may pick other kernels, so not bit for
    # bit. Measured max |difference| 0.0 on torch 2.13, Intel Xeon (AMX), 1 thread:
    # `pytest tests/unit/chat/test_template.py::test_grow_vocab_keeps_old_rows_and_logits`
    torch.testing.assert_close(grown(idx)[0][..., :20], base(idx)[0], rtol=0, atol=1e-6)
    assert grow_vocab(base, 20) is base
