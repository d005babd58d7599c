"""`qkv explain encoder-states`: the memory and the cross-attention K/V are the real decoder's, and nothing stays."""

import copy
import json

import pytest
import torch

from qkv.cli.main import main
from qkv.data.translation import source_ids
from qkv.errors import QKVError
from qkv.explain import explain
from qkv.nn.attention import LayerKVCache

SRC = "die drei eins ."


def test_memory_and_cross_kv_shapes_bytes_and_checks(runs):
    run = runs["translate"]
    cfg = run.model.config
    e = explain("encoder-states", run, src=SRC)
    (ids,), _ = source_ids(run.src_tokenizer, [SRC], cfg.max_seq_len)
    S = len(ids)
    assert e.data["ids"] == ids
    assert e.data["memory_shape"] == [1, S, cfg.d_model]
    assert e.data["memory_bytes"] == S * cfg.d_model * 4
    assert e.data["cross_kv_shape"] == [1, cfg.n_heads, S, cfg.head_dim]
    assert e.data["cross_kv_bytes"] == cfg.n_decoder_layers * 2 * S * cfg.n_heads * cfg.head_dim * 4
    assert e.data["translation"] == run.translate([SRC], run.decoding(beam=1))[0][0]
    assert len(e.checks) == 1 + cfg.n_decoder_layers + 2
    assert all(c.ok for c in e.checks), e.format_text()
    assert e.checks[-1].max_abs_diff == 0.0 and e.checks[-1].tolerance == 0.0  # bit for bit
    assert e.data["caches_alive_after"] == 0
    assert e.data["model_tensors_before"] == e.data["model_tensors_after"] > 0
    steps_row = next(b for b in e.blocks if b.kind == "table").rows[0]
    assert steps_row[3] == e.data["decode_steps"] - 1  # every step after the first reused the stored K/V


def test_a_cache_that_holds_something_else_is_caught(runs, monkeypatch):
    real = LayerKVCache.set_static
    monkeypatch.setattr(LayerKVCache, "set_static", lambda self, k, v: real(self, k + 1e-3, v))
    e = explain("encoder-states", runs["translate"], src=SRC)
    layers = [c for c in e.checks if "decode cache" in c.what]
    assert layers and not any(c.ok for c in layers)


@pytest.mark.parametrize("keep", ["attribute", "weight"])
def test_a_model_that_keeps_something_is_caught(runs, monkeypatch, keep):
    run = copy.copy(runs["translate"])
    run.model = copy.deepcopy(run.model)
    import qkv.generation.seq2seq as decoding

    real = decoding.decode_batch

    def translate_and_remember(model, *args, **kwargs):
        out = real(model, *args, **kwargs)
        if keep == "attribute":
            model.last_source = torch.zeros(3)  # a model that remembered the sentence
        else:
            model.decoder[0].cross_attn.k_proj.weight.add_(1e-3)  # a model that learned while translating
        return out

    monkeypatch.setattr(decoding, "decode_batch", translate_and_remember)
    e = explain("encoder-states", run, src=SRC)
    count, bits = e.checks[-2:]
    assert (count.ok, bits.ok) == ((False, True) if keep == "attribute" else (True, False))


def test_the_default_source_and_other_kinds(runs):
    e = explain("encoder-states", runs["translate"])
    assert e.data["source"] == "Ein Mann fährt Fahrrad." and all(c.ok for c in e.checks)
    for name in ("lm", "digits"):
        with pytest.raises(QKVError) as err:
            explain("encoder-states", runs[name])
        assert "\n" not in str(err.value) and "needs a run that turns a source into text" in str(err.value)


def test_json_and_text_agree_and_png(tiny_runs, capsys, tmp_path):
    args = ["explain", "encoder-states", str(tiny_runs["translate"]), "--src", SRC]
    assert main([*args, "--json", "--png", str(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out
    d = data["data"]
    assert f"{d['memory_bytes']:,} bytes" in text and f"{d['cross_kv_bytes']:,} bytes" in text
    assert repr(d["translation"]) in text
    printed = [float(line.split("max |difference| ")[1].split()[0]) for line in text.splitlines()
               if line.startswith("check:")]
    assert [c["max_abs_diff"] for c in data["blocks"] if c["kind"] == "check"] == pytest.approx(printed, abs=1e-6)
    png = tmp_path / "encoder-states-memory.png"
    assert data["pngs"] == [str(png)] and png.stat().st_size > 0
