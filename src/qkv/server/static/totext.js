"use strict";
// Source -> text: a sentence (translation), an image (captioning) or a recording (speech recognition) in, the
// n-best outputs and the cross-attention of the best one per layer and head out. What the page shows follows the
// run's source_kind, not its task.
(async function () {
  const page = location.pathname.split("/").pop();
  const run = await qkv.header(page);
  const name = qkv.runName();
  const kind = run.source_kind;
  const image = kind === "image", audio = kind === "audio";
  const words = {
    text: ["Translate", "Translations", "Translate"],
    image: ["Caption an image", "Captions", "Caption"],
    audio: ["Transcribe a recording", "Transcripts", "Transcribe"],
  }[kind];
  qkv.$("#title").textContent = words[0];
  qkv.$("#outputs-title").textContent = words[1];
  qkv.$("#go").textContent = words[2];
  qkv.$(`#${kind}-source`).hidden = false;
  qkv.$("#beam").value = run.decode.beam;
  qkv.$("#length_penalty").value = run.decode.length_penalty;
  if (kind === "text" && !qkv.$("#text").value) qkv.$("#text").value = run.example_text || "";

  // an image file, resized in the page to what the model reads (a clip: frames side by side), as a PNG data URL
  let picked = null;
  async function readFile(file) {
    const url = URL.createObjectURL(file);
    try {
      const img = await new Promise((ok, fail) => {
        const i = new Image();
        i.onload = () => ok(i);
        i.onerror = () => fail(new Error(`${file.name}: not an image the browser can read`));
        i.src = url;
      });
      const s = run.image.size, f = run.image.frames;
      const c = document.createElement("canvas");
      c.width = s * f;
      c.height = s;
      c.getContext("2d").drawImage(img, 0, 0, s * f, s);
      return c.toDataURL("image/png");
    } finally {
      URL.revokeObjectURL(url);
    }
  }
  qkv.$("#file").addEventListener("change", async (e) => {
    qkv.showError("#error", null);
    try {
      picked = e.target.files.length ? await readFile(e.target.files[0]) : null;
      if (picked) await go();
    } catch (err) {
      qkv.showError("#error", err);
    }
  });

  // the attention of one produced token over the image's patches, drawn on the image
  async function drawPatches(stack, weights) {
    const canvas = qkv.$("#picture");
    const img = await new Promise((ok) => { const i = new Image(); i.onload = () => ok(i); i.src = stack.image; });
    const scale = Math.max(1, Math.floor(256 / img.height));
    canvas.width = img.width * scale;
    canvas.height = img.height * scale;
    const g = canvas.getContext("2d");
    g.imageSmoothingEnabled = false;
    g.drawImage(img, 0, 0, canvas.width, canvas.height);
    if (!weights || !stack.grid) return;
    const per = stack.grid * stack.grid, side = canvas.height / stack.grid, top = Math.max(...weights) || 1;
    weights.forEach((w, p) => {
      const f = Math.floor(p / per), r = Math.floor((p % per) / stack.grid), c = p % stack.grid;
      g.fillStyle = `rgba(255, 200, 0, ${0.75 * w / top})`;
      g.fillRect(f * canvas.height + c * side, r * side, side, side);
      g.strokeStyle = "rgba(0, 0, 0, 0.15)";
      g.strokeRect(f * canvas.height + c * side, r * side, side, side);
    });
  }

  function drawImageAttention(box, stack, how) {
    box.textContent = "";
    let token = 0, layer = stack.layers - 1, head = null;
    const words = qkv.el("div", { class: "words" });
    const redraw = () => {
      const w = head === null ? qkv.meanHeads(stack.weights[layer]) : stack.weights[layer][head];
      words.querySelectorAll("button").forEach((b, i) => b.classList.toggle("pinned", i === token));
      qkv.$("#stats").textContent = `${how} · ${stack.kind}, decoder layer ${layer}, ${head === null ? "mean over heads" : "head " + head}` +
        ` · where “${stack.rows[token]}” looked`;
      drawPatches(stack, w[token]);
    };
    stack.rows.forEach((label, i) => words.append(qkv.el("button", { class: "word", onclick: () => { token = i; redraw(); } }, label)));
    const pickers = qkv.attentionPickers(stack, (l, h) => { layer = l; head = h; redraw(); });
    box.append(qkv.el("div", { class: "controls" }, pickers[0], pickers[1]), words);
    redraw();
  }

  // ------------------------------------------------------------------------------------------ a recording
  // What is sent is a WAV file as a data URL: an upload as it is (the server converts it and says how), or, when
  // its data URL would be over the server's body limit, and for a recording, 16-bit mono samples at the model's
  // rate written in the page (wav.js). `heard` = {url, what, note}.
  let heard = null, recorder = null;
  const lim = run.audio;
  if (audio) {
    qkv.$("#recording").textContent = `Record up to ${lim.record_seconds} s (the model reads up to ${lim.max_seconds} s; ` +
      `a request to this server holds at most ${(lim.max_wav_bytes / 1000).toFixed(0)} kB of WAV), or upload a WAV file.`;
  }

  async function readWav(file) {
    const bytes = await file.arrayBuffer();
    if (bytes.byteLength <= lim.max_wav_bytes) return { url: qkv.wav.dataURL(bytes), what: file.name, note: "" };
    let decoded;
    try {
      decoded = await qkv.wav.decode(bytes, lim.sample_rate);
    } catch (e) {
      throw new Error(`${file.name}: not audio the browser can read, and at ${(bytes.byteLength / 1000).toFixed(0)} kB ` +
        `too large to send as it is (at most ${(lim.max_wav_bytes / 1000).toFixed(0)} kB)`);
    }
    const keep = Math.floor(lim.record_seconds * lim.sample_rate), x = decoded.samples;
    const cut = x.length > keep ? `, its first ${lim.record_seconds} s of ${(x.length / lim.sample_rate).toFixed(1)} s` : "";
    return {
      url: qkv.wav.dataURL(qkv.wav.encode(x.subarray(0, keep), lim.sample_rate)), what: file.name,
      note: `${file.name} (${(bytes.byteLength / 1000).toFixed(0)} kB) is over what this server takes; decoded and ` +
        `re-encoded in the page as 16-bit mono at ${lim.sample_rate} Hz${cut}`,
    };
  }

  async function startRecording() {
    qkv.showError("#error", null);
    qkv.$("#record").disabled = true;
    qkv.$("#go").disabled = true;  // until the recording is over: it is what Transcribe sends next
    try {
      recorder = await qkv.wav.record({
        maxSeconds: lim.record_seconds,
        onFull: () => stopRecording(),
        onLevel: (s, peak) => {
          qkv.$("#recording").textContent = `recording… ${s.toFixed(1)} s of at most ${lim.record_seconds} s · ` +
            `level ${"▮".repeat(Math.round(10 * Math.min(1, peak)))}${"▯".repeat(10 - Math.round(10 * Math.min(1, peak)))}`;
        },
      });
      qkv.$("#stop").disabled = false;
      qkv.$("#recording").textContent = "recording…";
    } catch (e) {
      recorder = null;
      qkv.$("#record").disabled = false;
      qkv.$("#go").disabled = false;
      qkv.showError("#error", e.name === "NotAllowedError" ? "the browser was not allowed to use the microphone" : e);
    }
  }

  async function stopRecording() {
    if (!recorder) return;
    const r = recorder;
    recorder = null;
    qkv.$("#stop").disabled = true;
    try {
      const { samples, rate } = await r.stop();
      const x = qkv.wav.resample(samples, rate, lim.sample_rate);
      const full = samples.length >= Math.floor(lim.record_seconds * rate);
      qkv.$("#recording").textContent = `recorded ${(samples.length / rate).toFixed(2)} s` +
        (full ? ` (stopped at ${lim.record_seconds} s, the most this page sends)` : "");
      heard = {
        url: qkv.wav.dataURL(qkv.wav.encode(x, lim.sample_rate)), what: "the recording",
        note: `recorded at ${rate} Hz, resampled in the page to ${lim.sample_rate} Hz`,
      };
      qkv.$("#go").disabled = false;
      await go();
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      qkv.$("#record").disabled = false;
      qkv.$("#go").disabled = false;
    }
  }

  if (audio) {
    qkv.$("#record").addEventListener("click", startRecording);
    qkv.$("#stop").addEventListener("click", stopRecording);
    qkv.$("#wavfile").addEventListener("change", async (e) => {
      qkv.showError("#error", null);
      try {
        heard = e.target.files.length ? await readWav(e.target.files[0]) : null;
        if (heard) await go();
      } catch (err) {
        qkv.showError("#error", err);
      }
    });
  }

  // the spectrogram's grey levels (0 = the clip's quietest cell, 255 its loudest) through a dark-to-bright palette
  const PALETTE = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21], [250, 193, 39], [252, 255, 164]];
  function colour(g) {
    const t = (g / 255) * (PALETTE.length - 1), i = Math.min(PALETTE.length - 2, Math.floor(t)), f = t - i;
    return PALETTE[i].map((a, k) => Math.round(a + f * (PALETTE[i + 1][k] - a)));
  }

  async function spectrogram(url) {
    const img = await new Promise((ok, fail) => {
      const i = new Image();
      i.onload = () => ok(i);
      i.onerror = () => fail(new Error("the spectrogram could not be drawn"));
      i.src = url;
    });
    const c = document.createElement("canvas");
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext("2d");
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < px.data.length; i += 4) {
      const [r, gr, b] = colour(px.data[i]);
      px.data[i] = r;
      px.data[i + 1] = gr;
      px.data[i + 2] = b;
    }
    g.putImageData(px, 0, 0);
    return c;
  }

  // Each produced character's attention over the encoder states (20 ms each, 2 mel frames), on one time axis:
  // the spectrogram on top, lit where the chosen character looked (and its weights as a line), and below it the
  // whole map, one row per character, each row scaled to its largest weight. Click a row or a character to choose.
  async function drawAudioAttention(box, stack, how) {
    box.textContent = "";
    const spec = await spectrogram(stack.spectrogram);
    const S = stack.cols.length, R = stack.rows.length;
    const LEFT = 52, SPEC_H = 2 * stack.mels, AXIS_H = 20, ROW_H = 16;
    const room = Math.max(400, Math.min(1150, box.clientWidth || 1150)) - LEFT - 8;
    const P = Math.max(2, Math.min(16, Math.floor(room / S)));  // pixels per encoder state
    const canvas = qkv.el("canvas", { id: "spectrogram", class: "picture", "aria-label": "the spectrogram with the attention of each produced character over time" });
    canvas.width = LEFT + S * P + 8;
    canvas.height = SPEC_H + AXIS_H + R * ROW_H + 4;
    let token = 0, layer = stack.layers - 1, head = null;
    const buttons = qkv.el("div", { class: "words" });
    const top = SPEC_H + AXIS_H;  // where the map's first row starts

    const redraw = () => {
      const w = head === null ? qkv.meanHeads(stack.weights[layer]) : stack.weights[layer][head];  // [row][state]
      const g = canvas.getContext("2d");
      g.clearRect(0, 0, canvas.width, canvas.height);
      g.fillStyle = "#fff";
      g.fillRect(0, 0, canvas.width, canvas.height);
      // 1. the spectrogram (mel frame f spans P / 2 pixels: state s covers frames 2s and 2s + 1), low bands at the bottom
      g.imageSmoothingEnabled = true;
      g.drawImage(spec, LEFT, 0, (stack.mel_frames * P) / 2, SPEC_H);
      // 2. where the chosen character looked: the rest dimmed, and its weights as a line
      const row = w[token], peak = Math.max(...row) || 1;
      row.forEach((v, s) => {
        g.fillStyle = `rgba(0, 0, 0, ${0.6 * (1 - v / peak)})`;
        g.fillRect(LEFT + s * P, 0, P, SPEC_H);
      });
      g.strokeStyle = "#37e0ff";
      g.lineWidth = 2;
      g.beginPath();
      row.forEach((v, s) => {
        const x = LEFT + (s + 0.5) * P, y = SPEC_H - 2 - (v / peak) * (SPEC_H - 6);
        if (s === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
      // 3. the time axis
      g.fillStyle = "#5b6570";
      g.font = "11px system-ui, sans-serif";
      g.textBaseline = "middle";
      const seconds = 0.02 * S, every = seconds <= 2 ? 0.1 : seconds <= 6 ? 0.5 : 1;
      for (let t = 0; t <= seconds + 1e-9; t += every) {
        const x = LEFT + (t / 0.02) * P;
        g.fillRect(x, SPEC_H, 1, 4);
        if (Math.round(t / every) % (seconds <= 2 ? 2 : 1) === 0) g.fillText(`${t.toFixed(1)} s`, x + 2, SPEC_H + 11);
      }
      g.textAlign = "right";
      g.fillText("mel ↑", LEFT - 4, SPEC_H / 2);
      // 4. the map: one row per produced character
      stack.rows.forEach((label, r) => {
        const y = top + r * ROW_H, rowPeak = Math.max(...w[r]) || 1;
        w[r].forEach((v, s) => {
          g.fillStyle = `rgba(33, 86, 201, ${Math.min(1, v / rowPeak)})`;
          g.fillRect(LEFT + s * P, y, P, ROW_H - 2);
        });
        g.fillStyle = r === token ? "#1b1f24" : "#5b6570";
        g.font = `${r === token ? "600 " : ""}12px ui-monospace, Menlo, Consolas, monospace`;
        g.fillText(label, LEFT - 6, y + ROW_H / 2 - 1);
      });
      g.strokeStyle = "#f0b400";
      g.lineWidth = 2;
      g.strokeRect(LEFT - 1, top + token * ROW_H - 1, S * P + 2, ROW_H);
      g.textAlign = "left";
      buttons.querySelectorAll("button").forEach((b, i) => b.classList.toggle("pinned", i === token));
      const at = row.indexOf(Math.max(...row));
      qkv.$("#stats").textContent = `${how} · ${stack.kind}, decoder layer ${layer}, ${head === null ? "mean over heads" : "head " + head}` +
        ` · where “${stack.rows[token]}” listened: most at ${stack.cols[at]}`;
    };
    stack.rows.forEach((label, i) => buttons.append(qkv.el("button", { class: "word", onclick: () => { token = i; redraw(); } }, label)));
    canvas.addEventListener("click", (e) => {
      const rect = canvas.getBoundingClientRect();
      const y = (e.clientY - rect.top) * (canvas.height / rect.height) - top;
      if (y >= 0 && y < R * ROW_H) { token = Math.floor(y / ROW_H); redraw(); }
    });
    const pickers = qkv.attentionPickers(stack, (l, h) => { layer = l; head = h; redraw(); });
    box.append(qkv.el("div", { class: "controls" }, pickers[0], pickers[1]), buttons, canvas,
      qkv.el("p", { class: "stats" }, `${stack.xlabel} → · produced characters ↓ · each row scaled to its largest weight`));
    redraw();
  }

  // ------------------------------------------------------------------------------------------ asking the run
  async function go() {
    qkv.showError("#error", null);
    const body = { beam: qkv.num("#beam"), n_best: qkv.num("#n_best") || 1, length_penalty: qkv.num("#length_penalty") };
    if (image) {
      if (!picked) { qkv.showError("#error", "choose an image file first"); return; }
      body.image = picked;
    } else if (audio) {
      if (!heard) { qkv.showError("#error", "record something or choose a WAV file first"); return; }
      body.audio = heard.url;
    } else {
      body.text = qkv.$("#text").value;
    }
    qkv.$("#go").disabled = true;
    try {
      const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/to-text`, body);
      qkv.$("#nbest").replaceChildren(...r.nbest.map((h) => qkv.el("li", {},
        qkv.el("span", { class: "hyp" }, h.text || "(empty)"),
        h.score === null ? null : qkv.el("span", { class: "score" },
          `score ${h.score.toFixed(3)} · log P ${h.logprob.toFixed(3)} · ${h.labels.length} tokens${h.finished ? "" : " · hit the length limit"}`))));
      const d = r.decoding;
      const how = (r.attention === null && r.nbest[0].labels === null ? "greedy CTC"
        : d.beam === 1 ? "greedy search" : `beam ${d.beam}, ${d.length_norm} length penalty α = ${d.length_penalty}`) +
        ` · ${(r.seconds * 1000).toFixed(0)} ms`;
      const notes = audio ? [`${heard.what}: ${r.audio_seconds} s of audio`, heard.note, r.notes] : [r.notes];
      qkv.$("#notes").textContent = notes.filter(Boolean).join(" · ");
      if (r.attention === null) {
        qkv.$("#stats").textContent = how;
        qkv.$("#attention").replaceChildren(qkv.el("p", { class: "stats" }, r.no_attention));
      } else if (r.attention.spectrogram) {
        await drawAudioAttention(qkv.$("#attention"), r.attention, how);
      } else if (r.attention.image) {
        drawImageAttention(qkv.$("#attention"), r.attention, how);
      } else {
        qkv.$("#stats").textContent = how;
        qkv.drawAttention(qkv.$("#attention"), r.attention);
      }
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      qkv.$("#go").disabled = false;
    }
  }
  qkv.$("#go").addEventListener("click", go);
  qkv.$("#text").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); go(); } });
})().catch((e) => qkv.showError("#error", e));
