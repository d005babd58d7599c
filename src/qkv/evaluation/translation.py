"""Translation metrics: sacreBLEU, chrF++, tokenized lower-cased BLEU, loss and perplexity.

- **sacreBLEU** (Post 2018): BLEU on detokenized text with sacrebleu's own 13a tokenization, mixed case.
  The signature (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:…``) says exactly what was
  computed; quote it with the score.
- **chrF++** (Popović 2017): character n-gram F-score plus word uni/bigrams (sacrebleu ``CHRF(word_order=2)``).
- **Tokenized, lower-cased BLEU** (for comparison with older papers): the Multi30k numbers in the literature
  were mostly computed on tokenized, lower-cased text (spaCy/Moses tokens with multi-bleu.perl or
  torchtext's ``bleu_score``, fairseq's tokenized BLEU). We approximate that with sacrebleu
  ``BLEU(lowercase=True, tokenize="13a")``: 13a splits punctuation like the Moses tokenizer (and keeps
  hyphenated words whole, as Moses does by default); it runs ~0.5–1.5 above sacreBLEU on this data. It is
  not comparable with sacreBLEU and is always labelled.
- **loss / perplexity**: `corpus_loss`, the mean NLL per target token of the references, teacher-forced
  (EOS included, padding excluded); perplexity = exp(loss) (`qkv.evaluation.perplexity`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from sacrebleu.metrics import BLEU, CHRF

TOK_LC_LABEL = "tokenized (13a), lower-cased BLEU (for comparison with older papers)"


@dataclass
class Score:
    score: float
    signature: str
    detail: str  # sacrebleu's one-line rendering (n-gram precisions, brevity penalty, lengths)


def _check(hyps: list[str], refs: list[str]) -> None:
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses but {len(refs)} references")


def sacre_bleu(hyps: list[str], refs: list[str]) -> Score:
    """Detokenized, cased corpus BLEU with sacrebleu defaults (13a, exp smoothing)."""
    _check(hyps, refs)
    metric = BLEU()
    res = metric.corpus_score(hyps, [refs])
    return Score(res.score, str(metric.get_signature()), str(res))


def chrf_pp(hyps: list[str], refs: list[str]) -> Score:
    """chrF++: character 6-grams + word bigrams, β = 2."""
    _check(hyps, refs)
    metric = CHRF(word_order=2)
    res = metric.corpus_score(hyps, [refs])
    return Score(res.score, str(metric.get_signature()), str(res))


def tokenized_lc_bleu(hyps: list[str], refs: list[str]) -> Score:
    """BLEU on 13a-tokenized, lower-cased text (see the module docstring for why and what it compares to)."""
    _check(hyps, refs)
    metric = BLEU(lowercase=True, tokenize="13a")
    res = metric.corpus_score(hyps, [refs])
    return Score(res.score, str(metric.get_signature()), str(res))


def translation_scores(hyps: list[str], refs: list[str]) -> dict:
    """{"bleu": Score, "chrf++": Score, "bleu_tok_lc": Score} as plain dicts."""
    return {"bleu": asdict(sacre_bleu(hyps, refs)), "chrf++": asdict(chrf_pp(hyps, refs)),
            "bleu_tok_lc": asdict(tokenized_lc_bleu(hyps, refs))}



@torch.no_grad()
def corpus_loss(model, ex, pad_id: int, bos_id: int, eos_id: int) -> tuple[float, int]:
    """(mean NLL per target token, number of target tokens) over every pair of `ex` once (EOS counted)."""
    from qkv.data.translation import eval_batches

    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for batch in eval_batches(ex, pad_id, bos_id, eos_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["tgt_out"].flatten(),
                                                   ignore_index=-100, reduction="sum").item()
        count += int((batch["tgt_out"] != -100).sum())
    return total / max(1, count), count
