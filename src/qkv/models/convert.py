"""Hugging Face GPT-2 checkpoints <-> qkv run directories.

GPT-2 and qkv's `GPT` are the same network (pre-norm blocks, learned positions, tied head); only the
names and the layout of the attention and MLP weights differ. HF GPT-2 uses ``Conv1D``, which stores
a weight as (in, out), the transpose of ``nn.Linear``'s (out, in), and packs Q, K and V in one matrix:

    HF GPT-2 (transformer.*)            shape        qkv GPT                      shape
    wte.weight                          (V, C)       tok_emb.weight               (V, C)
    wpe.weight                          (T, C)       pos_emb.weight               (T, C)
    h.i.ln_1.{weight,bias}              (C,)         blocks.i.norm1.*             (C,)
    h.i.attn.c_attn.weight              (C, 3C)  ᵀ→  attn.{q,k,v}_proj.weight     3 × (C, C)
    h.i.attn.c_attn.bias                (3C,)        attn.{q,k,v}_proj.bias       3 × (C,)
    h.i.attn.c_proj.weight              (C, C)   ᵀ→  attn.o_proj.weight           (C, C)
    h.i.ln_2.{weight,bias}              (C,)         blocks.i.norm2.*             (C,)
    h.i.mlp.c_fc.weight                 (C, F)   ᵀ→  mlp.up.weight                (F, C)
    h.i.mlp.c_proj.weight               (F, C)   ᵀ→  mlp.down.weight              (C, F)
    ln_f.{weight,bias}                  (C,)         norm_f.*                     (C,)
    lm_head.weight (absent when tied)   (V, C)       lm_head.weight               (V, C)

The import is strict in the style of nanoGPT's ``GPT.from_pretrained``: an explicit transpose list, the
key set compared with the one the config implies, every shape checked, and then `load_weights`
compares again against the model actually built. Older checkpoints carry the causal-mask buffers
``attn.bias``/``attn.masked_bias``; they are not weights and are dropped.

Weights are read from ``model.safetensors`` (or its sharded index), or from ``pytorch_model.bin``
through ``torch.load(weights_only=True)`` only: nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from qkv.config import from_dict
from qkv.errors import QKVError
from qkv.models.gpt import GPT, GPTConfig
from qkv.models.io import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    atomic_save_tensors,
    atomic_write_json,
    load_model,
    load_weights,
    save_run,
)
from qkv.runs import load_json

HF_CONFIG = "config.json"
HF_SAFETENSORS = "model.safetensors"
HF_SAFETENSORS_INDEX = "model.safetensors.index.json"
HF_PICKLE = "pytorch_model.bin"
GPT2_VOCAB, GPT2_MERGES = "vocab.json", "merges.txt"

# HF activation_function <-> ours. "gelu_new" is GPT-2's tanh approximation of GELU.
ACTIVATION_FROM_HF = {
    "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu",
}
ACTIVATION_TO_HF = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}

# Conv1D weights: stored (in, out), so they are transposed on the way in and on the way out.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")

# One block, HF suffix -> qkv suffix. c_attn is split into q/k/v separately (see _split_qkv).
BLOCK_KEYS = {
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "attn.c_proj.weight": "attn.o_proj.weight",
    "attn.c_proj.bias": "attn.o_proj.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.up.weight",
    "mlp.c_fc.bias": "mlp.up.bias",
    "mlp.c_proj.weight": "mlp.down.weight",
    "mlp.c_proj.bias": "mlp.down.bias",
}
TOP_KEYS = {
    "wte.weight": "tok_emb.weight",
    "wpe.weight": "pos_emb.weight",
    "ln_f.weight": "norm_f.weight",
    "ln_f.bias": "norm_f.bias",
}
# Buffers, not weights: the causal mask of older transformers versions.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


@dataclass
class ConversionResult:
    """What a conversion wrote: the files (in order), the parameter count and anything worth saying."""

    out_dir: Path
    files: list[Path]
    num_params: int
    tokenizer: bool  # whether a tokenizer was converted too
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ config
def gpt2_config_to_qkv(hf: dict) -> GPTConfig:
    """A Hugging Face GPT-2 ``config.json`` (as a dict) -> a validated `GPTConfig`.

    GPT-2 has three dropout rates (resid, embd, attn); qkv has one, which takes the largest of them.
    Settings qkv's GPT cannot express (cross-attention, unscaled or layer-scaled attention, other
    activations) are a `QKVError`, not a silently different model.
    """
    if hf.get("model_type") != "gpt2":
        raise QKVError(f"not a GPT-2 checkpoint: model_type is {hf.get('model_type')!r}, expected 'gpt2'")
    missing = [k for k in ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head") if k not in hf]
    if missing:
        raise QKVError(f"GPT-2 config.json lacks {', '.join(missing)}")
    unsupported = {
        "add_cross_attention": (False, "cross-attention"),
        "scale_attn_weights": (True, "attention without the 1/√d scale"),
        "scale_attn_by_inverse_layer_idx": (False, "attention scaled by 1/layer"),
    }
    for key, (supported, what) in unsupported.items():
        if hf.get(key, supported) != supported:
            raise QKVError(f"GPT-2 config sets {key}={hf[key]!r}: qkv's GPT has no {what}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ACTIVATION_FROM_HF:
        raise QKVError(f"activation_function {act!r} not supported; valid: {', '.join(ACTIVATION_FROM_HF)}")
    dropout = max(float(hf.get(k, 0.1)) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop"))
    return from_dict(GPTConfig, {
        "vocab_size": hf["vocab_size"],
        "max_seq_len": hf["n_positions"],
        "d_model": hf["n_embd"],
        "n_layers": hf["n_layer"],
        "n_heads": hf["n_head"],
        "d_ff": hf.get("n_inner"),  # None -> 4 · d_model, as in HF
        "dropout": dropout,
        "bias": True,  # Conv1D and LayerNorm always have biases
        "norm": "layernorm",
        "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
        "activation": ACTIVATION_FROM_HF[act],
        "pos_encoding": "learned",
        "tie_embeddings": hf.get("tie_word_embeddings", True),
    }, prefix="model.")


def qkv_to_gpt2_config(cfg: GPTConfig, bos_id: int | None = None, eos_id: int | None = None) -> dict:
    """A `GPTConfig` -> a complete HF GPT-2 ``config.json`` dict (QKVError if GPT-2 cannot express it)."""
    _check_exportable(cfg)
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.max_seq_len,
        "n_embd": cfg.d_model,
        "n_layer": cfg.n_layers,
        "n_head": cfg.n_heads,
        "n_inner": cfg.d_ff,
        "activation_function": ACTIVATION_TO_HF[cfg.activation],
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "add_cross_attention": False,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "summary_activation": None,
        "summary_proj_to_labels": True,
        "summary_first_dropout": 0.1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "dtype": "float32",
    }


def _check_exportable(cfg: GPTConfig) -> None:
    problems = []
    if cfg.norm != "layernorm":
        problems.append(f"norm={cfg.norm!r} (GPT-2 has LayerNorm)")
    if cfg.pos_encoding != "learned":
        problems.append(f"pos_encoding={cfg.pos_encoding!r} (GPT-2 has learned positions)")
    if cfg.n_heads * cfg.head_dim != cfg.d_model:
        problems.append(f"n_heads·d_head = {cfg.n_heads * cfg.head_dim} ≠ d_model {cfg.d_model}")
    if problems:
        raise QKVError(f"cannot export as GPT-2: {'; '.join(problems)}")


# ------------------------------------------------------------------------------------------ weights
def gpt2_shapes(cfg: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a GPT-2 checkpoint of this config holds (HF names, without ``transformer.``)."""
    C, F, V, T = cfg.d_model, cfg.ff_dim, cfg.vocab_size, cfg.max_seq_len
    block = {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, F), "mlp.c_fc.bias": (F,),
        "mlp.c_proj.weight": (F, C), "mlp.c_proj.bias": (C,),
    }  # fmt: skip
    shapes = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    for i in range(cfg.n_layers):
        shapes.update({f"h.{i}.{k}": s for k, s in block.items()})
    shapes.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    if not cfg.tie_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def gpt2_state_dict_to_qkv(
    hf_sd: dict[str, Tensor], cfg: GPTConfig, source: str = "GPT-2 checkpoint"
) -> dict[str, Tensor]:
    """HF GPT-2 tensors -> qkv `GPT` state dict for `cfg`, with every key and shape checked.

    Accepts keys with or without the ``transformer.`` prefix, with or without ``lm_head.weight`` when
    tied, and with the old ``attn.bias``/``attn.masked_bias`` buffers.
    """
    sd = {k.removeprefix("transformer."): v for k, v in hf_sd.items() if not k.endswith(IGNORED_SUFFIXES)}
    if cfg.tie_embeddings:
        head = sd.pop("lm_head.weight", None)  # a tied head is wte itself; HF may or may not save it
        if head is not None and tuple(head.shape) != (cfg.vocab_size, cfg.d_model):
            raise QKVError(
                f"{source}: tensor 'lm_head.weight' has shape {tuple(head.shape)}, "
                f"config expects {(cfg.vocab_size, cfg.d_model)}"
            )
    expected = gpt2_shapes(cfg)
    missing = [k for k in expected if k not in sd]
    if missing:
        raise QKVError(f"{source}: missing tensor {missing[0]!r} (expected shape {expected[missing[0]]})")
    extra = [k for k in sd if k not in expected]
    if extra:
        raise QKVError(f"{source}: unexpected tensor {extra[0]!r}, not in a GPT-2 of this config")
    assert len(sd) == len(expected)
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            got = tuple(sd[key].shape)
            raise QKVError(f"{source}: tensor {key!r} has shape {got}, config expects {shape}")

    out = {ours: sd[theirs] for theirs, ours in TOP_KEYS.items()}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for theirs, ours in BLOCK_KEYS.items():
            t = sd[h + theirs]
            out[b + ours] = t.t().contiguous() if theirs in TRANSPOSED else t  # (in, out) -> (out, in)
        w = sd[h + "attn.c_attn.weight"].t()  # (3C, C): rows are [W_q; W_k; W_v]
        q, k, v = w.split(cfg.d_model, dim=0)  # (C, C) each
        qb, kb, vb = sd[h + "attn.c_attn.bias"].split(cfg.d_model)  # (C,) each
        for name, weight, bias in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
            out[f"{b}attn.{name}_proj.weight"] = weight.contiguous()
            out[f"{b}attn.{name}_proj.bias"] = bias.contiguous()
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def qkv_to_gpt2_state_dict(model: GPT) -> dict[str, Tensor]:
    """A qkv `GPT` -> HF ``GPT2LMHeadModel`` tensors (``transformer.*`` names, Conv1D layout).

    A tied head is left out, as ``save_pretrained`` does. A model without biases (``bias=False``)
    exports zero biases, which computes the same function.
    """
    cfg = model.config
    _check_exportable(cfg)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    C = cfg.d_model

    def get(name: str, shape: tuple[int, ...]) -> Tensor:
        return sd[name] if name in sd else torch.zeros(shape)  # a missing bias or LayerNorm bias

    out = {theirs: get(ours, (C,)) for theirs, ours in TOP_KEYS.items()}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for theirs, ours in BLOCK_KEYS.items():
            t = get(b + ours, (cfg.ff_dim,) if ours == "mlp.up.bias" else (C,))
            out[h + theirs] = t.t() if theirs in TRANSPOSED else t  # (out, in) -> (in, out)
        out[h + "attn.c_attn.weight"] = torch.cat(
            [sd[f"{b}attn.{n}_proj.weight"] for n in "qkv"], dim=0
        ).t()  # (3C, C) -> (C, 3C)
        out[h + "attn.c_attn.bias"] = torch.cat([get(f"{b}attn.{n}_proj.bias", (C,)) for n in "qkv"])  # (3C,)
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = sd["lm_head.weight"]
    expected = gpt2_shapes(cfg)
    assert out.keys() == expected.keys(), sorted(set(out) ^ set(expected))
    for key, shape in expected.items():
        assert tuple(out[key].shape) == shape, (key, tuple(out[key].shape), shape)
    prefixed = {("" if k == "lm_head.weight" else "transformer.") + k: v for k, v in out.items()}
    return {k: v.contiguous().clone() for k, v in prefixed.items()}


def read_hf_weights(hf_dir: str | Path) -> tuple[dict[str, Tensor], Path]:
    """The tensors of a HF checkpoint folder and the file they came from (safetensors preferred)."""
    hf_dir = Path(hf_dir)
    try:
        if (hf_dir / HF_SAFETENSORS).is_file():
            return load_file(str(hf_dir / HF_SAFETENSORS)), hf_dir / HF_SAFETENSORS
        if (hf_dir / HF_SAFETENSORS_INDEX).is_file():
            index = load_json(hf_dir / HF_SAFETENSORS_INDEX)
            shards = sorted(set(index.get("weight_map", {}).values()))
            if not shards:
                raise QKVError(f"{hf_dir / HF_SAFETENSORS_INDEX}: no weight_map")
            tensors: dict[str, Tensor] = {}
            for shard in shards:
                tensors.update(load_file(str(hf_dir / shard)))
            return tensors, hf_dir / HF_SAFETENSORS_INDEX
    except (SafetensorError, OSError) as e:
        raise QKVError(f"{hf_dir}: cannot read safetensors weights ({e})") from None
    if (hf_dir / HF_PICKLE).is_file():
        path = hf_dir / HF_PICKLE
        try:  # weights_only: tensors and plain containers, never arbitrary objects
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as e:
            raise QKVError(f"{path}: cannot load as plain tensors ({str(e).splitlines()[0]})") from None
        if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
            raise QKVError(f"{path}: not a state dict of tensors")
        return sd, path
    raise QKVError(f"{hf_dir}: no {HF_SAFETENSORS}, {HF_SAFETENSORS_INDEX} or {HF_PICKLE}")


# ------------------------------------------------------------------------------------------ folders
def import_hf_gpt2(hf_dir: str | Path, out_run_dir: str | Path) -> ConversionResult:
    """A HF GPT-2 folder (config.json + weights [+ vocab.json, merges.txt]) -> a qkv run directory."""
    from qkv.tokenizers import BPETokenizer  # lazy: converting weights alone needs no tokenizer code

    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise QKVError(f"not a folder: {hf_dir}")
    if not (hf_dir / HF_CONFIG).is_file():
        raise QKVError(f"{hf_dir}: no {HF_CONFIG}, not a Hugging Face checkpoint folder")
    cfg = gpt2_config_to_qkv(load_json(hf_dir / HF_CONFIG))
    tensors, weights_path = read_hf_weights(hf_dir)
    sd = gpt2_state_dict_to_qkv(tensors, cfg, source=str(weights_path))
    model = GPT(cfg)
    load_weights(model, sd, source=str(weights_path))  # strict again, against the model itself

    notes, tokenizer = [], None
    vocab, merges = hf_dir / GPT2_VOCAB, hf_dir / GPT2_MERGES
    if vocab.is_file() and merges.is_file():
        tokenizer = BPETokenizer.from_gpt2_files(vocab, merges)
        if tokenizer.vocab_size > cfg.vocab_size:
            raise QKVError(
                f"{hf_dir}: tokenizer has {tokenizer.vocab_size} tokens, the model only {cfg.vocab_size}"
            )
        if tokenizer.vocab_size < cfg.vocab_size:
            notes.append(f"the model has {cfg.vocab_size:,} vocabulary rows, the tokenizer {tokenizer.vocab_size:,} "
                         f"tokens: generation never emits the {cfg.vocab_size - tokenizer.vocab_size:,} extra ids")
    else:
        notes.append(f"no {GPT2_VOCAB} + {GPT2_MERGES} in {hf_dir}: converted the model without a tokenizer")

    out = save_run(out_run_dir, model, tokenizer,
                   extra_config={"converted_from": {"format": "hf-gpt2", "path": str(hf_dir)}})
    files = [out / WEIGHTS_FILE] + ([out / TOKENIZER_FILE] if tokenizer else []) + [out / CONFIG_FILE]
    return ConversionResult(out, files, model.num_params(), tokenizer is not None, notes)


def export_hf_gpt2(run_dir: str | Path, out_dir: str | Path) -> ConversionResult:
    """A qkv GPT run -> a folder ``GPT2LMHeadModel.from_pretrained`` loads (+ GPT-2 tokenizer files)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, run_cfg = load_model(run_dir)
    if run_cfg["model_type"] != "gpt":
        raise QKVError(f"{run_dir}: only GPT runs export to GPT-2, this is {run_cfg['model_type']!r}")
    tensors = qkv_to_gpt2_state_dict(model)

    notes, tokenizer = [], None
    tok_path = run_dir / TOKENIZER_FILE
    if tok_path.is_file():
        kind = load_json(tok_path).get("kind")
        if kind == "bpe":
            from qkv.tokenizers import load_tokenizer  # lazy, as in import_hf_gpt2

            tokenizer = load_tokenizer(tok_path)
        else:
            notes.append(f"the run's tokenizer is {kind!r}, not byte-level BPE: no tokenizer files written")
    else:
        notes.append(f"{run_dir} has no {TOKENIZER_FILE}: no tokenizer files written")
    bos, eos = (tokenizer.bos_id, tokenizer.eos_id) if tokenizer else (None, None)

    files = [out_dir / HF_SAFETENSORS, out_dir / HF_CONFIG]
    atomic_save_tensors(files[0], tensors, metadata={"format": "pt"})  # transformers expects format=pt
    atomic_write_json(files[1], qkv_to_gpt2_config(model.config, bos, eos))
    if tokenizer is not None:
        files += list(tokenizer.to_gpt2_files(out_dir))
    return ConversionResult(out_dir, files, model.num_params(), tokenizer is not None, notes)

