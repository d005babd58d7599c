"""qkv.generation"""
