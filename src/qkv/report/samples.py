"""What the model makes, chosen by what the run can do (`qkv.tasks.capabilities`), never by its task's name:

    samples        code -> greedy completions of held-out problems, with their hidden tests' results (the
                   sandbox); else chat -> greedy replies to a few of the run's own questions (its test
                   conversations, with their references), else continuation -> a greedy and two sampled
                   continuations of its example text; source-to-text -> outputs for its example sources (images
                   shown as images, recordings played by the page's <audio controls>), with references where it
                   has them; images -> a grid of samples (few images, few DDIM steps, the settings said)
    attention      one picture: source-to-text -> the last decoder layer's cross-attention (mean over heads) while
                   writing the output for the first example source (a recording: drawn under its log-mel
                   spectrogram, on one time axis); else self-attention -> the last layer's over the example text
                   (continued greedily, cut to a few tokens); else a note saying there is none (a run without
                   cross-attention, as a CTC transcriber, says why)

Whatever cannot be shown (the run's data no longer on this machine) becomes a one-line note in the report.
"""

from __future__ import annotations

import torch

from qkv.data.images import png_bytes
from qkv.errors import QKVError
from qkv.report.card import Audio, Example, Examples, Picture, Section, Text
from qkv.report.sections import EXPECTED, drawn, note
from qkv.tasks.capabilities import Capability, can

SAMPLES = 3  # continuations, chat replies, example sources
SAMPLE_TOKENS = 120  # the most new tokens of a continuation or a reply in the report
IMAGES = 8  # sampled images
IMAGE_STEPS = 10  # DDIM steps for them
ATTENTION_TOKENS = 16  # the self-attention picture reads at most this many tokens
AUDIO_SECONDS = 30.0  # a recording in the page is cut to this many seconds (~1.3 MB of WAV as a data URL)


def shown_width(image: torch.Tensor, target: int = 128) -> int:
    h, w = image.shape[-2:]
    frames = image.size(0) if image.dim() == 4 else 1
    return w * frames * max(1, target // max(h, w))


def samples_section(run) -> Section:
    sec = Section("samples", "Samples")
    makers = []
    if can(run, Capability.CODE):  # a code run's samples are completions judged by their tests, nothing else
        makers.append(("no completions", _code_completions))
    elif can(run, Capability.CHAT):
        makers.append(("no chat replies", _chat_replies))
    elif can(run, Capability.CONTINUATION):
        makers.append(("no continuations", _continuations))
    if can(run, Capability.SOURCE_TO_TEXT) and not can(run, Capability.CODE):
        makers.append(("no outputs for example sources", _source_outputs))
    if can(run, Capability.IMAGES):
        makers.append(("no sampled images", _image_samples))
    for what, make in makers:
        try:
            sec.blocks += make(run)
        except EXPECTED as err:
            sec.blocks.append(note(what, err))
    if not sec.blocks:
        sec.blocks.append(Text(f"Nothing to sample: this run neither writes text nor makes images; it is "
                               f"{run.describe()}."))
    return sec


def _continuations(run) -> list:
    s = run.sampling()
    prompt = run.example_text()
    n = min(s.max_new_tokens, SAMPLE_TOKENS) or SAMPLE_TOKENS
    t = s.temperature if s.temperature > 0 else 0.8
    seed = s.seed if s.seed is not None else 0
    limits = ", ".join(f"{k} {v}" for k, v in (("top-k", s.top_k), ("top-p", s.top_p)) if v is not None)
    items = [Example([("settings", "greedy (temperature 0)"),
                      ("the prompt, then the continuation", prompt + run.generate(prompt, temperature=0,
                                                                                  max_new_tokens=n))])]
    for k in range(2):
        out = run.generate(prompt, temperature=t, seed=seed + k, max_new_tokens=n)
        items.append(Example([("settings", f"sampled: temperature {t:g}, seed {seed + k}"),
                              ("the prompt, then the continuation", prompt + out)]))
    return [Text(f"Continuations of the run's example text, at most {n} new tokens each"
                 + (f" ({limits}, from the run's [sample])" if limits else "") + ". The prompt:"),
            Examples([Example([("prompt", prompt)])]), Examples(items, table=True)]


def _chat_replies(run) -> list:
    questions, where = run.example_questions(SAMPLES)
    n = min(run.sampling().max_new_tokens, SAMPLE_TOKENS) or SAMPLE_TOKENS
    items = []
    for question, reference in questions:
        reply = "".join(run.chat(temperature=0, max_new_tokens=n).reply(question))  # a fresh session each
        fields = [("question", question), ("reply (greedy)", reply)]
        items.append(Example(fields + ([("reference", reference)] if reference is not None else [])))
    return [Text(f"Replies to {where}: greedy, a fresh conversation for each, at most {n} tokens."),
            Examples(items, table=True)]


def _code_completions(run) -> list:
    from qkv.evaluation.sandbox import run_programs

    problems = [p for split in ("compositions", "length") for p in run.problems(split)[:2]]
    completions = [c[0] for c in run.complete([p.prompt for p in problems])]
    outcomes = run_programs([(p.program(c), p.tests) for p, c in zip(problems, completions, strict=True)])
    items = [Example([("prompt", p.prompt), ("completion (greedy)", c),
                      ("hidden tests", f"{o.passed} of {o.total} pass ({o.status})")])
             for p, c, o in zip(problems, completions, outcomes, strict=True)]
    return [Text("Greedy completions of two held-out-composition and two held-out-length problems, each run in the "
                 "sandbox against its hidden tests."), Examples(items, table=True)]


def example_sources(run, n: int) -> tuple[list, list[Text]]:
    """(up to n of the run's example sources, notes): fewer, with a note, when its data is not on this machine."""
    try:
        return run.example_sources(n), []
    except EXPECTED as err:
        try:
            return run.example_sources(1), [note("only one example source (the run's data is not available)", err)]
        except EXPECTED as err2:
            return [], [note("no example source", err2)]


def references(run, sources: list) -> list[str | None]:
    """The reference of each source that is one of the run's reference pairs (None where it is not)."""
    return [ref for ref, _ in _reference_pairs_of(run, sources)]


def _reference_pairs_of(run, sources: list) -> list[tuple[str | None, str | None]]:
    """(reference, "pair k of WHERE") of each source that is one of the run's reference pairs ((None, None) where it
    is not)."""
    try:
        srcs, refs, where = run.reference_pairs(len(sources))
    except EXPECTED:
        return [(None, None)] * len(sources)

    def same(a, b) -> bool:
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape \
                and bool(torch.equal(a, b))
        return a == b

    pairs = list(zip(srcs, refs, strict=True))
    found = [next((k for k, (s, _) in enumerate(pairs) if same(source, s)), None) for source in sources]
    return [(None, None) if k is None else (pairs[k][1], f"pair {k + 1} of {where}") for k in found]


def recording(run, source, label: str) -> tuple[Audio, list[Text]]:
    """An audio source as the page plays it: what the run reads (16-bit WAV), cut to AUDIO_SECONDS; notes for
    the run's conversions and the cut. `label` names it ("recording 1"); a file's path is where it comes from."""
    from qkv.data.audio import SAMPLE_RATE, wav_bytes

    wave, said = run.read_source(source)
    notes = [Text(f"{label}: {said}")] if said else []
    most = int(AUDIO_SECONDS * SAMPLE_RATE)
    if len(wave) > most:
        notes.append(Text(f"{label}: {len(wave) / SAMPLE_RATE:.1f} s, the page plays the first {AUDIO_SECONDS:g} s"))
        wave = wave[:most]
    wav = wav_bytes(wave, SAMPLE_RATE)
    where = str(source) if isinstance(source, str) else ""
    return Audio(wav, f"{label} ({len(wave) / SAMPLE_RATE:.2f} s)", where), notes


def _source_outputs(run) -> list:
    sources, notes = example_sources(run, SAMPLES)
    if not sources:
        return notes
    d = run.decoding()
    outputs = run.to_text(sources, d)
    pairs = _reference_pairs_of(run, sources)
    items = []
    for k, (source, out, (ref, pair)) in enumerate(zip(sources, outputs, pairs, strict=True)):
        extra = [("reference", ref)] if ref is not None else []
        if run.source_kind == "image":
            x, _ = run.read_source(source)
            items.append(Example([("output", out), *extra], Picture(png_bytes(x), f"source image {k + 1}",
                                                                    width=shown_width(x), pixelated=True)))
        elif run.source_kind == "audio":
            audio, said = recording(run, source, f"recording {k + 1}")
            audio.where = audio.where or pair or f"the run's example source {k + 1}"
            notes += said
            items.append(Example([("transcript", out), *extra], audio=audio))
        else:
            items.append(Example([("source", source), ("output", out), *extra]))
    how = "greedy" if d.beam == 1 else f"beam {d.beam}"
    media = run.source_kind in ("image", "audio")
    return [*notes, Text(f"Outputs for the run's example sources ({how}, the run's [decode] settings); references "
                         "where the source is one of the run's reference pairs."),
            Examples(items, columns=3) if media else Examples(items, table=True)]


def _image_samples(run) -> list:
    try:
        s = run.image_sampling(sampler="ddim", steps=IMAGE_STEPS)
        images = run.sample(n=IMAGES, settings=s)
    except QKVError:  # fewer training timesteps than IMAGE_STEPS: the sampler's own default
        s = run.image_sampling(sampler="ddim")
        images = run.sample(n=IMAGES, settings=s)
    _, what = run.condition(IMAGES)
    names = run.meta.get("class_names") or []
    labels = what.get("prompts") or [names[i] if i < len(names) else f"class {i}" for i in what.get("labels", [])]
    labels = labels or [""] * IMAGES
    items = [Example([("asked for", label)] if label else [],
                     Picture(png_bytes(x), f"sample {k + 1}", width=shown_width(x, 96), pixelated=True))
             for k, (x, label) in enumerate(zip(images, labels, strict=True))]
    steps = s.steps or "the sampler's default"
    return [Text(f"{IMAGES} samples: DDIM, {steps} steps, eta {s.eta:g}, {s.spacing} spacing, guidance {s.guidance:g}, "
                 f"seed {s.seed} (few steps, so it stays fast; qkv sample makes better ones)."),
            Examples(items, columns=4)]


def attention_section(run) -> Section:
    from qkv.evaluation.attention import plot_attention

    sec = Section("attention", "Attention")
    try:
        if can(run, Capability.SOURCE_TO_TEXT):
            sources, notes = example_sources(run, 1)
            sec.blocks += notes
            if not sources:
                return sec
            stack = run.cross_attention(sources[0])
            what = "the cross-attention of the last decoder layer (mean over heads) while writing the output for the " \
                   "first example source: rows are the output tokens, columns the source positions"
            if stack.spectrogram is not None:
                what = "the cross-attention of the last decoder layer (mean over heads) while transcribing the first " \
                       "example recording: its log-mel spectrogram on top; below, a row per character of the " \
                       "transcript over the encoder states (20 ms each), on the same time axis in seconds"
                audio, said = recording(run, sources[0], "the recording")
                audio.where = audio.where or _reference_pairs_of(run, sources[:1])[0][1] or "the run's first " \
                    "example source"
                sec.blocks += [*said, audio]
        elif can(run, Capability.SELF_ATTENTION):
            stack = run.self_attention(attention_text(run))
            what = f"the self-attention of the last layer (mean over heads) over {stack.text!r}"
        else:
            sec.blocks.append(Text("No attention picture: this run has neither cross-attention over a source nor "
                                   f"self-attention over a text to show; it is {run.describe()}."))
            return sec
    except EXPECTED as err:
        sec.blocks.append(note("no attention picture", err))
        return sec
    amap = stack.pick(-1)
    if stack.spectrogram is not None:  # a recording: the attention under its spectrogram, one time axis
        from qkv.evaluation.transcription import plot_speech_attention

        png = drawn(lambda path: plot_speech_attention(amap, stack.spectrogram, path), "attention.png")
    else:
        png = drawn(lambda path: plot_attention(amap, path), "attention.png")
    if stack.image is not None:
        sec.blocks.append(Picture(png_bytes(stack.image), "the source image", "the source image (its patches are the "
                                  "columns below)", width=shown_width(stack.image), pixelated=True))
    picture = Picture(png, amap.title, f"{what}. {stack.note}".strip())
    picture.width = min(picture.size[0], 900)
    sec.blocks.append(picture)
    return sec


def attention_text(run) -> str:
    """The run's example text, continued greedily when the run continues text, cut to ATTENTION_TOKENS tokens."""
    text = run.example_text()
    if can(run, Capability.CONTINUATION):
        text += run.generate(text, temperature=0, max_new_tokens=ATTENTION_TOKENS)
    if can(run, Capability.TOKENS):
        tok, _ = run.text_tokenizer()
        ids = tok.encode(text)
        if len(ids) > ATTENTION_TOKENS:
            text = tok.decode(ids[:ATTENTION_TOKENS])
    return text
