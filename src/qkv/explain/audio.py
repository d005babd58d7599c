"""Topic `audio`: a recording on its way into a transcriber, step by step, and where each letter listened.

    waveform (N,) ─ reflect-pad 200 ─ frames (T, 400), 10 ms apart ─ × Hann ─ rfft (T, 201) ─ |·|² power
        ─ mel filters (80, 201) @ ─ (80, T) ─ log10, floor at max − 8, (x + 4) / 4 ─ log-mel (80, T)
        ─ conv1 (k 3) ─ GELU ─ conv2 (k 3, stride 2) ─ GELU ─ + positions ─ encoder ─ memory (S, C)

Every step of `qkv.data.audio.log_mel` (Whisper's front end) is recomputed here from its definition and the
result checked against `log_mel`; the stem's two convolutions are written as matrix products over windows of 3
frames and checked against the model's `conv1` and `stem`; the encoder's blocks are run one by one and checked
against `model.encode`. Then the text: an attention-head run decodes greedily and its decoder's cross-attention
says, for each letter it wrote, which encoder states (20 ms each) it read most — a time in the recording; a CTC
run has no decoder: each encoder state's best symbol is the letter it emits (or the blank), and merging
repeats and dropping blanks gives the transcript (checked against the run's greedy CTC decoding).

Shape legend: N samples (16 kHz), T log-mel frames (10 ms), F frames the model reads (T rounded down to even),
S encoder states (F / 2, 20 ms each), M mel bands, K FFT bins (201), C d_model, H heads, L letters written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from qkv.data.audio import HOP, N_FFT, SAMPLE_RATE, hz_to_mel, log_mel, mel_filters, mel_to_hz
from qkv.errors import QKVError
from qkv.evaluation.attention import token_label
from qkv.explain.base import Explanation, Options, no_grad, pick
from qkv.explain.inputs import describe_source, source_of
from qkv.explain.qkv import one_head, recording

LESSON = ("A transcriber never hears the waveform itself. The recording is cut into overlapping 25 ms frames, "
          "10 ms apart; each frame is faded at its edges (a Hann window) and split into its frequencies by a "
          "Fourier transform; the energy of each frequency is pooled into 80 mel bands, narrow at low pitches and "
          "broad at high ones, as the ear hears; a logarithm turns energy into loudness. That log-mel picture, 100 "
          "columns a second, is what the model reads. Two convolutions over time (the second skips every other "
          "frame) turn it into one vector per 20 ms, positions are added, and the encoder's self-attention lets "
          "every moment hear the whole clip.")
READING = {"attention": "The decoder then writes letters, each one reading the encoder states through cross-attention: "
                        "where that attention peaks is where in the recording the letter was heard.",
           "ctc": "A CTC head has no decoder: every encoder state names one letter or a blank ('nothing new here'); "
                  "merging repeated letters and dropping the blanks gives the text, so the states that name a letter "
                  "are where it was heard."}

MS_PER_FRAME = 1000 * HOP // SAMPLE_RATE  # 10 ms between two frames
STATE_S = 2 * HOP / SAMPLE_RATE  # 0.02 s between two encoder states (conv2 has stride 2)
BLANK = "·"  # how a CTC blank is printed in a path


@no_grad
def explain_audio(run, opts: Options) -> Explanation:
    model = run.model
    cfg = model.config
    if cfg.head == "ctc" and (opts.layer is not None or opts.head is not None):
        raise QKVError(f"{run.path.name} is a CTC run: it has no decoder, so no layer or head of cross-attention "
                       "to pick (leave layer and head out)")
    e = Explanation("audio", "a recording -> log-mel -> conv stem -> encoder states; where a letter listened",
                    run.path.name)
    e.say(f"{LESSON} {READING[cfg.head]}")

    # 1. the recording, as the run reads it (converted to 16 kHz mono, cut to the model's longest input)
    source = source_of(run, opts)
    wave, note = run.read_source(source)  # (N,) float32 in [-1, 1]
    N = wave.numel()
    batch = run.source_batch([wave])  # mel (1, M, F), mask (1, S): what transcription feeds the model
    mel_in, mask = batch.src, batch.src_mask
    T, Fr, S = N // HOP, mel_in.size(-1), mel_in.size(-1) // 2
    sizes = (f"{N / SAMPLE_RATE:.2f} s -> {T} frames of {MS_PER_FRAME} ms -> {S} encoder states of "
             f"{2 * MS_PER_FRAME} ms")
    e.say(f"recording: {describe_source(run, source)}: {N:,} samples at {SAMPLE_RATE // 1000} kHz")
    if note:
        e.say(f"(reading it: {note})")
    e.say(f"sizes: {sizes}" + (f" (the odd last frame is dropped: each state reads two; the model reads {Fr})"
                               if Fr != T else ""))
    e.tensor("waveform", wave, f"(N,) = ({N},): the air pressure, {SAMPLE_RATE:,} numbers a second")

    # 2. frames: a 25 ms window every 10 ms, the clip's ends reflected so that frame t is centred on sample 160·t
    half = N_FFT // 2
    padded = F.pad(wave[None, None], (half, half), mode="reflect")[0, 0]  # (N + 400,)
    frames = padded.unfold(0, N_FFT, HOP)[:T]  # (1 + N // 160, 400) -> (T, 400): Whisper drops the last
    times = [f"{t * MS_PER_FRAME / 1000:.2f}s" for t in range(T)]
    e.tensor("frames", frames, f"(T, {N_FFT}): {N_FFT} samples = {1000 * N_FFT // SAMPLE_RATE} ms each, starting "
             f"every {HOP} samples = {MS_PER_FRAME} ms (they overlap)", times)
    window = torch.hann_window(N_FFT, periodic=True, dtype=wave.dtype)  # (400,)
    e.tensor("Hann window", window, "w[n] = 0.5 − 0.5·cos(2πn / 400): fades each frame's edges to 0")

    # 3. Fourier transform of each windowed frame, then the energy of each frequency bin
    spectrum = torch.fft.rfft(frames * window, dim=-1)  # (T, 400) -> (T, K) complex, K = 201
    K = spectrum.size(-1)
    stft = torch.stft(wave, N_FFT, HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)[:, :T]  # (K, T + 1) -> (K, T): what log_mel computes
    scale = stft.abs().max().clamp_min(1e-12)
    e.check("rfft(frame × window) of every frame  ==  torch.stft as log_mel calls it (÷ the largest |X|)",
            torch.view_as_real(spectrum.T) / scale, torch.view_as_real(stft) / scale)
    power = spectrum.abs().T ** 2  # (T, K) -> (K, T): |X|²
    hz = SAMPLE_RATE / N_FFT  # 40 Hz between two bins
    e.tensor("power = |rfft(frame × window)|²", power, f"(K, T) = ({K}, {T}): bin k is {hz:g}·k Hz, 0 to "
             f"{SAMPLE_RATE // 2:,} Hz; one column per frame", [f"{k * hz:g} Hz" for k in range(K)])

    # 4. mel filter bank: 80 triangles pool the 201 bins into bands even on the mel scale
    filters = mel_filters().to(wave.dtype)  # (M, K)
    M = filters.size(0)
    top = hz_to_mel(torch.tensor(SAMPLE_RATE / 2, dtype=torch.float64))
    centres = mel_to_hz(torch.linspace(0.0, float(top), M + 2, dtype=torch.float64))[1:-1]  # (M,) Hz: each peak
    bands = [f"{c:.0f} Hz" for c in centres.tolist()]
    widths = [int((row > 0).sum()) for row in filters]
    e.tensor("mel filters", filters, f"(M, K) = ({M}, {K}): band 0 peaks at {centres[0]:.0f} Hz over "
             f"{widths[0]} bin(s), band {M - 1} at {centres[-1]:,.0f} Hz over {widths[-1]} bins", bands)
    mel = filters @ power  # (M, K) @ (K, T) -> (M, T)
    e.tensor("mel = filters @ power", mel, f"(M, T) = ({M}, {T}): the energy of each band in each frame", bands)

    # 5-7. log, dynamic range, scale
    log_spec = torch.clamp(mel, min=1e-10).log10()  # (M, T)
    peak = log_spec.max()
    floored = torch.maximum(log_spec, peak - 8.0)  # (M, T)
    ours = (floored + 4.0) / 4.0  # (M, T)
    raised = int((log_spec < peak - 8.0).sum())
    e.say(f"log10 of each cell (its loudness in bels: 1 = 10 dB); the loudest cell is {peak.item():+.3f}; "
          f"{raised:,} of the {M * T:,} cells lie more than 8 (80 dB) below it and are raised to "
          f"{peak.item() - 8:+.3f}; then (x + 4) / 4")
    e.tensor("log-mel = (max(log10 mel, max − 8) + 4) / 4", ours, f"(M, T) = ({M}, {T}): what the model reads",
             bands)
    e.check("the log-mel recomputed step by step  ==  qkv.data.audio.log_mel(waveform)", ours, log_mel(wave))
    e.check(f"the model's input (the first {Fr} frames)  ==  that log-mel", mel_in[0], ours[:, :Fr], tolerance=0.0)

    # 8. the conv stem: conv1 and conv2 as matrix products over windows of 3 frames
    memory = _stem_and_encoder(model, mel_in, mask, e)  # (1, S, C)

    # 9. the letters: where each one listened (attention head), or which states emit it (CTC)
    if cfg.head == "ctc":
        text, letters, panel = _ctc(run, mel_in, mask, memory, e)
    else:
        text, letters, panel = _cross(run, mel_in, mask, opts, e)
    e.data.update(source=describe_source(run, source), notes=note, samples=N, seconds=N / SAMPLE_RATE, frames=T,
                  frames_read=Fr, states=S, sizes=sizes, mels=M, bins=K, d_model=cfg.d_model, head=cfg.head,
                  transcript=text, letters=letters)
    data = {"mel": ours[:, :Fr].float().cpu(), "seconds_per_frame": MS_PER_FRAME / 1000, "letters": letters,
            "head": cfg.head, "transcript": text, **panel}
    e.figure("log-mel", f"{describe_source(run, source)}: log-mel, and where each letter "
             f"{'was emitted' if cfg.head == 'ctc' else 'listened'}", lambda fig: _draw(fig, data), data,
             size=(11.0, 6.0))
    return e


def _stem_and_encoder(model, mel: Tensor, mask: Tensor, e: Explanation) -> Tensor:
    """conv1, GELU, conv2 (stride 2), GELU, + positions, then the encoder's blocks and norm, each checked against
    the model's own modules; returns the memory (1, S, C)."""
    c1, c2 = model.conv1, model.conv2
    C, M, k1 = c1.weight.shape
    S = mel.size(-1) // 2
    span = (c2.kernel_size[0] - 1) * c1.stride[0] + k1  # mel frames one state hears through both convolutions
    heard_ms = (span - 1) * MS_PER_FRAME + 1000 * N_FFT // SAMPLE_RATE  # the first frame's start to the last one's end
    e.say(f"the conv stem: conv1 reads {k1} neighbouring frames of {M} bands ({M}·{k1} = {M * k1} numbers) and "
          f"gives {C}; conv2 reads {c2.kernel_size[0]} of those and steps {c2.stride[0]} frames at a time: each "
          f"encoder state hears {span} frames, about {heard_ms} ms of sound")
    w1 = c1.weight.reshape(C, M * k1)  # (C, M, 3) -> (C, M·3)
    win1 = F.pad(mel, (1, 1)).unfold(-1, k1, 1)  # (1, M, F + 2) -> (1, M, F, 3)
    win1 = win1.permute(0, 2, 1, 3).reshape(1, mel.size(-1), M * k1)  # (1, F, M, 3) -> (1, F, M·3)
    x1 = win1 @ w1.T + c1.bias  # (1, F, M·3) @ (M·3, C) -> (1, F, C)
    e.tensor("conv1.weight", w1, f"(C, M·{k1}) = ({C}, {M * k1}): one row per "
             "output channel, over 3 frames of every band")
    e.check("each frame's 3-frame window @ conv1.weightᵀ + bias  ==  model.conv1(log-mel)", x1.transpose(1, 2),
            c1(mel))
    h1 = F.gelu(x1) * mask.repeat_interleave(2, dim=1)[:, :, None].to(x1.dtype)  # (1, F, C): 0 at padded frames
    k2, st = c2.kernel_size[0], c2.stride[0]
    w2 = c2.weight.reshape(C, C * k2)  # (C, C, 3) -> (C, C·3)
    win2 = F.pad(h1.transpose(1, 2), (1, 1)).unfold(-1, k2, st)  # (1, C, F + 2) -> (1, C, S, 3)
    win2 = win2.permute(0, 2, 1, 3).reshape(1, S, C * k2)  # (1, S, C, 3) -> (1, S, C·3)
    x2 = F.gelu(win2 @ w2.T + c2.bias)  # (1, S, C·3) @ (C·3, C) -> (1, S, C)
    e.tensor("GELU(conv2(GELU(conv1(log-mel))))", x2[0], f"(S, C) = ({S}, {C}): one state per 20 ms",
             _state_times(S))
    pos = model.frame_pos[:S]  # (S, C)
    e.tensor("+ positions", pos, "(S, C): the fixed sinusoidal position of each state (Vaswani et al. §3.5)",
             _state_times(S))
    x = x2 + pos  # (1, S, C)
    e.check("the stem recomputed (conv1, GELU, conv2, GELU, + positions)  ==  model.stem(log-mel)", x,
            model.stem(mel, mask))

    # the encoder: bidirectional self-attention blocks over the states, then its norm
    for blk in model.encoder:
        x, _ = blk(x, causal=False, key_mask=mask)  # (1, S, C)
    memory = model.pool(model.enc_norm(x))  # (1, S, C)
    e.tensor("encoder states (memory)", memory[0], f"(S, C) = ({S}, {C}): after {len(model.encoder)} encoder "
             "layers and enc_norm; every state has heard the whole clip", _state_times(S))
    e.check(f"the stem's states through the {len(model.encoder)} encoder blocks and enc_norm  ==  "
            "model.encode(log-mel)", memory, model.encode(mel, mask))
    return memory


def _cross(run, mel: Tensor, mask: Tensor, opts: Options, e: Explanation) -> tuple[str, list[dict], dict]:
    """Greedy transcript, then decoder layer L's cross-attention of each written letter over the states: (the
    transcript, each letter's peak, the weights to draw)."""
    from qkv.generation.seq2seq import decode_batch, max_lengths

    model, tok = run.model, run.target_tokenizer
    dcfg = run.decoding(beam=1)
    (out,) = decode_batch(model, mel, mask, tok.bos_id, tok.eos_id, dcfg, tok.vocab_size)
    out = out[: model.config.max_seq_len - 1]
    tgt_in = torch.tensor([[tok.bos_id, *out]], device=mask.device)  # (1, L + 1): BOS + transcript
    layer = pick(opts.layer, len(model.decoder), "layer", len(model.decoder) - 1)
    attn = model.decoder[layer].cross_attn
    with recording({"cross": attn}) as calls:
        maps = model.attention_maps(mel, mask, tgt_in)["cross"][layer][0]  # (H, L + 1, S)
    (call,) = calls["cross"]
    H, S = maps.size(0), maps.size(-1)
    if opts.head is not None:
        h = pick(opts.head, H, "head", 0)
        weights, which = maps[h], f"head {h}"  # (L + 1, S)
        e.check(f"decoder {layer} cross-attention, head {h}: softmax(QKᵀ/√d_k) over the states recomputed  ==  "
                "the model's map",
                one_head(attn, call, h)["weights"][0, 0], weights)
    else:
        weights, which = maps.mean(dim=0), f"the mean of its {H} heads"  # (H, L + 1, S) -> (L + 1, S)
        mine = torch.cat([one_head(attn, call, h)["weights"][0] for h in range(H)])  # H × (1, L + 1, S) -> (H, ·, S)
        e.check(f"decoder {layer} cross-attention: every head's softmax(QKᵀ/√d_k) over the states recomputed  ==  "
                "the model's maps",
                mine, maps)
    finished = len(out) < max_lengths(mask, dcfg.max_len_a, dcfg.max_len_b, model.config.max_seq_len)[0]
    labels = [token_label(tok, i) for i in out] + (["<eos>"] if finished else [])
    weights = weights[: len(labels)]  # (L', S): row t is the step that wrote letter t
    text = tok.decode(out)
    e.say(f"greedy transcript: {text!r} ({len(out)} characters); each row of decoder layer {layer}'s "
          f"cross-attention ({which}) is one written letter, each column one encoder state of 20 ms")
    e.tensor("cross-attention: letters × encoder states", weights, f"(L, S) = {tuple(weights.shape)}; each row sums "
             "to 1", labels)
    letters, rows = [], []
    for t, label in enumerate(labels):
        s = int(weights[t].argmax())
        centroid = float((weights[t] * torch.arange(S, dtype=weights.dtype)).sum()) * STATE_S
        letters.append({"letter": label, "state": s, "time": s * STATE_S,
                        "weight": weights[t, s].item(), "centroid": centroid})
        rows.append([t, label, s, f"{s * STATE_S:.2f} s", weights[t, s].item(), f"{centroid:.2f} s"])
    e.table(["#", "letter", "peak state", "heard at", "weight there", "weighted mean time"], rows,
            "where each letter listened: state s is 20·s ms into the recording (it is centred on frame 2s)")
    peaks = [x["state"] for x in letters]
    forward = sum(b >= a for a, b in zip(peaks, peaks[1:], strict=False))
    if len(peaks) > 1:
        e.say(f"the peak moves forward in time (or stays) at {forward} of the {len(peaks) - 1} steps from one letter "
              "to the next (a model that reads the recording left to right: at every step)")
    return text, letters, {"weights": weights.float().cpu(), "rows": labels}


def _ctc(run, mel: Tensor, mask: Tensor, memory: Tensor, e: Explanation) -> tuple[str, list[dict], dict]:
    """The CTC head: every state's distribution over the letters and the blank, its best symbol, the path merged:
    (the transcript, each emitted letter's states, the probabilities to draw)."""
    from qkv.generation.ctc import ctc_greedy

    model, tok = run.model, run.target_tokenizer
    blank = tok.pad_id
    logits = model.lm_head(model.dec_norm(memory))  # (1, S, C) -> (1, S, V)
    e.say("a CTC run has no decoder: the decoder's norm and output layer read every encoder state, so each 20 ms "
          f"gets a distribution over the {tok.vocab_size} symbols, the blank ({token_label(tok, blank)}, id {blank}) "
          "included")
    e.check("lm_head(dec_norm(encoder states))  ==  model.ctc_logits(log-mel)", logits, model.ctc_logits(mel, mask))
    probs = logits[0].softmax(-1)  # (S, V)
    path = probs.argmax(-1).tolist()  # (S,): the best symbol of each state
    S = len(path)
    e.say(f"best symbol of each state ({BLANK} = blank): "
          + "".join(BLANK if p == blank else token_label(tok, p) for p in path))
    runs, letters, text_ids = [], [], []
    start = 0
    for s in range(1, S + 1):
        if s == S or path[s] != path[start]:  # a run of one symbol ends at s - 1
            sym, kept = path[start], path[start] != blank
            runs.append([f"{start}–{s - 1}", f"{start * STATE_S:.2f}–{(s - 1) * STATE_S:.2f} s",
                         BLANK if not kept else token_label(tok, sym), probs[start:s, sym].mean().item(),
                         "emits it" if kept else "blank: dropped"])
            if kept:
                text_ids.append(sym)
                letters.append({"letter": token_label(tok, sym), "state": start, "end": s - 1,
                                "time": start * STATE_S, "end_time": (s - 1) * STATE_S,
                                "prob": probs[start:s, sym].mean().item()})
            start = s
    e.table(["states", "time", "symbol", "mean probability", "in the text"], runs,
            "the path: repeats merged into one letter, blanks dropped")
    (theirs,) = ctc_greedy(model.ctc_logits(mel, mask), mask.sum(1), blank)
    text = tok.decode(text_ids)
    e.say(f"transcript: {text!r} — {len(letters)} letter(s) from {S} states"
          + (" (every state's best symbol is the blank: nothing is emitted)" if not letters else ""))
    e.check("the path merged and its blanks dropped  ==  the run's greedy CTC decoding (mismatches)",
            torch.tensor(float(text_ids != theirs)), torch.tensor(0.0), tolerance=0.0)
    others = probs.clone()  # (S, V)
    others[:, blank] = 0.0
    return text, letters, {"blank": probs[:, blank].float().cpu(), "best_letter": others.max(-1).values.float().cpu()}


def _state_times(S: int) -> list[str]:
    return [f"{s * STATE_S:.2f}s" for s in range(S)]


def _draw(fig, data: dict) -> None:
    """The log-mel (bands × time) with each letter where it was heard; under it, on the same time axis, the
    cross-attention of every letter (attention head) or the blank's and the best letter's probability (CTC)."""
    mel, dt, letters = data["mel"], data["seconds_per_frame"], data["letters"]
    M, Fr = mel.shape
    ctc = data["head"] == "ctc"
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    # column t is frame t, centred on t·10 ms; state s is centred on frame 2s and covers two frames
    top.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(-dt / 2, (Fr - 0.5) * dt, 0, M))
    top.set_ylabel("mel band")
    top.set_title(f"transcript: {data['transcript']!r}", fontsize=9)
    stacked: dict[float, int] = {}  # letters already written at one time: the next one goes below them
    for x in letters:
        if ctc:
            top.axvspan(x["time"] - dt, x["end_time"] + dt, color="cyan", alpha=0.25)
            at = (x["time"] + x["end_time"]) / 2
        else:
            at = x["time"]
            top.axvline(at, color="cyan", lw=1)
        k = stacked[at] = stacked.get(at, -1) + 1
        top.text(at, M * (0.9 - 0.08 * k), x["letter"], color="white", ha="center", fontsize=10, weight="bold")
    S = Fr // 2
    if ctc:
        t = [s * 2 * dt for s in range(S)]
        bottom.plot(t, data["blank"].numpy(), label="blank", color="grey")
        bottom.plot(t, data["best_letter"].numpy(), label="best letter", color="tab:blue")
        bottom.set_ylim(0, 1.05)
        bottom.set_ylabel("probability")
        bottom.legend(fontsize=7, loc="upper right")
    else:
        rows = data["rows"]
        extent = (-dt, (2 * S - 1) * dt, len(rows), 0)  # state s spans frames 2s − 1/2 … 2s + 3/2
        bottom.imshow(data["weights"].numpy(), aspect="auto", cmap="Blues", extent=extent)
        bottom.set_yticks([r + 0.5 for r in range(len(rows))], rows, fontsize=7)
        bottom.set_ylabel("letter written")
    bottom.set_xlabel("time (s)")
