"""The recipe of docs/architecture.md ("Adding a task"), checked: a toy "reverse the string" source -> text task
written here, in this test module alone, registered with one line, gets `qkv eval`, the translate-style page,
the cross-attention explain topics and a human-evaluation campaign, with no other change to qkv.

The task is one module's worth of code: a run config, a Task (data, tokenizer, resolve, prepare, model, batches,
loss, evaluation) and a Run built on `TextToTextRun` that says where its pairs come from. Nothing outside this
file knows its name.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Literal

import pytest
import torch

from qkv.data.translation import TranslationBatches, encode_lines, make_examples, special_ids
from qkv.evaluation.translation import corpus_loss
from qkv.generation.seq2seq import SequenceDecoding
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.runs import TOKENIZER_FILE
from qkv.tasks.base import TASKS, State, Task
from qkv.tasks.text_to_text import TextToTextRun
from qkv.training.config import TrainConfig
from qkv.training.losses import smoothed_loss

LETTERS = "abcdefgh"


# ------------------------------------------------------------------------------------------------ the task
@dataclass
class ReverseData:
    pairs: int = 600  # training pairs; a tenth as many held out
    max_len: int = 6  # letters per string
    seed: int = 0


@dataclass
class ReverseTrain(TrainConfig):
    label_smoothing: float = 0.0  # ε of the loss (what TextToTextRun.training_example shows)


@dataclass
class ReverseRunConfig:
    task: Literal["reverse"] = "reverse"
    model: Seq2SeqConfig = field(default_factory=lambda: Seq2SeqConfig(
        vocab_size=16, max_seq_len=12, d_model=32, d_ff=64, n_encoder_layers=1, n_decoder_layers=1, n_heads=2,
        dropout=0.0))
    data: ReverseData = field(default_factory=ReverseData)
    train: ReverseTrain = field(default_factory=lambda: ReverseTrain(
        max_steps=150, batch_size=32, lr=3e-3, min_lr=3e-4, warmup_steps=10, eval_interval=150, log_interval=50,
        threads=1, progress=False))
    decode: SequenceDecoding = field(default_factory=lambda: SequenceDecoding(max_len_a=1.0, max_len_b=2))


def reverse_pairs(d: ReverseData, split: str) -> tuple[list[str], list[str]]:
    rng = random.Random(f"{d.seed}:{split}")
    n = d.pairs if split == "train" else max(1, d.pairs // 10)
    srcs = [" ".join(rng.choice(LETTERS) for _ in range(rng.randint(2, d.max_len))) for _ in range(n)]
    return srcs, [" ".join(reversed(s.split())) for s in srcs]


@dataclass
class ReverseState(State):
    tok: object = None
    train_ex: object = None
    val_ex: object = None


class ReverseTask(Task):
    name = "reverse"
    config_class = ReverseRunConfig
    fitted_model_fields = ("vocab_size", "pad_id")

    def read_data(self):
        return {split: reverse_pairs(self.cfg.data, split) for split in ("train", "val")}

    def make_tokenizers(self, data):
        from qkv.tokenizers import train_char

        tok = train_char(LETTERS + " ")
        tok.add_special_tokens(["<pad>", "<bos>", "<eos>"])
        self.ctx.run_dir.mkdir(parents=True, exist_ok=True)
        tok.save(self.ctx.run_dir / TOKENIZER_FILE)
        return tok

    def load_tokenizers(self, data):
        from qkv.tokenizers import load_tokenizer

        return load_tokenizer(self.ctx.run_dir / TOKENIZER_FILE)

    def resolve(self, data, tok):
        return replace(self.cfg, model=replace(self.cfg.model, vocab_size=tok.vocab_size, pad_id=tok.pad_id))

    def prepare(self, cfg, data, tok):
        _, _, eos = special_ids(tok)
        ex = {split: make_examples(encode_lines(tok, s), encode_lines(tok, t), cfg.model.max_seq_len, eos)
              for split, (s, t) in data.items()}
        return ReverseState(cfg, {"train_pairs": len(ex["train"].src)}, tok, ex["train"], ex["val"])

    def build_model(self, state):
        return Seq2Seq(state.cfg.model)

    def batches(self, state, rows, rank, world):
        pad, bos, eos = special_ids(state.tok)
        return TranslationBatches(state.train_ex, pad, bos, eos, batch_sentences=rows, seed=state.cfg.train.seed,
                                  rank=rank, world_size=world)

    def loss(self, state, model, batch):
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"]).logits
        loss, nll, n = smoothed_loss(logits, batch["tgt_out"], state.cfg.train.label_smoothing)
        return loss, {"tokens": n}

    def loss_terms(self, batch) -> int:
        return int((batch["tgt_out"] != -100).sum())

    def evaluate(self, state, model, full, train_means):
        return {"val_loss": corpus_loss(model, state.val_ex, *special_ids(state.tok))[0]}


class ReverseRun(TextToTextRun):
    task = "reverse"
    config_class = ReverseRunConfig
    model_type = "seq2seq"

    @classmethod
    def load(cls, path, device="cpu", **options):
        from qkv.tokenizers import load_tokenizer

        model, saved, config = cls._load_model(path, device)
        tok = load_tokenizer(path / TOKENIZER_FILE)
        return cls(path, config, saved, model, tok, tok)

    def reference_pairs(self, n=None):
        srcs, refs = reverse_pairs(self.config.data, "val")
        return srcs[:n], refs[:n], "reversed strings (held out)"

    def training_pairs(self, n=None):
        srcs, refs = reverse_pairs(self.config.data, "train")
        return srcs[:n], refs[:n], "reversed strings (training)"


ReverseTask.run_class = ReverseRun


# ------------------------------------------------------------------------------------------------ the checks
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The toy task registered with one line (here, for this module only) and trained: 150 steps, ~3 s."""
    from qkv.tasks import run_task

    TASKS["reverse"] = ReverseTask  # the one registry line
    folder = tmp_path_factory.mktemp("reverse")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_task(ReverseRunConfig(), folder / "run", log=lambda msg: None)
    finally:
        torch.set_num_threads(n)
    yield folder / "run"
    del TASKS["reverse"]


def test_qkv_eval_scores_it(run_dir, capsys):
    from qkv.cli.main import main

    assert main(["eval", str(run_dir), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "reversed strings (held out)" and result["sentences"] == 60
    assert 0 <= result["exact_match"] <= 1 and result["bleu"]["signature"].startswith("nrefs:1")
    assert main(["eval", str(run_dir)]) == 0
    assert "exact match" in capsys.readouterr().out


def test_it_gets_the_translate_style_page(run_dir):
    from fastapi.testclient import TestClient

    from qkv.server import ServeConfig, create_app, load_runs

    client = TestClient(create_app(load_runs([run_dir]), ServeConfig()))
    info = client.get("/api/runs/run").json()
    assert info["pages"] == ["translate", "attention", "params", "explain"] and info["source_kind"] == "text"
    assert client.get("/runs/run/translate").status_code == 200
    r = client.post("/api/runs/run/to-text", json={"text": "a b c", "beam": 2, "n_best": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 1 <= len(body["nbest"]) <= 2 and body["attention"]["kind"] == "cross-attention"
    assert len(body["attention"]["cols"]) == 6  # "a b c", one character a token, and its EOS


@pytest.mark.parametrize("topic", ["self-vs-cross", "decoder-only-vs-encoder-decoder", "encoder-states", "alignment",
                                   "output", "evaluation", "training-pairs", "qkv"])
def test_it_gets_the_cross_attention_explain_topics(run_dir, topic):
    from qkv.explain import explain
    from qkv.tasks import load_run

    e = explain(topic, load_run(run_dir), src="a b c" if topic not in ("evaluation", "training-pairs") else None)
    assert e.checks and all(c.ok for c in e.checks), [(c.what, c.max_abs_diff) for c in e.checks if not c.ok]


def test_it_gets_a_human_evaluation_campaign(run_dir, tmp_path):
    from qkv.humaneval import CampaignSpec, create_campaign

    src = tmp_path / "src.txt"
    src.write_text("a b c\nd e f g\nh a\n", encoding="utf-8")
    made = create_campaign(tmp_path / "he.db", CampaignSpec("toy", [run_dir], src=src, n=3, raters=1))
    assert made.kind == "source-to-text" and made.items == 3
