"""The playground's API: what each page asks a run for. Thin: every answer comes from the run's own calls
(`qkv.tasks`) and the modules below them; this file only checks requests, queues the work on the run's
worker (`qkv.server.workers`) and turns results into JSON or server-sent events.

    GET  /api/runs                        the runs, their tasks and pages
    GET  /api/runs/{name}                 one run: its config and what its pages need to know
    GET  /api/runs/{name}/params          its parameter table
    POST /api/runs/{name}/generate        SSE: a continuation, token by token, with the top next-token probabilities
    POST /api/runs/{name}/chat            SSE: the next assistant reply to a conversation
    POST /api/runs/{name}/translate       the n-best translations and the cross-attention of the best
    POST /api/runs/{name}/attention       a GPT's self-attention over a text, every layer and head
    POST /api/runs/{name}/images          sampled images and the reverse process of the first, as a strip
    POST /api/runs/{name}/noise           the forward process on a real training image
    GET  /api/health                      queues, jobs, tokens and cancellations per run
    (and `qkv.server.inside`: /api/explain/topics, POST /api/runs/{name}/explain/{topic}, the "Look inside" page)

Streams are ``text/event-stream``: ``event: token`` (``{"id", "text", "top"}``), then one ``event: done``
(``{"tokens", "seconds", "tokens_per_s", "reason"}``), or ``event: error``. A client that disconnects (the
page's Stop button aborts its request) cancels the job: the worker stops at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import time

import torch
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from qkv.config import to_dict
from qkv.errors import QKVError
from qkv.evaluation.attention import AttentionStack, gpt_attention, seq2seq_attention, token_label
from qkv.evaluation.params import parameter_groups, report_for_model
from qkv.generation.lm import generate_steps
from qkv.generation.sampling import seeded_generator
from qkv.generation.seq2seq import translate_nbest
from qkv.generation.streaming import TextStream
from qkv.server.schemas import (
    AttentionRequest,
    ChatRequest,
    GenerateRequest,
    ImagesRequest,
    NoiseRequest,
    Sampling,
    TranslateRequest,
)
from qkv.server.served import HTTPError, Served, a_

router = APIRouter(prefix="/api", tags=["playground"])
KEEPALIVE_S = 1.0  # a comment line this often while a stream waits: a client that left is noticed within it
FLUSH_S = 0.02  # a stream writes at most every 20 ms (50 times a second, smoother than the eye needs)


# ------------------------------------------------------------------------------------------------ helpers
def _served(request: Request, name: str, *tasks: str) -> Served:
    served = request.app.state.runs.get(name)
    if served is None:
        raise HTTPError(404, f"no run named {name!r} on this server")
    if tasks and served.task not in tasks:
        raise HTTPError(404, f"{name} is {a_(served.task)} run; this needs {' or '.join(a_(t) for t in tasks)} run")
    return served


def _sampling(served: Served, req: Sampling, cap: int):
    if req.max_new_tokens is not None and req.max_new_tokens > cap:
        raise HTTPError(422, f"max_new_tokens: at most {cap} on this server, got {req.max_new_tokens}")
    changes = {k: getattr(req, k) for k in ("temperature", "top_k", "top_p", "max_new_tokens")}
    try:
        s = served.run.sampling(**changes)
    except QKVError as e:
        raise HTTPError(422, str(e)) from None
    if req.max_new_tokens is None and s.max_new_tokens > cap:
        s = dataclasses.replace(s, max_new_tokens=cap)
    seed = req.seed if "seed" in req.model_fields_set else s.seed
    return dataclasses.replace(s, seed=seed)


def _encode(tok, text: str, what: str) -> list[int]:
    try:
        return tok.encode(text)
    except QKVError as e:
        raise HTTPError(422, f"{what}: {e}") from None


def _stream(request: Request, job) -> StreamingResponse:
    async def body():
        async for batch in job.batches(KEEPALIVE_S):
            if not batch:
                yield ": waiting\n\n"  # a comment; writing it is how a disconnect is noticed
                continue
            yield "".join(f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n" for event, data in batch)
            # let the tokens of the next FLUSH_S gather into one write: one wake-up of this thread per batch
            # instead of per token leaves the worker the interpreter (a small model's decoding is mostly Python);
            # a job that ends sooner is sent at once
            if not job.done.is_set():
                try:
                    await asyncio.wait_for(job.done.wait(), FLUSH_S)
                except asyncio.TimeoutError:
                    pass

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def png_data_url(image: torch.Tensor) -> str:
    """(C, H, W) in [-1, 1] -> a ``data:image/png;base64,...`` URL (grey for 1 channel)."""
    from PIL import Image

    x = ((image.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()  # (C, H, W)
    arr = x[0].numpy() if x.size(0) == 1 else x.permute(1, 2, 0).numpy()  # (H, W) or (H, W, C)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def stack_json(stack: AttentionStack) -> dict:
    L, H = stack.weights.shape[:2]
    return {"kind": stack.kind, "layers": L, "heads": H, "rows": stack.rows, "cols": stack.cols,
            "xlabel": stack.xlabel, "ylabel": stack.ylabel, "text": stack.text, "note": stack.note,
            "weights": stack.weights.round(decimals=4).tolist()}  # [layer][head][row][col]


async def _run(request: Request, served: Served, fn):
    """Queue `fn()` on the run's worker and wait for its result (429 if the queue is full)."""
    job = served.worker.submit(lambda job: fn())
    served.stats["jobs"] += 1
    return await job.result()


# ------------------------------------------------------------------------------------------------ runs
@router.get("/runs")
async def list_runs(request: Request) -> list[dict]:
    """Every run on this server: name, task, model, parameters and pages."""
    return [_describe(s) for s in request.app.state.runs.values()]


def _describe(s: Served) -> dict:
    model = s.run.model
    out = {"name": s.name, "task": s.task, "model_type": s.run.model_type, "pages": s.pages,
           "params": sum(p.numel() for p in model.parameters()), "path": str(s.path)}
    cfg = model.config
    if s.run.model_type in ("gpt", "seq2seq"):
        out["max_seq_len"] = cfg.max_seq_len
    if s.run.model_type == "gpt":
        out |= {"layers": cfg.n_layers, "heads": cfg.n_heads, "sample": to_dict(s.run.config.sample)}
    if s.run.model_type == "seq2seq":
        out |= {"layers": cfg.n_decoder_layers, "heads": cfg.n_heads, "decode": to_dict(s.run.config.decode)}
    if s.run.model_type == "dit":
        meta = s.run.meta
        out |= {"conditioning": cfg.conditioning, "n_classes": cfg.n_classes, "class_names": meta.get("class_names"),
                "prompts": (meta.get("prompts") or [])[:50], "timesteps": s.run.config.diffusion.n_timesteps,
                "sample": to_dict(s.run.config.sample), "latent": s.run.autoencoder is not None}
    return out


@router.get("/runs/{name}")
async def describe_run(request: Request, name: str) -> dict:
    return _describe(_served(request, name))


@router.get("/runs/{name}/params")
async def params(request: Request, name: str) -> dict:
    """The parameter table: the GPT report (with FLOPs and memory) or, for other models, modules by name."""
    s = _served(request, name)
    if s.run.model_type == "gpt":
        return {"kind": "gpt", **report_for_model(s.run.model, s.name).to_json()}
    rows, total = parameter_groups(s.run.model)
    return {"kind": "groups", "name": s.name, "model_type": s.run.model_type, "total": total,
            "groups": [dataclasses.asdict(r) for r in rows]}


@router.get("/health")
async def health(request: Request) -> dict:
    return {"runs": {name: {"task": s.task, "waiting": s.worker.waiting, "busy": s.worker.busy, **s.stats}
                     for name, s in request.app.state.runs.items()}}


# ------------------------------------------------------------------------------------------------ text
@router.post("/runs/{name}/generate")
async def generate(request: Request, name: str, req: GenerateRequest):
    """A continuation of `prompt`, streamed token by token (server-sent events)."""
    s = _served(request, name, "lm", "chat")
    cap = request.app.state.config.max_new_tokens
    sampling = _sampling(s, req, cap)
    tok, model = s.run.tokenizer, s.run.model
    ids = _encode(tok, req.prompt, "prompt")
    if len(ids) > model.config.max_seq_len:
        raise HTTPError(422, f"prompt: {len(ids)} tokens, over the model's context of {model.config.max_seq_len}")
    return _token_stream(request, s, ids, sampling, req.stop, (), req.top)


@router.post("/runs/{name}/chat")
async def chat(request: Request, name: str, req: ChatRequest):
    """The next assistant reply to `messages` (user first, alternating, user last), streamed. The run's
    system message and chat template frame it, as in training; the oldest exchanges are dropped when the
    conversation does not fit the context (``done.trimmed`` says how many)."""
    from qkv.data.chat_template import chat_tokens

    s = _served(request, name, "chat")
    sampling = _sampling(s, req, request.app.state.config.max_new_tokens)
    session = s.run.chat(sampling)
    session.history = [m.model_dump() for m in req.messages[:-1]]
    ids = session.prompt_ids(req.messages[-1].content)  # QKVError (400) if the last message alone is too long
    ct = chat_tokens(s.run.tokenizer)
    budget = min(sampling.max_new_tokens, s.run.model.config.max_seq_len - len(ids))
    sampling = dataclasses.replace(sampling, max_new_tokens=budget)
    return _token_stream(request, s, ids, sampling, (), (ct.end, ct.user, ct.assistant, ct.system), 0,
                         trimmed=session.last_trimmed)


def _token_stream(request: Request, s: Served, ids: list[int], sampling, stop, stop_ids, top: int, **done_extra):
    tok = s.run.tokenizer
    labels = _labels(s)

    def work(job):
        model = s.run.decoder()  # the decode layout (made once per run)
        stream = TextStream(tok, stop)
        gen = seeded_generator(next(model.parameters()).device, sampling.seed)
        n, reason, t0 = 0, "length", time.perf_counter()
        for step in generate_steps(model, ids, sampling.max_new_tokens, sampling, generator=gen, stop_ids=stop_ids,
                                   vocab_size=tok.vocab_size, top=top):
            if job.cancelled.is_set():
                reason = "cancelled"
                s.stats["cancelled"] += 1
                break
            n += 1
            if step.id in stop_ids:
                reason = "end"
                break
            text = stream.push(step.id)
            job.emit("token", {"id": step.id, "text": text, "label": labels[step.id],
                               "top": [[i, labels[i], round(p, 5), round(q, 5)] for i, p, q in step.top]})
            if stream.stopped:
                reason = "stop"
                break
        rest = "" if reason in ("stop", "cancelled") else stream.finish()
        if rest:
            job.emit("token", {"id": None, "text": rest, "label": "", "top": []})
        seconds = time.perf_counter() - t0
        s.stats["tokens"] += n
        job.emit("done", {"tokens": n, "seconds": round(seconds, 4), "tokens_per_s": round(n / seconds, 2)
                          if seconds > 0 else None, "reason": reason, **done_extra})

    job = s.worker.submit(work)
    s.stats["jobs"] += 1
    return _stream(request, job)


def _labels(s: Served) -> list[str]:
    """Every token id's label (`token_label`), made once per run: looked up for each streamed token."""
    if "labels" not in s.cache:
        tok = s.run.tokenizer
        s.cache["labels"] = [token_label(tok, i) for i in range(tok.vocab_size)]
    return s.cache["labels"]


@router.post("/runs/{name}/attention")
async def attention(request: Request, name: str, req: AttentionRequest) -> dict:
    """A GPT's causal self-attention over `text`: every layer and head, with the token labels."""
    s = _served(request, name, "lm", "chat")
    ids = _encode(s.run.tokenizer, req.text, "text")
    if len(ids) > s.run.model.config.max_seq_len:
        raise HTTPError(422, f"text: {len(ids)} tokens, over the model's context of {s.run.model.config.max_seq_len}")
    stack = await _run(request, s, lambda: gpt_attention(s.run.model, s.run.tokenizer, req.text))
    return stack_json(stack)


@router.post("/runs/{name}/translate")
async def translate(request: Request, name: str, req: TranslateRequest) -> dict:
    """The n-best translations of one sentence (beam search, or greedy with beam 1) and the cross-attention of
    every decoder layer and head while producing the best one."""
    s = _served(request, name, "translate")
    try:
        dcfg = s.run.decoding(beam=req.beam, length_penalty=req.length_penalty)
    except QKVError as e:
        raise HTTPError(422, str(e)) from None
    run = s.run
    n_src = len(_encode(run.src_tokenizer, req.text.strip(), "text")) + 1  # + EOS
    if n_src > run.model.config.max_seq_len:
        raise HTTPError(422, f"text: {n_src} tokens with its EOS, over the model's context of "
                             f"{run.model.config.max_seq_len}")

    def work():
        t0 = time.perf_counter()
        nbest = translate_nbest(run.model, run.src_tokenizer, run.tgt_tokenizer, req.text, dcfg, req.n_best)
        seconds = time.perf_counter() - t0
        stack = seq2seq_attention(run.model, run.src_tokenizer, run.tgt_tokenizer, req.text, dcfg)
        for h in nbest:
            h["labels"] = [token_label(run.tgt_tokenizer, i) for i in h.pop("tokens")]
        return {"nbest": nbest, "attention": stack_json(stack), "seconds": round(seconds, 4),
                "decoding": to_dict(dcfg)}

    return await _run(request, s, work)


# ------------------------------------------------------------------------------------------------ images
@router.post("/runs/{name}/images")
async def images(request: Request, name: str, req: ImagesRequest) -> dict:
    """`n` images for a label or a prompt (default: the run's first class / training prompt), and the reverse
    process of the first one from noise to image."""
    s = _served(request, name, "diffusion")
    run, limit = s.run, request.app.state.config.max_images
    if req.n > limit:
        raise HTTPError(422, f"n: at most {limit} images per request on this server, got {req.n}")
    T = run.config.diffusion.n_timesteps
    if req.steps is not None and req.steps > T:
        raise HTTPError(422, f"steps: at most the run's {T} timesteps, got {req.steps}")
    try:
        settings = run.image_sampling(sampler=req.sampler, steps=req.steps, guidance=req.guidance, seed=req.seed)
        run.condition(1, req.label, req.prompt)  # refuse a label/prompt the run cannot take, before queueing
    except QKVError as e:
        raise HTTPError(422, str(e)) from None

    def work():
        t0 = time.perf_counter()
        out = run.reverse_process(req.label, req.prompt, settings, req.frames, req.n)
        return {"images": [png_data_url(x) for x in out["images"]],
                "strip": [{"t": t, "image": png_data_url(x)} for t, x in out["strip"]],
                "settings": {k: v for k, v in to_dict(settings).items() if k not in ("n", "eval_samples")}
                | {"steps": run.steps_of(settings)}, "timesteps": T,
                "seconds": round(time.perf_counter() - t0, 3)}

    return await _run(request, s, work)


@router.post("/runs/{name}/noise")
async def noise(request: Request, name: str, req: NoiseRequest) -> dict:
    """The forward process q(x_t | x_0) on one real training image: the image, then x_t at each t."""
    s = _served(request, name, "diffusion")
    T = s.run.config.diffusion.n_timesteps
    ts = req.t if req.t is not None else [round(k * (T - 1) / 7) for k in range(8)]
    if any(not 0 <= t < T for t in ts):
        raise HTTPError(422, f"t: timesteps must be in [0, {T - 1}]")

    def work():
        out = s.run.forward_process(ts, req.index, req.seed)
        return {"index": out["index"], "image": png_data_url(out["image"]), "timesteps": T,
                "frames": [{"t": t, "alpha_bar": round(a, 6), "snr": round(a / (1 - a), 6) if a < 1 else None,
                            "image": png_data_url(x)} for t, a, x in out["frames"]]}

    try:
        return await _run(request, s, work)
    except QKVError as e:
        raise HTTPError(422, str(e)) from None
