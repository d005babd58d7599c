"""Topic `evaluation`: how a model that writes text about a source is scored, on a few of its own held-out pairs.

Two kinds of number. The teacher-forced cross-entropy reads the reference translation token by token and
asks how much probability the model gave each next token: CE = −mean log p(reference token), in nats per
token, and perplexity = exp(CE). BLEU and chrF++ compare what the model actually produced (greedy
translation here) with the reference: BLEU is the geometric mean of 1- to 4-gram precisions times a brevity
penalty; chrF++ is an F-score (β = 2) of character 1- to 6-grams plus word uni- and bigrams. Both are
corpus-level metrics: they pool counts over all sentences, so a corpus score is not the mean of sentence
scores. The per-sentence cross-entropies are recomputed from the logits and their token-weighted mean is
checked against the run's own held-out loss (`reference_loss`: translation's `corpus_loss`, captioning's
`caption_loss`); BLEU and chrF++ are sacreBLEU's (`qkv.evaluation.translation.sacre_bleu`, `chrf_pp`), as
`qkv eval` computes them.
"""

from __future__ import annotations

import math

import torch

from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import chrf_pp, sacre_bleu
from qkv.explain.base import Explanation, Options, no_grad
from qkv.explain.inputs import describe_source

LESSON = ("Cross-entropy asks how surprised the model is by the reference translation: feed it the reference one "
          "token at a time (teacher forcing) and average −log p(next reference token), in nats per token; "
          "perplexity = exp(cross-entropy) is the number of equally likely choices that surprise amounts to. "
          "BLEU and chrF++ score what the model actually wrote against the reference. BLEU: the geometric "
          "mean of the 1- to 4-gram precisions of the translation, times a brevity penalty for translations "
          "shorter than the reference. chrF++: an F-score (recall weighted twice) of character 1- to 6-grams "
          "plus word unigrams and bigrams, kinder to near-miss word forms. Corpus scores pool the counts of "
          "every sentence, so corpus BLEU is not the mean of the sentence BLEUs.")

SENTENCES = 5  # validation pairs scored


@no_grad
def explain_evaluation(run, opts: Options) -> Explanation:
    model = run.model
    srcs, refs, where = _pairs(run, opts)
    e = Explanation("evaluation", "cross-entropy, perplexity, BLEU and chrF++ on a few references", run.path.name)
    e.say(LESSON)
    e.say(f"{len(srcs)} pair(s): {where}; the outputs are greedy, from the run's decoder")
    hyps = run.to_text(srcs, run.decoding(beam=1))

    # teacher-forced cross-entropy of each reference, from the logits
    sums, counts = [], []
    for s_, t in zip(srcs, refs, strict=True):
        b = run.pair_batch([s_], [t])  # src (1, S), tgt_in = BOS + reference, tgt_out = reference + EOS
        z = model(b["src"], b["src_mask"], b["tgt_in"])[0][0].float()  # (T, V)
        y = b["tgt_out"][0]  # (T,) one pair: no padding
        nll = z.logsumexp(-1) - z.gather(1, y[:, None]).squeeze(1)  # (T,) −log p(reference token)
        sums.append(nll.double().sum().item())
        counts.append(len(y))

    rows = []
    for i, (src, ref, hyp) in enumerate(zip(srcs, refs, hyps, strict=True)):
        ce = sums[i] / counts[i]
        bleu, chrf = sacre_bleu([hyp], [ref]).score, chrf_pp([hyp], [ref]).score
        rows.append([i + 1, counts[i], ce, perplexity(ce), bleu, chrf])
        e.say(f"#{i + 1} source:      {src if isinstance(src, str) else describe_source(run, src)}")
        e.say(f"   reference:   {ref}")
        e.say(f"   output:      {hyp}")
    e.table(["#", "reference tokens (+EOS)", "CE (nats/token)", "perplexity", "sentence BLEU", "chrF++"], rows,
            "per sentence: CE and perplexity of the reference; BLEU and chrF++ of the translation")

    # the corpus: token-weighted CE, pooled BLEU and chrF++
    ce = sum(sums) / sum(counts)
    run_loss, run_tokens = run.reference_loss(srcs, refs)
    bleu, chrf = sacre_bleu(hyps, refs), chrf_pp(hyps, refs)
    mean_bleu = sum(r[4] for r in rows) / len(rows)
    mean_chrf = sum(r[5] for r in rows) / len(rows)
    mean_ppl = sum(r[3] for r in rows) / len(rows)
    e.table(["over the sentences", "corpus (pooled)", "mean of the sentence values"], [
        ["CE (nats/token)", ce, sum(r[2] for r in rows) / len(rows)],
        ["perplexity", perplexity(ce), mean_ppl],
        ["BLEU", bleu.score, mean_bleu],
        ["chrF++", chrf.score, mean_chrf]],
        f"corpus figures: CE averages over all {sum(counts)} reference tokens (long sentences weigh more); BLEU and "
        "chrF++ pool n-gram counts before taking precisions")
    e.say(f"BLEU: {bleu.detail}")
    e.say(f"BLEU signature: {bleu.signature}")
    e.say(f"chrF++: {chrf.detail}  ({chrf.signature})")
    e.say(f"corpus BLEU {bleu.score:.2f}, mean of the sentence BLEUs {mean_bleu:.2f}: pooling every sentence's n-gram "
          "counts before taking the precisions is not averaging the sentence scores (nor is the corpus perplexity "
          "the mean of the sentence perplexities)")
    e.check(f"token-weighted mean CE of the {len(rows)} references  ==  the run's held-out loss (reference_loss)",
            torch.tensor(ce), torch.tensor(run_loss))
    e.check("reference tokens counted here  ==  reference_loss's count", torch.tensor(float(sum(counts))),
            torch.tensor(float(run_tokens)))
    e.check("exp(mean CE over the tokens) / perplexity(reference_loss)  ==  1 (a ratio: perplexities can be large)",
            torch.tensor(math.exp(ce) / perplexity(run_loss)), torch.tensor(1.0))

    e.figure("scores", "per-sentence scores", _draw(rows, bleu.score, chrf.score, ce),
             {"ce": [r[2] for r in rows], "bleu": [r[4] for r in rows], "chrf": [r[5] for r in rows]},
             size=(10.0, 3.6))
    e.data.update(sources=[x if isinstance(x, str) else describe_source(run, x) for x in srcs], references=refs,
                  translations=hyps, ce=[r[2] for r in rows],
                  perplexity=[r[3] for r in rows], bleu=[r[4] for r in rows], chrf=[r[5] for r in rows],
                  tokens=counts, corpus_ce=ce, corpus_perplexity=perplexity(ce), corpus_bleu=bleu.score,
                  corpus_chrf=chrf.score, mean_sentence_bleu=mean_bleu, run_corpus_loss=run_loss)
    return e


def _pairs(run, opts: Options) -> tuple[list, list[str], str]:
    """The first few reference pairs of the run's data (a given text source must be one of their sources)."""
    try:
        srcs, refs, name = run.reference_pairs(SENTENCES if opts.src is None else None)
    except QKVError as err:
        given = f"src {opts.src!r} has no reference, and " if opts.src else ""
        raise QKVError(f"explain evaluation needs references: {given}the run's held-out pairs are not available "
                       f"({err})") from None
    if opts.src is not None:
        pairs = [(s, r) for s, r in zip(srcs, refs, strict=True) if isinstance(s, str) and s == opts.src.strip()]
        if not pairs:
            raise QKVError(f"src {opts.src!r} has no reference (it is not a source of the run's held-out pairs, "
                           f"{name}); leave src out to score those", argument="src")
        return [pairs[0][0]], [pairs[0][1]], f"the held-out pair of src ({name})"
    if not srcs:
        raise QKVError(f"{name}: no held-out pairs")
    return srcs, refs, f"the first held-out pairs of the run's data ({name})"


def _draw(rows: list, bleu: float, chrf: float, ce: float):
    def draw(fig) -> None:
        labels = [f"#{r[0]}" for r in rows]
        for k, (col, name, corpus, colour) in enumerate(((2, "CE (nats/token)", ce, "tab:red"),
                                                         (4, "sentence BLEU", bleu, "tab:blue"),
                                                         (5, "chrF++", chrf, "tab:green"))):
            ax = fig.add_subplot(1, 3, k + 1)
            ax.bar(labels, [r[col] for r in rows], color=colour)
            ax.axhline(corpus, color="black", linestyle="--", linewidth=1, label=f"corpus {corpus:.2f}")
            ax.set_xlabel("sentence")
            ax.set_ylabel(name)
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=7)
    return draw
