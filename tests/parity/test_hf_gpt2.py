"""qkv GPT vs transformers' GPT2LMHeadModel through `qkv convert` (tiny random models, no downloads).

litgpt's ``test_against_hf_*`` pattern: build a small random reference, convert it with the production
code, compare logits (``assert_close``) and greedy continuations (minGPT's HF import test), then export
back and let ``GPT2LMHeadModel.from_pretrained`` load the result.
"""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel

from qkv.cli.main import main
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.io import load_model, save_run
from qkv.tokenizers.base import load_tokenizer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Attention is all you need, said the transformer to the recurrent network.",
    "Byte-level BPE never meets an unknown character: ünïcödé, 日本語, emoji 🙂.",
    "the the the and and of of to to in in",
]
PROMPT = "The lazy fox said:"


def write_gpt2_tokenizer(folder) -> ByteLevelBPETokenizer:
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(
        SENTENCES * 4, vocab_size=300, min_frequency=2, special_tokens=["<|endoftext|>"], show_progress=False
    )
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(folder))  # vocab.json + merges.txt, GPT-2 format
    return tok


def write_hf_gpt2(folder, tie: bool = True) -> tuple[GPT2LMHeadModel, ByteLevelBPETokenizer]:
    torch.manual_seed(0)
    tok = write_gpt2_tokenizer(folder)
    eot = tok.token_to_id("<|endoftext|>")
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=tok.get_vocab_size() + 3,
        bos_token_id=eot, eos_token_id=eot, tie_word_embeddings=tie,
    )
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(str(folder))  # model.safetensors
    return hf, tok


def load_hf(folder) -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(str(folder), attn_implementation="eager").eval()


def greedy(logits_of, idx: torch.Tensor, n: int = 20) -> torch.Tensor:
    """Append the argmax token n times, recomputing the whole sequence each step (no cache)."""
    for _ in range(n):
        next_id = logits_of(idx)[:, -1].argmax(dim=-1, keepdim=True)  # (B, 1)
        idx = torch.cat([idx, next_id], dim=1)  # (B, T + 1)
    return idx


def convert(capsys, *argv) -> list[str]:
    capsys.readouterr()
    assert main(["convert", *argv]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_import_export_round_trip(tmp_path, capsys, tie):
    hf, hf_tok = write_hf_gpt2(tmp_path / "hf", tie)

    # HF -> qkv
    out = convert(capsys, "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run"))
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert any(line.startswith("wrote ") and name in line for line in out)
    n_params = sum(p.numel() for p in hf.parameters())
    assert f"parameters: {n_params:,}" in out
    model, _ = load_model(tmp_path / "run")
    assert model.num_params() == n_params

    tok = load_tokenizer(tmp_path / "run" / "tokenizer.json")
    prompt_ids = tok.encode(PROMPT)
    assert prompt_ids == hf_tok.encode(PROMPT).ids  # the converted tokenizer gives GPT-2's ids
    idx = torch.tensor([prompt_ids])  # (1, T)
    batch = torch.randint(0, hf.config.vocab_size, (3, 64))  # (B, T) full context
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[0], hf(batch).logits, atol=1e-5, rtol=1e-5)
        ours = greedy(lambda x: model(x)[0], idx)
        theirs = greedy(lambda x: hf(x).logits, idx)
    assert ours.tolist() == theirs.tolist()

    # qkv -> HF
    out = convert(capsys, "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "export"))
    for name in ("model.safetensors", "config.json", "vocab.json", "merges.txt"):
        assert any(line.startswith("wrote ") and name in line for line in out)
    back = load_hf(tmp_path / "export")
    assert back.config.tie_word_embeddings is tie
    with torch.no_grad():
        torch.testing.assert_close(back(batch).logits, hf(batch).logits, atol=1e-5, rtol=1e-5)
    original = hf.state_dict()
    for key, t in back.state_dict().items():  # bit-identical tensors, not just close logits
        assert torch.equal(t, original[key]), key
    exported_tok = ByteLevelBPETokenizer.from_file(
        str(tmp_path / "export" / "vocab.json"), str(tmp_path / "export" / "merges.txt")
    )
    assert exported_tok.encode(PROMPT).ids == prompt_ids


def test_pickle_checkpoint_with_mask_buffers_and_no_tokenizer(tmp_path, capsys):
    """pytorch_model.bin (read with weights_only=True), an explicit tied lm_head.weight and the old
    attn.bias / attn.masked_bias buffers are all accepted; without vocab.json the model still converts."""
    hf, _ = write_hf_gpt2(tmp_path / "hf")
    sd = dict(hf.state_dict())
    assert "lm_head.weight" in sd
    for i in range(hf.config.n_layer):
        sd[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64, dtype=torch.bool))[None, None]
        sd[f"transformer.h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(tmp_path / "hf" / "config.json", legacy / "config.json")
    torch.save(sd, legacy / "pytorch_model.bin")

    out = convert(capsys, "--from-hf", str(legacy), "--out", str(tmp_path / "run"))
    assert any("without a tokenizer" in line for line in out)
    assert not (tmp_path / "run" / "tokenizer.json").exists()
    model, _ = load_model(tmp_path / "run")
    batch = torch.randint(0, hf.config.vocab_size, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(model(batch)[0], hf(batch).logits, atol=1e-5, rtol=1e-5)


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()  # drop what building the fixture printed (save_pretrained's progress bar)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_folder_without_config(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    err = one_line_error(capsys, ["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "config.json" in err


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"model_type": "llama"}, "model_type"),
        ({"add_cross_attention": True}, "cross-attention"),
        ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
        ({"activation_function": "swish"}, "activation_function"),
        ({"n_head": 3}, "divisible"),
    ],
)
def test_unsupported_config(tmp_path, capsys, change, expected):
    write_hf_gpt2(tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **change}))
    err = one_line_error(capsys, ["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert expected in err
    assert not (tmp_path / "r").exists()


def test_shape_disagreeing_with_config_names_key_and_shapes(tmp_path, capsys):
    write_hf_gpt2(tmp_path / "hf")
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert tuple(tensors["transformer.wpe.weight"].shape) == (64, 32)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "n_positions": 48}))
    err = one_line_error(capsys, ["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "'wpe.weight'" in err and "(64, 32)" in err and "(48, 32)" in err


def test_refuses_to_overwrite_without_force(tmp_path, capsys):
    write_hf_gpt2(tmp_path / "hf")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "keep.txt").write_text("mine")
    err = one_line_error(capsys, ["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r")])
    assert "--force" in err
    convert(capsys, "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "r"), "--force")
    assert (tmp_path / "r" / "keep.txt").read_text() == "mine"


def test_export_qkv_trained_model_without_biases(tmp_path, capsys):
    """A model born in qkv (no biases, exact GELU, untied head, no tokenizer) exports to the same function."""
    cfg = GPTConfig(vocab_size=50, max_seq_len=32, d_model=24, n_layers=2, n_heads=3, d_ff=40, bias=False,
                    activation="gelu", tie_embeddings=False, norm_eps=1e-6)
    model = GPT(cfg).eval()
    save_run(tmp_path / "run", model)
    out = convert(capsys, "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "export"))
    assert any("no tokenizer files" in line for line in out)
    hf = load_hf(tmp_path / "export")
    batch = torch.randint(0, 50, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(batch).logits, model(batch)[0], atol=1e-5, rtol=1e-5)


def test_export_refuses_what_gpt2_cannot_express(tmp_path, capsys):
    cfg = GPTConfig(vocab_size=50, max_seq_len=32, d_model=24, n_layers=1, n_heads=3, pos_encoding="rope")
    save_run(tmp_path / "run", GPT(cfg))
    err = one_line_error(capsys, ["convert", "--to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "x")])
    assert "pos_encoding='rope'" in err
