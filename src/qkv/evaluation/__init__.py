"""qkv.evaluation"""
