"""Prompts for text-to-image diffusion: a tokenizer learned from the training captions, and prompts -> ids.

    tok = train_caption_tokenizer(["a red circle at the top left", ...], "char", 300)
    ids, mask = encode_prompts(tok, ["a red circle at the top left"], max_len=40)
    # ids (1, 29): [<bos>, a, ' ', r, e, d, …]; mask (1, 29) True at real tokens
"""

from __future__ import annotations

import torch

from qkv.errors import QKVError


def train_caption_tokenizer(captions: list[str], kind: str, vocab_size: int,
                            specials: tuple[str, ...] = ("<pad>", "<bos>")):
    """A char or BPE tokenizer of the training captions; a char one gets `specials` (the BPE has <pad> <bos> <eos>
    <unk>). Text conditioning needs <pad> and <bos>; a caption decoder also <eos>."""
    from qkv.tokenizers import train_bpe, train_char

    if kind == "char":
        tok = train_char("".join(sorted(set("".join(captions)))))
        tok.add_special_tokens(list(specials))
        return tok
    return train_bpe(captions, vocab_size=vocab_size, min_frequency=1)


def encode_prompts(tok, captions: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts (a text-to-image model's condition) -> ids (N, S) = [<bos>, tokens…, <pad>…] and mask (N, S),
    S = the longest prompt + 1.

    QKVError if a caption is longer than `max_len` tokens (with <bos>) or has characters the tokenizer lacks.
    """
    rows = [[tok.bos_id, *tok.encode(c)] for c in captions]
    S = max(len(r) for r in rows)
    if S > max_len:
        long = max(range(len(rows)), key=lambda i: len(rows[i]))
        raise QKVError(f"caption {captions[long]!r} is {len(rows[long])} tokens with <bos>; "
                       f"the model takes at most {max_len} (model.max_seq_len)")
    ids = torch.full((len(rows), S), tok.pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
    return ids, ids != tok.pad_id
