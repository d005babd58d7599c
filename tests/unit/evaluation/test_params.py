"""Parameter accounting: `qkv params` against transformers' GPT-2 counts, the GPT-3 paper and its own rows."""

import json
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from qkv.cli.main import main
from qkv.evaluation.params import human, human_bytes, param_report
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.io import save_run
from qkv.models.presets import PRESETS, get_preset


def params_json(capsys, *argv: str) -> dict:
    assert main(["params", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_gpt2_total_from_cli(capsys):
    report = params_json(capsys, "--preset", "gpt2")
    assert report["total"] == 124_439_808
    assert report["non_embedding"] == 124_439_808 - 50257 * 768 - 1024 * 768
    head = next(r for r in report["rows"] if r["name"].startswith("LM head"))
    assert head["count"] == 0 and "tied to tok_emb" in head["note"]


def test_gpt3_175b_is_175b(capsys):
    report = params_json(capsys, "--preset", "gpt3-175b")
    assert abs(report["total"] - 175.0e9) / 175.0e9 < 0.005


@pytest.mark.parametrize(
    "preset, n_layer, n_embd, n_head",
    [
        ("gpt2", 12, 768, 12),
        ("gpt2-medium", 24, 1024, 16),
        ("gpt2-large", 36, 1280, 20),
        ("gpt2-xl", 48, 1600, 25),
    ],
)
def test_gpt2_sizes_match_transformers(preset, n_layer, n_embd, n_head):
    with torch.device("meta"):  # shapes only: gpt2-xl would otherwise allocate 6 GB
        hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head))
    assert param_report(get_preset(preset), preset).total == sum(p.numel() for p in hf.parameters())


VARIANTS = {
    **PRESETS,
    "untied-rope-nobias": GPTConfig(vocab_size=97, max_seq_len=64, d_model=32, n_layers=3, n_heads=4,
                                    pos_encoding="rope", tie_embeddings=False, bias=False, norm="rmsnorm"),
    "sinusoidal-dhead": GPTConfig(vocab_size=50, max_seq_len=16, d_model=24, n_layers=2, n_heads=2, d_head=8,
                                  d_ff=40, pos_encoding="sinusoidal"),
    "speedrun-options": GPTConfig(vocab_size=65, max_seq_len=64, d_model=32, n_layers=3, n_heads=4, bias=False,
                                  activation="relu2", qk_norm=True, zero_init_proj=True, tie_embeddings=False,
                                  value_embeddings=True, x0_shortcut=True, logit_softcap=15.0),
}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_rows_sum_to_total(name):
    cfg = VARIANTS[name]
    report = param_report(cfg, name)
    with torch.device("meta"):
        model = GPT(cfg)
    assert sum(r.count for r in report.rows) == report.total == model.num_params()
    layer_rows = [r for r in report.rows if r.group == "layer"]
    assert all(r.count == r.per_layer * cfg.n_layers for r in layer_rows)
    assert report.per_layer * cfg.n_layers + report.embedding + sum(
        r.count for r in report.rows if r.group == "head"
    ) == report.total
    assert report.to_json()["total"] == report.total


def test_speedrun_options_get_rows_of_their_own():
    rows = {r.name: r for r in param_report(VARIANTS["speedrun-options"]).rows}
    assert rows["value embeddings (value_embs, one table per layer)"].count == 3 * 65 * 32
    assert rows["value embeddings (value_embs, one table per layer)"].group == "embedding"
    assert rows["residual scalars λ, μ of the x0 shortcut (resid_scales, x0_scales)"].count == 2 * 3
    assert not [name for name in rows if name.startswith("other")]


def test_positions_without_params_are_shown():
    report = param_report(VARIANTS["untied-rope-nobias"])
    pos = report.rows[1]
    assert pos.name == "positions (rope)" and pos.count == 0 and "0 params" in pos.note
    head = report.rows[-1]
    assert head.name.startswith("LM head") and head.count == 97 * 32 and head.note == ""


def test_flops_memory_and_kv_cache():
    cfg = get_preset("gpt2")
    report = param_report(cfg, "gpt2")
    n = report.non_embedding
    # Kaplan et al. 2020: 2N + 2·n_layers·n_ctx·d_attn, plus the (tied) LM head matmul
    assert report.flops_forward_per_token == 2 * n + 2 * 12 * 1024 * 768 + 2 * 768 * 50257
    assert report.flops_train_per_token == 3 * report.flops_forward_per_token
    assert report.memory_bytes == {
        "weights_fp32": 4 * report.total, "weights_bf16": 2 * report.total,
        "train_fp32": 16 * report.total, "train_bf16_mixed": 16 * report.total,
    }
    tiny = GPTConfig(vocab_size=11, max_seq_len=8, d_model=16, n_layers=3, n_heads=4)
    cache = GPT(tiny).new_cache(batch=1, max_len=1, dtype=torch.float32)  # the real cache, one position
    assert param_report(tiny).kv_cache_bytes_per_token_fp32 == cache.nbytes()


def test_table_shows_units_and_embedding_share(capsys):
    assert main(["params", "--preset", "gpt2"]) == 0
    table = capsys.readouterr().out
    for text in ("124,439,808", "124.4M", "497.8 MB", "per layer × 12", "tied to tok_emb",
                 "embeddings: 31.6% of parameters"):
        assert text in table
    assert human(175.0e9) == "175.0B" and human_bytes(497_759_232) == "497.8 MB"


def test_run_dir(tmp_path, capsys):
    cfg = GPTConfig(vocab_size=40, max_seq_len=16, d_model=16, n_layers=2, n_heads=2, tie_embeddings=False)
    model = GPT(cfg)
    save_run(tmp_path / "run", model)
    assert params_json(capsys, str(tmp_path / "run"))["total"] == model.num_params()


def test_unknown_preset_lists_valid_names(capsys):
    assert main(["params", "--preset", "gpt5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "gpt5" in err and all(name in err for name in PRESETS)


@pytest.mark.parametrize("argv", [["params"], ["params", "somewhere", "--preset", "gpt2"]])
def test_run_dir_xor_preset_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: qkv params" in capsys.readouterr().err


def test_missing_run_dir_is_one_line(tmp_path, capsys):
    assert main(["params", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("kind", ["gpt", "seq2seq", "dit"])
def test_parameter_groups_of_any_model_sum_to_its_parameters(kind):
    from qkv.evaluation.params import parameter_groups
    from qkv.models.dit import DiT, DiTConfig
    from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

    model = {"gpt": lambda: GPT(GPTConfig(vocab_size=40, max_seq_len=16, d_model=16, n_layers=3, n_heads=2)),
             "seq2seq": lambda: Seq2Seq(Seq2SeqConfig(vocab_size=30, max_seq_len=16, d_model=16, d_ff=32,
                                                      n_heads=2, n_encoder_layers=2, n_decoder_layers=3)),
             "dit": lambda: DiT(DiTConfig(image_size=8, in_channels=1, patch_size=2, d_model=16, n_layers=2,
                                          n_heads=2, conditioning="class", n_classes=10))}[kind]()
    rows, total = parameter_groups(model)
    assert total == sum(p.numel() for p in model.parameters()) == sum(r.count for r in rows)
    layered = [r for r in rows if "*" in r.name]  # the layers of a stack, folded into one row
    assert layered and all(r.count == r.copies * sum(math.prod(s) for s in r.shapes) for r in layered)
    if kind == "gpt":  # tied head: a row that counts 0 and says so
        head = next(r for r in rows if r.name == "lm_head")
        assert head.count == 0 and "tied to tok_emb" in head.note


def test_params_of_a_translation_run_by_module(tmp_path, capsys):
    from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig

    model = Seq2Seq(Seq2SeqConfig(vocab_size=30, max_seq_len=16, d_model=16, d_ff=32, n_heads=2,
                                  n_encoder_layers=2, n_decoder_layers=3))
    save_run(tmp_path / "run", model)
    got = params_json(capsys, str(tmp_path / "run"))
    assert got["model_type"] == "seq2seq" and got["total"] == sum(p.numel() for p in model.parameters())
    assert main(["params", str(tmp_path / "run")]) == 0
    table = capsys.readouterr().out
    assert "decoder.*.cross_attn.q_proj" in table and f"{got['total']:,}" in table
