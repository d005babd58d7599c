"""qkv.diffusion"""
