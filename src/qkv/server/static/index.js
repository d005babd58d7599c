"use strict";
// the list of runs, with a link to each of their pages
(async function () {
  await qkv.header("index");
  try {
    const runs = await qkv.api("/api/runs");
    const box = qkv.$("#runs");
    if (!runs.length) box.append(qkv.el("p", { class: "help" }, "No runs loaded (qkv serve RUN_DIR ...)."));
    // a pipeline's folder: its stages in order, a chat with its final run, and the stages compared on one prompt
    const pipelines = new Map();
    for (const r of runs) if (r.pipeline && !pipelines.has(r.pipeline.folder)) pipelines.set(r.pipeline.folder, r.pipeline);
    for (const p of pipelines.values()) {
      const chat = p.final || p.runs.find((n) => runs.find((r) => r.name === n).pages.includes("chat"));
      const at = (n) => `/runs/${encodeURIComponent(n)}/chat`;
      box.append(qkv.el("div", { class: "card pipeline" },
        qkv.el("h2", {}, `pipeline ${p.folder}`),
        qkv.el("p", { class: "stats" }, `stages: ${p.runs.join(" → ")}`),
        qkv.el("div", {}, chat ? [
          qkv.el("a", { href: at(chat) }, `chat with ${chat}${chat === p.final ? " (the final stage)" : ""}`),
          qkv.el("a", { href: `${at(chat)}#compare` }, "compare the stages")] : null)));
    }
    for (const r of runs) {
      const links = r.pages.map((p) => qkv.el("a", { href: `/runs/${encodeURIComponent(r.name)}/${p}` }, p));
      if (r.report) links.push(qkv.el("a", { href: `/runs/${encodeURIComponent(r.name)}/report` }, "report"));
      box.append(qkv.el("div", { class: "card" },
        qkv.el("h2", {}, r.name),
        qkv.el("p", { class: "stats" }, `${r.task} · ${r.model_type} · ${qkv.human(r.params)} parameters`),
        qkv.el("div", {}, links)));
    }
  } catch (e) {
    qkv.showError("#error", e);
  }
})();
