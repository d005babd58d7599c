"""``qkv eval RUN_DIR [options] [--json]``: score a trained run with the figures its task reports.

- **lm** (and **chat** for the loss): ``[--data SRC] [--max-tokens N]`` — full-pass loss, perplexity and
  bits/char on the run's validation split (the same windows training reported), or on any text file, folder
  or dataset name, tokenized with the run's tokenizer.
- **translate**: ``[--data multi30k --split test_2016_flickr | --src FILE --ref FILE] [--beam 4]
  [--length-penalty A] [--max-pairs N] [--hyps-out FILE]`` — sacreBLEU and chrF++ with their signatures, the
  tokenized lower-cased BLEU older papers quote (labelled), and the teacher-forced loss and perplexity.
  ``--alignment`` adds the word alignments read off the cross-attention: AER, precision and recall of every
  decoder layer × head and of each layer's head mean, and the best one, against eflomal's reference alignments
  (computed with the run's training pairs on first use and cached: ``pip install 'qkv[align]'``) or against
  ``--ref-alignment FILE`` (Pharaoh ``i-j`` links, ``i?j`` possible, one line per sentence pair).
- **chat**: ``[--data FILE.jsonl|.csv] [--max-pairs N]`` — answer-only loss and perplexity on the validation
  split, greedy exact match on the unseen test questions, single-turn and follow-up (with --data: both on it).
- **diffusion**: ``[--n 200] [--sampler ddim --steps 50] [--guidance 3] [--seed S] [--sweep] [--no-ema]`` — a
  small classifier trained on the run's real training split reads the samples: sample accuracy (class runs)
  or prompt adherence (shapes), and a Fréchet distance of its features.
- **autoencoder**: ``[--n N]`` — reconstruction MSE and PSNR of the held-out images.
- **speech**: ``[--data FOLDER] [--n N] [--beam 4] [--ctc-weight λ] [--seed S] [--hyps-out FILE]
  [--confusion FILE.png]`` — word
  and character error rates (jiwer) of each test group (FSDD test takes, single digits and connected strings, or
  the speaker left out; held-out espeak-ng voices and templates), per speaker and per voice, the exact-match
  share, the real-time factor, and for single digits a confusion matrix (a PNG with ``--confusion``).
- **qa**: ``[--split test|paraphrase|pydoc|val | --src FILE --ref FILE] [--beam N] [--max-pairs N]`` — SQuAD v1.1
  exact match and F1 of the generative and the extractive head per question family (held-out worlds, held-out
  wordings, held-out modules; ``--max-pairs``: the first N of each family), and the share of generative answers
  that are spans of their passage.
- **code**, **code-gpt**: ``[--split all|val|compositions|k3|length|humaneval] [--pass-at-k 1,10 --samples 20]
  [--temperature T] [--max-problems N] [--workers W]`` — pass@k of the completions, each run against its problem's
  hidden tests in the sandbox (greedy pass@1 by default; with --samples N the unbiased estimator of N samples), on
  the validation split, held-out compositions, unseen k = 3 programs, held-out length k = 4 and HumanEval; the
  share of tests passed, how completions failed, pass@1 per number of blocks, the sandbox's ms per completion.
- **summarize**: ``[--split test|val | --src FILE --ref FILE] [--beam N] [--max-pairs N] [--hyps-out FILE]`` —
  ROUGE-1/2/L with 95% bootstrap intervals, sacreBLEU and chrF++ of the summaries of modules never trained on, beside
  the lead, name and nearest-TF-IDF baselines.

An option the run's task does not take is a one-line error.
"""

from __future__ import annotations

import inspect
import json

from qkv.errors import QKVError
from qkv.tasks.base import a_

# option -> keyword of Run.evaluate (the same name, spelled with dashes on the command line)
OPTIONS = ("data", "max_tokens", "split", "src", "ref", "beam", "length_penalty", "max_pairs", "hyps_out",
           "alignment", "ref_alignment", "n", "sampler", "steps", "guidance", "seed", "sweep", "use_ema", "confusion",
           "ctc_weight", "pass_at_k", "samples", "temperature", "max_problems", "workers")


def add_parser(sub, name):
    p = sub.add_parser(name, help="evaluate a trained run", description=__doc__)
    p.add_argument("run_dir")
    p.add_argument("--data", help="text file, folder or dataset name (default: the run's validation split)")
    p.add_argument("--max-tokens", type=int, default=None, help="score only the first N tokens")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    g = p.add_argument_group("translation runs")
    g.add_argument("--split", default=None, help="multi30k split: train, val, test_2016_flickr (the default); qa: "
                                                 "test, paraphrase, pydoc, val; summarize: test, val; code: all, "
                                                 "val, compositions, k3, length, humaneval")
    g.add_argument("--src", metavar="FILE", help="source sentences (instead of --data/--split)")
    g.add_argument("--ref", metavar="FILE", help="reference translations, line-aligned with --src")
    g.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy; default: the run's)")
    g.add_argument("--length-penalty", type=float, default=None)
    g.add_argument("--max-pairs", type=int, default=None, help="score only the first N sentences (or conversations)")
    g.add_argument("--hyps-out", metavar="FILE", help="also write the translations here, one per line")
    g.add_argument("--alignment", action="store_const", const=True, default=None,
                   help="also score the cross-attention's word alignments (AER, precision, recall per layer × head)")
    g.add_argument("--ref-alignment", metavar="FILE",
                   help="reference word alignments, Pharaoh format, one line per pair (implies --alignment; "
                        "default: eflomal's, cached)")
    d = p.add_argument_group("diffusion runs")
    d.add_argument("--n", type=int, default=None, help="images generated per setting (default 200)")
    d.add_argument("--sampler", choices=["ddim", "ddpm"], default=None, help="default: the run's")
    d.add_argument("--steps", type=int, default=None, help="denoising steps (default: the run's)")
    d.add_argument("--guidance", type=float, default=None, help="classifier-free guidance (default: the run's)")
    d.add_argument("--seed", type=int, default=None)
    d.add_argument("--sweep", action="store_const", const=True, default=None,
                   help="DDIM 10/20/50 steps and DDPM-T at the run's guidance, then guidance 1/2/3/5 at DDIM-50")
    d.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, default=None,
                   help="score the raw weights instead of their average")
    c = p.add_argument_group("code runs")
    c.add_argument("--pass-at-k", metavar="K,K", help="the k of pass@k, e.g. 1,10 (each at most --samples)")
    c.add_argument("--samples", type=int, default=None, help="completions per problem (default 1: greedy)")
    c.add_argument("--temperature", type=float, default=None, help="of the samples (default: the run's)")
    c.add_argument("--max-problems", type=int, default=None, help="score only the first N problems of each split")
    c.add_argument("--workers", type=int, default=None, help="sandbox processes side by side (default: one per core)")
    s = p.add_argument_group("speech runs")
    s.add_argument("--confusion", metavar="FILE.png", help="draw the digit confusion matrix of single digits here")
    s.add_argument("--ctc-weight", type=float, default=None, metavar="λ",
                   help="rescore the decoder's candidates with the CTC head: (1 − λ)·attention + λ·CTC (a run "
                        "trained with train.ctc_weight > 0; default: the run's)")


def run(args) -> int:
    from qkv.tasks import load_run

    run_ = load_run(args.run_dir)
    given = {k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None}
    accepted = inspect.signature(run_.evaluate).parameters
    wrong = [k for k in given if k not in accepted]
    if wrong:
        flag = "--no-ema" if wrong[0] == "use_ema" else "--" + wrong[0].replace("_", "-")
        raise QKVError(f"{flag} does not apply to {a_(run_.task)} run")
    if "progress" in accepted and not args.json:  # a slow evaluation prints its lines as they come
        given["progress"] = lambda line: print(line, flush=True)
    result = run_.evaluate(**given)
    print(json.dumps(result, indent=2) if args.json else run_.report(result))
    return 0
