"""Topic `tokens`: text → tokens → integer ids, with the run's own tokenizer.

A model never sees characters. The tokenizer cuts the text into tokens it knows (single characters for a
char tokenizer; bytes merged into frequent pieces for BPE) and replaces each by its row number in the
embedding table: that integer id is the input to the embedding layer.
"""

from __future__ import annotations

from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, no_grad, window
from qkv.explain.inputs import default_text, tokenizer_of

LESSON = ("A model never reads characters. The tokenizer cuts the text into tokens from a fixed vocabulary and "
          "replaces each by its index in that vocabulary: these integer ids are the only input the embedding "
          "layer gets.")


@no_grad
def explain_tokens(run, opts: Options) -> Explanation:
    tok, side = tokenizer_of(run)
    text = default_text(run, opts)
    e = Explanation("tokens", "text → tokens → ids", run.path.name)
    e.say(LESSON)
    kind = type(tok).__name__.removesuffix("Tokenizer").lower() or "char"
    e.say(f"tokenizer: {kind} ({side}), vocabulary of {tok.vocab_size:,} ids; text: {text!r} ({len(text)} characters)")
    ids = tok.encode(text)
    if not ids:
        raise QKVError("the text encodes to no tokens")
    shown = window(ids, e)
    rows = [[pos, token_label(tok, i), i, repr(tok.decode([i]))] for pos, i in enumerate(shown)]
    e.table(["position", "token", "id", "decodes to"], rows)
    e.say(f"{len(text)} characters -> {len(ids)} tokens ({len(text) / len(ids):.2f} characters per token); "
          f"decode(encode(text)) == text: {tok.decode(ids) == text}")
    e.data.update(text=text, ids=ids, tokens=[token_label(tok, i) for i in ids], vocab_size=tok.vocab_size,
                  tokenizer=kind)
    _unknown(tok, kind, e)
    return e


def _unknown(tok, kind: str, e: Explanation) -> None:
    """What happens to a character the tokenizer never saw."""
    probe = "€"  # outside Tiny Shakespeare's and most toy vocabularies
    try:
        ids = tok.encode(probe)
    except QKVError as err:
        e.say(f"an unknown character, {probe!r}: refused — {err}")
        e.data["unknown"] = {"char": probe, "ids": None, "error": str(err)}
        return
    how = ("its UTF-8 bytes, one token each unless merged" if kind == "bpe" else
           "the <unk> id" if tok.unk_id is not None and tok.unk_id in ids else "these ids")
    e.say(f"an unknown character, {probe!r}: encoded as {ids} — {how}; nothing is ever out of vocabulary "
          "for a byte-level BPE" if kind == "bpe" else f"an unknown character, {probe!r}: encoded as {ids} ({how})")
    e.data["unknown"] = {"char": probe, "ids": ids, "error": None}
