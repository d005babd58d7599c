"""Recipes wire one task together: its data, model, loss and evaluation, around the shared Trainer."""
