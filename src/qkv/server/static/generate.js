"use strict";
// Generate: stream a continuation token by token; hover a token for its id and the top-5 next tokens.
(async function () {
  const run = await qkv.header("generate");
  const name = qkv.runName();
  const s = run.sample;
  qkv.$("#prompt").value = s.prompt;
  qkv.$("#temperature").value = s.temperature;
  if (s.top_k) qkv.$("#top_k").value = s.top_k;
  if (s.top_p) qkv.$("#top_p").value = s.top_p;
  if (s.seed !== null) qkv.$("#seed").value = s.seed;
  qkv.$("#max_new_tokens").max = run.limits.max_new_tokens;  // the server's cap (qkv serve --max-new-tokens)
  qkv.$("#max_new_tokens").value = Math.min(s.max_new_tokens, run.limits.max_new_tokens);
  let controller = null;
  const tip = qkv.$("#tip");

  function showTip(span, ev) {
    const t = span._token;
    const rows = t.top.map(([id, label, p, q]) => qkv.el("tr", { class: id === t.id ? "chosen" : null },
      qkv.el("td", {}, label), qkv.el("td", {}, `id ${id}`),
      qkv.el("td", {}, `p ${p.toFixed(3)}`), qkv.el("td", {}, `q ${q.toFixed(3)}`),
      qkv.el("td", {}, (() => { const b = qkv.el("span", { class: "bar" }); b.style.width = `${Math.round(p * 80)}px`; return b; })())));
    tip.replaceChildren(qkv.el("div", {}, qkv.el("b", {}, `token ${JSON.stringify(t.label)} · id ${t.id}`)),
      qkv.el("div", { class: "stats" }, "the model's top 5 at this step (p: model, q: as drawn):"), qkv.el("table", {}, rows));
    tip.classList.remove("hidden");
    const r = span.getBoundingClientRect();
    tip.style.left = `${Math.min(r.left, window.innerWidth - 300)}px`;
    tip.style.top = `${r.bottom + 6}px`;
  }

  async function go() {
    qkv.showError("#error", null);
    const out = qkv.$("#output");
    const prompt = qkv.$("#prompt").value;
    out.replaceChildren(qkv.el("span", { class: "prompt" }, prompt));
    qkv.$("#stats").textContent = "";
    const stop = qkv.$("#stop").value.split("\n").filter((x) => x.length);
    const body = { prompt, temperature: qkv.num("#temperature"), top_k: qkv.num("#top_k"), top_p: qkv.num("#top_p"),
                   seed: qkv.num("#seed"), max_new_tokens: qkv.num("#max_new_tokens"), stop };
    controller = new AbortController();
    qkv.$("#go").disabled = true;
    qkv.$("#stopbtn").disabled = false;
    let n = 0;
    const t0 = performance.now();
    try {
      await qkv.sse(`/api/runs/${encodeURIComponent(name)}/generate`, body, (ev, d) => {
        if (ev === "token") {
          const span = qkv.el("span", { class: "tok", tabindex: d.id === null ? null : 0 }, d.text);
          if (d.id !== null) {
            span._token = d;
            n += 1;
            span.dataset.id = d.id;
            span.addEventListener("mouseenter", (e) => showTip(span, e));
            span.addEventListener("focus", (e) => showTip(span, e));
            span.addEventListener("mouseleave", () => tip.classList.add("hidden"));
            span.addEventListener("blur", () => tip.classList.add("hidden"));
          }
          out.append(span);
          qkv.$("#stats").textContent = `${n} tokens…`;
        } else if (ev === "done") {
          qkv.$("#stats").textContent = `${d.tokens} tokens in ${d.seconds.toFixed(2)} s (${d.tokens_per_s} tokens/s on the server) · ended: ${d.reason}`;
        } else if (ev === "error") {
          qkv.showError("#error", d.error);
        }
      }, controller.signal);
    } catch (e) {
      if (e.name === "AbortError") {
        qkv.$("#stats").textContent = `stopped after ${n} tokens (${((performance.now() - t0) / 1000).toFixed(2)} s)`;
      } else qkv.showError("#error", e);
    } finally {
      qkv.$("#go").disabled = false;
      qkv.$("#stopbtn").disabled = true;
      controller = null;
    }
  }
  qkv.$("#go").addEventListener("click", go);
  qkv.$("#stopbtn").addEventListener("click", () => controller && controller.abort());
  qkv.$("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) go(); });
})().catch((e) => qkv.showError("#error", e));
