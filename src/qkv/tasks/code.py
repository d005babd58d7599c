"""Code generation judged by running it: a docstring in, a function's body out, scored by hidden tests run in a
sandbox, with either architecture — the question the notes open with, answered on one task.

    qkv train --preset code-encdec --out runs/code-encdec     # task = "code":     encoder–decoder
    qkv train --preset code-gpt --out runs/code-gpt           # task = "code-gpt": decoder-only, the same data
    qkv eval runs/code-encdec --pass-at-k 1,10 --samples 20   # pass@k on every split, HumanEval as the control
    qkv train --preset code-rl --init-from runs/code-encdec --out runs/code-rl   # REINFORCE from test results

The notes: "the encoder understands the natural language, and the decoder generates the corresponding code". The
two tasks share everything but the model (`qkv.data.programs` for the problems, one byte-level BPE learned on the
training prompts and completions, `qkv.generation.completion` for decoding, `qkv.evaluation.code` for pass@k):

    encoder–decoder ("code")      the encoder reads the prompt (signature + docstring + doctests); the decoder
                                  writes the body; the loss is the cross-entropy of the body and its EOS
    decoder-only ("code-gpt")     one sequence, prompt then body then EOS; the loss is on the body and EOS only
                                  (the prompt's targets are -100), as chat's answer-only loss

``train.objective = "reinforce"`` (with ``--init-from`` a trained run of the same task) fine-tunes by REINFORCE
(`qkv.training.reinforce`): ``rl.samples_per_prompt`` completions of each training prompt, reward = the share of its
hidden tests a completion passes in the sandbox, advantage = reward − the prompt's mean.

Logged: the training loss, the validation loss (per body token), and on full evaluations greedy pass@1 of the
first ``data.pass_val_problems`` validation and held-out-composition problems, run in the sandbox; with
reinforce, the mean reward of the training samples (``train_reward``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Literal

import torch

from qkv.data.batching import IndexBatches
from qkv.data.chat import ChatBatches
from qkv.data.programs import SPLITS, Problem, ProgramSpec, humaneval_problems, program_splits, trim_completion
from qkv.errors import QKVError
from qkv.evaluation.chat import answer_loss
from qkv.evaluation.perplexity import perplexity
from qkv.evaluation.translation import corpus_loss
from qkv.generation.completion import GPTCompleter, Seq2SeqCompleter
from qkv.generation.sampling import TokenSampling
from qkv.generation.seq2seq import SequenceDecoding
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.seq2seq import Seq2SeqConfig
from qkv.runs import TOKENIZER_FILE, read_config
from qkv.tasks.base import State, Task, a_, fine_tunes, last_eval, task_of
from qkv.tasks.capabilities import Capability, TrainingExample
from qkv.tasks.lm import LMRun
from qkv.tasks.text_to_text import TextToTextRun
from qkv.tasks.translate import TranslateState, TranslateTask, TranslateTrainConfig, TranslationData
from qkv.tokenizers.base import Tokenizer
from qkv.training.reinforce import ReinforceConfig, check_objective, reinforce_loss

EVAL_SPLITS = ("val", "compositions", "k3", "length", "humaneval")
SPLIT_NAMES = {"val": "validation (k ≤ 3)", "compositions": "held-out compositions (k = 2)",
               "k3": "unseen programs, k = 3", "length": "held-out length (k = 4)", "humaneval": "HumanEval (control)"}


@dataclass
class CodeDataConfig:
    train_programs: int = 30000  # synthetic training problems (`qkv.data.programs`)
    eval_programs: int = 200  # problems in each evaluation split
    held_out_fraction: float = 0.12  # share of block pairs never together in training
    program_seed: int = 0  # the seed the problems are generated from
    vocab_size: int = 1000  # byte-level BPE learned on the training prompts and completions
    pass_val_problems: int = 50  # full evaluations run greedy pass@1 on this many val and composition problems
    rl_min_blocks: int = 2  # reinforcement prompts: training problems of at least this many blocks
    batch_tokens: int | None = None  # encoder–decoder: pairs × longest side ≤ this; None: train.batch_size pairs
    pool_batches: int = 50

    def __post_init__(self):
        for name in ("train_programs", "eval_programs", "vocab_size", "pool_batches"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.held_out_fraction < 0.5:
            raise ValueError(f"held_out_fraction must be in (0, 0.5), got {self.held_out_fraction}")
        if self.pass_val_problems < 0 or not 1 <= self.rl_min_blocks <= 3:
            raise ValueError("pass_val_problems must be >= 0 and rl_min_blocks in 1..3")

    @property
    def spec(self) -> ProgramSpec:
        return ProgramSpec(self.train_programs, self.eval_programs, self.held_out_fraction, self.program_seed)


@dataclass
class CodeTrainConfig(TranslateTrainConfig):
    """Translation's training settings with another objective: the cross-entropy of the reference body, or
    REINFORCE from the tests (translation's MRT and guided alignment are its own)."""

    label_smoothing: float = 0.0  # ε of the cross-entropy (code is exact: none by default)
    objective: Literal["xent", "reinforce"] = "xent"  # "reinforce": [rl], needs --init-from a trained run

    def __post_init__(self):
        super().__post_init__()
        check_objective(self.objective)
        if self.alignment_weight:
            raise ValueError("code trains with alignment_weight = 0 (guided alignment is translation's)")


@dataclass
class CompletionSettings:
    """How a run completes prompts: the longest body, and the temperature of sampled pass@k."""

    max_new_tokens: int = 128
    temperature: float = 0.8  # of `qkv eval --samples N` (N > 1); pass@1 of one sample is greedy
    workers: int | None = None  # sandbox processes side by side (default: one per core)

    def __post_init__(self):
        if self.max_new_tokens <= 0 or self.temperature <= 0:
            raise ValueError("max_new_tokens and temperature must be positive")
        if self.workers is not None and self.workers <= 0:
            raise ValueError(f"workers must be positive, got {self.workers}")


@dataclass
class CodeRunConfig:
    task: Literal["code"] = "code"
    model: Seq2SeqConfig = field(default_factory=lambda: Seq2SeqConfig(max_seq_len=256, dropout=0.0))
    data: CodeDataConfig = field(default_factory=CodeDataConfig)
    train: CodeTrainConfig = field(default_factory=CodeTrainConfig)
    complete: CompletionSettings = field(default_factory=CompletionSettings)
    rl: ReinforceConfig = field(default_factory=ReinforceConfig)
    # the source-to-text pages' decoding (the playground, the cross-attention); completions use [complete]
    decode: SequenceDecoding = field(default_factory=lambda: SequenceDecoding(beam=1, max_len_a=0.0, max_len_b=96))


@dataclass
class CodeGPTRunConfig:
    task: Literal["code-gpt"] = "code-gpt"
    model: GPTConfig = field(default_factory=lambda: GPTConfig(vocab_size=1000, max_seq_len=384, d_model=256,
                                                                 n_layers=7, n_heads=4, bias=False))
    data: CodeDataConfig = field(default_factory=CodeDataConfig)
    train: CodeTrainConfig = field(default_factory=CodeTrainConfig)
    complete: CompletionSettings = field(default_factory=CompletionSettings)
    rl: ReinforceConfig = field(default_factory=ReinforceConfig)
    # the continuation pages' sampling (the playground's generate page); completions use [complete]
    sample: TokenSampling = field(default_factory=lambda: TokenSampling(temperature=0.0, max_new_tokens=96))


# ------------------------------------------------------------------------------------------------ shared pieces
def problems_of(d: CodeDataConfig, split: str) -> tuple[Problem, ...]:
    """The problems of a split: a synthetic one (`qkv.data.programs.SPLITS`) or humaneval."""
    if split == "humaneval":
        return humaneval_problems()
    if split not in SPLITS:
        raise QKVError(f"unknown split {split!r}; choose one of {', '.join(SPLITS + ('humaneval',))}")
    return program_splits(d.spec)[split]


def code_tokenizer(train: Sequence[Problem], vocab_size: int) -> Tokenizer:
    """One byte-level BPE for both architectures, learned on the training prompts and completions (any text
    encodes: a HumanEval prompt too)."""
    from qkv.tokenizers import train_bpe

    return train_bpe([p.prompt for p in train] + [p.completion for p in train], vocab_size=vocab_size)


def check_init_from(ctx, task: str, objective: str) -> None:
    """REINFORCE fine-tunes a trained run of the same task; a base of another task is a one-line error."""
    if objective == "reinforce":
        fine_tunes(ctx, "reinforce", "code")
    if ctx.init_from is not None:
        saved = read_config(ctx.init_from)
        if task_of(saved) != task:
            raise QKVError(f"init_from {ctx.init_from}: {a_(task_of(saved))} run; the {task} task starts only from "
                           f"{a_(task)} run")


def test_rewards(problems: Sequence[Problem], groups: list[list[str]], workers: int | None) -> list[list[float]]:
    """Each completion's reward: the share of its problem's hidden tests it passes, run in the sandbox."""
    from qkv.evaluation.sandbox import run_programs

    jobs = [(p.program(trim_completion(c)), p.tests) for p, group in zip(problems, groups, strict=True) for c in group]
    outcomes = iter(run_programs(jobs, workers=workers))
    return [[next(outcomes).fraction for _ in group] for group in groups]


def rl_problems(d: CodeDataConfig) -> tuple[Problem, ...]:
    """The reinforcement prompts: the training problems of at least `rl_min_blocks` blocks (computed once)."""
    return _rl_problems(d.spec, d.train_programs, d.rl_min_blocks)


@cache
def _rl_problems(spec: ProgramSpec, n: int, min_blocks: int) -> tuple[Problem, ...]:
    return tuple(p for p in program_splits(spec)["train"][:n] if p.k >= min_blocks)


def greedy_pass(completer, problems: Sequence[Problem], max_new_tokens: int, workers: int | None) -> float:
    """Greedy pass@1 over `problems` (sandboxed), in %."""
    from qkv.evaluation.code import score_completions

    texts = [trim_completion(s.text) for s in completer.greedy([p.prompt for p in problems], max_new_tokens)]
    return 100.0 * score_completions(problems, [[t] for t in texts], workers)["pass@1"]


def pass_metrics(completer, d: CodeDataConfig, settings: CompletionSettings) -> dict:
    n = d.pass_val_problems
    if not n:
        return {}
    return {f"{name}_pass@1": greedy_pass(completer, problems_of(d, split)[:n], settings.max_new_tokens,
                                          settings.workers)
            for name, split in (("val", "val"), ("comp", "compositions"))}


def code_evaluation(train_means: dict, val_loss: float, completer, cfg) -> dict:
    """What both tasks log: the training NLL (or the mean reward), the validation loss per body token, and on full
    evaluations (a `completer` given) greedy pass@1 run in the sandbox."""
    out = {f"train_{k}": train_means[k] for k in ("nll", "reward") if k in train_means}
    out["val_loss"], out["val_ppl"] = val_loss, perplexity(val_loss)
    if completer is not None:
        out.update(pass_metrics(completer, cfg.data, cfg.complete))
    return out


def code_summary(result, d: CodeDataConfig) -> list[str]:
    lines = [f"trained {result.step} steps in {result.elapsed_s:.1f} s ({result.stopped_by})"]
    last, passed, reward = last_eval(result, "val_loss"), last_eval(result, "val_pass@1"), last_eval(result,
                                                                                                   "train_reward")
    if last:
        lines.append(f"val loss {last['val_loss']:.4f} (NLL per body token) | ppl {last['val_ppl']:.2f}")
    if reward:
        lines.append(f"mean reward of the training samples since the last evaluation {reward['train_reward']:.3f}")
    if passed:
        lines.append(f"greedy pass@1 {passed['val_pass@1']:.1f}% validation, {passed['comp_pass@1']:.1f}% held-out "
                     f"compositions (first {d.pass_val_problems} of each, run in the sandbox)")
    return lines


def code_samples(completer, d: CodeDataConfig, max_new_tokens: int):
    problems = problems_of(d, "compositions")[:2]
    outs = completer.greedy([p.prompt for p in problems], max_new_tokens)
    yield "--- sample completions (held-out compositions, greedy) " + "-" * 16 + "\n"
    for p, s in zip(problems, outs, strict=True):
        yield f"{p.prompt}{trim_completion(s.text)}\n"
    yield "-" * 71 + "\n"


# ------------------------------------------------------------------------------------------------ encoder–decoder
class CodeTask(TranslateTask):
    name = "code"
    config_class = CodeRunConfig
    supports_init_from = True
    data_option = "train_programs"

    def read_data(self) -> TranslationData:
        d = self.cfg.data
        check_init_from(self.ctx, self.name, self.cfg.train.objective)
        train, val = problems_of(d, "train")[: d.train_programs], problems_of(d, "val")
        return TranslationData([p.prompt for p in train], [p.completion for p in train], "programs train",
                               [p.prompt for p in val], [p.completion for p in val], "programs val")

    def make_tokenizers(self, data: TranslationData):
        from qkv.tasks.translate import TranslationTokenizers

        if self.ctx.init_from is not None:
            return super().make_tokenizers(data)
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok = code_tokenizer(problems_of(self.cfg.data, "train")[: self.cfg.data.train_programs],
                             self.cfg.data.vocab_size)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return TranslationTokenizers(tok, tok)

    def _base(self, init_from: Path):
        from qkv.config import from_dict
        from qkv.models.io import model_config_dict

        base = read_config(init_from)
        return (from_dict(Seq2SeqConfig, model_config_dict("seq2seq", base["model"]), prefix="model."),
                (base.get("data") or {}).get("vocab_size", self.cfg.data.vocab_size))

    def completer(self, state: TranslateState, model) -> Seq2SeqCompleter:
        return Seq2SeqCompleter(model, state.tgt_tok, state.bos, state.eos)

    def batches(self, state: TranslateState, rows: int, rank: int, world: int):
        if state.cfg.train.objective == "reinforce":
            return IndexBatches(len(rl_problems(state.cfg.data)), rows, key="problem", seed=state.cfg.train.seed,
                                rank=rank,
                                  world_size=world)
        return super().batches(state, rows, rank, world)

    def loss(self, state: TranslateState, model, batch):
        if state.cfg.train.objective == "reinforce":
            return code_reinforce(self.completer(state, model), state.cfg, batch)
        return super().loss(state, model, batch)

    def loss_terms(self, batch) -> int:
        return len(batch["problem"]) if "problem" in batch else super().loss_terms(batch)

    def evaluate(self, state: TranslateState, model, full: bool, train_means: dict) -> dict:
        val_loss = corpus_loss(model, state.val_ex, state.pad, state.bos, state.eos)[0]
        return code_evaluation(train_means, val_loss, self.completer(state, model) if full else None, state.cfg)

    def summary(self, state: TranslateState, model, result) -> list[str]:
        return code_summary(result, state.cfg.data)

    def samples(self, state: TranslateState, model):
        return code_samples(self.completer(state, model), state.cfg.data, state.cfg.complete.max_new_tokens)

    def next_command(self) -> str:
        return f"score it: qkv eval {self.ctx.run_dir} --pass-at-k 1,10 --samples 20"


def code_reinforce(completer, cfg, batch: dict):
    """REINFORCE over the batch's training problems, rewarded by their hidden tests (`qkv.training.reinforce`)."""
    problems = rl_problems(cfg.data)
    chosen = [problems[i] for i in batch["problem"].tolist()]
    loss, info = reinforce_loss(completer, [p.prompt for p in chosen],
                                lambda groups: test_rewards(chosen, groups, cfg.complete.workers), cfg.rl)
    return loss, info


# ------------------------------------------------------------------------------------------------ decoder-only
@dataclass
class BodyExamples:
    """One split as the decoder-only model trains on it (what `answer_loss` and `ChatBatches` read)."""

    inputs: list[list[int]] = field(default_factory=list)  # prompt + body + EOS, minus the last token
    targets: list[list[int]] = field(default_factory=list)  # next tokens; -100 over the prompt


@dataclass
class CodeGPTState(State):
    tok: Tokenizer | None = None
    eos: int = 0
    train: BodyExamples = field(default_factory=BodyExamples)
    val: BodyExamples = field(default_factory=BodyExamples)


def gpt_example(tok: Tokenizer, problem: Problem, eos: int) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one problem as one sequence: prompt ids, body ids, EOS; the targets of the prompt
    positions are -100 (no loss), so the loss is the body's and its EOS's, as the encoder–decoder's."""
    p, c = tok.encode(problem.prompt), tok.encode(problem.completion) + [eos]
    seq = p + c
    return seq[:-1], [-100] * (len(p) - 1) + c


class CodeGPTTask(Task):
    name = "code-gpt"
    config_class = CodeGPTRunConfig
    supports_init_from = True
    fitted_model_fields = ("vocab_size",)
    data_option = "train_programs"

    def read_data(self) -> dict:
        check_init_from(self.ctx, self.name, self.cfg.train.objective)
        d = self.cfg.data
        return {"train": problems_of(d, "train")[: d.train_programs], "val": problems_of(d, "val")}

    def make_tokenizers(self, data: dict) -> Tokenizer:
        run_dir = self.ctx.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        if self.ctx.init_from is not None:
            (run_dir / TOKENIZER_FILE).write_bytes((self.ctx.init_from / TOKENIZER_FILE).read_bytes())
            return self.load_tokenizers(data)
        tok = code_tokenizer(data["train"], self.cfg.data.vocab_size)
        tok.save(run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data: dict) -> Tokenizer:
        from qkv.tokenizers import load_tokenizer

        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, data: dict, tok: Tokenizer) -> CodeGPTRunConfig:
        from qkv.tasks.lm import base_model_config

        cfg, ctx = self.cfg, self.ctx
        if ctx.init_from is not None:
            cfg = replace(cfg, model=base_model_config(ctx.init_from))
        elif not ctx.resume:
            cfg = replace(cfg, model=replace(cfg.model, vocab_size=tok.vocab_size))
        if cfg.model.vocab_size < tok.vocab_size:
            raise QKVError(f"model.vocab_size {cfg.model.vocab_size} < tokenizer vocabulary {tok.vocab_size}")
        return cfg

    def prepare(self, cfg: CodeGPTRunConfig, data: dict, tok: Tokenizer) -> CodeGPTState:
        eos, T = tok.eos_id, cfg.model.max_seq_len
        state = CodeGPTState(cfg, {}, tok, eos)
        for split, ex in (("train", state.train), ("val", state.val)):
            dropped = 0
            for p in data[split]:
                x, y = gpt_example(tok, p, eos)
                if len(x) > T:
                    dropped += 1
                    continue
                ex.inputs.append(x)
                ex.targets.append(y)
            if dropped:
                self.ctx.say(f"note: {dropped:,} {split} problems are longer than the context ({T} tokens) and were "
                             "left out")
        state.meta = {"train": "programs train", "val": "programs val", "train_pairs": len(state.train.inputs),
                      "val_pairs": len(state.val.inputs), "vocab_size": tok.vocab_size,
                      "tgt_tokens": int(sum(sum(t != -100 for t in y) for y in state.train.targets))}
        if self.ctx.init_from is not None:
            state.meta["init_from"] = str(self.ctx.init_from)
        return state

    def build_model(self, state: CodeGPTState):
        from qkv.models.io import load_model

        if self.ctx.resume:
            return load_model(self.ctx.run_dir)[0]
        return load_model(self.ctx.init_from)[0] if self.ctx.init_from is not None else GPT(state.cfg.model)

    def batches(self, state: CodeGPTState, rows: int, rank: int, world: int):
        if state.cfg.train.objective == "reinforce":
            return IndexBatches(len(rl_problems(state.cfg.data)), rows, key="problem", seed=state.cfg.train.seed,
                                rank=rank,
                                  world_size=world)
        return ChatBatches(state.train.inputs, state.train.targets, rows, state.tok.pad_id,
                           pool_batches=state.cfg.data.pool_batches, seed=state.cfg.train.seed, rank=rank,
                           world_size=world)

    def completer(self, state: CodeGPTState, model) -> GPTCompleter:
        return GPTCompleter(model, state.tok, state.eos)

    def loss(self, state: CodeGPTState, model, batch):
        if state.cfg.train.objective == "reinforce":
            return code_reinforce(self.completer(state, model), state.cfg, batch)
        from qkv.training.losses import smoothed_loss

        logits = model(batch["idx"])[0]  # (B, T, V)
        loss, nll, n = smoothed_loss(logits, batch["targets"], state.cfg.train.label_smoothing)
        return loss, {"tokens": int(batch["mask"].sum()), "nll": (nll.item() * n, n)}

    def loss_terms(self, batch) -> int:
        return len(batch["problem"]) if "problem" in batch else int((batch["targets"] != -100).sum())

    def evaluate(self, state: CodeGPTState, model, full: bool, train_means: dict) -> dict:
        return code_evaluation(train_means, answer_loss(model, state.val, state.tok.pad_id)[0],
                               self.completer(state, model) if full else None, state.cfg)

    def summary(self, state: CodeGPTState, model, result) -> list[str]:
        return code_summary(result, state.cfg.data)

    def samples(self, state: CodeGPTState, model):
        return code_samples(self.completer(state, model), state.cfg.data, state.cfg.complete.max_new_tokens)

    def next_command(self) -> str:
        return f"score it: qkv eval {self.ctx.run_dir} --pass-at-k 1,10 --samples 20"


# ------------------------------------------------------------------------------------------------ the runs
class CodeRunMixin:
    """What a code run can do, whichever its architecture: complete prompts, run a completion's tests in the
    sandbox, and score pass@k (`qkv.evaluation.code`)."""

    config: CodeRunConfig | CodeGPTRunConfig

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.CODE}

    @property
    def architecture(self) -> str:
        raise NotImplementedError

    def completer(self):
        raise NotImplementedError

    def problems(self, split: str = "compositions") -> tuple[Problem, ...]:
        """The problems of a split (val, compositions, k3, length, train, humaneval)."""
        return problems_of(self.config.data, split)

    def complete(self, prompts: Sequence[str], n: int = 1, temperature: float | None = None,
                 max_new_tokens: int | None = None, seed: int | None = None) -> list[list[str]]:
        """`n` completions of each prompt, each cut at the end of the function: greedy when n is 1 and no
        temperature is given, else sampled at `temperature` (default the run's)."""
        if not prompts or any(not p.strip() for p in prompts):
            raise QKVError("a prompt is empty: give a function's signature and docstring")
        if n < 1:
            raise QKVError(f"n must be at least 1, got {n}")
        c = self.config.complete
        max_new = max_new_tokens or c.max_new_tokens
        if n == 1 and temperature is None:
            return [[trim_completion(s.text)] for s in self.completer().greedy(list(prompts), max_new)]
        t = temperature or c.temperature
        if t <= 0:
            raise QKVError(f"temperature must be positive, got {t}")
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        return [[trim_completion(s.text) for s in group]
                for group in self.completer().sample(list(prompts), n, t, max_new, generator=gen)]

    def run_tests(self, problem: Problem, completion: str):
        """The sandbox's `Outcome` of `completion` against the problem's hidden tests."""
        from qkv.evaluation.sandbox import run_program

        return run_program(problem.program(completion), problem.tests)

    def example_problem(self) -> Problem:
        return self.problems("compositions")[0]

    def example_questions(self, n: int) -> tuple[list[tuple[str, str | None]], str]:
        problems = self.problems("compositions")[:n]
        return [(p.prompt, p.completion) for p in problems], "held-out compositions"

    def evaluate(self, split: str = "all", pass_at_k: str | Sequence[int] | None = None, samples: int | None = None,
                 temperature: float | None = None, max_problems: int | None = None, seed: int = 0,
                 workers: int | None = None, progress=None) -> dict:
        """pass@k of every split (or one): greedy pass@1 by default; with `samples` n > 1, the unbiased pass@k of
        n samples at `temperature` for each k of `pass_at_k` (Chen et al. 2021)."""
        from qkv.evaluation.code import evaluate_splits

        splits = EVAL_SPLITS if split == "all" else (split,)
        for s in splits:
            if s not in EVAL_SPLITS + ("train",):
                raise QKVError(f"unknown split {s!r}; choose all or one of {', '.join(EVAL_SPLITS)}")
        return evaluate_splits(self, {s: self.problems(s) for s in splits}, pass_at_k, samples, temperature,
                               max_problems, seed, workers or self.config.complete.workers, progress)

    def report(self, r: dict) -> str:
        from qkv.evaluation.code import report_lines

        return "\n".join(report_lines(r, SPLIT_NAMES))


class CodeRun(CodeRunMixin, TextToTextRun):
    """A trained encoder–decoder code run (`qkv.load_run`): complete, run the tests, score pass@k."""

    task = "code"
    config_class = CodeRunConfig
    model_type = "seq2seq"
    architecture = "encoder-decoder"

    def completer(self) -> Seq2SeqCompleter:
        from qkv.data.translation import special_ids

        _, bos, eos = special_ids(self.tgt_tokenizer)
        return Seq2SeqCompleter(self.model, self.tgt_tokenizer, bos, eos)

    def reference_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        problems = self.problems("compositions")[:n]
        return [p.prompt for p in problems], [p.completion for p in problems], "held-out compositions"

    def training_pairs(self, n: int | None = None) -> tuple[list[str], list[str], str]:
        problems = self.problems("train")[:n]
        return [p.prompt for p in problems], [p.completion for p in problems], "programs train"


class CodeGPTRun(CodeRunMixin, LMRun):
    """A trained decoder-only code run (`qkv.load_run`): complete, run the tests, score pass@k."""

    task = "code-gpt"
    config_class = CodeGPTRunConfig
    model_type = "gpt"
    architecture = "decoder-only"

    def completer(self) -> GPTCompleter:
        return GPTCompleter(self.model, self.tokenizer, self.tokenizer.eos_id)

    def example_text(self) -> str:
        return self.example_problem().prompt

    def training_example(self, text: str | None = None, src: str | None = None, limit: int = 32) -> TrainingExample:
        """One problem as the decoder-only model trains on it: prompt and body in one sequence, the loss on the
        body only (the prompt's targets are -100). `text` a prompt and `src` its body (default: the first training
        problem)."""
        p = self.problems("train")[0] if text is None else Problem("given", text, src or "", ())
        tok = self.tokenizer
        x, y = gpt_example(tok, p, tok.eos_id)
        T = self.model.config.max_seq_len
        x, y = x[-T:], y[-T:]
        with torch.no_grad():
            logits = self.model(torch.tensor([x], device=next(self.model.parameters()).device))[0][0]  # (T, V)
        keep = torch.tensor(y) != -100
        loss = torch.nn.functional.cross_entropy(logits.float().cpu()[keep], torch.tensor(y)[keep])
        lines = [f"one sequence: the prompt ({int((~keep).sum()) + 1} tokens), then the body and <eos> "
                 f"({int(keep.sum())} tokens); the targets of the prompt are -100, so the loss is the body's only"]
        return TrainingExample("programs train (decoder-only)", lines, tok, torch.tensor(x), torch.tensor(y),
                               logits.float().cpu(), loss, "the task's loss: cross-entropy of the body tokens")


CodeTask.run_class = CodeRun
CodeGPTTask.run_class = CodeGPTRun
