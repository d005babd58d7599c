"use strict";
// Recordings as 16-bit mono WAV files, written by hand (no library): the microphone through an AudioWorklet,
// resampled in the page to the model's rate, and encoded as the bytes of a plain PCM WAV file.
//
// This one file is loaded twice: by the page (after qkv.js), where it adds qkv.wav, and by the AudioContext as
// the worklet module (`audioWorklet.addModule`), where it registers the processor that copies the microphone's
// samples out. The server's Content-Security-Policy allows scripts from this server only, so the worklet cannot
// come from a blob: URL.

if (typeof registerProcessor === "function") {
  // ---------------------------------------------------------------------------------------- the worklet side
  // Float32 blocks of 128 samples (channel 0, already mixed down to mono by the node's channelCount: 1) are
  // gathered into chunks of 4096 and posted to the page; "stop" posts what is left, then "done".
  registerProcessor("qkv-capture", class extends AudioWorkletProcessor {
    constructor() {
      super();
      this.chunk = new Float32Array(4096);
      this.n = 0;
      this.alive = true;
      this.port.onmessage = (e) => {
        if (e.data !== "stop") return;
        this.flush();
        this.port.postMessage("done");
        this.alive = false;
      };
    }

    flush() {
      if (this.n) this.port.postMessage(this.chunk.slice(0, this.n));
      this.n = 0;
    }

    process(inputs) {
      const x = inputs[0] && inputs[0][0];
      if (this.alive && x) {
        for (let i = 0; i < x.length; i++) {
          this.chunk[this.n++] = x[i];
          if (this.n === this.chunk.length) this.flush();
        }
      }
      return this.alive;
    }
  });
} else {
  // ---------------------------------------------------------------------------------------- the page side
  qkv.wav = {};

  // samples (Float32Array, mono, in [-1, 1]) at `rate` Hz -> the bytes of a 16-bit PCM WAV file (ArrayBuffer):
  // a 44-byte RIFF header, then each sample as round(x · 32768) clipped to [-32768, 32767], little-endian
  qkv.wav.encode = function (samples, rate) {
    const buf = new ArrayBuffer(44 + 2 * samples.length);
    const v = new DataView(buf);
    const text = (at, s) => { for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i)); };
    text(0, "RIFF");
    v.setUint32(4, 36 + 2 * samples.length, true);  // the size of what follows
    text(8, "WAVE");
    text(12, "fmt ");
    v.setUint32(16, 16, true);  // the fmt chunk's size
    v.setUint16(20, 1, true);  // format 1: integer PCM
    v.setUint16(22, 1, true);  // one channel
    v.setUint32(24, rate, true);  // samples per second
    v.setUint32(28, 2 * rate, true);  // bytes per second
    v.setUint16(32, 2, true);  // bytes per frame
    v.setUint16(34, 16, true);  // bits per sample
    text(36, "data");
    v.setUint32(40, 2 * samples.length, true);
    for (let i = 0; i < samples.length; i++) {
      v.setInt16(44 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(samples[i] * 32768))), true);
    }
    return buf;
  };

  // samples at `from` Hz -> at `to` Hz: windowed-sinc interpolation. Going down, the sinc is widened to the new
  // rate's Nyquist frequency (a low-pass, so that what the new rate cannot hold does not fold back as aliases);
  // each output sample's weights are normalised to sum to 1 (no change of level).
  qkv.wav.resample = function (x, from, to) {
    if (from === to) return Float32Array.from(x);
    const step = from / to;  // input samples per output sample
    const cutoff = 0.95 * Math.min(1, to / from);  // of the input's Nyquist frequency
    const half = Math.ceil(16 / cutoff);  // input samples on each side of an output sample
    const n = Math.floor(x.length / step);
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const t = i * step;  // where output sample i sits among the input samples
      const lo = Math.max(0, Math.ceil(t - half)), hi = Math.min(x.length - 1, Math.floor(t + half));
      let sum = 0, weights = 0;
      for (let k = lo; k <= hi; k++) {
        const d = k - t;
        const arg = Math.PI * cutoff * d;
        const sinc = d === 0 ? 1 : Math.sin(arg) / arg;
        const w = sinc * (0.5 + 0.5 * Math.cos(Math.PI * d / (half + 1)));  // Hann window over ±half
        sum += w * x[k];
        weights += w;
      }
      y[i] = weights ? sum / weights : 0;
    }
    return y;
  };

  // Start recording from the microphone. Returns {rate, seconds(), stop()}: stop() ends the capture, releases the
  // microphone and resolves to {samples: Float32Array (mono, at `rate`), rate}. `onLevel(seconds, peak)` is
  // called as chunks arrive; `maxSeconds` stops by itself (the recorder calls onFull(), and the caller stops).
  qkv.wav.record = async function ({ onLevel, maxSeconds, onFull } = {}) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("recording needs a secure page: open the playground at http://127.0.0.1 or https");
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const ctx = new AudioContext();  // at the device's rate (44.1 or 48 kHz)
    try {
      await ctx.audioWorklet.addModule("/static/wav.js");
    } catch (e) {
      stream.getTracks().forEach((t) => t.stop());
      await ctx.close();
      throw new Error(`the recorder could not start: ${e.message || e}`);
    }
    const source = ctx.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(ctx, "qkv-capture", { channelCount: 1, channelCountMode: "explicit" });
    const chunks = [];
    let total = 0, full = false, finished;
    const done = new Promise((ok) => { finished = ok; });
    node.port.onmessage = (e) => {
      if (e.data === "done") { finished(); return; }
      chunks.push(e.data);
      total += e.data.length;
      if (onLevel) onLevel(total / ctx.sampleRate, e.data.reduce((m, v) => Math.max(m, Math.abs(v)), 0));
      if (maxSeconds && !full && total >= maxSeconds * ctx.sampleRate) {
        full = true;
        if (onFull) onFull();
      }
    };
    source.connect(node);
    node.connect(ctx.destination);  // a node the graph pulls: it writes silence
    if (ctx.state === "suspended") await ctx.resume();
    let stopping = null;
    return {
      rate: ctx.sampleRate,
      seconds: () => total / ctx.sampleRate,
      stop() {
        if (stopping) return stopping;
        stopping = (async () => {
          node.port.postMessage("stop");
          await Promise.race([done, new Promise((ok) => setTimeout(ok, 1000))]);  // a suspended context posts nothing
          source.disconnect();
          node.disconnect();
          stream.getTracks().forEach((t) => t.stop());
          const rate = ctx.sampleRate;
          await ctx.close();
          const samples = new Float32Array(total);
          let at = 0;
          for (const c of chunks) { samples.set(c, at); at += c.length; }
          return { samples: maxSeconds ? samples.subarray(0, Math.floor(maxSeconds * rate)) : samples, rate };
        })();
        return stopping;
      },
    };
  };

  // A WAV file's bytes as a data URL (what the to-text endpoint reads)
  qkv.wav.dataURL = function (bytes) {
    const u8 = new Uint8Array(bytes);
    let s = "";
    for (let i = 0; i < u8.length; i += 0x8000) s += String.fromCharCode.apply(null, u8.subarray(i, i + 0x8000));
    return "data:audio/wav;base64," + btoa(s);
  };

  // Any audio file the browser can decode -> mono samples at `rate` (the browser decodes and resamples)
  qkv.wav.decode = async function (bytes, rate) {
    const ctx = new OfflineAudioContext(1, 1, rate);
    const audio = await ctx.decodeAudioData(bytes.slice(0));
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const x = audio.getChannelData(c);
      for (let i = 0; i < x.length; i++) mono[i] += x[i] / audio.numberOfChannels;
    }
    return { samples: mono, channels: audio.numberOfChannels };
  };
}
