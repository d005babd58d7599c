"""The chat template, the answer-only loss and the chat session.

- render/parse round trips (character and byte-level BPE tokenizers), inference prompt = training prefix;
- the loss mask covers assistant content + <|end|> and nothing else (worked example);
- gradients reaching masked positions are exactly zero; an all-masked batch is a QKVError, not a NaN;
- `answer_loss` (validation and `qkv eval`) equals a per-conversation loop over padded batches;
- adding the template tokens keeps every existing id; growing a base model's vocabulary keeps its logits;
- the session keeps history, resets it, and trims it from the front when the context fills; a system
  message leads every prompt and survives the trimming.
"""

import random

import pytest
import torch
import torch.nn.functional as F

from qkv.data.chat import ChatBatches, ChatExamples, collate_chat
from qkv.data.chat_template import (
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
from qkv.errors import QKVError
from qkv.evaluation.chat import answer_loss
from qkv.generation.chat import ChatSession
from qkv.models.gpt import GPT, GPTConfig
from qkv.tasks.chat import chat_loss, grow_vocab
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


def _random_conversations(tok, n: int, seed: int = 0) -> list[list[dict]]:
    """`n` conversations of random characters: one or two exchanges, some with a system message, all lengths."""
    rng = random.Random(seed)
    chars = "abcdefghijklmnopqrstuvwxyz ?0123456789"

    def say() -> str:
        return "".join(rng.choice(chars) for _ in range(rng.randint(1, 8))).strip() or "x"

    convs = []
    for _ in range(n):
        msgs = [{"role": "system", "content": say()}] if rng.random() < 0.3 else []
        for _ in range(rng.randint(1, 2)):
            msgs += [{"role": "user", "content": say()}, {"role": "assistant", "content": say()}]
        convs.append(msgs)
    return convs


@pytest.mark.parametrize("answer_only", [True, False])
def test_answer_loss_equals_a_per_conversation_loop(answer_only):
    """`answer_loss` (length-sorted, right-padded batches of up to 64: here two batches) equals the NLL summed
    over each conversation's targets computed alone, divided by the target count; the pad id changes nothing."""
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=2, n_heads=2)).eval()
    pairs = [targets_from(*render(c, tok), answer_only) for c in _random_conversations(tok, 70)]
    ex = ChatExamples([x for x, _ in pairs], [y for _, y in pairs], [], 0)
    assert len({len(x) for x in ex.inputs}) > 10  # many lengths: every batch is padded
    total, count = 0.0, 0
    with torch.no_grad():
        for x, y in pairs:
            logits, _ = model(torch.tensor([x]))  # (1, T, V)
            total += F.cross_entropy(logits[0], torch.tensor(y), ignore_index=-100, reduction="sum").item()
            count += sum(t != -100 for t in y)
    loss, n = answer_loss(model, ex, pad_id=chat_tokens(tok).end)
    assert n == count and (n == sum(map(len, ex.targets))) == (not answer_only)
    # measured |difference| 2.1e-8 (answer-only) and 2.0e-7 (every token) on torch 2.13, Intel Xeon (AMX),
    # 1 thread: `pytest tests/unit/chat/test_template.py::test_answer_loss_equals_a_per_conversation_loop`
    assert loss == pytest.approx(total / count, abs=1e-6)
    # padding sits after the real tokens, behind the causal mask: same shapes, same sums, exactly the same loss
    assert answer_loss(model, ex, pad_id=0)[0] == loss


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


def test_session_system_message_leads_every_prompt_and_survives_trimming():
    """With ``system=``, every prompt is the template's rendering of [system, *history, user]; when the context
    fills, exchanges are dropped from the front (the newest stay) and the system message stays."""
    tok = char_tok()
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=64, d_model=32, n_layers=1, n_heads=2)).eval()
    session = ChatSession(model, tok, max_new_tokens=2, system="Be brief.", seed=0)
    system = {"role": "system", "content": "Be brief."}
    assert tok.decode(session.prompt_ids("hi")) == render_text([system, {"role": "user", "content": "hi"}],
                                                               add_generation_prompt=True)
    # 11 system + 6 prompt + 2 new tokens leave 45 for the history: 5 to 6 exchanges of 7 to 9 tokens
    trimmed = []
    for i in range(10):
        q = f"q{i}?"
        before = list(session.history)
        ids = session.prompt_ids(q)
        trimmed.append(session.last_trimmed)
        assert session.history == before[2 * session.last_trimmed:]  # the oldest exchanges went
        want = render_text([system, *session.history, {"role": "user", "content": q}], add_generation_prompt=True)
        assert tok.decode(ids) == want
        assert len(ids) + 2 <= 64
        "".join(session.reply(q))
    assert trimmed[:5] == [0] * 5 and max(trimmed) >= 1  # it trimmed...
    assert len(session.history) >= 8  # ...with several exchanges left, so front and back differ
