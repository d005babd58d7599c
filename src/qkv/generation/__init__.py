"""Decoding: sampling rules, KV-cached generation, int8 inference."""
