"""Chat recipe: conversations -> chat template -> answer-only loss on a GPT -> Trainer; exact-match eval.

``qkv train --config configs/chat-qa-skills.toml`` ends up in `train_chat`. Two ways to start:

- **from scratch**: a character tokenizer over the chat data (plus printable ASCII and ``<unk>``, so any
  typed message encodes) gains the template tokens, and a GPT is built from ``[model]``;
- **from a base run** (``--init-from RUN_DIR``, any GPT run, e.g. the pystdlib demo): its tokenizer gains
  the template tokens — appended, so every existing id keeps its meaning — and its weights are loaded.
  If the base model's vocabulary has no rows for the new ids, the token embedding (and the LM head, which
  is tied to it) grows by that many rows, initialised to the mean embedding (Hewitt 2021), and a note says
  so. The model shape comes from the base run; ``[model]`` is ignored. A base tokenizer that cannot encode
  the chat data (a character vocabulary without digits, say) is a one-line error before anything is written.

Loss: cross-entropy on the assistant tokens only (their content and ``<|end|>``); every other target is
-100 (`qkv.chat.template`). ``train.answer_only = false`` puts the loss on every token instead (the
ablation). A batch with no target left raises `QKVError` instead of producing a NaN loss.

Evaluation: ``val_loss``/``val_ppl`` are the answer-only NLL per assistant token over the whole validation
split (answer-only even in the ablation, so both are comparable); full evaluations add exact match on the
first ``data.em_conversations`` validation conversations (``val_em_single``, ``val_em_followup``). The
test split is scored once, after training (`qkv train` prints it) and by ``qkv eval RUN_DIR``.
"""

from __future__ import annotations

import math
import string
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from qkv.chat.template import add_chat_tokens, chat_tokens, render, targets_from
from qkv.config import from_dict, to_dict
from qkv.data.chat import ChatBatches, ChatDataConfig, Conversation, eval_chat_batches, load_chat_splits
from qkv.errors import QKVError
from qkv.evaluation.chat import exact_match
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.io import save_run
from qkv.training import distributed
from qkv.training.config import TrainConfig
from qkv.training.trainer import Trainer


@dataclass
class ChatTrainConfig(TrainConfig):
    """`TrainConfig` plus the loss setting of this task."""

    answer_only: bool = True  # loss on assistant tokens only; false = on every token (the ablation)


@dataclass
class ChatSampleConfig:
    """Decoding defaults of `qkv chat` (and the replies printed when training ends)."""

    max_new_tokens: int = 64
    temperature: float = 0.0  # 0 = greedy: the answers of qa-skills are exact
    top_k: int | None = None
    top_p: float | None = None
    seed: int = 1337
    system: str | None = None  # a system message put before every conversation in `qkv chat`

    def __post_init__(self):
        if self.max_new_tokens <= 0:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")


@dataclass
class ChatRunConfig:
    task: Literal["chat"] = "chat"
    model: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=128, max_seq_len=128, d_model=128,
                                                                 n_layers=4, n_heads=4, bias=False))
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    train: ChatTrainConfig = field(default_factory=ChatTrainConfig)
    sample: ChatSampleConfig = field(default_factory=ChatSampleConfig)


# ------------------------------------------------------------------------------------------- pieces
@dataclass
class ChatExamples:
    inputs: list[list[int]]  # rendered conversation minus its last token, each ≤ max_seq_len
    targets: list[list[int]]  # next tokens, -100 where there is no loss
    conversations: list[Conversation]  # the conversations kept, in the same order
    dropped: int  # conversations longer than the context, left out (data.too_long = "drop")


def encode_conversations(convs: list[Conversation], tok, max_seq_len: int, *, answer_only: bool = True,
                         too_long: str = "error") -> ChatExamples:
    """Render and encode conversations for next-token training; too long: QKVError or drop (see config)."""
    out = ChatExamples([], [], [], 0)
    for c in convs:
        try:
            ids, mask = render(c.messages, tok)
        except QKVError as e:
            raise QKVError(f"{c.where}: {e}") from None
        if len(ids) - 1 > max_seq_len:
            if too_long == "drop":
                out.dropped += 1
                continue
            raise QKVError(f"{c.where}: the conversation is {len(ids)} tokens, longer than the context "
                           f"(model.max_seq_len {max_seq_len} + 1); raise max_seq_len or set data.too_long = \"drop\"")
        x, y = targets_from(ids, mask, answer_only)
        out.inputs.append(x)
        out.targets.append(y)
        out.conversations.append(c)
    return out


def chat_tokenizer(splits: dict[str, list[Conversation]]):
    """A character tokenizer for chat data from scratch: its characters, printable ASCII, <unk>, template tokens."""
    from qkv.tokenizers import train_char

    text = "".join(m["content"] for convs in splits.values() for c in convs for m in c.messages)
    tok = train_char(text + string.printable, unk=True)
    add_chat_tokens(tok)
    return tok


def grow_vocab(model: GPT, vocab_size: int) -> GPT:
    """`model` with `vocab_size` embedding rows (and LM-head rows); old rows are kept, new rows are the mean
    of the old ones (Hewitt 2021: new tokens start as an "average" token, not as noise the head might favour)."""
    old = model.config.vocab_size
    if vocab_size <= old:
        return model
    grown = GPT(replace(model.config, vocab_size=vocab_size))
    sd = model.state_dict()
    with torch.no_grad():
        for name in ("tok_emb.weight", "lm_head.weight"):
            w = sd[name]  # (V_old, C)
            sd[name] = torch.cat([w, w.mean(dim=0, keepdim=True).expand(vocab_size - old, -1)])  # (V, C)
    grown.load_state_dict(sd, strict=True)
    return grown.to(next(model.parameters()).device)


def chat_loss(model, batch: dict):
    """Mean cross-entropy over the targets that are not -100; QKVError if there are none."""
    idx, targets = batch["idx"], batch["targets"]  # (B, L), (B, L)
    n = int((targets != -100).sum())
    if n == 0:
        raise QKVError("a training batch has no tokens to learn from: every target is masked (-100). "
                       "Each conversation needs a non-empty assistant turn inside the context")
    _, loss = model(idx, targets)
    return loss, {"tokens": int(batch["tokens"]), "answer_tokens": n}


@torch.no_grad()
def answer_loss(model: GPT, ex: ChatExamples, pad_id: int) -> tuple[float, int]:
    """(mean NLL per answer token, answer tokens) over every conversation of `ex` once."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for batch in eval_chat_batches(ex.inputs, ex.targets, pad_id):
        logits, _ = model(batch["idx"].to(device))  # (B, L, V)
        y = batch["targets"].to(device)
        total += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                 reduction="sum").item()
        count += int((y != -100).sum())
    return total / max(1, count), count


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 50.0))


def em_metrics(model, tok, convs: list[Conversation], prefix: str) -> dict:
    """Exact match as flat metrics: {prefix}_em_single / {prefix}_em_followup (omitted when there are none)."""
    em = exact_match(model, tok, convs)
    return {f"{prefix}_em_{k}": em[k] for k in ("single", "followup") if em[k] is not None}


def _base_tokenizer(init_from: Path):
    from qkv.models.io import read_run_config
    from qkv.tokenizers import load_tokenizer

    cfg = read_run_config(init_from)
    if cfg["model_type"] != "gpt":
        raise QKVError(f"--init-from {init_from}: a {cfg['model_type']} run; chat fine-tuning needs a GPT run")
    return load_tokenizer(init_from / "tokenizer.json")


# ------------------------------------------------------------------------------------------- train
def train_chat(cfg: ChatRunConfig, run_dir: str | Path, *, resume: bool = False, init_from: Path | None = None,
               fit_vocab: bool = True, log=None):
    """Train (or resume) a chat model. Returns (TrainResult, model, tokenizer, test conversations, is_main).

    Everything that can fail on bad input (data, tokenizer, context) is checked before the run directory
    is created, so a failed start leaves nothing behind and never touches the base run.
    """
    from qkv.tokenizers import load_tokenizer

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    dist_info, device = distributed.setup(cfg.train.device)
    run_dir = Path(run_dir)
    splits = load_chat_splits(cfg.data)
    notes = []
    if resume:
        tok = load_tokenizer(run_dir / "tokenizer.json")
    elif init_from is not None:
        init_from = Path(init_from)
        tok = _base_tokenizer(init_from)
        base_size = tok.vocab_size
        added = add_chat_tokens(tok)
        if added:
            notes.append(f"{init_from}'s tokenizer had no chat tokens: added {', '.join(added)} as ids "
                         f"{base_size}..{tok.vocab_size - 1} (existing ids unchanged)")
    else:
        tok = chat_tokenizer(splits)
    pad_id = chat_tokens(tok).end  # any id works: padded positions have target -100 and sit after the real ones

    if init_from is not None and not resume:
        from qkv.models.io import read_run_config

        cfg.model = from_dict(GPTConfig, read_run_config(init_from)["model"], prefix="model.")
        if cfg.model.vocab_size < tok.vocab_size:
            notes.append(f"grew the token embedding (tied with lm_head: {cfg.model.tie_weights}) from "
                         f"{cfg.model.vocab_size} to {tok.vocab_size} rows for the new tokens")
            cfg.model = replace(cfg.model, vocab_size=tok.vocab_size)
    elif fit_vocab and not resume:
        cfg.model = replace(cfg.model, vocab_size=tok.vocab_size)
    if cfg.model.vocab_size < tok.vocab_size:
        raise QKVError(f"model.vocab_size {cfg.model.vocab_size} < tokenizer vocabulary {tok.vocab_size}")

    T = cfg.model.max_seq_len
    try:
        train_ex = encode_conversations(splits["train"], tok, T, answer_only=cfg.train.answer_only,
                                        too_long=cfg.data.too_long)
        val_ex = encode_conversations(splits["val"], tok, T, too_long=cfg.data.too_long)
        test_ex = encode_conversations(splits["test"], tok, T, too_long=cfg.data.too_long)
    except QKVError as e:
        if init_from is None or resume:
            raise
        raise QKVError(f"{e} (with the tokenizer of {init_from})") from None
    for name, ex in (("training", train_ex), ("validation", val_ex), ("test", test_ex)):
        if ex.dropped:
            notes.append(f"dropped {ex.dropped:,} {name} conversation(s) longer than the context ({T} tokens)")
    if not train_ex.inputs or not val_ex.inputs:
        raise QKVError(f"no {'training' if not train_ex.inputs else 'validation'} conversation fits the context "
                       f"({T} tokens)")
    if dist_info.enabled and cfg.train.threads is None and device.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads() // dist_info.world_size))

    # ---- the model (nothing above wrote a file)
    from qkv.models.io import load_model

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    if resume:
        model, _ = load_model(run_dir)
    elif init_from is not None:
        model, _ = load_model(init_from)
        model = grow_vocab(model, cfg.model.vocab_size)
    else:
        model = GPT(cfg.model)
    if dist_info.is_main:
        for note in notes:
            say(f"note: {note}")
        if not resume:
            run_dir.mkdir(parents=True, exist_ok=True)
            tok.save(run_dir / "tokenizer.json")

    micro = cfg.train.batch_size // (cfg.train.grad_accum * dist_info.world_size)
    if micro <= 0:
        raise QKVError(f"train.batch_size {cfg.train.batch_size} is smaller than grad_accum × processes")
    data = ChatBatches(train_ex.inputs, train_ex.targets, micro, pad_id, pool_batches=cfg.data.pool_batches,
                       seed=cfg.train.seed, rank=dist_info.rank, world_size=dist_info.world_size)
    meta = {"source": cfg.data.source, "vocab_size": tok.vocab_size,
            "init_from": str(init_from) if init_from is not None else None,
            **{f"{s}_conversations": len(ex.inputs) for s, ex in (("train", train_ex), ("val", val_ex),
                                                                   ("test", test_ex))},
            "train_tokens": int(sum(map(len, train_ex.inputs))),
            "train_answer_tokens": int(sum(sum(t != -100 for t in y) for y in train_ex.targets))}
    if resume:
        from qkv.models.io import read_run_config

        meta["init_from"] = read_run_config(run_dir).get("data_meta", {}).get("init_from")
    saved_config = {"task": "chat", "data": to_dict(cfg.data), "train": to_dict(cfg.train),
                    "sample": to_dict(cfg.sample), "data_meta": meta}

    def save_model(m, step):
        save_run(run_dir, m, tok, extra_config=saved_config, metadata={"step": str(step)})

    em_convs = val_ex.conversations[: cfg.data.em_conversations]

    def evaluate(m, full: bool, train_means: dict) -> dict:
        out = {}
        out["val_loss"], _ = answer_loss(m, val_ex, pad_id)
        out["val_ppl"] = perplexity(out["val_loss"])
        if full and em_convs:
            out.update(em_metrics(m, tok, em_convs, "val"))
        return out

    trainer = Trainer(model, chat_loss, data, cfg.train, run_dir=run_dir, evaluate=evaluate, save_model=save_model,
                      resume=resume, dist_info=dist_info, device=device, log=log)
    try:
        result = trainer.fit()
    finally:
        distributed.teardown(dist_info)
    return result, model, tok, test_ex.conversations, dist_info.is_main


# ------------------------------------------------------------------------------------------- eval
def evaluate_chat_run(run_dir: str | Path, data: str | None = None, max_conversations: int | None = None) -> dict:
    """`qkv eval` on a chat run: answer-only loss/perplexity and exact match.

    Without `data`: loss on the run's validation split, exact match on its test split (regenerated or
    re-read from the run's data config). With `data` (a .jsonl/.csv/.tsv file): both on that file.
    """
    from qkv.data.chat import read_conversations
    from qkv.models.io import load_model
    from qkv.tokenizers import load_tokenizer

    run_dir = Path(run_dir)
    model, saved = load_model(run_dir)
    tok = load_tokenizer(run_dir / "tokenizer.json")
    pad_id = chat_tokens(tok).end
    T = model.config.max_seq_len
    data_cfg = from_dict(ChatDataConfig, saved.get("data", {}), prefix="data.")
    if data:
        loss_convs = em_convs = read_conversations(data)
        source = data
    else:
        splits = load_chat_splits(data_cfg)
        loss_convs, em_convs = splits["val"], splits["test"]
        source = f"{data_cfg.source} (val loss, test exact match)"
    if max_conversations is not None:
        loss_convs, em_convs = loss_convs[:max_conversations], em_convs[:max_conversations]
    loss_ex = encode_conversations(loss_convs, tok, T, too_long=data_cfg.too_long)
    # with --data both figures score the same conversations: encode (and count what is dropped) once
    em_ex = loss_ex if data else encode_conversations(em_convs, tok, T, too_long=data_cfg.too_long)
    if not loss_ex.inputs:
        raise QKVError(f"{source}: no conversation fits the context ({T} tokens)")
    loss, n_tok = answer_loss(model, loss_ex, pad_id)
    em = exact_match(model, tok, em_ex.conversations)
    return {"source": source, "conversations": len(loss_ex.inputs), "answer_tokens": n_tok, "loss": loss,
            "perplexity": perplexity(loss), "em_conversations": len(em_ex.conversations),
            "em_single": em["single"], "em_followup": em["followup"], "n_single": em["n_single"],
            "n_followup": em["n_followup"], "errors": em["errors"],
            "dropped": loss_ex.dropped + (0 if em_ex is loss_ex else em_ex.dropped)}
