"""Models: GPT (decoder-only); more arrive with their issues."""

from qkv.models.dit import DiT, DiTConfig
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

__all__ = ["DiT", "DiTConfig", "GPT", "GPTConfig", "Seq2Seq", "Seq2SeqConfig"]
