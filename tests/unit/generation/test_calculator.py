"""The calculator tool: `calculate` computes arithmetic and refuses everything else (no eval), the chat template
reads ``<<expression=result>>`` as the tool's tokens with no loss on what the tool writes, and decoding feeds the
tool's result to the model (`ChatCompleter`, `ToolStream`), marking it forced so REINFORCE skips it. The decoding
tests drive a scripted model: its next token is fixed by the sequence length, whatever it has read."""

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from qkv.data.chat_template import (
    CALC,
    CALC_END,
    RESULT,
    add_chat_tokens,
    chat_tokens,
    check_content,
    final_answer,
    render,
    tool_text,
    tool_tokens,
    uses_tools,
)
from qkv.errors import QKVError
from qkv.generation.calculator import ERROR, ChatCompleter, ToolStream, calculate
from qkv.generation.completion import Sample
from qkv.generation.sampling import TokenSampling
from qkv.tokenizers import train_char

TEXT = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ?.!:0123456789+-*/()=<>'"


def tool_tok():
    tok = train_char(TEXT)
    add_chat_tokens(tok, tools=True)
    return tok


@pytest.mark.parametrize("expr, value", [("37+45", "82"), ("7 * (3 - 5)", "-14"), ("10/4", "2.5"), ("1/3", "0.333333"),
                                         ("-8 // 3", "-3"), ("17 % 5", "2"), ("2.5*4", "10"), (" 64-18 ", "46")])
def test_calculate(expr, value):
    assert calculate(expr) == value


@pytest.mark.parametrize("expr", ["__import__('os').system('true')", "2**99", "x+1", "len('ab')", "1/0", "5 % 0",
                                  "'a'*3", "", "1+", "9" * 13, "1" + "+1" * 40, "[1, 2]", "(lambda: 1)()",
                                  "1 if 1 else 2", "999999999999*999999999999"])
def test_calculate_refuses(expr):
    assert calculate(expr) == ERROR


@given(st.integers(-999_999, 999_999), st.integers(-999_999, 999_999), st.sampled_from("+-*"))  # results < 10**12
def test_calculate_agrees_with_python(a, b, op):
    assert calculate(f"{a}{op}({b})") == str({"+": a + b, "-": a - b, "*": a * b}[op])


def test_tool_tokens_are_optional_and_appended():
    plain = train_char(TEXT)
    add_chat_tokens(plain)
    assert tool_tokens(plain) is None
    tok = tool_tok()
    before = chat_tokens(plain)
    assert chat_tokens(tok) == before  # the role tokens keep their ids; the tool's come after
    assert tool_tokens(tok).calc == plain.vocab_size


def test_render_reads_a_call_and_masks_what_the_tool_writes():
    tok = tool_tok()
    t = tool_tokens(tok)
    msgs = [{"role": "user", "content": "3 plus 4?"}, {"role": "assistant", "content": "<<3+4=7>>7"}]
    ids, mask = render(msgs, tok)
    reply = ids[ids.index(chat_tokens(tok).assistant) + 1:]
    learn = mask[len(ids) - len(reply):]
    enc = tok.encode
    assert reply == [t.calc, *enc("3+4"), t.result, *enc("7"), t.end, *enc("7"), chat_tokens(tok).end]
    assert learn == [True, True, True, True, True, False, False, True, True]
    assert tool_text(reply[:-1], tok) == "<<3+4=7>>7"
    assert uses_tools(msgs) and not uses_tools(msgs[:1])


def test_without_tool_tokens_a_call_is_plain_text():
    tok = train_char(TEXT)
    add_chat_tokens(tok)
    ids, mask = render([{"role": "user", "content": "q"}, {"role": "assistant", "content": "<<3+4=7>>7"}], tok)
    assert tok.decode(ids[4:-1]) == "<<3+4=7>>7" and all(mask[4:])


@pytest.mark.parametrize("token", [CALC, RESULT, CALC_END])
def test_tool_tokens_in_content_are_refused(token):
    with pytest.raises(QKVError, match="template token"):
        check_content(f"1{token}2")


@pytest.mark.parametrize("reply, answer", [("<<2+3=5>>5", "5"), ("k-o-w reversed is w-o-k: wok", "wok"),
                                           ("52", "52"), ("  7 ", "7"), ("Given a string: reverse it.", "reverse it.")])
def test_final_answer(reply, answer):
    assert final_answer(reply) == answer


class Scripted(nn.Module):
    """A stand-in model whose next token is `script[length]` (the sequence's length so far), else `filler`."""

    def __init__(self, script: dict[int, int], vocab: int, filler: int, ctx: int = 64):
        super().__init__()
        self.script, self.vocab, self.filler = script, vocab, filler
        self.tok_emb = nn.Embedding(vocab, 4)
        self.config = type("C", (), {"max_seq_len": ctx})()

    def new_cache(self, n, length):
        return SimpleNamespace(length=0)

    def forward(self, x, cache=None, last_only=False):
        if cache is not None:
            cache.length += x.shape[1]
            length = cache.length
        else:
            length = x.shape[1]
        logits = torch.full((x.shape[0], 1, self.vocab), -10.0)
        logits[:, :, self.script.get(length, self.filler)] = 10.0
        return (logits,)


def scripted_reply(tok, prompt_len: int, reply: list[int]):
    """A model that writes `reply` after a prompt of `prompt_len` ids (the filler elsewhere: 'z')."""
    return Scripted({prompt_len + i: t for i, t in enumerate(reply)}, tok.vocab_size, tok.encode("z")[0])


def test_completer_feeds_the_result_and_marks_it_forced():
    tok = tool_tok()
    t, end = tool_tokens(tok), chat_tokens(tok).end
    enc = tok.encode
    prompt = "What is 12 times 3?"
    n_prompt = len(render([{"role": "user", "content": prompt}], tok, add_generation_prompt=True)[0])
    # the model writes the call; where the tool writes "36>>" it would write "zzz" (ignored); then "36" and <|end|>
    written = [t.calc, *enc("12*3"), t.result, *enc("zzz"), *enc("36"), end]
    completer = ChatCompleter(scripted_reply(tok, n_prompt, written), tok)
    (sample,) = completer.greedy([prompt], 30)
    assert sample.text == "<<12*3=36>>36"
    assert sample.ids == [t.calc, *enc("12*3"), t.result, *enc("36"), t.end, *enc("36"), end]
    assert sample.forced == (False,) * 6 + (True,) * 3 + (False,) * 3
    assert completer.replies([prompt], 30) == ["<<12*3=36>>36"]


def test_a_bad_expression_gets_error_and_decoding_goes_on():
    tok = tool_tok()
    t, end = tool_tokens(tok), chat_tokens(tok).end
    n_prompt = len(render([{"role": "user", "content": "q"}], tok, add_generation_prompt=True)[0])
    written = [t.calc, *tok.encode("ab+1"), t.result, *tok.encode("zzzzzz"), *tok.encode("1"), end]
    (sample,) = ChatCompleter(scripted_reply(tok, n_prompt, written), tok).greedy(["q"], 40)
    assert sample.text == "<<ab+1=error>>1"


def test_forced_tokens_carry_no_log_probability():
    tok = tool_tok()
    completer = ChatCompleter(scripted_reply(tok, 3, []), tok)
    completer.model = _Tiny(tok.vocab_size)
    s = Sample([5, 6, 7, 8], "", (False, True, True, False))
    _, mask = completer.token_logprobs(["q"], [s])
    assert mask.tolist() == [[True, False, False, True]]


class _Tiny(nn.Module):
    """Any differentiable next-token model with GPT's call signature."""

    def __init__(self, vocab):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, vocab)
        self.config = type("C", (), {"max_seq_len": 64})()

    def forward(self, x, cache=None, last_only=False):
        return (self.tok_emb(x),)


def test_tool_stream_shows_the_call_and_its_result():
    tok = tool_tok()
    t, ct = tool_tokens(tok), chat_tokens(tok)
    enc = tok.encode
    prompt_ids, _ = render([{"role": "user", "content": "q"}], tok, add_generation_prompt=True)
    written = [*enc("so "), t.calc, *enc("2+2"), t.result, *enc("zz"), *enc(" 4"), ct.end]
    model = scripted_reply(tok, len(prompt_ids), written)
    stream = ToolStream(model, tok, prompt_ids, 30, TokenSampling(temperature=0.0), None,
                        (ct.end, ct.user, ct.assistant, ct.system))
    assert "".join(stream.texts()) == "so <<2+2=4>> 4"
    assert stream.reason == "end"
