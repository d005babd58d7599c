"use strict";
// The admin's report page: the token comes from the URL fragment (#token=...) and goes only into the
// Authorization header of this page's API calls.
(function () {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("qkv-admin", fromHash);
    history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
  }
  const token = sessionStorage.getItem("qkv-admin");
  const auth = { headers: { Authorization: `Bearer ${token}` } };
  const get = (path) => qkv.api(path, undefined, auth);
  const fmt = (x, digits = 1, sign = false) => x === null || x === undefined ? "n/a" : (sign && x >= 0 ? "+" : "") + x.toFixed(digits);
  const ci = (c, digits = 1, sign = false) => c ? `[${fmt(c[0], digits, sign)}, ${fmt(c[1], digits, sign)}]` : "";
  const p = (x) => x === null || x === undefined ? "n/a" : x < 0.001 ? x.toExponential(1) : x.toFixed(3);
  let plotUrl = null;

  async function download(fmtName) {
    const name = qkv.$("#campaign").value;
    const r = await fetch(`/api/admin/campaigns/${encodeURIComponent(name)}/export.${fmtName}`, auth);
    if (!r.ok) throw new Error(await qkv.errorOf(r));
    const a = qkv.el("a", { href: URL.createObjectURL(await r.blob()), download: `${name}-judgements.${fmtName}` });
    document.body.append(a);
    a.click();
    a.remove();
  }

  async function show() {
    qkv.showError("#error", null);
    const name = qkv.$("#campaign").value;
    if (!name) return;
    const d = await get(`/api/admin/campaigns/${encodeURIComponent(name)}/report`);
    qkv.$("#summary").textContent = `${d.campaign}: ${d.kind}, ${d.systems.join(" vs ")}, ${d.items} items from ${d.source} · ` +
      `judged ${d.judged} of ${d.tasks} tasks (${d.judgements} judgements, ${d.revisions} revisions) · ` +
      d.raters.map((r) => `${r.name} ${r.done}/${r.tasks}`).join(", ");
    const tables = [];
    for (const [c, sec] of Object.entries(d.criteria)) {
      tables.push(qkv.el("h2", {}, c), qkv.el("table", { class: "grid", "data-criterion": c },
        qkv.el("tr", {}, ["system", "n", "raw mean", "95% CI", "z mean", "95% CI"].map((h) => qkv.el("th", {}, h))),
        d.systems.map((s) => {
          const v = sec.systems[s];
          return qkv.el("tr", { "data-system": s }, qkv.el("td", {}, s), qkv.el("td", { class: "num" }, v.n),
            qkv.el("td", { class: "num raw" }, fmt(v.mean)), qkv.el("td", {}, ci(v.ci)),
            qkv.el("td", { class: "num z" }, fmt(v.z_mean, 2, true)), qkv.el("td", {}, ci(v.z_ci, 2, true)));
        })));
      const lines = [];
      if (sec.wilcoxon) lines.push(`Wilcoxon signed-rank (item means, paired): ${d.systems[0]} − ${d.systems[1]} = ${fmt(sec.wilcoxon.mean_difference, 1, true)}, p = ${p(sec.wilcoxon.p)}, n = ${sec.wilcoxon.n}`);
      lines.push(`Krippendorff's α (interval): ${fmt(sec.alpha, 3)}`);
      if (sec.kendall) lines.push(`Kendall τ vs sentence chrF++ ${fmt(sec.kendall["chrf++"].tau, 3, true)} (p = ${p(sec.kendall["chrf++"].p)}), vs BLEU ${fmt(sec.kendall.bleu.tau, 3, true)} (p = ${p(sec.kendall.bleu.p)})`);
      tables.push(...lines.map((l) => qkv.el("p", { class: "stats" }, l)));
    }
    if (d.preferences) {
      const pr = d.preferences;
      tables.push(qkv.el("p", { id: "preferences" }, `preferences: ${d.systems.map((s) => `${s} ${pr[s]}`).join(", ")}, tie ${pr.tie} (of ${pr.n})`));
    }
    tables.push(qkv.el("p", { class: "stats" }, "error spans per rated candidate (minor / major / MQM 1·minor + 5·major): " +
      d.systems.map((s) => { const e = d.errors[s]; return `${s} ${fmt(e.minor_per_segment, 2)} / ${fmt(e.major_per_segment, 2)} / ${fmt(e.mqm_per_segment, 2)}`; }).join("; ")));
    qkv.$("#tables").replaceChildren(...tables);
    qkv.$("#qc").replaceChildren(qkv.el("table", { class: "grid" },
      qkv.el("tr", {}, ["rater", "status", "pairs", "BAD scored lower", "p"].map((h) => qkv.el("th", {}, h))),
      d.quality_control.map((q) => qkv.el("tr", {}, qkv.el("td", {}, q.rater), qkv.el("td", {}, q.status),
        qkv.el("td", { class: "num" }, q.pairs), qkv.el("td", { class: "num" }, q.bad_lower), qkv.el("td", { class: "num" }, p(q.p))))));
    const r = await fetch(`/api/admin/campaigns/${encodeURIComponent(name)}/plot.png`, auth);
    if (r.ok) {
      if (plotUrl) URL.revokeObjectURL(plotUrl);
      plotUrl = URL.createObjectURL(await r.blob());
      qkv.$("#plot").src = plotUrl;
    }
  }

  (async function () {
    if (!token) throw new Error("no admin token: open this page with the link qkv serve printed (…/admin#token=…)");
    const campaigns = await get("/api/admin/campaigns");
    if (!campaigns.length) throw new Error("no campaigns in this store yet (qkv human-eval create)");
    for (const c of campaigns) qkv.$("#campaign").append(qkv.el("option", { value: c.name }, `${c.name} (${c.kind}, ${c.judgements} judgements)`));
    qkv.$("#campaign").addEventListener("change", () => show().catch((e) => qkv.showError("#error", e)));
    qkv.$("#refresh").addEventListener("click", () => show().catch((e) => qkv.showError("#error", e)));
    qkv.$("#csv").addEventListener("click", () => download("csv").catch((e) => qkv.showError("#error", e)));
    qkv.$("#jsonl").addEventListener("click", () => download("jsonl").catch((e) => qkv.showError("#error", e)));
    await show();
  })().catch((e) => qkv.showError("#error", e));
})();
