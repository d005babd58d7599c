"use strict";
// Source -> text: a sentence (translation) or an image (captioning) in, the n-best outputs and the cross-attention
// of the best one per layer and head out. What the page shows follows the run's source_kind, not its task.
(async function () {
  const page = location.pathname.split("/").pop();
  const run = await qkv.header(page);
  const name = qkv.runName();
  const image = run.source_kind === "image";
  qkv.$("#title").textContent = image ? "Caption an image" : "Translate";
  qkv.$("#outputs-title").textContent = image ? "Captions" : "Translations";
  qkv.$("#go").textContent = image ? "Caption" : "Translate";
  qkv.$(image ? "#image-source" : "#text-source").hidden = false;
  qkv.$("#beam").value = run.decode.beam;
  qkv.$("#length_penalty").value = run.decode.length_penalty;
  if (!image && !qkv.$("#text").value) qkv.$("#text").value = run.example_text || "";

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

  async function go() {
    qkv.showError("#error", null);
    const body = { beam: qkv.num("#beam"), n_best: qkv.num("#n_best") || 1, length_penalty: qkv.num("#length_penalty") };
    if (image) {
      if (!picked) { qkv.showError("#error", "choose an image file first"); return; }
      body.image = picked;
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
      const how = (d.beam === 1 ? "greedy search" : `beam ${d.beam}, ${d.length_norm} length penalty α = ${d.length_penalty}`) +
        ` · ${(r.seconds * 1000).toFixed(0)} ms`;
      if (r.attention.image) {
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
