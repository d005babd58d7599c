"""The chat template: render/parse round trips (character and byte-level BPE tokenizers), the inference
prompt is the training prefix, the loss mask covers assistant content + <|end|> and nothing else (worked
example), adding the template tokens keeps every existing id, template tokens inside content are refused."""


import pytest

from chat_fixtures import CONV, TEXT, bpe_tok, char_tok
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
from qkv.tokenizers import train_char


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
