"""What every decoding command runs on: the decode-layout copy of a trained model (checked against the
model it was made from; fused Q/K/V; the compiled decode step and its eager fallback; int8 and bf16 weights),
and models with more vocabulary rows than their tokenizer has tokens (GPT-2's padded 50,304, a converted
checkpoint): generation, chat and translation never produce such an id."""

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

from qkv import hardware
from qkv.data.chat_template import add_chat_tokens, render
from qkv.errors import QKVError
from qkv.generation.chat import ChatSession, reply_stream
from qkv.generation.compiled import CompiledDecodeStep, compile_decode_step
from qkv.generation.inference import TransposedLinear, for_decoding, fuse_qkv, prepare_for_decoding
from qkv.generation.lm import generate_ids, generate_text
from qkv.generation.sampling import TokenSampling
from qkv.generation.seq2seq import SequenceDecoding, translate_lines
from qkv.models import GPT, GPTConfig
from qkv.models.seq2seq import Seq2Seq, Seq2SeqConfig
from qkv.nn.attention import LayerKVCache, MultiHeadAttention
from qkv.nn.positional import rope_angles
from qkv.tokenizers import train_bpe, train_char


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("tie", [True, False])
def test_decoding_copy_computes_the_trained_model(bias, tie):
    """`for_decoding` (the copy `qkv generate` and `qkv chat` decode with) equals the model it was made
    from, with biases (converted GPT-2 weights) and without, tied head or not; the model is untouched."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, bias=bias,
                      tie_embeddings=tie)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)  # non-zero biases too, or the bias branch would add zeros
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = for_decoding(m)
    # per layer: the fused qkv, its q k v views, o, up, down; and the head
    assert sum(isinstance(x, TransposedLinear) for x in fast.modules()) == 2 * 7 + 1
    assert all(isinstance(x, torch.nn.Linear) for x in (m.lm_head, m.blocks[0].attn.q_proj))
    assert not any(p.requires_grad for p in fast.parameters())
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(fast(x)[0], m(x)[0], atol=1e-5, rtol=1e-5)
        cache = fast.new_cache(2)
        steps = torch.cat([fast(x[:, i : i + 1], cache=cache)[0] for i in range(16)], dim=1)  # (2, 16, V)
        torch.testing.assert_close(steps, m(x)[0], atol=1e-5, rtol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert (m.lm_head.weight is m.tok_emb.weight) == tie


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_prepare_for_decoding_picks_the_layout():
    m = GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    assert isinstance(prepare_for_decoding(m).lm_head, TransposedLinear)
    assert not isinstance(prepare_for_decoding(m, "int8").lm_head, (TransposedLinear, torch.nn.Linear))


# ---------------------------------------------------------------------------------------------------------
# fused Q/K/V


def lively(m: torch.nn.Module) -> torch.nn.Module:
    """Every parameter drawn from N(0, 0.2), biases and norm gains included, so that no branch adds zeros."""
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    return m


def count_calls(module: torch.nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("rope", [False, True])
def test_fused_attention_equals_unfused(qk_norm, rope):
    """One MultiHeadAttention, before and after `fuse_qkv`: the same output with qk_norm (q and k normalised
    after the projection, before RoPE) and value_extra (added to v before the heads split), over a KV cache
    filled in two calls; the fused product replaces the three, and a cross-attention call on the fused module
    (a context given) still computes k and v from the context."""
    torch.manual_seed(0)
    ref = lively(MultiHeadAttention(32, 4, qk_norm=qk_norm)).eval()
    fused = copy.deepcopy(ref)
    fuse_qkv(fused)
    x, extra = torch.randn(2, 7, 32), torch.randn(2, 7, 32)  # (B, T, C), (B, T, H·D)
    ctx = torch.randn(2, 5, 32)  # (B, S, C)
    angles = rope_angles(torch.arange(7), 8) if rope else None
    fused_calls, q_calls = count_calls(fused.qkv_proj), count_calls(fused.q_proj)
    with torch.no_grad():
        want = ref(x, causal=True, rope=angles, value_extra=extra)[0]  # (2, 7, 32)
        caches = [LayerKVCache.empty(2, 4, 7, 8) for _ in range(2)]
        parts = []
        for lo, hi in ((0, 4), (4, 7)):
            r = None if angles is None else (angles[0][lo:hi], angles[1][lo:hi])
            parts.append(fused(x[:, lo:hi], causal=True, rope=r, cache=caches[0], value_extra=extra[:, lo:hi])[0])
        torch.testing.assert_close(fused(x, causal=True, rope=angles, value_extra=extra)[0], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat(parts, dim=1), want, atol=1e-5, rtol=0)
        assert (len(fused_calls), len(q_calls)) == (3, 0)
        torch.testing.assert_close(fused(x, ctx)[0], ref(x, ctx)[0], atol=1e-5, rtol=0)  # cross-attention
        assert (len(fused_calls), len(q_calls)) == (3, 1)
    w, b = ref.qkv_weight()
    assert w.shape == (96, 32) and b.shape == (96,)
    assert fused.q_proj.weight_t.data_ptr() == fused.qkv_proj.weight_t.data_ptr()  # views: stored once


@pytest.mark.parametrize("options", [{}, {"qk_norm": True, "value_embeddings": True, "pos_encoding": "rope"},
                                     {"bias": False, "n_heads": 2, "d_head": 12}])
def test_fused_gpt_equals_unfused_and_cached_equals_uncached(options):
    """The decode copy with fused Q/K/V (the default) equals the one with three products, full forward, to 1e-5;
    decoding it token by token through the KV cache equals the training model's full forward; greedy decoding
    with and without the cache gives the same tokens (within the context: past it the cached window slides by
    half a context, the uncached one by a token). With qk_norm, value embeddings and RoPE too."""
    torch.manual_seed(0)
    m = lively(GPT(GPTConfig(**{"vocab_size": 40, "max_seq_len": 16, "d_model": 32, "n_layers": 2, "n_heads": 4}
                             | options))).eval()
    fused, unfused = for_decoding(m), for_decoding(m, fuse=False)
    assert all(b.attn.qkv_proj is not None for b in fused.blocks)
    assert all(b.attn.qkv_proj is None for b in (*unfused.blocks, *m.blocks))
    x = torch.randint(0, 40, (2, 16))
    with torch.no_grad():
        want = m(x)[0]  # (2, 16, V)
        torch.testing.assert_close(fused(x)[0], unfused(x)[0], atol=1e-5, rtol=0)
        cache = fused.new_cache(2)
        steps = torch.cat([fused(x[:, i : i + 1], cache=cache)[0] for i in range(16)], dim=1)  # (2, 16, V)
        torch.testing.assert_close(steps, want, atol=1e-5, rtol=1e-5)
    greedy = TokenSampling(temperature=0.0)
    cached = list(generate_ids(fused, [1, 2, 3], 13, greedy))  # up to the 16-token context (then they slide apart)
    assert cached == list(generate_ids(fused, [1, 2, 3], 13, greedy, use_cache=False))


def test_cross_attention_with_another_width_is_left_unfused():
    """A cross-attention whose context is wider than the model (DiT's text conditioning) has no [W_Q; W_K; W_V]
    to stack: `qkv_weight` says why, and `for_decoding` leaves it with its three products."""
    attn = MultiHeadAttention(16, 2, d_context=24)
    with pytest.raises(ValueError, match="context width 24 is not the model width 16"):
        attn.qkv_weight()
    assert for_decoding(attn).qkv_proj is None


# ---------------------------------------------------------------------------------------------------------
# the compiled decode step


def test_compiled_step_runs_the_one_token_steps_only(monkeypatch):
    """`CompiledDecodeStep` sends one-token cached steps to the compiled function and everything else (the
    prompt, a one-token prompt, the step that fills the cache, uncached calls) to the eager model; the tokens
    are the eager model's. torch.compile is replaced by a counting pass-through (compiling for real: the next
    test)."""
    steps = []

    def fake_compile(fn, **kwargs):
        assert kwargs == {"dynamic": True}

        def counted(idx, **kw):
            steps.append((idx.size(1), kw["cache"].length))
            return fn(idx, **kw)
        return counted

    monkeypatch.setattr(torch, "compile", fake_compile)
    m = lively(GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2))).eval()
    fast = for_decoding(m)
    step = compile_decode_step(fast)
    assert isinstance(step, CompiledDecodeStep) and steps == [(1, 1), (1, 2)]  # the trial: lengths 1 and 2
    steps.clear()
    greedy = TokenSampling(temperature=0.0)
    assert list(generate_ids(step, [3], 10, greedy)) == list(generate_ids(fast, [3], 10, greedy))
    # compiled: cache lengths 1..6, then 4 and 5 after the window slid (8 full -> the last 4 tokens, eager);
    # eager: the prompt at 0, the step at 7 that fills the 8th position, the slide's 4-token prefill
    assert steps == [(1, n) for n in range(1, 7)] + [(1, 4), (1, 5)]
    steps.clear()
    assert list(generate_ids(step, [3], 6, greedy, use_cache=False)) == list(generate_ids(fast, [3], 6, greedy))
    assert steps == []


@pytest.mark.parametrize("where", ["torch.compile", "first call"])
def test_compile_falls_back_to_eager_with_one_line(monkeypatch, where):
    """When compiling fails — in torch.compile itself, or (as usual) on the first call — the decoder is the
    eager model, after one line saying why; the tokens are the eager model's."""
    def broken(fn, **kwargs):
        if where == "torch.compile":
            raise RuntimeError("no C++ compiler found\nmore detail")

        def first_call(*args, **kw):
            raise AssertionError("inductor lowering failed")
        return first_call

    monkeypatch.setattr(torch, "compile", broken)
    m = lively(GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2))).eval()
    fast = for_decoding(m)
    lines = []
    out = compile_decode_step(fast, log=lines.append)
    assert out is fast
    why = "RuntimeError: no C++ compiler found" if where == "torch.compile" else "AssertionError: inductor lowering"
    assert len(lines) == 1 and why in lines[0] and lines[0].endswith("decoding eager") and "\n" not in lines[0]
    greedy = TokenSampling(temperature=0.0)
    assert list(generate_ids(out, [3], 10, greedy)) == list(generate_ids(fast, [3], 10, greedy))


def test_generate_compile_flag_falls_back_through_the_cli(monkeypatch, capsys, lm_run):
    """`qkv generate --compile` where compiling fails: the eager model's text, and the one line on stderr."""
    from qkv.cli.main import main

    monkeypatch.setattr(torch, "compile", lambda fn, **kw: (_ for _ in ()).throw(RuntimeError("backend missing")))
    args = ["generate", str(lm_run), "--prompt", "<", "--max-new-tokens", "12", "--temperature", "0"]
    assert main(args) == 0
    eager = capsys.readouterr().out
    assert main([*args, "--compile"]) == 0
    out, err = capsys.readouterr()
    assert out == eager
    assert "torch.compile failed (RuntimeError: backend missing); decoding eager" in err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit, inside inductor
def test_compiled_decode_step_for_real_generates_the_eager_tokens():
    """torch.compile for real (~15 s on 2 cores, compiling cold): one graph serves every cache length (no
    recompiles over a generation whose window slides four times), and greedy decoding gives the eager tokens."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    fast = for_decoding(m)
    counters.clear()
    step = compile_decode_step(fast)
    assert isinstance(step, CompiledDecodeStep)
    greedy = TokenSampling(temperature=0.0)
    assert list(generate_ids(step, [1, 2], 20, greedy)) == list(generate_ids(fast, [1, 2], 20, greedy))
    assert counters["stats"]["unique_graphs"] == 1


# ---------------------------------------------------------------------------------------------------------
# int8 and bf16 weights


def test_bf16_is_refused_on_a_cpu_without_bf16_units(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda cpuinfo="/proc/cpuinfo": [])
    m = GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    with pytest.raises(QKVError, match=r"needs a CPU with bf16 units \(AMX-BF16 or AVX512-BF16\); this one .* none"):
        prepare_for_decoding(m, "bf16")
    with pytest.raises(QKVError, match="unknown quantize 'fp8'; choose one of int8, bf16"):
        prepare_for_decoding(m, "fp8")


def test_bf16_refusal_through_the_cli_is_one_line(monkeypatch, capsys, lm_run):
    from qkv.cli.main import main

    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda cpuinfo="/proc/cpuinfo": [])
    assert main(["generate", str(lm_run), "--quantize", "bf16", "--max-new-tokens", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("qkv generate: error: quantize = 'bf16' needs a CPU with bf16 units")


def test_bf16_weights_where_the_cpu_has_bf16_units(monkeypatch):
    """With bf16 units (claimed here; computed by emulation on a CPU without them): every weight and the KV cache
    in bf16, Q/K/V fused; logits close to fp32 (cosine > 0.999), and cached decoding follows the full bf16
    forward. Measured on this tiny model: cosine vs fp32 ≈ 0.99998."""
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda cpuinfo="/proc/cpuinfo": ["AMX-BF16"])
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=40, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)).eval()
    b = prepare_for_decoding(m, "bf16")
    assert {p.dtype for p in b.parameters()} == {torch.bfloat16} and b.blocks[0].attn.qkv_proj is not None
    assert m.tok_emb.weight.dtype == torch.float32  # the model is untouched
    x = torch.randint(0, 40, (1, 16))
    with torch.no_grad():
        ref, full = m(x)[0], b(x)[0].float()  # (1, 16, V)
        cache = b.new_cache(1)
        steps = torch.cat([b(x[:, i : i + 1], cache=cache)[0] for i in range(16)], dim=1).float()  # (1, 16, V)
    assert cache.layers[0].k.dtype == torch.bfloat16
    cos = F.cosine_similarity(full.flatten(), ref.flatten(), dim=0).item()
    assert cos > 0.999, f"cosine similarity of bf16 and fp32 logits: {cos:.5f}"
    assert not torch.equal(full, ref)  # it really is bf16
    torch.testing.assert_close(steps, full, atol=0.05, rtol=0.05)


def test_int8_still_decodes_without_deprecation_noise(monkeypatch):
    """`--quantize int8` stays on torch.ao's dynamic quantization (docs/design.md): it decodes, the deprecation
    warnings qkv chose to live with are not shown, and a torch without quantize_dynamic is a one-line error."""
    m = GPT(GPTConfig(vocab_size=20, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        q = prepare_for_decoding(m, "int8")
    assert type(q.lm_head).__module__.startswith("torch.ao.nn.quantized")
    assert len(list(generate_ids(q, [1, 2], 12, TokenSampling(temperature=0.0)))) == 12
    import torch.ao.quantization

    monkeypatch.delattr(torch.ao.quantization, "quantize_dynamic")
    with pytest.raises(QKVError, match=r"needs torch.ao.quantization.quantize_dynamic, which torch \S+ no longer has"):
        prepare_for_decoding(m, "int8")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A tiny trained char GPT run (tests/serve_fixtures.py; a few seconds, once for this file)."""
    from serve_fixtures import make_runs

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return make_runs(tmp_path_factory.mktemp("lm"), ("lm",))["lm"]
    finally:
        torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------------
# models with more rows than the tokenizer has tokens


def favour_extra_rows(model, norm, n_real: int) -> None:
    """Make the ids ≥ n_real the likeliest next tokens everywhere: the final norm's bias shifts every hidden
    state towards the all-ones direction, and the (untied) head's extra rows point there."""
    with torch.no_grad():
        norm.bias.fill_(1.0)
        model.lm_head.weight[n_real:] = 1.0


def test_generation_never_emits_an_id_the_tokenizer_lacks():
    tok = train_char("abcdefgh")  # 8 ids; the model has 12 rows
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=12, max_seq_len=16, d_model=16, n_layers=1, n_heads=2,
                          tie_embeddings=False)).eval()
    favour_extra_rows(model, model.norm_f, tok.vocab_size)
    with torch.no_grad():
        logits = model(torch.tensor([tok.encode("abc")]))[0][0, -1]
    assert int(logits.argmax()) >= tok.vocab_size  # unmasked, greedy would pick an extra row
    for sampling in (TokenSampling(temperature=0.0), TokenSampling(temperature=1.0)):
        ids = list(generate_ids(model, tok.encode("abc"), 30, sampling, vocab_size=tok.vocab_size,
                                generator=torch.Generator().manual_seed(0)))
        assert all(i < tok.vocab_size for i in ids)
        out = generate_text(model, tok, "abc", 30, sampling, seed=0)  # decoding an extra id raised before
        assert len(out) == 30 and set(out) <= set("abcdefgh")


def test_chat_never_emits_an_id_the_tokenizer_lacks():
    tok = train_char("abcdefgh ?")
    add_chat_tokens(tok)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size + 5, max_seq_len=64, d_model=16, n_layers=1, n_heads=2,
                          tie_embeddings=False)).eval()
    favour_extra_rows(model, model.norm_f, tok.vocab_size)
    with torch.no_grad():
        model.lm_head.weight[tok.encode("b")[0]] = 0.5  # the best real token, after the extra rows
    ids, _ = render([{"role": "user", "content": "abc?"}], tok, add_generation_prompt=True)
    reply = "".join(reply_stream(model, tok, ids, 20, TokenSampling(temperature=0.0)).texts())
    assert reply == "b" * 20
    session = ChatSession(model, tok, TokenSampling(temperature=1.0), 20, seed=3)
    assert set("".join(session.reply("abc?"))) <= set("abcdefgh ?")


@pytest.mark.parametrize("beam", [1, 3])
def test_translation_never_emits_an_id_the_target_tokenizer_lacks(beam):
    tok = train_bpe(["ein mann", "a man", "zwei hunde", "two dogs"] * 5, vocab_size=270)
    torch.manual_seed(0)
    model = Seq2Seq(Seq2SeqConfig(vocab_size=tok.vocab_size + 6, max_seq_len=16, d_model=16, n_encoder_layers=1,
                                  n_decoder_layers=1, n_heads=2, dropout=0.0, tie_embeddings=False,
                                  pad_id=tok.pad_id)).eval()
    favour_extra_rows(model, model.dec_norm, tok.vocab_size)
    out, _ = translate_lines(model, tok, tok, ["ein mann", "zwei hunde"], SequenceDecoding(beam=beam, max_len_b=5))
    assert len(out) == 2 and all(o for o in out)  # decoding an extra id raised before
