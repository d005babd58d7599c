"use strict";
// Images: sample with a label or a prompt, see the reverse process as a strip and the forward process beside it.
(async function () {
  const run = await qkv.header("images");
  const name = qkv.runName();
  const s = run.sample;
  qkv.$("#guidance").value = s.guidance;
  qkv.$("#sampler").value = s.sampler;
  if (run.conditioning === "class") {
    qkv.$("#prompt-box").classList.add("hidden");
    for (let c = 0; c < run.n_classes; c++) {
      const label = run.class_names ? `${c} · ${run.class_names[c]}` : String(c);
      qkv.$("#label").append(qkv.el("option", { value: c }, label));
    }
  } else {
    qkv.$("#label-box").classList.add("hidden");
    if (run.conditioning === "text") {
      for (const p of run.prompts) qkv.$("#prompts").append(qkv.el("option", { value: p }));
      qkv.$("#prompt").value = run.prompts[0] || "";
    } else qkv.$("#prompt-box").classList.add("hidden");
  }
  const fig = (src, caption) => qkv.el("figure", {}, qkv.el("img", { src, alt: caption }), qkv.el("figcaption", {}, caption));
  const T = run.timesteps;

  async function sample() {
    qkv.showError("#error", null);
    qkv.$("#go").disabled = true;
    const body = { guidance: qkv.num("#guidance"), sampler: qkv.$("#sampler").value, steps: qkv.num("#steps"),
                   seed: qkv.num("#seed") || 0, n: qkv.num("#n") || 1 };
    if (run.conditioning === "class") body.label = Number(qkv.$("#label").value);
    if (run.conditioning === "text") body.prompt = qkv.$("#prompt").value;
    try {
      const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/images`, body);
      qkv.$("#strip").replaceChildren(...r.strip.map((f, i) =>
        fig(f.image, i === 0 ? `x_${T} (noise)` : f.t < 0 ? "x_0 (image)" : `t = ${f.t}`)));
      qkv.$("#samples").replaceChildren(...r.images.map((src, i) => fig(src, `#${i + 1}`)));
      const st = r.settings;
      qkv.$("#stats").textContent = `${st.sampler.toUpperCase()}, ${st.steps} steps, guidance ${st.guidance}, seed ${st.seed} · ${r.images.length} images in ${r.seconds} s`;
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      qkv.$("#go").disabled = false;
    }
  }

  let seed = 0;
  async function forward() {
    try {
      const r = await qkv.api(`/api/runs/${encodeURIComponent(name)}/noise`, { seed });
      qkv.$("#forward").replaceChildren(fig(r.image, `x_0 (image ${r.index})`),
        ...r.frames.map((f) => fig(f.image, `t = ${f.t}, ᾱ = ${f.alpha_bar.toFixed(3)}`)));
    } catch (e) {
      qkv.showError("#error", e);
    }
  }
  qkv.$("#go").addEventListener("click", sample);
  qkv.$("#another").addEventListener("click", () => { seed += 1; forward(); });
  await Promise.all([sample(), forward()]);
})().catch((e) => qkv.showError("#error", e));
