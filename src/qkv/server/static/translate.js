"use strict";
// Translate: the n-best list, and the cross-attention of the best translation per layer and head.
(async function () {
  const run = await qkv.header("translate");
  const name = qkv.runName();
  qkv.$("#beam").value = run.decode.beam;
  qkv.$("#length_penalty").value = run.decode.length_penalty;
  if (!qkv.$("#text").value) qkv.$("#text").value = "Ein Mann fährt mit dem Fahrrad die Straße entlang.";

  async function go() {
    qkv.showError("#error", null);
    qkv.$("#go").disabled = true;
    try {
      const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/translate`, {
        text: qkv.$("#text").value, beam: qkv.num("#beam"), n_best: qkv.num("#n_best") || 1,
        length_penalty: qkv.num("#length_penalty"),
      });
      qkv.$("#nbest").replaceChildren(...r.nbest.map((h) => qkv.el("li", {},
        qkv.el("span", { class: "hyp" }, h.text || "(empty)"),
        h.score === null ? null : qkv.el("span", { class: "score" },
          `score ${h.score.toFixed(3)} · log P ${h.logprob.toFixed(3)} · ${h.labels.length} tokens${h.finished ? "" : " · hit the length limit"}`))));
      const d = r.decoding;
      qkv.$("#stats").textContent = (d.beam === 1 ? "greedy search" : `beam ${d.beam}, ${d.length_norm} length penalty α = ${d.length_penalty}`) +
        ` · ${(r.seconds * 1000).toFixed(0)} ms`;
      qkv.drawAttention(qkv.$("#attention"), r.attention);
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      qkv.$("#go").disabled = false;
    }
  }
  qkv.$("#go").addEventListener("click", go);
  qkv.$("#text").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); go(); } });
})().catch((e) => qkv.showError("#error", e));
