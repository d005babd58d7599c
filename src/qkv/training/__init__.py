"""qkv.training"""
