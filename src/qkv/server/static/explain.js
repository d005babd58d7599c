"use strict";
// Look inside: `qkv explain` as a page. The blocks of a topic (text, tensors, tables, checks) and its pictures
// come from POST /api/runs/{name}/explain/{topic}; this file only lays them out, as text (never as HTML).
(async function () {
  const run = await qkv.header("explain");
  const name = qkv.runName();
  // the topics that apply to this run (the server's `topics`, from what the run can do), in lesson order
  const topics = (await qkv.api("/api/explain/topics")).filter((t) => run.topics.includes(t.name));
  const inputField = run.capabilities.includes("images") ? "prompt" : run.source_kind === "text" ? "src" : "text";
  const reads = run.source_kind === "audio";  // a speech run: its text is a transcript, its source a recording
  qkv.$("#input-label").firstChild.textContent = { src: "source sentence ", prompt: "class label or prompt ", text: reads ? "transcript " : "text " }[inputField];
  const takesSource = Object.fromEntries(topics.map((t) => [t.name, t.takes_source]));
  let current = new URLSearchParams(location.hash.slice(1)).get("topic") || topics[0].name;

  const list = qkv.$("#topics");
  topics.forEach((t, i) => {
    const a = qkv.el("a", { href: `#topic=${t.name}`, "data-topic": t.name, title: t.line }, `${i + 1}. ${t.name}`);
    a.addEventListener("click", (e) => { e.preventDefault(); current = t.name; history.replaceState(null, "", `#topic=${t.name}`); show(); });
    list.append(a);
  });

  const fmt = (x) => (typeof x === "number" ? (Number.isInteger(x) ? x.toLocaleString("en-US") : x.toPrecision(4)) : String(x));
  const tensorBlock = (b) => {
    const box = qkv.el("div", { class: "tensor" });
    box.append(qkv.el("div", {}, qkv.el("b", {}, b.name), ` · shape (${b.shape.join(" × ") || "scalar"}) · ${b.dtype}`, b.note ? ` — ${b.note}` : ""));
    const s = b.stats;
    box.append(qkv.el("div", { class: "stats" }, `mean ${s.mean.toFixed(4)} · std ${s.std.toFixed(4)} · min ${s.min.toFixed(4)} · max ${s.max.toFixed(4)}`));
    let rows = b.values;
    if (!Array.isArray(rows)) rows = [[rows]];
    else if (!Array.isArray(rows[0])) rows = [rows];
    while (Array.isArray(rows[0][0])) rows = rows.flat(1);  // any shape -> rows of its last dimension
    const t = qkv.el("table", { class: "grid nums" });
    rows.slice(0, 6).forEach((r, i) => t.append(qkv.el("tr", {},
      qkv.el("th", {}, b.row_labels && b.row_labels[i] !== undefined ? b.row_labels[i] : `[${i}]`),
      r.slice(0, 12).map((x) => qkv.el("td", { class: "num" }, x === null ? "–" : x.toFixed(4))),
      r.length > 12 ? qkv.el("td", { class: "stats" }, `… ${r.length - 12} more`) : null)));
    box.append(t);
    if (rows.length > 6) box.append(qkv.el("div", { class: "stats" }, `… ${rows.length - 6} more rows`));
    return box;
  };
  const tableBlock = (b) => qkv.el("div", {}, b.title ? qkv.el("div", { class: "stats" }, b.title) : null,
    qkv.el("table", { class: "grid" }, qkv.el("tr", {}, b.columns.map((c) => qkv.el("th", {}, c))),
      b.rows.map((r) => qkv.el("tr", {}, r.map((c) => qkv.el("td", { class: typeof c === "number" ? "num" : null }, c === null ? "–" : fmt(c)))))));
  const checkBlock = (b) => qkv.el("div", { class: b.ok ? "check ok" : "check bad" },
    `${b.ok ? "✓" : "✗"} ${b.what}: max |difference| ${b.max_abs_diff.toExponential(2)} (${b.ok ? "≤" : ">"} ${b.tolerance.toExponential(0)})`);

  // ------------------------------------------------------------------------------------------ a recording
  // A speech run's topics that read a source take a WAV file (sent as a data URL: as it is, or, over what the
  // server takes, decoded and re-encoded in the page as 16-bit mono at the model's rate by wav.js); without
  // one they read the run's first validation recording.
  let heard = null;  // {url, note}
  const lim = run.audio;
  if (reads) {
    qkv.$("#audio-label").hidden = false;
    qkv.$("#audio-note").hidden = false;
    const note = () => {
      qkv.$("#audio-note").textContent = heard ? `recording: ${heard.what}${heard.note ? ` (${heard.note})` : ""}`
        : `recording: the run's first validation recording (or upload a WAV file${lim ? ` of up to ${lim.max_seconds} s` : ""})`;
      qkv.$("#audio-clear").hidden = !heard;
    };
    note();
    qkv.$("#audio").addEventListener("change", async () => {
      const file = qkv.$("#audio").files[0];
      qkv.showError("#error", null);
      try {
        heard = file ? await readWav(file) : null;
      } catch (err) {
        heard = null;
        qkv.$("#audio").value = "";
        qkv.showError("#error", err);
      }
      note();
      if (heard && takesSource[current]) show();
    });
    qkv.$("#audio-clear").addEventListener("click", () => { heard = null; qkv.$("#audio").value = ""; note(); show(); });
  }

  async function readWav(file) {
    const bytes = await file.arrayBuffer();
    if (!lim || bytes.byteLength <= lim.max_wav_bytes) return { url: qkv.wav.dataURL(bytes), what: file.name, note: "" };
    const decoded = await qkv.wav.decode(bytes, lim.sample_rate).catch(() => {
      throw new Error(`${file.name}: not audio the browser can read, and at ${(bytes.byteLength / 1000).toFixed(0)} kB ` +
        `too large to send as it is (at most ${(lim.max_wav_bytes / 1000).toFixed(0)} kB)`);
    });
    const keep = Math.floor(lim.record_seconds * lim.sample_rate), x = decoded.samples;
    return {
      url: qkv.wav.dataURL(qkv.wav.encode(x.subarray(0, keep), lim.sample_rate)), what: file.name,
      note: `over what this server takes: re-encoded in the page as 16-bit mono at ${lim.sample_rate} Hz` +
        (x.length > keep ? `, its first ${lim.record_seconds} s` : ""),
    };
  }

  async function show() {
    list.querySelectorAll("a").forEach((a) => a.classList.toggle("here", a.dataset.topic === current));
    qkv.showError("#error", null);
    const out = qkv.$("#out");
    out.replaceChildren(qkv.el("p", { class: "stats" }, "computing…"));
    const body = { [inputField]: qkv.$("#input").value.trim() || null, layer: qkv.num("#layer"), head: qkv.num("#head") };
    if (heard && takesSource[current]) body.audio = heard.url;  // a topic that reads no source is not sent one
    qkv.$("#go").disabled = true;
    try {
      const e = await qkv.api(`/api/runs/${encodeURIComponent(name)}/explain/${current}`, body);
      out.replaceChildren(qkv.el("h2", {}, `${e.topic}: ${e.title}`));
      for (const b of e.blocks) {
        if (b.kind === "text") out.append(qkv.el("p", { class: "lesson" }, b.text));
        else if (b.kind === "tensor") out.append(tensorBlock(b));
        else if (b.kind === "table") out.append(tableBlock(b));
        else if (b.kind === "check") out.append(checkBlock(b));
      }
      for (const p of e.pictures) out.append(qkv.el("figure", {}, qkv.el("img", { src: p.url, alt: p.name }), qkv.el("figcaption", {}, p.name)));
    } catch (err) {
      out.replaceChildren();
      qkv.showError("#error", err);
    } finally {
      qkv.$("#go").disabled = false;
    }
  }
  qkv.$("#go").addEventListener("click", show);
  qkv.$("#input").addEventListener("keydown", (e) => { if (e.key === "Enter") show(); });
  show();
})().catch((e) => qkv.showError("#error", e));
