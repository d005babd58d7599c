"""A small conversation and tokenizers with the chat template's tokens, shared by the chat tests."""

from qkv.data.chat_template import add_chat_tokens
from qkv.tokenizers import train_bpe, train_char

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
