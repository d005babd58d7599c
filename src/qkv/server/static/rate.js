"use strict";
// The rater's page: one item at a time; error spans on words, accuracy and fluency sliders, a preference for
// two candidates. Offsets sent to the server count Unicode code points (Array.from), as Python's str does.
(function () {
  const token = decodeURIComponent(location.pathname.split("/").pop());
  const base = `/api/rate/${encodeURIComponent(token)}`;
  // what the raters see, by the campaign's kind (what its runs can do)
  const NAMES = { "source-to-text": ["Source", "Output"], "image-to-text": ["Image", "Caption"],
                  "audio-to-text": ["Recording", "Transcript"], chat: ["Question", "Answer"],
                  continuation: ["Prompt", "Continuation"] };
  let status = null, task = null, state = null;  // state: {cands: {id: {accuracy, fluency, words: [...]}}, pref}

  function words(text) {  // [{start, end, text}] in code points
    const cps = Array.from(text);
    const out = [];
    let i = 0;
    while (i < cps.length) {
      if (/\s/.test(cps[i])) { i += 1; continue; }
      let j = i;
      while (j < cps.length && !/\s/.test(cps[j])) j += 1;
      out.push({ start: i, end: j, text: cps.slice(i, j).join(""), severity: null });
      i = j;
    }
    return out;
  }

  function spansOf(ws) {  // consecutive marked words of one severity -> one span
    const spans = [];
    ws.forEach((w, k) => {
      if (!w.severity) return;
      const last = spans[spans.length - 1];
      if (last && last.severity === w.severity && last.k === k - 1) { last.end = w.end; last.k = k; }
      else spans.push({ start: w.start, end: w.end, severity: w.severity, k });
    });
    return spans.map(({ start, end, severity }) => ({ start, end, severity }));
  }

  function ready() {
    const all = Object.values(state.cands).every((c) => c.accuracy !== null && c.fluency !== null);
    return all && (!status.pairwise || state.pref !== null);
  }

  function slider(cand, key, label) {
    const input = qkv.el("input", { type: "range", min: 0, max: 100, step: 1, "aria-label": `${label} of ${cand.title}`,
                                    class: cand.c[key] === null ? "unset" : null });
    input.value = cand.c[key] === null ? 50 : cand.c[key];
    const out = qkv.el("output", {}, cand.c[key] === null ? "—" : String(cand.c[key]));
    const set = () => { cand.c[key] = Number(input.value); out.textContent = input.value; input.classList.remove("unset"); update(); };
    input.addEventListener("input", set);
    input.addEventListener("keydown", (e) => { if (e.key.startsWith("Arrow") || e.key.startsWith("Page") || e.key === "Home" || e.key === "End") setTimeout(set); });
    input.addEventListener("pointerdown", () => setTimeout(set));
    return qkv.el("div", { class: "slider" }, qkv.el("span", {}, label), input, out);
  }

  function update() {
    qkv.$("#submit").disabled = !ready();
  }

  function render() {
    const [srcName, candName] = NAMES[status.kind] || NAMES["source-to-text"];
    qkv.$("#i-read").textContent = status.kind === "audio-to-text" ? "Listen to" : "Read";
    qkv.$("#i-source").textContent = srcName.toLowerCase();
    qkv.$("#i-cand").textContent = candName.toLowerCase();
    qkv.$("#source-label").textContent = srcName;
    if (status.kind === "image-to-text") {  // a PNG data URL the campaign stored: shown as an image, never as markup
      qkv.$("#source").replaceChildren(qkv.el("img", { src: task.source.startsWith("data:image/png;base64,") ? task.source : "",
                                                       alt: "the image to describe", class: "rated-image" }));
    } else if (status.kind === "audio-to-text") {  // a WAV data URL the campaign stored: the browser's own player,
      // started by the rater (no autoplay); anything else in the field is never played
      const wav = task.source.startsWith("data:audio/wav;base64,") ? task.source : null;
      qkv.$("#source").replaceChildren(wav ? qkv.el("audio", { src: wav, controls: true, preload: "metadata",
                                                               "aria-label": "the recording to transcribe",
                                                               class: "rated-audio" })
                                           : qkv.el("i", {}, "(this item's recording cannot be played)"));
    } else {
      qkv.$("#source").textContent = task.source;
    }
    const box = qkv.$("#cands");
    box.className = `cands${task.candidates.length > 1 ? " two" : ""}`;
    box.replaceChildren(...task.candidates.map((cand) => {
      const c = state.cands[cand.id];
      const title = cand.slot ? `${candName} ${cand.slot}` : candName;
      const text = qkv.el("div", { class: "text", "aria-label": `${title}: click words to mark errors` },
        c.words.length ? c.words.map((w, k) => {
          const b = qkv.el("button", { class: `word${w.severity ? " " + w.severity : ""}`, type: "button",
                                       "aria-pressed": w.severity ? "true" : "false", "data-k": k }, w.text);
          b.addEventListener("click", () => {
            w.severity = w.severity === null ? "minor" : w.severity === "minor" ? "major" : null;
            b.className = `word${w.severity ? " " + w.severity : ""}`;
            b.setAttribute("aria-pressed", w.severity ? "true" : "false");
          });
          return b;
        }) : qkv.el("i", {}, "(empty)"));
      const view = { c, title };
      return qkv.el("section", { class: "cand", "data-candidate": cand.id },
        qkv.el("h2", {}, title), text, slider(view, "accuracy", "accuracy"), slider(view, "fluency", "fluency"));
    }));
    qkv.$("#pref").classList.toggle("hidden", !status.pairwise);
    qkv.$("#i-pref").classList.toggle("hidden", !status.pairwise);
    document.querySelectorAll('input[name="pref"]').forEach((r) => { r.checked = r.value === state.pref; });
    qkv.$("#prev").disabled = task.position === 0;
    qkv.$("#skip").disabled = task.position >= status.tasks - 1;
    progress();
    update();
  }

  function progress() {
    qkv.$("#campaign").textContent = `${status.campaign} · ${status.rater}`;
    qkv.$("#progress").textContent = task ? `item ${task.position + 1} of ${status.tasks} · ${status.done} rated` : `${status.done} of ${status.tasks} rated`;
  }

  async function open(position) {
    qkv.showError("#error", null);
    qkv.$("#saved").textContent = "";
    task = await qkv.api(`${base}/tasks/${position}`);
    const prev = task.judgement;
    state = { cands: {}, pref: prev ? prev.preference ?? null : null };
    for (const cand of task.candidates) {
      const ws = words(cand.text);
      const j = prev && prev.candidates[String(cand.id)];
      if (j) for (const s of j.spans || []) for (const w of ws) if (w.start >= s.start && w.end <= s.end) w.severity = s.severity;
      state.cands[cand.id] = { accuracy: j ? j.accuracy : null, fluency: j ? j.fluency : null, words: ws };
    }
    qkv.$("#task").classList.remove("hidden");
    qkv.$("#done").classList.add("hidden");
    render();
    window.scrollTo(0, 0);
  }

  async function submit() {
    if (!ready()) return;
    const payload = { candidates: {}, preference: status.pairwise ? state.pref : null };
    for (const [id, c] of Object.entries(state.cands)) {
      payload.candidates[id] = { accuracy: c.accuracy, fluency: c.fluency, spans: spansOf(c.words) };
    }
    qkv.$("#submit").disabled = true;
    try {
      const r = await qkv.api(`${base}/tasks/${task.task_id}`, payload);
      status.done = r.done;
      status.next = r.next;
      qkv.$("#saved").textContent = "saved";
      if (r.next === null) finish();
      else await open(r.next);
    } catch (e) {
      qkv.showError("#error", e);
      update();
    }
  }

  function finish() {
    task = null;
    qkv.$("#task").classList.add("hidden");
    qkv.$("#done").classList.remove("hidden");
    progress();
  }

  document.querySelectorAll('input[name="pref"]').forEach((r) => r.addEventListener("change", () => { state.pref = r.value; update(); }));
  qkv.$("#submit").addEventListener("click", submit);
  qkv.$("#prev").addEventListener("click", () => open(task.position - 1).catch((e) => qkv.showError("#error", e)));
  qkv.$("#skip").addEventListener("click", () => open(task.position + 1).catch((e) => qkv.showError("#error", e)));
  qkv.$("#review").addEventListener("click", () => open(0).catch((e) => qkv.showError("#error", e)));
  document.addEventListener("keydown", (e) => {
    if (!task) return;
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey || (e.target && e.target.tagName === "TEXTAREA")) return;
    const key = e.key.toLowerCase();
    if (status.pairwise && (key === "a" || key === "b" || key === "t")) {
      state.pref = key === "t" ? "tie" : key.toUpperCase();
      document.querySelectorAll('input[name="pref"]').forEach((r) => { r.checked = r.value === state.pref; });
      update();
    }
  });

  (async function () {
    status = await qkv.api(base);
    if (status.next === null) finish();
    else await open(status.next);
  })().catch((e) => qkv.showError("#error", e));
})();
