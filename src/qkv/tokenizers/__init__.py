"""qkv.tokenizers"""
