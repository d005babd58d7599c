"""Bits per character and per byte from a loss in nats per token (`qkv.evaluation.perplexity`)."""

import math

import pytest

from qkv.evaluation.perplexity import bits_per_byte, bits_per_char


def test_bits_per_byte_worked_example():
    # 2 nats/token = 2.885 bits/token; at 4 UTF-8 bytes per token: 0.721 bits/byte
    assert bits_per_byte(2.0, 4.0) == pytest.approx(2.0 / math.log(2) / 4.0)
    assert round(bits_per_byte(2.0, 4.0), 3) == 0.721


def test_bits_per_byte_equals_bits_per_char_on_ascii_and_is_lower_on_wider_characters():
    assert bits_per_byte(1.3, 3.5) == bits_per_char(1.3, 3.5)  # ASCII text: a byte per character
    text = "naïve café"  # 10 characters, 12 bytes: the same loss spreads over more bytes
    assert bits_per_byte(1.3, len(text.encode()) / 5) < bits_per_char(1.3, len(text) / 5)


def test_bytes_per_token_must_be_positive():
    with pytest.raises(ValueError, match="bytes_per_token must be positive"):
        bits_per_byte(1.0, 0.0)
