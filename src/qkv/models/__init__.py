"""Models: GPT (decoder-only); more arrive with their issues."""

from qkv.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
