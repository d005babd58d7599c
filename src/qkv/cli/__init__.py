"""Command-line interface: `qkv COMMAND ...` (see qkv.cli.main)."""
