"use strict";
// the list of runs, with a link to each of their pages
(async function () {
  await qkv.header("index");
  try {
    const runs = await qkv.api("/api/runs");
    const box = qkv.$("#runs");
    if (!runs.length) box.append(qkv.el("p", { class: "help" }, "No runs loaded (qkv serve RUN_DIR ...)."));
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
