"""The chat task (``task = "chat"``): conversations -> chat template -> answer-only loss on a GPT; exact match.

``qkv train --preset chat-qa-skills``. Two ways to start:

- **from scratch**: a character tokenizer over the chat data (plus printable ASCII and ``<unk>``, so any
  typed message encodes) gains the template tokens, and a GPT is built from ``[model]``;
- **from a base run** (``init_from``, any GPT run, e.g. the pystdlib demo): its tokenizer gains the template
  tokens — appended, so every existing id keeps its meaning — and its weights are loaded. If the base model's
  vocabulary has no rows for the new ids, the token embedding (and the LM head, tied to it) grows by that
  many rows, initialised to the mean embedding (Hewitt 2021), and a note says so. The model shape comes from
  the base run; ``[model]`` is ignored. A base tokenizer that cannot encode the chat data (a character
  vocabulary without digits, say) is a one-line error before anything is written.

Data: conversations (`qkv.data.chat`); the ``skills`` source asks six skills in many phrasings and holds whole
phrasings and whole values out (`qkv.data.skills`). Answers that call the calculator (``<<37+45=82>>82``) give
the tokenizer the tool's tokens, and every reply is decoded with the tool in the loop (`qkv.generation.calculator`).

Loss: cross-entropy on the assistant tokens only (their content and ``<|end|>``); every other target is
-100 (`qkv.data.chat_template`). ``train.answer_only = false`` puts the loss on every token instead (the
ablation). A batch with no target left raises `QKVError` instead of producing a NaN loss.

``train.objective = "reinforce"`` (with ``--init-from`` a trained chat run) fine-tunes by REINFORCE instead
(`qkv.training.reinforce`): ``rl.samples_per_prompt`` replies to each prompt (the skills source's ``rl`` split when
``data.rl_size`` is set, else the training conversations), reward 1 for a right final answer
(`qkv.evaluation.skills.answer_reward`), advantage = reward − the prompt's mean; it logs ``train_reward``.

Evaluation: ``val_loss``/``val_ppl`` are the answer-only NLL per assistant token over the whole validation
split (answer-only even in the ablation, so both are comparable); full evaluations add exact match on the
first ``data.em_conversations`` validation conversations (``val_em_single``, ``val_em_followup``); with the skills
source, exact match per skill on the first ``data.em_conversations`` held-out-phrasing and held-out-value questions
instead (``phrasings_em_<skill>``, ``phrasings_em``, ``phrasings_core``, and the same for ``values``). The test
split is scored once, after training (`qkv train` prints it) and by ``qkv eval RUN_DIR``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from qkv.data.batching import IndexBatches
from qkv.data.chat import (
    ChatBatches,
    ChatDataConfig,
    ChatExamples,
    encode_conversations,
    load_chat_splits,
    read_conversations,
)
from qkv.data.chat_template import add_chat_tokens, chat_tokens, uses_tools
from qkv.errors import QKVError
from qkv.evaluation.chat import answer_loss, reply_accuracy
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.skills import answer_reward, held_out_scores, skill_metrics
from qkv.generation.calculator import ChatCompleter
from qkv.generation.sampling import TokenSampling
from qkv.models.gpt import GPT, GPTConfig
from qkv.runs import TOKENIZER_FILE
from qkv.tasks.base import State, Task, fine_tunes, last_eval
from qkv.tasks.capabilities import Capability, TrainingExample
from qkv.tasks.lm import LMRun, base_model_config, base_tokenizer
from qkv.tokenizers.base import Tokenizer
from qkv.training.config import TrainConfig
from qkv.training.reinforce import ReinforceConfig, check_objective, reinforce_loss


@dataclass
class ChatTrainConfig(TrainConfig):
    """`TrainConfig` plus the loss settings of this task."""

    answer_only: bool = True  # loss on assistant tokens only; false = on every token (the ablation)
    objective: Literal["xent", "reinforce"] = "xent"  # "reinforce": [rl] on checkable answers, needs --init-from

    def __post_init__(self):
        super().__post_init__()
        check_objective(self.objective)


@dataclass
class ChatRunConfig:
    task: Literal["chat"] = "chat"
    model: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=128, max_seq_len=128, d_model=128,
                                                                 n_layers=4, n_heads=4, bias=False))
    data: ChatDataConfig = field(default_factory=ChatDataConfig)
    train: ChatTrainConfig = field(default_factory=ChatTrainConfig)
    # greedy by default: the answers of qa-skills are exact
    sample: TokenSampling = field(default_factory=lambda: TokenSampling(temperature=0.0, max_new_tokens=64))
    rl: ReinforceConfig = field(default_factory=lambda: ReinforceConfig(max_new_tokens=64))


def chat_tokenizer(splits: dict):
    """A character tokenizer for chat data from scratch: its characters, printable ASCII, <unk>, template tokens
    (and the calculator's, if the training answers call it)."""
    from qkv.tokenizers import train_char

    text = "".join(m["content"] for convs in splits.values() for c in convs for m in c.messages)
    tok = train_char(text + string.printable, unk=True)
    add_chat_tokens(tok, tools=needs_tools(splits))
    return tok


def needs_tools(splits: dict) -> bool:
    """Whether any training answer calls the calculator (`qkv.generation.calculator`)."""
    return any(uses_tools(c.messages) for c in splits["train"])


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
    return loss, {"tokens": int(batch["mask"].sum()), "answer_tokens": n}


def em_metrics(model, tok, convs: list, prefix: str) -> dict:
    """Exact match as flat metrics: {prefix}_em_single / {prefix}_em_followup (omitted when there are none)."""
    em = reply_accuracy(model, tok, convs)
    return {f"{prefix}_em_{k}": em[k] for k in ("single", "followup") if em[k] is not None}


@dataclass
class ChatTokenizer:
    """The chat tokenizer, and what making it changed (chat tokens added to a base run's tokenizer)."""

    tok: Tokenizer
    notes: list[str] = field(default_factory=list)


@dataclass
class ChatState(State):
    tok: Tokenizer | None = None
    pad_id: int = 0  # any id works: padded positions have target -100 after the real ones
    train_ex: ChatExamples | None = None
    val_ex: ChatExamples | None = None
    test_ex: ChatExamples | None = None
    splits: dict | None = None  # the conversations of every split (skills: per-skill exact match; RL prompts)


class ChatTask(Task):
    name = "chat"
    config_class = ChatRunConfig
    supports_init_from = True
    fitted_model_fields = ("vocab_size",)

    # ------------------------------------------------------------------------------------------ preparing
    def read_data(self) -> dict:
        """The train, val and test conversations (and the skills source's held-out values)."""
        if self.cfg.train.objective == "reinforce":
            fine_tunes(self.ctx, "reinforce", "chat")
        return load_chat_splits(self.cfg.data)

    def make_tokenizers(self, splits: dict) -> ChatTokenizer:
        """Build the tokenizer, check that every split encodes with it (the errors come before anything is
        written), then write it."""
        init_from = self.ctx.init_from
        notes = []
        if init_from is not None:
            tok = base_tokenizer(init_from)
            base_size = tok.vocab_size
            added = add_chat_tokens(tok, tools=needs_tools(splits))
            if added:
                notes.append(f"{init_from}'s tokenizer had no chat tokens: added {', '.join(added)} as ids "
                             f"{base_size}..{tok.vocab_size - 1} (existing ids unchanged)")
        else:
            tok = chat_tokenizer(splits)
        made = ChatTokenizer(tok, notes)
        self._encode(self.resolve(splits, made), splits, tok)  # the checks, before the tokenizer is written
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return made

    def load_tokenizers(self, splits: dict) -> ChatTokenizer:
        from qkv.tokenizers import load_tokenizer

        return ChatTokenizer(load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE))

    def resolve(self, splits: dict, made: ChatTokenizer) -> ChatRunConfig:
        """The base run's model shape (init_from), its embedding grown for new tokens; or the vocabulary sized to
        the tokenizer."""
        cfg, ctx, tok = self.cfg, self.ctx, made.tok
        if ctx.init_from is not None:
            cfg = replace(cfg, model=base_model_config(ctx.init_from))  # the base model's shape
            if cfg.model.vocab_size < tok.vocab_size:
                cfg = replace(cfg, model=replace(cfg.model, vocab_size=tok.vocab_size))
        elif ctx.fit_vocab and not ctx.resume:
            cfg = replace(cfg, model=replace(cfg.model, vocab_size=tok.vocab_size))
        if cfg.model.vocab_size < tok.vocab_size:
            raise QKVError(f"model.vocab_size {cfg.model.vocab_size} < tokenizer vocabulary {tok.vocab_size}")
        return cfg

    def _encode(self, cfg: ChatRunConfig, splits: dict, tok: Tokenizer) -> tuple[ChatExamples, ...]:
        """(train, val, test) examples, each conversation cut to the context; QKVError when nothing fits."""
        d, T = cfg.data, cfg.model.max_seq_len
        try:
            train_ex = encode_conversations(splits["train"], tok, T, answer_only=cfg.train.answer_only,
                                            too_long=d.too_long)
            val_ex = encode_conversations(splits["val"], tok, T, too_long=d.too_long)
            test_ex = encode_conversations(splits["test"], tok, T, too_long=d.too_long)
        except QKVError as e:
            if self.ctx.init_from is None or self.ctx.resume:
                raise
            raise QKVError(f"{e} (with the tokenizer of {self.ctx.init_from})") from None
        if not train_ex.inputs or not val_ex.inputs:
            raise QKVError(f"no {'training' if not train_ex.inputs else 'validation'} conversation fits the "
                           f"context ({T} tokens)")
        return train_ex, val_ex, test_ex

    def prepare(self, cfg: ChatRunConfig, splits: dict, made: ChatTokenizer) -> ChatState:
        """Every split encoded; what was dropped or grown said once."""
        from qkv.runs import read_config

        ctx, tok = self.ctx, made.tok
        train_ex, val_ex, test_ex = self._encode(cfg, splits, tok)
        notes = list(made.notes)
        base = base_model_config(ctx.init_from) if ctx.init_from is not None else None
        if base is not None and cfg.model.vocab_size > base.vocab_size:
            notes.append(f"grew the token embedding (tied with lm_head: {cfg.model.tie_embeddings}) from "
                         f"{base.vocab_size} to {cfg.model.vocab_size} rows for the new tokens")
        for name, ex in (("training", train_ex), ("validation", val_ex), ("test", test_ex)):
            if ex.dropped:
                notes.append(f"dropped {ex.dropped:,} {name} conversation(s) longer than the context "
                             f"({cfg.model.max_seq_len} tokens)")
        for note in notes:
            ctx.say(f"note: {note}")
        init_from = str(ctx.init_from) if ctx.init_from is not None else None
        if ctx.resume:
            init_from = read_config(ctx.run_dir).get("data_meta", {}).get("init_from")
        meta = {"source": cfg.data.source, "vocab_size": tok.vocab_size, "init_from": init_from,
                **{f"{s}_conversations": len(ex.inputs) for s, ex in (("train", train_ex), ("val", val_ex),
                                                                       ("test", test_ex))},
                "train_tokens": int(sum(map(len, train_ex.inputs))),
                "train_answer_tokens": int(sum(sum(t != -100 for t in y) for y in train_ex.targets))}
        return ChatState(cfg, meta, tok, chat_tokens(tok).end, train_ex, val_ex, test_ex, splits)

    def build_model(self, state: ChatState):
        from qkv.models.io import load_model

        if self.ctx.resume:
            return load_model(self.ctx.run_dir)[0]
        if self.ctx.init_from is not None:
            return grow_vocab(load_model(self.ctx.init_from)[0], state.cfg.model.vocab_size)
        return GPT(state.cfg.model)

    def batches(self, state: ChatState, rows: int, rank: int, world: int):
        if state.cfg.train.objective == "reinforce":
            return IndexBatches(len(rl_prompts(state)), rows, key="conversation",
                                seed=state.cfg.train.seed, rank=rank, world_size=world)
        return ChatBatches(state.train_ex.inputs, state.train_ex.targets, rows, state.pad_id,
                           pool_batches=state.cfg.data.pool_batches, seed=state.cfg.train.seed, rank=rank,
                           world_size=world)

    # ------------------------------------------------------------------------------------------ training
    def loss(self, state: ChatState, model, batch):
        if state.cfg.train.objective == "reinforce":
            return chat_reinforce(ChatCompleter(model, state.tok), state, batch)
        return chat_loss(model, batch)

    def loss_terms(self, batch) -> int:
        if "conversation" in batch:
            return len(batch["conversation"])
        return int((batch["targets"] != -100).sum())

    def evaluate(self, state: ChatState, model, full: bool, train_means: dict) -> dict:
        out = {}
        out["val_loss"], _ = answer_loss(model, state.val_ex, state.pad_id)
        out["val_ppl"] = perplexity(out["val_loss"])
        em_convs = state.val_ex.conversations[: state.cfg.data.em_conversations]
        if full and em_convs and state.cfg.data.source != "skills":
            out.update(em_metrics(model, state.tok, em_convs, "val"))
        # reinforce: the mean reward of the training samples, and the share of prompts whose samples disagreed
        out.update({f"train_{k}": train_means[k] for k in ("reward", "useful_prompts") if k in train_means})
        if full and state.cfg.data.source == "skills":
            out.update(skill_metrics(ChatCompleter(model, state.tok), state.splits, state.cfg.data.em_conversations,
                                     state.cfg.sample.max_new_tokens))
        return out

    # ------------------------------------------------------------------------------------------ finishing
    def summary(self, state: ChatState, model, result) -> list[str]:
        lines = super().summary(state, model, result)
        last = last_eval(result, "val_loss")
        if last:
            lines.append(f"val answer loss {last['val_loss']:.4f} (NLL per assistant token) | "
                         f"ppl {last['val_ppl']:.3f}")
        last = last_eval(result, "phrasings_em")
        if last:
            lines.append(f"held-out phrasings: exact match {last['phrasings_em']:.1%} (mean over skills), centred "
                         f"{last['phrasings_core']:.3f} | held-out values: {last.get('values_em', float('nan')):.1%}, "
                         f"centred {last.get('values_core', float('nan')):.3f}")
        tests = state.test_ex.conversations
        if tests and state.cfg.data.source != "skills":
            em = em_metrics(model, state.tok, tests, "test")
            shown = " | ".join(f"{k.split('_')[-1]} {v:.1%}" for k, v in em.items())
            lines.append(f"test exact match ({len(tests)} unseen conversations, greedy): {shown}")
        return lines

    def samples(self, state: ChatState, model):
        tests = state.test_ex.conversations
        if not tests:
            return
        yield "--- sample replies (test questions) " + "-" * 35 + "\n"
        completer = ChatCompleter(model, state.tok)
        for conv in tests[:3]:
            k = next(i for i, m in enumerate(conv.messages) if m["role"] == "assistant")
            reply = completer.replies([conv.messages[:k]], state.cfg.sample.max_new_tokens)[0]
            yield (f"user: {conv.messages[k - 1]['content']}\nbot:  {reply}   "
                   f"(reference: {conv.messages[k]['content']})\n")
        yield "-" * 71 + "\n"

    def next_command(self) -> str:
        run = self.ctx.run_dir
        return f"talk to it: qkv chat {run}   (or: qkv chat {run} --prompt \"What is 17 + 25?\")"


def skills_table(skills: dict) -> list[str]:
    """Exact match per skill (rows) on held-out phrasings and values (columns), the means, and a miss or two."""
    names = list(skills)
    order = list(next(iter(skills.values()))["per_skill"]) if skills else []
    lines = ["exact match (greedy, final answer) " + "".join(f"{n:>12}" for n in names)]
    for skill in order:
        lines.append(f"  {skill:<33}" + "".join(
            f"{skills[n]['per_skill'].get(skill, float('nan')):>12.1%}" for n in names))
    lines.append(f"  {'mean over skills':<33}" + "".join(f"{skills[n]['mean']:>12.1%}" for n in names))
    lines.append(f"  {'centred mean (ChatCORE-style)':<33}" + "".join(f"{skills[n]['core']:>12.3f}" for n in names))
    for n in names:
        for skill, missed in skills[n]["misses"].items():
            lines += [f"  miss ({n}, {skill}): {q!r} -> {reply!r}, expected {ref!r}" for q, reply, ref in missed[:1]]
    return lines


def rl_prompts(state: ChatState) -> list:
    """The reinforcement prompts: the skills source's ``rl`` split when it has one (`data.rl_size`), else the
    training conversations."""
    return (state.splits or {}).get("rl") or state.train_ex.conversations


def chat_reinforce(completer: ChatCompleter, state: ChatState, batch: dict):
    """REINFORCE over the batch's questions (`rl_prompts`), rewarded by their final answers
    (`qkv.training.reinforce`, `qkv.evaluation.skills.answer_reward`): the prompt is the conversation up to its last
    assistant turn."""
    prompts_of = rl_prompts(state)
    chosen = [prompts_of[i] for i in batch["conversation"].tolist()]
    prompts = [c.messages[:-1] for c in chosen]
    references = [c.messages[-1]["content"] for c in chosen]
    return reinforce_loss(completer, prompts, lambda groups: answer_reward(groups, references), state.cfg.rl)


class ChatRun(LMRun):
    """A trained chat model: a session that keeps the history, and its scores (`qkv.load_run`)."""

    task = "chat"
    config_class = ChatRunConfig

    @classmethod
    def load(cls, path, device: str = "cpu", **options):
        run = super().load(path, device, **options)
        try:
            chat_tokens(run.tokenizer)
        except QKVError:
            raise QKVError(f"{path} is not a chat run: its tokenizer has no chat template tokens "
                           "(train one with task = \"chat\", e.g. the chat-qa-skills preset)") from None
        return run

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.CHAT}

    def chat(self, sampling: TokenSampling | None = None, quantize: str | None = None, compile: bool = False,
             **changes):
        """A `ChatSession` on this run (history kept, trimmed from the front when the context fills); sampling
        settings from `sampling` (default the run's [sample]) with any given as keywords on top."""
        from qkv.generation.chat import ChatSession

        s = self.settings(sampling or self.config.sample, changes, "sample.") if changes else \
            (sampling or self.config.sample)
        if s.max_new_tokens <= 0:
            raise QKVError(f"max_new_tokens must be positive, got {s.max_new_tokens}")
        return ChatSession(self.decoder(quantize, compile), self.tokenizer, s, s.max_new_tokens, system=s.system,
                           seed=s.seed)

    def example_questions(self, n: int) -> tuple[list[tuple[str, str | None]], str]:
        """(up to `n` (question, reference answer) pairs, where they come from): the first question of each test
        (else validation) conversation of the run's data; the run's example text, with no reference, when its
        data is not on this machine."""
        try:
            splits = load_chat_splits(self.config.data)
        except (QKVError, OSError) as err:
            return [(self.example_text(), None)], f"the run's example text (its chat data is not available: {err})"
        split = "test" if splits["test"] else "val"
        pairs = []
        for conv in splits[split][:n]:
            k = next((i for i, m in enumerate(conv.messages) if m["role"] == "assistant"), None)
            if k and conv.messages[k - 1]["role"] == "user":
                pairs.append((conv.messages[k - 1]["content"], conv.messages[k]["content"]))
        if not pairs:
            return [(self.example_text(), None)], "the run's example text"
        return pairs, f"the first question of the first {len(pairs)} {split} conversations of {self.config.data.source}"

    def training_example(self, text: str | None = None, src: str | None = None, limit: int = 32) -> TrainingExample:
        """A conversation rendered with the chat template, as `ChatTask.loss` scores it: with answer-only loss
        (train.answer_only) only the assistant's tokens and their <|end|> count. `text`: a whole conversation in
        the template's form; else the first training conversation of the run's data."""
        from qkv.data.chat import collate_chat
        from qkv.data.chat_template import SPECIAL_TOKENS, parse, render, render_text
        from qkv.data.conversations import conversation

        tok, model = self.tokenizer, self.model
        form = "<|user|>question<|end|><|assistant|>answer<|end|>"
        if text is not None:
            if not any(t in text for t in SPECIAL_TOKENS):
                raise QKVError(f"the text for a chat run is a whole conversation in the template's form: {form}",
                               argument="text")
            conv, where = conversation(parse(text), "text"), "the text given (a conversation in the template's form)"
        else:
            try:
                conv = load_chat_splits(self.config.data)["train"][0]
            except QKVError as err:
                raise QKVError(f"the run's chat data is not available ({err}); give a conversation as text in the "
                               f"template's form, {form}", argument="text") from None
            where = (f"the first training conversation of the run's data ({conv.where}); a text in the form "
                     f"'{form}' gives your own")
        answer_only = self.config.train.answer_only
        ids, mask = render(conv.messages, tok)
        ex = encode_conversations([conv], tok, model.config.max_seq_len, answer_only=answer_only)
        batch = collate_chat(ex.inputs, ex.targets, chat_tokens(tok).end)  # the task's batch: idx, targets, mask
        logits, _ = model(batch["idx"])  # (1, T, V)
        loss, info = chat_loss(model, batch)  # the chat task's loss on this batch
        lines = [f"rendered with the chat template ({len(ids)} tokens): {render_text(conv.messages)!r}",
                 f"input = the {len(ids)} ids minus the last, target = the ids minus the first; "
                 + ("answer-only loss (this run's train.answer_only): targets outside assistant turns are -100, so "
                    "only the answer's tokens and their <|end|> count" if answer_only else
                    "this run trained with train.answer_only = false: every target counts (the ablation)")]
        return TrainingExample(where, lines, tok, batch["idx"][0], batch["targets"][0], logits[0], loss,
                               "chat_loss(model, batch) — ChatTask.loss",
                               data={"rendered": render_text(conv.messages), "answer_tokens": info["answer_tokens"],
                                     "answer_only": answer_only, "mask": mask})

    def evaluate(self, data: str | None = None, max_pairs: int | None = None) -> dict:
        """Answer-only loss and perplexity, and greedy exact match, single-turn and follow-up.

        Without `data`: loss on the run's validation split, exact match on its test split (regenerated or re-read
        from the run's data config). With `data` (a .jsonl/.csv/.tsv file): both on that file.
        """
        from qkv.data.chat import encode_conversations as encode

        if max_pairs is not None and max_pairs <= 0:
            raise QKVError(f"max_pairs must be positive, got {max_pairs}")
        tok, T, d = self.tokenizer, self.model.config.max_seq_len, self.config.data
        pad_id = chat_tokens(tok).end
        if data:
            loss_convs = em_convs = read_conversations(data)
            source = data
        else:
            splits = load_chat_splits(d)
            loss_convs, em_convs = splits["val"], splits["test"]
            source = f"{d.source} (val loss, test exact match)"
        if max_pairs is not None:
            loss_convs, em_convs = loss_convs[:max_pairs], em_convs[:max_pairs]
        loss_ex = encode(loss_convs, tok, T, too_long=d.too_long)
        if not loss_ex.inputs:
            raise QKVError(f"{source}: no conversation fits the context ({T} tokens)")
        loss, n_tok = answer_loss(self.model, loss_ex, pad_id)
        if not data and d.source == "skills":  # exact match per skill, held-out phrasings and held-out values
            skills = held_out_scores(ChatCompleter(self.model, tok), splits, max_pairs,
                                     self.config.sample.max_new_tokens)
            return {"source": d.source, "conversations": len(loss_ex.inputs), "answer_tokens": n_tok, "loss": loss,
                    "perplexity": perplexity(loss), "skills": skills, "dropped": loss_ex.dropped}
        # with data both figures score the same conversations: encode (and count what is dropped) once
        em_ex = loss_ex if data else encode(em_convs, tok, T, too_long=d.too_long)
        em = reply_accuracy(self.model, tok, em_ex.conversations)
        return {"source": source, "conversations": len(loss_ex.inputs), "answer_tokens": n_tok, "loss": loss,
                "perplexity": perplexity(loss), "em_conversations": len(em_ex.conversations),
                "em_single": em["single"], "em_followup": em["followup"], "n_single": em["n_single"],
                "n_followup": em["n_followup"], "errors": em["errors"],
                "dropped": loss_ex.dropped + (0 if em_ex is loss_ex else em_ex.dropped)}

    def report(self, r: dict) -> str:
        fmt = lambda v, n: "n/a" if v is None else f"{v:.1%} of {n}"  # noqa: E731
        lines = [f"{r['source']}: answer loss {r['loss']:.4f} nats/token | perplexity {r['perplexity']:.3f} "
                 f"({r['answer_tokens']:,} assistant tokens in {r['conversations']:,} conversations)"]
        if "skills" in r:
            return "\n".join(lines + skills_table(r["skills"]))
        lines.append(f"exact match (greedy): single-turn {fmt(r['em_single'], r['n_single'])} | "
                     f"follow-up {fmt(r['em_followup'], r['n_followup'])}")
        lines += [f"  miss ({e['turn']}): {e['question']!r} -> {e['reply']!r}, expected {e['reference']!r}"
                  for e in r["errors"]]
        if r["dropped"]:
            lines.append(f"note: {r['dropped']} conversation(s) longer than the context were left out")
        return "\n".join(lines)


ChatTask.run_class = ChatRun
