"""The chat task's skills source and reinforce objective: RL needs a run to start from, the calculator's result
sends no gradient in SFT, and one REINFORCE step of a chat model draws its samples, rewards their final answers
and gives a loss with gradient (`qkv.tasks.chat.chat_reinforce`)."""

from types import SimpleNamespace

import pytest
import torch

from qkv.config import from_dict
from qkv.data.chat import collate_chat, encode_conversations
from qkv.data.chat_template import add_chat_tokens, chat_tokens, render, targets_from, tool_tokens
from qkv.data.skills import skill_conversations
from qkv.errors import QKVError
from qkv.generation.calculator import ChatCompleter
from qkv.models.gpt import GPT, GPTConfig
from qkv.tasks import get_task, run_task
from qkv.tasks.chat import ChatRunConfig, chat_loss, chat_reinforce
from qkv.tokenizers import train_char
from qkv.training.reinforce import ReinforceConfig

TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ?.,!:'0123456789+-*/()=<>\n_[]%"


def tool_tok():
    tok = train_char(TEXT)
    add_chat_tokens(tok, tools=True)
    return tok


def test_reinforce_needs_a_run_to_start_from(tmp_path):
    cfg = from_dict(get_task("chat").config_class, {"task": "chat", "data": {"source": "skills", "train_size": 12},
                                                    "train": {"objective": "reinforce", "max_steps": 1}})
    with pytest.raises(QKVError, match="--init-from"):
        run_task(cfg, tmp_path / "rl")
    assert not (tmp_path / "rl").exists()


def test_unknown_objective():
    with pytest.raises(QKVError, match="objective: .ppo. is not one of xent, reinforce"):
        from_dict(ChatRunConfig, {"train": {"objective": "ppo"}})


def test_the_tool_result_sends_no_gradient():
    tok = tool_tok()
    convs = [c.messages for c in skill_conversations("train", 6, skills=("arithmetic",))]
    xs, ys = zip(*(targets_from(*render(c, tok)) for c in convs), strict=True)
    batch = collate_chat(list(xs), list(ys), pad_id=chat_tokens(tok).end)
    t = tool_tokens(tok)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=96, d_model=32, n_layers=1, n_heads=2))
    captured = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        captured["logits"] = out

    model.lm_head.register_forward_hook(keep)
    loss, _ = chat_loss(model, batch)
    loss.backward()
    grad = captured["logits"].grad  # (B, L, V)
    for row, idx in enumerate(batch["idx"].tolist()):
        r = idx.index(t.result)  # the input position that reads <|result|> predicts the result's first token
        e = idx.index(t.end)
        assert (grad[row, r:e] == 0).all(), "the tool's result and its closing token carry no loss"
        assert grad[row, r - 1].abs().sum() > 0, "the model learns to write <|result|>"
        assert grad[row, e].abs().sum() > 0, "and the answer after the call"


def test_one_reinforce_step():
    tok = tool_tok()
    convs = skill_conversations("train", 4, skills=("compare", "spell"))
    ex = encode_conversations(convs, tok, 96)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, max_seq_len=96, d_model=32, n_layers=1, n_heads=2))
    state = SimpleNamespace(train_ex=ex, splits=None, cfg=SimpleNamespace(rl=ReinforceConfig(samples_per_prompt=3,
                                                                                max_new_tokens=8)))
    loss, info = chat_reinforce(ChatCompleter(model, tok), state, {"conversation": torch.tensor([0, 1])})
    assert info["reward"][1] == 6 and info["useful_prompts"][1] == 2
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    assert model.tok_emb.weight.grad is not None
