"""Tokenizers: text <-> integer ids.

- `CharTokenizer` / `train_char`: one id per character (nanoGPT's shakespeare_char).
- `BPETokenizer` / `train_bpe` / `BPETokenizer.from_gpt2_files`: byte-level BPE (GPT-2's scheme).
- `load_tokenizer(path)`: read back any tokenizer written by ``tok.save(path)``.

Example::

    tok = train_char("hello world")
    tok.save("tok.json")
    assert load_tokenizer("tok.json").encode("hello") == tok.encode("hello")
"""

from qkv.tokenizers.base import Tokenizer, load_tokenizer
from qkv.tokenizers.bpe import BPETokenizer, train_bpe
from qkv.tokenizers.char import CharTokenizer, train_char

__all__ = ["BPETokenizer", "CharTokenizer", "Tokenizer", "load_tokenizer", "train_bpe", "train_char"]
