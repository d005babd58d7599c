"""Translation recipe: parallel text -> joint BPE -> encoder–decoder -> Trainer (label-smoothed loss).

``qkv train --config configs/multi30k-de-en.toml`` ends up in `train_translate`. The run directory is
self-contained: config.json (model, data, train and decode sections), model.safetensors, tokenizer.json
(the joint BPE; with separate vocabularies also tokenizer_tgt.json), trainer state, metrics.jsonl and
loss.png. Training data is re-read and re-encoded from the configured files on resume (deterministic).

Logged: the training loss is the label-smoothed cross-entropy that is optimised; every evaluation also
logs the unsmoothed training NLL and perplexity since the previous evaluation (``train_nll``,
``train_ppl``), the validation NLL and perplexity (``val_loss``, ``val_ppl``) and, on full evaluations,
sacreBLEU and chrF++ of greedy translations of the first ``data.bleu_val_pairs`` validation sentences.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch

from qkv.config import to_dict
from qkv.data.translation import (
    Examples,
    TranslationBatches,
    TranslationDataConfig,
    encode_lines,
    eval_batches,
    load_split,
    make_examples,
    source_ids,
)
from qkv.errors import QKVError
from qkv.evaluation.translation import chrf_pp, perplexity, sacre_bleu
from qkv.generation.seq2seq import DecodeConfig, translate_ids
from qkv.models.io import TOKENIZER_FILE, save_run
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.training import distributed
from qkv.training.config import TrainConfig
from qkv.training.trainer import Trainer

TGT_TOKENIZER_FILE = "tokenizer_tgt.json"  # only with model.separate_vocabs


@dataclass
class TranslateTrainConfig(TrainConfig):
    """`TrainConfig` plus the loss setting of this task."""

    label_smoothing: float = 0.1  # ε: the target gets 1 - ε (+ ε/V), every token ε/V (Szegedy et al. 2016)

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class TranslateRunConfig:
    task: Literal["translate"] = "translate"
    model: Seq2SeqConfig = field(default_factory=Seq2SeqConfig)
    data: TranslationDataConfig = field(default_factory=TranslationDataConfig)
    train: TranslateTrainConfig = field(default_factory=TranslateTrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


# ------------------------------------------------------------------------------------------- pieces
def load_tokenizers(run_dir: str | Path):
    """(source tokenizer, target tokenizer) of a translation run; the same object for a joint vocabulary."""
    from qkv.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    src_tok = load_tokenizer(run_dir / TOKENIZER_FILE)
    tgt_path = run_dir / TGT_TOKENIZER_FILE
    return src_tok, (load_tokenizer(tgt_path) if tgt_path.is_file() else src_tok)


def special_ids(tok) -> tuple[int, int, int]:
    """(pad, bos, eos) ids of a target tokenizer; QKVError if it lacks one."""
    ids = (tok.pad_id, tok.bos_id, tok.eos_id)
    if None in ids:
        raise QKVError("the tokenizer needs <pad>, <bos> and <eos> tokens for translation")
    return ids


def smoothed_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Label-smoothed cross-entropy and the plain NLL, both means over targets != -100, and their count.

    loss = (1 - ε)·NLL + ε·mean_v(−log p_v)  (the same as ``F.cross_entropy(label_smoothing=ε)``).
    """
    logp = logits.float().log_softmax(dim=-1).flatten(0, 1)  # (B·T, V)
    t = targets.flatten()  # (B·T,)
    real = t != -100
    n = int(real.sum())
    logp, t = logp[real], t[real]  # (n, V), (n,)
    nll = -logp.gather(1, t[:, None]).squeeze(1).mean()
    if eps == 0.0:
        return nll, nll, n
    return (1.0 - eps) * nll + eps * (-logp.mean(dim=-1).mean()), nll, n


@torch.no_grad()
def corpus_loss(model: Seq2Seq, ex: Examples, pad_id: int, bos_id: int, eos_id: int) -> tuple[float, int]:
    """(mean NLL per target token, number of target tokens) over every pair once (EOS counted)."""
    device = model.lm_head.weight.device
    total, count = 0.0, 0
    for batch in eval_batches(ex, pad_id, bos_id, eos_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, _ = model(batch["src"], batch["src_mask"], batch["tgt_in"])
        n = int((batch["tgt_out"] != -100).sum())
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch["tgt_out"].flatten(),
                                                   ignore_index=-100, reduction="sum").item()
        count += n
    return total / max(1, count), count


@torch.no_grad()
def translate_lines(model: Seq2Seq, src_tok, tgt_tok, lines: list[str], cfg: DecodeConfig) -> tuple[list[str], int]:
    """Translate source sentences -> (detokenized translations in input order, sources cut to the context)."""
    was_training = model.training
    model.eval()
    _, bos, eos = special_ids(tgt_tok)
    srcs, cut = source_ids(src_tok, lines, model.config.max_seq_len)
    out = [tgt_tok.decode(ids) for ids in translate_ids(model, srcs, bos, eos, cfg, tgt_tok.vocab_size)]
    model.train(was_training)
    return out, cut


def _fit_model_config(cfg: Seq2SeqConfig, src_tok, tgt_tok) -> Seq2SeqConfig:
    """The model config sized to the tokenizer(s), with their pad id."""
    pad = tgt_tok.pad_id
    if cfg.separate_vocabs:
        if src_tok.pad_id != pad:
            raise QKVError("source and target tokenizers disagree on the <pad> id")
        return replace(cfg, src_vocab_size=src_tok.vocab_size, tgt_vocab_size=tgt_tok.vocab_size, pad_id=pad)
    return replace(cfg, vocab_size=src_tok.vocab_size, pad_id=pad)


# ------------------------------------------------------------------------------------------- train
def train_translate(cfg: TranslateRunConfig, run_dir: str | Path, *, resume: bool = False, log=None):
    """Train (or resume) a translation model. Returns (TrainResult, model, (src_tok, tgt_tok), is_main)."""
    from qkv.tokenizers import train_bpe

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    dist_info, device = distributed.setup(cfg.train.device)
    run_dir = Path(run_dir)
    train_src, train_tgt, train_name = load_split(cfg.data, "train")
    val_src, val_tgt, val_name = load_split(cfg.data, "val")
    if resume:
        src_tok, tgt_tok = load_tokenizers(run_dir)
    elif dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.model.separate_vocabs:
            src_tok = train_bpe(train_src, vocab_size=cfg.data.vocab_size)
            tgt_tok = train_bpe(train_tgt, vocab_size=cfg.data.vocab_size)
            tgt_tok.save(run_dir / TGT_TOKENIZER_FILE)
        else:
            src_tok = tgt_tok = train_bpe(train_src + train_tgt, vocab_size=cfg.data.vocab_size)
        src_tok.save(run_dir / TOKENIZER_FILE)
    distributed.barrier(dist_info)
    if not resume and not dist_info.is_main:
        src_tok, tgt_tok = load_tokenizers(run_dir)
    pad, bos, eos = special_ids(tgt_tok)
    if not resume:
        cfg.model = _fit_model_config(cfg.model, src_tok, tgt_tok)

    T = cfg.model.max_seq_len
    train_ex = make_examples(encode_lines(src_tok, train_src), encode_lines(tgt_tok, train_tgt), T, eos)
    val_ex = make_examples(encode_lines(src_tok, val_src), encode_lines(tgt_tok, val_tgt), T, eos)
    if not val_ex.src:
        raise QKVError(f"{val_name}: no validation pairs")
    for name, ex, total in (("training", train_ex, len(train_src)), ("validation", val_ex, len(val_src))):
        if dist_info.is_main and ex.truncated:
            say(f"note: {ex.truncated:,} of {total:,} {name} pairs are longer than the context ({T} tokens) "
                "and were truncated")
        if dist_info.is_main and ex.skipped:
            say(f"note: {ex.skipped:,} of {total:,} {name} pairs have an empty side and were skipped")
    meta = {"train": train_name, "val": val_name, "train_pairs": len(train_ex.src), "val_pairs": len(val_ex.src),
            "train_truncated": train_ex.truncated, "src_vocab_size": src_tok.vocab_size,
            "tgt_vocab_size": tgt_tok.vocab_size,
            "src_tokens": int(sum(map(len, train_ex.src))), "tgt_tokens": int(sum(map(len, train_ex.tgt)))}

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    if resume:
        from qkv.models.io import load_model

        model, _ = load_model(run_dir)
    else:
        model = Seq2Seq(cfg.model)
    micro = cfg.train.batch_size // cfg.train.grad_accum
    data = TranslationBatches(
        train_ex, pad, bos, eos, batch_tokens=cfg.data.batch_tokens,
        batch_sentences=None if cfg.data.batch_tokens else micro, pool_batches=cfg.data.pool_batches,
        seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size,
    )
    saved_config = {"task": "translate", "data": to_dict(cfg.data), "train": to_dict(cfg.train),
                    "decode": to_dict(cfg.decode), "data_meta": meta}

    def save_model(m, step):
        save_run(run_dir, m, src_tok, extra_config=saved_config, metadata={"step": str(step)})

    eps = cfg.train.label_smoothing

    def loss_fn(m, batch):
        logits, _ = m(batch["src"], batch["src_mask"], batch["tgt_in"])
        loss, nll, n = smoothed_loss(logits, batch["tgt_out"], eps)
        # (total, count): the Trainer keeps the unsmoothed NLL's running mean until the next evaluation
        return loss, {"tokens": int(batch["src_mask"].sum()) + n, "nll": (nll.item() * n, n)}

    bleu_src, bleu_ref = val_src[: cfg.data.bleu_val_pairs], val_tgt[: cfg.data.bleu_val_pairs]
    greedy = replace(cfg.decode, beam=1)

    def evaluate(m, full: bool, train_means: dict) -> dict:
        out = {}
        if "nll" in train_means:
            out["train_nll"] = train_means["nll"]
            out["train_ppl"] = perplexity(out["train_nll"])
        out["val_loss"], _ = corpus_loss(m, val_ex, pad, bos, eos)
        out["val_ppl"] = perplexity(out["val_loss"])
        if full and bleu_src:
            hyps, _ = translate_lines(m, src_tok, tgt_tok, bleu_src, greedy)
            out["val_bleu"] = sacre_bleu(hyps, bleu_ref).score
            out["val_chrf++"] = chrf_pp(hyps, bleu_ref).score
        return out

    trainer = Trainer(model, loss_fn, data, cfg.train, run_dir=run_dir, evaluate=evaluate, save_model=save_model,
                      resume=resume, dist_info=dist_info, device=device, log=log)
    try:
        result = trainer.fit()
    finally:
        distributed.teardown(dist_info)
    return result, model, (src_tok, tgt_tok), dist_info.is_main
