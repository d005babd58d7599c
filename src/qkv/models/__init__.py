"""Models: GPT (decoder-only); more arrive with their issues."""

from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig"]
