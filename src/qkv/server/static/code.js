"use strict";
// Code: complete a function from its docstring, then run the hidden tests in the sandbox (POST /api/runs/NAME/code).
(async function () {
  const run = await qkv.header("code");
  const name = qkv.runName();
  const examples = run.code.examples;
  const select = qkv.$("#example");
  select.replaceChildren(...examples.map((ex, i) =>
    qkv.el("option", { value: String(i) }, `${ex.task_id}: ${ex.blocks.join(" → ")}`)));
  const prompt = qkv.$("#prompt");
  const show = () => { prompt.value = examples[Number(select.value)].prompt; };
  select.addEventListener("change", show);
  show();
  qkv.$("#title").textContent = `Code (${run.code.architecture})`;
  const go = qkv.$("#go");
  go.addEventListener("click", async () => {
    qkv.$("#error").textContent = "";
    go.disabled = true;
    try {
      const t = qkv.$("#temperature").value;
      const body = { prompt: prompt.value };
      if (t !== "") body.temperature = Number(t);
      const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/code`, body);
      qkv.$("#completion").textContent = r.completion;
      qkv.$("#tests-title").textContent = `Tests: ${r.passed} of ${r.total} pass (${r.tests_from})`;
      qkv.$("#tests").replaceChildren(...r.tests.map((x) => qkv.el("li", { class: x.passed ? "pass" : "fail" },
        `${x.passed ? "✓" : "✗"} ${x.test}`, x.passed ? "" : qkv.el("span", { class: "stats" }, ` — ${x.status}: ${x.detail}`))));
      qkv.$("#stats").textContent = `${r.decoding}; completion ${r.seconds.toFixed(2)} s, tests ${r.sandbox_seconds.toFixed(2)} s in the sandbox`;
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      go.disabled = false;
    }
  });
})().catch((e) => qkv.showError("#error", e));
