"""Topic `encoder-states`: what the encoder leaves for the decoder, and that it is gone after the source.

The encoder reads the whole source once and returns one vector per source token, the *memory* (1, S, d).
Each decoder layer turns that memory into its cross-attention keys and values ONCE, on the first decoding
step (`Seq2SeqCache`: `LayerKVCache.set_static`), and every later step reuses them. This topic turns one
source (a sentence, an image) into text with the run's real greedy decoder, catches the cross-attention caches
it builds (a forward hook on each decoder layer's `cross_attn`), recomputes them as k_proj(memory),
v_proj(memory) split into heads, and then shows that nothing of the source stayed behind: the cache was freed
when decoding returned, and every parameter and buffer of the model is bit-for-bit what it was before.
"""

from __future__ import annotations

import gc
import weakref

import torch

from qkv.explain.base import WINDOW, Explanation, Options, no_grad
from qkv.explain.inputs import describe_source, source_of

LESSON = ("The encoder reads the whole source once (a sentence's tokens, an image's patches) and hands the decoder "
          "one vector per source position: the encoder states, or memory. Each decoder layer projects that memory "
          "into its cross-attention keys and values on the first decoding step and reuses them for every target "
          "token after it. They belong to this one source: they live in the decoding call's cache and are thrown "
          "away when the output is written. Training changed the weights; decoding changes nothing in the model.")

DIMS = 32  # model dimensions drawn in the heatmap


@no_grad
def explain_encoder_states(run, opts: Options) -> Explanation:
    from qkv.generation.seq2seq import decode_batch

    model, tgt_tok = run.model, run.target_tokenizer
    cfg = model.config
    source = source_of(run, opts)
    e = Explanation("encoder-states", "the encoder's outputs, their cross-attention K/V, then dropped",
                    run.path.name)
    e.say(LESSON)

    # 1. the encoder's outputs for this source
    batch = run.source_batch([source])  # (1, S) ids + EOS, or (1, ...) an image; the memory mask (1, S)
    if batch.cut:
        e.say(f"(the source is longer than the context: cut to {cfg.max_seq_len - 1} tokens + EOS)")
    labels = batch.labels[0]
    src, src_mask = batch.src, batch.src_mask
    before = _model_tensors(model)
    memory = model.encode(src, src_mask)  # (1, S, d)
    S = memory.size(1)
    mem_bytes = memory.numel() * memory.element_size()
    e.say(f"source: {describe_source(run, source)} -> {S} memory positions")
    e.tensor("memory = encoder(source)", memory, f"one {cfg.d_model}-vector per source position; "
             f"{memory.numel():,} numbers × {memory.element_size()} bytes = {mem_bytes:,} bytes", rows=labels)

    # 2. the real decoder runs, and a hook on every cross_attn catches the cache it fills
    caught = [_CrossCache(i, blk.cross_attn) for i, blk in enumerate(model.decoder)]
    try:
        (out_ids,) = decode_batch(model, src, src_mask, tgt_tok.bos_id, tgt_tok.eos_id, run.decoding(beam=1),
                                  tgt_tok.vocab_size)
    finally:
        for c in caught:
            c.handle.remove()
    e.say(f"greedy output (the run's decoder, with its cache): {tgt_tok.decode(out_ids)!r} — "
          f"{caught[0].calls} decoding steps")
    e.check("the memory each decoder layer's cross-attention received  ==  encoder(source)",
            torch.cat([c.context for c in caught]), memory.expand(len(caught), -1, -1))

    # 3. each decoder layer's keys and values, computed once from the memory
    H, D = cfg.n_heads, cfg.head_dim
    rows, total = [], 0
    for c, blk in zip(caught, model.decoder, strict=True):
        attn = blk.cross_attn
        k = attn.k_proj(memory).view(1, S, H, D).transpose(1, 2)  # (1, S, H·D) -> (1, H, S, D)
        v = attn.v_proj(memory).view(1, S, H, D).transpose(1, 2)  # (1, S, H·D) -> (1, H, S, D)
        nbytes = (k.numel() + v.numel()) * k.element_size()
        total += nbytes
        head_rows = [f"h{h} {t}" for h in range(H) for t in labels]
        e.tensor(f"decoder layer {c.layer}: cross K = k_proj(memory), split into heads", k,
                 f"(1, H, S, D) = (1, {H}, {S}, {D})", rows=head_rows)
        e.check(f"layer {c.layer}: the decode cache's K and V  ==  k_proj(memory), v_proj(memory) in heads",
                torch.cat([c.k, c.v]), torch.cat([k, v]))
        rows.append([c.layer, f"(1, {H}, {S}, {D})", nbytes, c.static_calls])
    e.table(["decoder layer", "K and V shape, each", "bytes (K + V)", "steps that reused them"], rows,
            "cross-attention keys/values: computed on the first step, read on every later one")
    e.say(f"memory {mem_bytes:,} bytes; cross-attention K/V of {len(caught)} decoder layers {total:,} bytes "
          f"({total / mem_bytes:.1f}× the memory) — per source, for as long as its output is being written")

    # 4. dropped: the cache died with the decoding call, and the model holds nothing new
    gc.collect()
    alive = sum(c.cache() is not None for c in caught)
    e.say(f"after decoding: {alive} of {len(caught)} cross-attention caches still exist "
          "(they were local to the decoding call and freed when it returned)")
    after = _model_tensors(model)
    e.say(f"tensors held by the model (parameters, buffers, any other tensor attribute): {len(before)} before, "
          f"{len(after)} after ({sum(t.numel() for t in after.values()):,} numbers)")
    kept = sorted(k for k in set(before) & set(after) if before[k].shape == after[k].shape)
    changed = sorted((set(before) | set(after)) - set(kept))
    if changed:
        more = " …" if len(changed) > 4 else ""
        e.say(f"tensors that appeared, disappeared or changed shape: {', '.join(changed[:4])}{more}")
    e.check("tensors that appeared, disappeared or changed shape while decoding  ==  0",
            torch.tensor(float(len(changed))), torch.tensor(0.0), tolerance=0.0)
    e.check("every parameter and buffer after decoding  ==  before (bit for bit)",
            _flat(after, kept), _flat(before, kept), tolerance=0.0)

    shown = labels[:WINDOW]
    if len(labels) > WINDOW:
        e.say(f"(the picture shows the first {WINDOW} of the {len(labels)} memory positions)")
    n_dims = min(DIMS, cfg.d_model)
    picture = memory[0, : len(shown), :n_dims].float().cpu()  # (S', dims)
    e.figure("memory", f"encoder states of {describe_source(run, source)}", _draw(picture, shown),
             {"values": picture, "rows": shown, "dims": n_dims})
    ids = src[0].tolist() if run.source_kind == "text" else None
    given = source.strip() if isinstance(source, str) else describe_source(run, source)
    e.data.update(source=given, ids=ids, tokens=labels, translation=tgt_tok.decode(out_ids),
                  memory_shape=list(memory.shape), memory_bytes=mem_bytes, cross_kv_bytes=total,
                  cross_kv_shape=[1, H, S, D], decode_steps=caught[0].calls, caches_alive_after=alive,
                  model_tensors_before=len(before), model_tensors_after=len(after))
    return e


class _CrossCache:
    """A forward hook on one decoder layer's cross-attention: what the real decoding call gave it."""

    def __init__(self, layer: int, attn):
        self.layer, self.calls, self.static_calls = layer, 0, 0
        self.context = self.k = self.v = None
        self.cache = lambda: None  # a weak reference: the hook must not keep the cache alive
        self.handle = attn.register_forward_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs, output) -> None:
        cache = kwargs["cache"]
        self.calls += 1
        if self.calls == 1:  # the first step computed K/V from the memory and stored them (set_static)
            self.context = (args[1] if len(args) > 1 else kwargs["context"]).clone()  # (1, S, d)
            self.k, self.v = cache.k.clone(), cache.v.clone()  # (1, H, S, D) each
            self.cache = weakref.ref(cache)
        else:
            self.static_calls += cache.static


def _model_tensors(model) -> dict[str, torch.Tensor]:
    """Copies of every tensor the model holds: parameters, buffers, and any other tensor attribute."""
    out = {f"param {k}": v.detach().clone() for k, v in model.named_parameters()}
    out |= {f"buffer {k}": v.detach().clone() for k, v in model.named_buffers()}
    for name, m in model.named_modules():
        out |= {f"attr {name}.{k}": v.detach().clone() for k, v in vars(m).items() if isinstance(v, torch.Tensor)}
    return out


def _flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[k].double().flatten() for k in names])  # (all numbers,)


def _draw(values: torch.Tensor, labels: list[str]):
    def draw(fig) -> None:
        ax = fig.add_subplot(1, 1, 1)
        lim = max(1e-9, float(values.abs().max()))
        im = ax.imshow(values.numpy(), cmap="RdBu_r", aspect="auto", vmin=-lim, vmax=lim)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlabel(f"model dimension (first {values.shape[1]})")
        ax.set_ylabel("source token")
        ax.set_title("memory: one row per source token", fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8)
    return draw
