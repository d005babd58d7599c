"use strict";
// Parameters: where the model's numbers are (qkv params RUN_DIR, as a page).
(async function () {
  await qkv.header("params");
  const name = qkv.runName();
  const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/params`);
  const fmt = (n) => n.toLocaleString("en-US");
  const pct = (x) => `${(100 * x).toFixed(1)}%`;
  let table;
  if (r.kind === "gpt") {
    qkv.$("#help").textContent = "Every parameter of the GPT, by component. Rows of the per-layer block count all " +
      `${r.config.n_layers} layers together; "per layer" is one. The same accounting, at GPT-3's size, is why ` +
      "a 175B model is that big: qkv params --preset gpt3-175b.";
    table = qkv.el("table", { class: "grid" },
      qkv.el("tr", {}, ["component", "shape", "per layer", "parameters", "share", ""].map((h, i) => qkv.el("th", { class: i >= 2 && i <= 4 ? "num" : null }, h))),
      r.rows.map((row) => qkv.el("tr", {},
        qkv.el("td", {}, row.name), qkv.el("td", {}, row.shape),
        qkv.el("td", { class: "num" }, row.per_layer === null ? "" : fmt(row.per_layer)),
        qkv.el("td", { class: "num" }, fmt(row.count)), qkv.el("td", { class: "num" }, pct(row.share)),
        qkv.el("td", { class: "stats" }, row.note))));
    const mem = r.memory_bytes;
    qkv.$("#totals").textContent = `total ${fmt(r.total)} (${qkv.human(r.total)}) · non-embedding ${fmt(r.non_embedding)} · ` +
      `forward ≈ ${qkv.human(r.flops_forward_per_token)} FLOPs per token, training ≈ ${qkv.human(r.flops_train_per_token)} · ` +
      `weights ${qkv.human(mem.weights_fp32)}B in fp32, training state ${qkv.human(mem.train_fp32)}B · ` +
      `KV cache ${qkv.human(r.kv_cache_bytes_per_token_fp32)}B per token`;
  } else {
    qkv.$("#help").textContent = `Every parameter of this ${r.model_type} model, by module, with layer numbers folded ` +
      "into *: one row stands for every layer that repeats it.";
    table = qkv.el("table", { class: "grid" },
      qkv.el("tr", {}, ["module", "shapes (one copy)", "copies", "parameters", "share", ""].map((h, i) => qkv.el("th", { class: i >= 2 && i <= 4 ? "num" : null }, h))),
      r.groups.map((g) => qkv.el("tr", {},
        qkv.el("td", {}, g.name), qkv.el("td", {}, g.shapes.map((s) => s.join("×")).join(" + ")),
        qkv.el("td", { class: "num" }, g.copies), qkv.el("td", { class: "num" }, fmt(g.count)),
        qkv.el("td", { class: "num" }, pct(g.share)), qkv.el("td", { class: "stats" }, g.note))));
    qkv.$("#totals").textContent = `total ${fmt(r.total)} (${qkv.human(r.total)})`;
  }
  qkv.$("#table").replaceChildren(table);
})().catch((e) => qkv.showError("#error", e));
