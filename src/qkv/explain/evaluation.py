"""Topic `evaluation`: how a translation model is scored, on a few of its own validation sentences.

Two kinds of number. The teacher-forced cross-entropy reads the reference translation token by token and
asks how much probability the model gave each next token: CE = −mean log p(reference token), in nats per
token, and perplexity = exp(CE). BLEU and chrF++ compare what the model actually produced (greedy
translation here) with the reference: BLEU is the geometric mean of 1- to 4-gram precisions times a brevity
penalty; chrF++ is an F-score (β = 2) of character 1- to 6-grams plus word uni- and bigrams. Both are
corpus-level metrics: they pool counts over all sentences, so a corpus score is not the mean of sentence
scores. The per-sentence cross-entropies are recomputed from the logits and their token-weighted mean is
checked against the run's own `qkv.evaluation.translation.corpus_loss`; BLEU and chrF++ are sacreBLEU's
(`qkv.evaluation.translation.sacre_bleu`, `chrf_pp`), as `qkv eval` computes them.
"""

from __future__ import annotations

import math

import torch

from qkv.data.translation import collate, encode_lines, load_split, make_examples, special_ids
from qkv.errors import QKVError
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import chrf_pp, corpus_loss, sacre_bleu
from qkv.explain.base import Explanation, Options, need, no_grad

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
    need(run, ("translate",), "evaluation")
    model, src_tok, tgt_tok = run.model, run.src_tokenizer, run.tgt_tokenizer
    srcs, refs, where = _pairs(run, opts)
    e = Explanation("evaluation", "cross-entropy, perplexity, BLEU and chrF++ on a few sentences", run.path.name)
    e.say(LESSON)
    e.say(f"{len(srcs)} sentence(s): {where}; translated greedily with the run's decoder")
    hyps, _ = run.translate(srcs, run.decoding(beam=1))

    # teacher-forced cross-entropy of each reference, from the logits
    pad, bos, eos = special_ids(tgt_tok)
    ex = make_examples(encode_lines(src_tok, srcs), encode_lines(tgt_tok, refs), model.config.max_seq_len, eos,
                       skip_empty=False)
    sums, counts = [], []
    for s, t in zip(ex.src, ex.tgt, strict=True):
        b = collate([s], [t], pad, bos, eos)  # src (1, S), tgt_in = BOS + reference, tgt_out = reference + EOS
        z = model(b["src"], b["src_mask"], b["tgt_in"])[0][0].float()  # (T, V)
        y = b["tgt_out"][0]  # (T,) one sentence: no padding
        nll = z.logsumexp(-1) - z.gather(1, y[:, None]).squeeze(1)  # (T,) −log p(reference token)
        sums.append(nll.double().sum().item())
        counts.append(len(y))

    rows = []
    for i, (src, ref, hyp) in enumerate(zip(srcs, refs, hyps, strict=True)):
        ce = sums[i] / counts[i]
        bleu, chrf = sacre_bleu([hyp], [ref]).score, chrf_pp([hyp], [ref]).score
        rows.append([i + 1, counts[i], ce, perplexity(ce), bleu, chrf])
        e.say(f"#{i + 1} source:      {src}")
        e.say(f"   reference:   {ref}")
        e.say(f"   translation: {hyp}")
    e.table(["#", "reference tokens (+EOS)", "CE (nats/token)", "perplexity", "sentence BLEU", "chrF++"], rows,
            "per sentence: CE and perplexity of the reference; BLEU and chrF++ of the translation")

    # the corpus: token-weighted CE, pooled BLEU and chrF++
    ce = sum(sums) / sum(counts)
    run_loss, run_tokens = corpus_loss(model, ex, pad, bos, eos)
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
    e.check(f"token-weighted mean CE of the {len(rows)} references  ==  corpus_loss (the run's validation loss)",
            torch.tensor(ce), torch.tensor(run_loss))
    e.check("reference tokens counted here  ==  corpus_loss's count", torch.tensor(float(sum(counts))),
            torch.tensor(float(run_tokens)))
    e.check("exp(mean CE over the tokens) / perplexity(corpus_loss)  ==  1 (a ratio: perplexities can be large)",
            torch.tensor(math.exp(ce) / perplexity(run_loss)), torch.tensor(1.0))

    e.figure("scores", "per-sentence scores", _draw(rows, bleu.score, chrf.score, ce),
             {"ce": [r[2] for r in rows], "bleu": [r[4] for r in rows], "chrf": [r[5] for r in rows]},
             size=(10.0, 3.6))
    e.data.update(sources=srcs, references=refs, translations=hyps, ce=[r[2] for r in rows],
                  perplexity=[r[3] for r in rows], bleu=[r[4] for r in rows], chrf=[r[5] for r in rows],
                  tokens=counts, corpus_ce=ce, corpus_perplexity=perplexity(ce), corpus_bleu=bleu.score,
                  corpus_chrf=chrf.score, mean_sentence_bleu=mean_bleu, run_corpus_loss=run_loss)
    return e


def _pairs(run, opts: Options) -> tuple[list[str], list[str], str]:
    """The first few validation pairs of the run's data (a --src must be one of their sources)."""
    d = run.config.data
    try:
        if d.src is None:  # a named dataset: only a copy already on this machine, never a download
            from qkv.data.registry import resolve

            resolve(d.dataset, download=False)
        srcs, refs, name = load_split(d, "val")
    except QKVError as err:
        given = f"--src {opts.src!r} has no reference translation, and " if opts.src else ""
        raise QKVError(f"explain evaluation needs reference translations: {given}the run's validation pairs are not "
                       f"available ({err})") from None
    pairs = [(s, r) for s, r in zip(srcs, refs, strict=True) if s.strip() and r.strip()]
    if opts.src is not None:
        pairs = [(s, r) for s, r in pairs if s == opts.src.strip()]
        if not pairs:
            raise QKVError(f"--src {opts.src!r} has no reference translation (it is not a source of the run's "
                           f"validation pairs, {name}); leave --src out to score those")
        return [pairs[0][0]], [pairs[0][1]], f"the validation pair of --src ({name})"
    if not pairs:
        raise QKVError(f"{name}: no validation pairs")
    pairs = pairs[:SENTENCES]
    return [s for s, _ in pairs], [r for _, r in pairs], f"the first validation pairs of the run's data ({name})"


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
