"""qkv.data"""
