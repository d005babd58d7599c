"""``qkv convert``: Hugging Face GPT-2 checkpoints <-> qkv run directories, and sharded runs -> one file.

    qkv convert --from-hf ./gpt2 --out runs/gpt2       # reads config.json, weights, vocab.json, merges.txt
    qkv convert --to-hf runs/gpt2 --out ./gpt2-export  # GPT2LMHeadModel.from_pretrained loads the result
    qkv convert --consolidate runs/big                 # an FSDP run's sharded checkpoint -> model.safetensors

No network: the Hugging Face folder must already be on disk (e.g. from ``huggingface-cli download gpt2``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qkv.errors import QKVError
from qkv.models.convert import ConversionResult, export_hf_gpt2, import_hf_gpt2


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name, help="convert between Hugging Face GPT-2 and qkv run directories; consolidate a sharded run",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="HF_DIR", help="a Hugging Face GPT-2 folder to import")
    direction.add_argument("--to-hf", metavar="RUN_DIR", help="a qkv GPT run directory to export")
    direction.add_argument("--consolidate", metavar="RUN_DIR",
                           help="an FSDP run: write its sharded weights as RUN_DIR/model.safetensors")
    p.add_argument("--out", metavar="DIR", help="the run directory or HF folder to write (not with --consolidate)")
    p.add_argument("--force", action="store_true", help="write into a folder that already has files")
    return p


def run(args) -> int:
    if args.consolidate is not None:
        if args.out is not None:
            raise QKVError("--consolidate writes into the run itself; drop --out")
        from qkv.models.io import consolidate

        path, n_params, source = consolidate(args.consolidate)
        print(f"wrote {path} ({path.stat().st_size:,} bytes) from {source}")
        print(f"parameters: {n_params:,}")
        return 0
    if args.out is None:
        raise QKVError("--out is required with --from-hf and --to-hf")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise QKVError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.force:
        raise QKVError(f"--out {out} is not empty; pass --force to overwrite files in it")
    if args.from_hf is not None:
        result = import_hf_gpt2(args.from_hf, out)
    else:
        result = export_hf_gpt2(args.to_hf, out)
    print(describe(result))
    return 0


def describe(result: ConversionResult) -> str:
    """One line per file written, then the parameter count and any notes."""
    lines = [f"wrote {p} ({p.stat().st_size:,} bytes)" for p in result.files]
    lines.append(f"parameters: {result.num_params:,}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)
