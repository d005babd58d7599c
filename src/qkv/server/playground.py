"""The playground's API: what each page asks a run for. Thin: every answer comes from the run's own calls
(`qkv.tasks`, chosen by what the run can do: `qkv.tasks.capabilities`); this file only checks requests, queues
the work on the run's worker (`qkv.server.workers`) and turns results into JSON or server-sent events. Tokens
stream through the run's own `token_stream` (and a chat session's `reply_stream`): the one loop `qkv generate`
and `qkv chat` use too.

    GET  /api/runs                        the runs, what each can do, its pages
    GET  /api/runs/{name}                 one run: its capabilities, the server's caps, what its pages need to know
                                          (``pipeline``: its stage, the final run and the pipeline's runs, or null)
    GET  /api/runs/{name}/params          its parameter table                                          (parameters)
    POST /api/runs/{name}/generate        SSE: a continuation, token by token, with the top next-token
                                          probabilities                                              (continuation)
    POST /api/runs/{name}/chat            SSE: the next assistant reply to a conversation                    (chat)
    POST /api/runs/{name}/to-text         a source (a sentence, or an image or a WAV recording as a data URL) -> the
                                          n-best outputs and the cross-attention of the best (over a recording's
                                          spectrogram; none for a CTC transcriber)                 (source-to-text)
    POST /api/runs/{name}/translate       the same, for a sentence (the name the page had first)
    POST /api/runs/{name}/attention       the self-attention over a text, every layer and head     (self-attention)
    POST /api/runs/{name}/images          sampled images and the reverse process of the first, as a strip (images)
    POST /api/runs/{name}/noise           the forward process on a real training image                   (images)
    GET  /api/health                      queues, jobs, tokens and cancellations per run
    (and `qkv.server.inside`: /api/explain/topics, POST /api/runs/{name}/explain/{topic}, the "Look inside" page)

Streams are ``text/event-stream``: ``event: token`` (``{"id", "text", "top"}``), then one ``event: done``
(``{"tokens", "seconds", "tokens_per_s", "reason"}``), or ``event: error``. A client that disconnects (the
page's Stop button aborts its request) cancels the job: the worker stops at the next token.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import math
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from qkv.config import to_dict
from qkv.data.audio import HOP, SAMPLE_RATE
from qkv.data.images import png_data_url
from qkv.errors import QKVError
from qkv.evaluation.attention import AttentionStack, token_label
from qkv.runs import REPORT_HTML_FILE
from qkv.server.schemas import (
    MAX_AUDIO,
    AttentionRequest,
    ChatRequest,
    CodeRequest,
    GenerateRequest,
    ImagesRequest,
    NoiseRequest,
    Sampling,
    ToTextRequest,
)
from qkv.server.served import HTTPError, Served, pipeline_of
from qkv.tasks.capabilities import Capability, can, require

router = APIRouter(prefix="/api", tags=["playground"])
KEEPALIVE_S = 1.0  # a comment line this often while a stream waits: a client that left is noticed within it
FLUSH_S = 0.02  # a stream writes at most every 20 ms (50 times a second, smoother than the eye needs)


# ------------------------------------------------------------------------------------------------ helpers
def _served(request: Request, name: str, *needs: Capability) -> Served:
    """The run named `name`; 404 when there is none, or when it cannot do what the endpoint needs."""
    served = request.app.state.runs.get(name)
    if served is None:
        raise HTTPError(404, f"no run named {name!r} on this server")
    for capability in needs:
        try:
            require(served.run, capability, "this page")
        except QKVError as e:
            raise HTTPError(404, str(e)) from None
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


def _checked(fn, what: str):
    """fn()'s result; a QKVError (what the run refuses) is a 422 naming the field `what`."""
    try:
        return fn()
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


def stack_json(stack: AttentionStack) -> dict:
    L, H = stack.weights.shape[:2]
    out = {"kind": stack.kind, "layers": L, "heads": H, "rows": stack.rows, "cols": stack.cols,
           "xlabel": stack.xlabel, "ylabel": stack.ylabel, "text": stack.text, "note": stack.note,
           "weights": stack.weights.round(decimals=4).tolist()}  # [layer][head][row][col]
    if stack.image is not None:  # an image source: the columns are its patches, drawn on it
        out |= {"image": png_data_url(stack.image), "grid": stack.grid, "frames": stack.frames}  # a clip side by side
    if stack.spectrogram is not None:  # an audio source: the columns are its encoder states, drawn over its log-mel
        out |= {"spectrogram": spectrogram_png(stack.spectrogram), "mels": stack.spectrogram.size(0),
                "mel_frames": stack.spectrogram.size(1)}
    return out


def spectrogram_png(mel) -> str:
    """A log-mel (M, F) as a grey PNG data URL, M pixels high and F wide: low frequencies at the bottom, the
    clip's quietest cell black and its loudest white (the page colours it)."""
    x = mel.float().flip(0)  # (M, F), row 0 the highest band
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1  # (M, F) in [-1, 1]
    return png_data_url(x.unsqueeze(0))  # (1, M, F)


async def _run(request: Request, served: Served, fn):
    """Queue `fn()` on the run's worker and wait for its result (429 if the queue is full)."""
    job = served.worker.submit(lambda job: fn())
    served.stats["jobs"] += 1
    return await job.result()


# ------------------------------------------------------------------------------------------------ runs
@router.get("/runs")
async def list_runs(request: Request) -> list[dict]:
    """Every run on this server: name, task, what it can do, parameters and pages."""
    return [_describe(request, s) for s in request.app.state.runs.values()]


def _describe(request: Request, s: Served) -> dict:
    """What the pages need to know of a run, by what it can do, and the limits this server sets."""
    from qkv.explain import topics_for

    run, config = s.run, request.app.state.config
    model = run.model
    out = {"name": s.name, "task": s.task, "model_type": run.model_type, "pages": s.pages,
           "capabilities": sorted(c.value for c in run.capabilities), "topics": topics_for(run),
           "params": sum(p.numel() for p in model.parameters()), "path": str(s.path),
           "report": (s.path / REPORT_HTML_FILE).is_file(),  # its report card, at /runs/{name}/report
           "pipeline": pipeline_of(request.app.state.runs, s),  # its stage, when it was served from a pipeline's folder
           "limits": {"max_new_tokens": config.max_new_tokens, "max_images": config.max_images,
                      "max_body_bytes": config.max_body_bytes, "max_upload_bytes": config.max_upload_bytes}}
    if can(run, Capability.TOKENS):
        out["example_text"] = run.example_text()
    if can(run, Capability.CONTINUATION):
        sample = to_dict(run.config.sample)
        sample["max_new_tokens"] = min(sample["max_new_tokens"], config.max_new_tokens)  # what the page may ask
        out |= {"max_seq_len": model.config.max_seq_len, "layers": model.config.n_layers,
                "heads": model.config.n_heads, "sample": sample}
    if can(run, Capability.SOURCE_TO_TEXT):
        out |= {"max_seq_len": model.config.max_seq_len, "layers": len(model.decoder),
                "heads": model.config.n_heads, "decode": to_dict(run.config.decode), "source_kind": run.source_kind}
        if run.source_kind == "image":
            c = model.config
            out["image"] = {"size": c.image_size, "channels": c.channels, "frames": c.frames}
        if run.source_kind == "audio":
            out["audio"] = audio_limits(model.config.max_frames, config.max_upload_bytes)
    if can(run, Capability.CODE):
        out["code"] = {"architecture": run.architecture,
                       "examples": [{"task_id": p.task_id, "prompt": p.prompt, "blocks": list(p.blocks)}
                                    for split in ("compositions", "length") for p in run.problems(split)[:4]]}
    if can(run, Capability.IMAGES):
        cfg, meta = model.config, run.meta
        out |= {"conditioning": cfg.conditioning, "n_classes": cfg.n_classes, "class_names": meta.get("class_names"),
                "prompts": (meta.get("prompts") or [])[:50], "timesteps": run.config.diffusion.n_timesteps,
                "sample": to_dict(run.config.sample), "latent": run.autoencoder is not None}
    return out


def audio_limits(max_frames: int, max_body_bytes: int) -> dict:
    """What a page may send a transcriber: the model's longest recording (`max_frames` of 10 ms), the largest WAV
    file whose data URL fits the server's body limit (and the request's `audio` field, MAX_AUDIO characters), and
    the longest 16-bit mono recording at the model's rate that fits both (what the page records and, for a larger
    upload, re-encodes to).

    Example: the default 64 kB body, a model of 300 frames (3 s) -> 48,942 bytes of WAV, 1.52 s recorded."""
    max_seconds = max_frames * HOP / SAMPLE_RATE
    room = min(max_body_bytes - BODY_FIELDS, MAX_AUDIO) - len(WAV_DATA_URL)  # base64 characters the WAV may take
    max_wav_bytes = max(0, room // 4 * 3)
    fits = (max_wav_bytes - WAV_HEADER) / (2 * SAMPLE_RATE)
    return {"sample_rate": SAMPLE_RATE, "max_seconds": max_seconds, "max_wav_bytes": max_wav_bytes,
            "record_seconds": max(0.0, math.floor(min(max_seconds, fits) * 100) / 100)}


@router.get("/runs/{name}")
async def describe_run(request: Request, name: str) -> dict:
    return _describe(request, _served(request, name))


@router.get("/runs/{name}/params")
async def params(request: Request, name: str) -> dict:
    """The parameter table: the GPT report (with FLOPs and memory) or, for other models, modules by name."""
    s = _served(request, name, Capability.PARAMETERS)
    return s.run.parameter_table().to_json()


@router.get("/health")
async def health(request: Request) -> dict:
    return {"runs": {name: {"task": s.task, "waiting": s.worker.waiting, "busy": s.worker.busy, **s.stats}
                     for name, s in request.app.state.runs.items()}}


# ------------------------------------------------------------------------------------------------ text
@router.post("/runs/{name}/generate")
async def generate(request: Request, name: str, req: GenerateRequest):
    """A continuation of `prompt`, streamed token by token (server-sent events)."""
    s = _served(request, name, Capability.CONTINUATION)
    sampling = _sampling(s, req, request.app.state.config.max_new_tokens)
    stream = _checked(lambda: s.run.token_stream(req.prompt, sampling, stop=req.stop, top=req.top), "prompt")
    if stream.prompt_cut:
        raise HTTPError(422, f"prompt: {len(stream.prompt_ids)} tokens, over the model's context of "
                             f"{s.run.model.config.max_seq_len}")
    return _token_stream(request, s, stream)


@router.post("/runs/{name}/chat")
async def chat(request: Request, name: str, req: ChatRequest):
    """The next assistant reply to `messages` (user first, alternating, user last), streamed. The run's
    system message and chat template frame it, as in training; the oldest exchanges are dropped when the
    conversation does not fit the context (``done.trimmed`` says how many)."""
    s = _served(request, name, Capability.CHAT)
    session = s.run.chat(_sampling(s, req, request.app.state.config.max_new_tokens))
    session.history = [m.model_dump() for m in req.messages[:-1]]
    stream = session.reply_stream(req.messages[-1].content)  # QKVError (400) if the last message alone is too long
    return _token_stream(request, s, stream, trimmed=session.last_trimmed)


def _token_stream(request: Request, s: Served, stream, **done_extra):
    """Run a `TokenStream` on the run's worker, one ``token`` event per token, then ``done``."""
    labels = _labels(s)

    def work(job):
        n, reason, t0 = 0, None, time.perf_counter()
        for piece in stream:
            if job.cancelled.is_set():
                reason = "cancelled"
                s.stats["cancelled"] += 1
                break
            job.emit("token", {"id": piece.id, "text": piece.text, "label": labels[piece.id] if piece.id is not None
                               else "", "top": [[i, labels[i], round(p, 5), round(q, 5)] for i, p, q in piece.top]})
        n = stream.tokens
        seconds = time.perf_counter() - t0
        s.stats["tokens"] += n
        job.emit("done", {"tokens": n, "seconds": round(seconds, 4), "tokens_per_s": round(n / seconds, 2)
                          if seconds > 0 else None, "reason": reason or stream.reason, **done_extra})

    job = s.worker.submit(work)
    s.stats["jobs"] += 1
    return _stream(request, job)


def _labels(s: Served) -> list[str]:
    """Every token id's label (`token_label`), made once per run: looked up for each streamed token."""
    if "labels" not in s.cache:
        tok = s.run.tokenizer
        s.cache["labels"] = [token_label(tok, i) for i in range(tok.vocab_size)]
    return s.cache["labels"]


@router.post("/runs/{name}/code")
async def code(request: Request, name: str, req: CodeRequest) -> dict:
    """Complete a prompt, then run the completion in the sandbox against the hidden tests of the run's problem
    with that prompt, or else against the examples of its docstring; each test's pass or fail."""
    from qkv.data.programs import doctest_tests
    from qkv.evaluation.sandbox import run_programs

    s = _served(request, name, Capability.CODE)
    run = s.run
    if not req.prompt.strip():
        raise HTTPError(422, "prompt: empty; give a function's signature and docstring")
    known = {p.prompt: p for split in ("compositions", "length", "k3", "val") for p in run.problems(split)}
    problem = known.get(req.prompt)
    tests = list(problem.tests) if problem else _checked(lambda: doctest_tests(req.prompt), "prompt")
    where = f"the hidden tests of {problem.task_id}" if problem else "the examples of the docstring"

    def work():
        t0 = time.perf_counter()
        completion = run.complete([req.prompt], n=1, temperature=req.temperature, seed=req.seed)[0][0]
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        outcomes = run_programs([(req.prompt + completion, [t]) for t in tests])
        return completion, seconds, time.perf_counter() - t1, outcomes

    completion, seconds, sandbox_s, outcomes = await _run(request, s, work)
    return {"completion": completion, "program": req.prompt + completion, "tests_from": where,
            "tests": [{"test": t, "passed": o.status == "passed", "status": o.status, "detail": o.detail}
                      for t, o in zip(tests, outcomes, strict=True)],
            "passed": sum(o.status == "passed" for o in outcomes), "total": len(tests),
            "seconds": round(seconds, 4), "sandbox_seconds": round(sandbox_s, 4),
            "decoding": "greedy" if req.temperature is None else f"sampled at temperature {req.temperature}"}


@router.post("/runs/{name}/attention")
async def attention(request: Request, name: str, req: AttentionRequest) -> dict:
    """Self-attention over `text`: every layer and head, with the token labels."""
    s = _served(request, name, Capability.SELF_ATTENTION)
    ti = s.run.text_input()
    ids, cut = _checked(lambda: ti.prepare(req.text, ti.config.max_seq_len), "text")
    if cut:
        raise HTTPError(422, f"text: {len(ids) + cut} tokens, over the model's context of {ti.config.max_seq_len}")
    return stack_json(await _run(request, s, lambda: s.run.self_attention(req.text)))


@router.post("/runs/{name}/to-text")
async def to_text(request: Request, name: str, req: ToTextRequest) -> dict:
    """The n-best outputs for one source (a sentence, an image as a PNG/JPEG data URL, a recording as a WAV data
    URL) by beam search (greedy with beam 1), and the cross-attention of every decoder layer and head while
    producing the best one; ``notes`` says what reading the source changed (a resampled recording, a cut).

    A run without cross-attention (a CTC transcriber: no decoder) answers its transcript with ``attention`` null
    and ``no_attention``, the run's own line saying why."""
    s = _served(request, name, Capability.SOURCE_TO_TEXT)
    run, kind = s.run, s.run.source_kind
    dcfg = _checked(lambda: run.decoding(beam=req.beam, length_penalty=req.length_penalty), "decoding")
    given = {"text": req.text, "image": req.image, "audio": req.audio}.get(kind)
    if given is None:
        raise HTTPError(422, f"{kind}: {name} reads {READS.get(kind, kind)}")
    note, audio_s = "", None
    if kind == "text":
        source = given
        batch = _checked(lambda: run.source_batch([source]), "text")
        if batch.cut:
            raise HTTPError(422, f"text: {len(run.text_tokenizer()[0].encode(source.strip())) + 1} tokens with its "
                                 f"EOS, over the model's context of {run.model.config.max_seq_len}")
    else:  # the bytes of a file, read as the run reads its files (one-line errors naming the field)
        raw = _checked(lambda: data_url_bytes(given, MEDIA[kind]), kind)
        source, note = _checked(lambda: run.read_source(raw), kind)
        if kind == "audio":
            audio_s = round(len(source) / SAMPLE_RATE, 3)

    def work():
        t0 = time.perf_counter()
        nbest = run.n_best(source, dcfg, req.n_best)
        seconds = time.perf_counter() - t0
        for h in nbest:  # every hypothesis has the same keys; a CTC transcript has no scores and no tokens
            tokens = h.pop("tokens", None)
            h["labels"] = None if tokens is None else [token_label(run.target_tokenizer, i) for i in tokens]
            h.setdefault("score", None)
            h.setdefault("finished", True)
        out = {"nbest": nbest, "attention": None, "seconds": round(seconds, 4), "decoding": to_dict(dcfg),
               "notes": note}
        if audio_s is not None:
            out["audio_seconds"] = audio_s
        try:
            out["attention"] = stack_json(run.cross_attention(source, dcfg))
        except QKVError as e:  # the run has no cross-attention to show (a CTC head reads the encoder directly)
            out["no_attention"] = str(e)
        return out

    return await _run(request, s, work)


@router.post("/runs/{name}/translate")
async def translate(request: Request, name: str, req: ToTextRequest) -> dict:
    """`to-text` under the name the translate page first had."""
    return await to_text(request, name, req)


# what a source -> text run reads, by its source_kind: the 422 when a request gives another kind of source
READS = {"text": "sentences; give text", "image": "images; give one as a data URL (data:image/png;base64,...)",
         "audio": "recordings; give a WAV file as a data URL (data:audio/wav;base64,...)"}
# the media types a data URL of each kind of file source may declare
MEDIA = {"image": ("image/*",), "audio": ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave")}
WAV_DATA_URL = "data:audio/wav;base64,"
WAV_HEADER = 44  # bytes before the samples of a plain 16-bit PCM WAV file
BODY_FIELDS = 256  # bytes of a to-text body besides its data URL: braces, keys, beam, n-best, length penalty


def data_url_bytes(data_url: str, media: tuple[str, ...]) -> bytes:
    """The bytes of a ``data:TYPE;base64,...`` URL whose TYPE is one of `media` (``image/*``: any image type);
    a one-line QKVError for anything else (another type, not base64, an empty payload, bad base64)."""
    what = "an image" if media == ("image/*",) else "a WAV file"
    example = "data:image/png;base64,..." if media == ("image/*",) else WAV_DATA_URL + "..."
    head, comma, payload = data_url.partition(",")
    mime = head.removeprefix("data:").removesuffix(";base64").strip().lower()
    if not (head.startswith("data:") and head.endswith(";base64") and comma):
        raise QKVError(f"expected {what} as a base64 data URL: {example}")
    if not any(mime == m or (m.endswith("/*") and mime.startswith(m[:-1])) for m in media):
        raise QKVError(f"expected {what} as a data URL ({example}), got the media type {mime[:40]!r}")
    if not payload:
        raise QKVError(f"the data URL holds no data: expected {what} after {head},")
    try:
        return base64.b64decode(payload, validate=True)
    except (ValueError, binascii.Error):
        raise QKVError(f"the data URL's base64 is not valid ({len(payload):,} characters)") from None


def image_bytes(data_url: str) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URL; QKVError for anything else."""
    return data_url_bytes(data_url, MEDIA["image"])


# ------------------------------------------------------------------------------------------------ images
@router.post("/runs/{name}/images")
async def images(request: Request, name: str, req: ImagesRequest) -> dict:
    """`n` images for a label or a prompt (default: the run's first class / training prompt), and the reverse
    process of the first one from noise to image."""
    s = _served(request, name, Capability.IMAGES)
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
    s = _served(request, name, Capability.IMAGES)
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
