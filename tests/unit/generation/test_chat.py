"""The chat session keeps history, resets it, and trims it from the front when the context fills; a system
message leads every prompt and survives the trimming."""


import pytest

from chat_fixtures import char_tok
from qkv.data.chat_template import (
    render,
    render_text,
)
from qkv.errors import QKVError
from qkv.generation.chat import ChatSession
from qkv.models.gpt import GPT, GPTConfig


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
