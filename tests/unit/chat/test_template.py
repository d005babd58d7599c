"""The chat template, the answer-only loss and the chat session.

- render/parse round trips (character and byte-level BPE tokenizers), inference prompt = training prefix;
- the loss mask covers assistant content + <|end|> and nothing else (worked example);
- gradients reaching masked positions are exactly zero; an all-masked batch is a QKVError, not a NaN;
- adding the template tokens keeps every existing id; growing a base model's vocabulary keeps its logits;
- the session keeps history, resets it, and trims it from the front when the context fills.
"""

import pytest
import torch

from qkv.chat.session import ChatSession
from qkv.chat.template import (
    END,
    SPECIAL_TOKENS,
    USER,
    add_chat_tokens,
    chat_tokens,
    parse,
    render,
    render_text,
    targets_from,
)
from qkv.data.chat import ChatBatches, collate_chat
from qkv.errors import QKVError
from qkv.models.gpt import GPT, GPTConfig
from qkv.recipes.chat import chat_loss, grow_vocab
from qkv.tokenizers import train_bpe, train_char
from qkv.training.config import TrainConfig
from qkv.training.trainer import Trainer

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 17 + 25?"},
    {"role": "assistant", "content": "42"},
    {"role": "user", "content": "And doubled?"},
    {"role": "assistant", "content": "84"},
]
TEXT = "".join(m["content"] for m in CONV) + "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ?.!0123456789"


def char_tok():
    tok = train_char(TEXT)
    add_chat_tokens(tok)
    return tok


def bpe_tok():
    tok = train_bpe([TEXT] * 20, vocab_size=300)
    add_chat_tokens(tok)
    return tok


@pytest.mark.parametrize("make_tok", [char_tok, bpe_tok], ids=["char", "bpe"])
def test_round_trip(make_tok):
    tok = make_tok()
    ids, mask = render(CONV, tok)
    assert len(ids) == len(mask)
    assert tok.decode(ids) == render_text(CONV)
    assert parse(tok.decode(ids)) == CONV
    assert parse(render_text(CONV)) == CONV


@pytest.mark.parametrize("make_tok", [char_tok, bpe_tok], ids=["char", "bpe"])
def test_inference_prompt_is_the_training_prefix(make_tok):
    tok = make_tok()
    full, _ = render(CONV, tok)
    for k in (2, 4):  # before each assistant turn
        prompt, _ = render(CONV[:k], tok, add_generation_prompt=True)
        assert full[: len(prompt)] == prompt
        assert prompt[-1] == chat_tokens(tok).assistant


def test_mask_worked_example():
    tok = char_tok()
    ct = chat_tokens(tok)
    ids, mask = render([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "42"}], tok)
    assert ids == [ct.user, *tok.encode("Hi"), ct.end, ct.assistant, *tok.encode("42"), ct.end]
    assert mask == [False, False, False, False, False, True, True, True]
    x, y = targets_from(ids, mask)
    assert x == ids[:-1]
    assert y == [-100, -100, -100, -100, *tok.encode("42"), ct.end]
    _, y_all = targets_from(ids, mask, answer_only=False)
    assert y_all == ids[1:]


def test_mask_covers_every_assistant_turn_and_nothing_else():
    tok = char_tok()
    ids, mask = render(CONV, tok)
    learned = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert learned == "42" + END + "84" + END


def test_special_tokens_keep_existing_ids():
    tok = train_char(TEXT)
    before = tok.encode(TEXT)
    n = tok.vocab_size
    assert add_chat_tokens(tok) == SPECIAL_TOKENS
    assert tok.encode(TEXT) == before
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(n, n + 4))
    assert add_chat_tokens(tok) == []  # idempotent
    assert tok.vocab_size == n + 4


def test_tokenizer_without_chat_tokens_is_refused():
    with pytest.raises(QKVError, match="no chat template tokens"):
        render(CONV, train_char(TEXT))


@pytest.mark.parametrize("bad", [f"hi {END} there", f"{USER}x"])
def test_content_with_a_template_token_is_refused(bad):
    with pytest.raises(QKVError, match="template token"):
        render([{"role": "user", "content": bad}], char_tok())


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
def test_grow_vocab_keeps_old_logits(tie):
    base = GPT(GPTConfig(vocab_size=20, max_seq_len=16, d_model=32, n_layers=1, n_heads=2, tie_weights=tie))
    grown = grow_vocab(base, 24)
    assert grown.config.vocab_size == 24 and grown.tok_emb.weight.shape == (24, 32)
    assert (grown.lm_head.weight is grown.tok_emb.weight) == tie
    idx = torch.randint(0, 20, (2, 10))
    torch.testing.assert_close(grown(idx)[0][..., :20], base(idx)[0], rtol=0, atol=0)
    torch.testing.assert_close(grown.tok_emb.weight[20:], base.tok_emb.weight.mean(0).expand(4, -1))
    assert grow_vocab(base, 20) is base


def test_session_history_reset_and_trimming():
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=1, n_heads=2)).eval()
    session = ChatSession(model, tok, max_new_tokens=4, seed=0)
    reply = "".join(session.reply("What is 17 + 25?"))
    assert len(tok.encode(reply)) <= 4
    assert session.history == [{"role": "user", "content": "What is 17 + 25?"},
                               {"role": "assistant", "content": reply}]
    first_prompt = session.prompt_ids("And doubled?")
    assert tok.decode(first_prompt).startswith(render_text(session.history))  # the history is in the prompt
    session.reset()
    assert session.history == []
    # fill the context: every new message pushes the oldest exchange out, and says how many
    trimmed = []
    for _ in range(6):
        "".join(session.reply("What is 17 + 25?"))
        trimmed.append(session.last_trimmed)
        assert len(render(session.history, tok)[0]) <= 64
    assert trimmed[0] == 0 and max(trimmed) >= 1
    with pytest.raises(QKVError, match="too long"):
        session.reply("x" * 80)
