"use strict";
// Attention: the self-attention over the user's text, per layer and head (a GPT's causal self-attention, or a
// translation encoder's, in both directions).
(async function () {
  const run = await qkv.header("attention");
  const name = qkv.runName();
  qkv.$("#text").value = qkv.can(run, "chat") ? "What is the capital of France?" : run.example_text || "To be, or not to be";

  async function go() {
    qkv.showError("#error", null);
    qkv.$("#go").disabled = true;
    try {
      const stack = await qkv.api(`/api/runs/${encodeURIComponent(name)}/attention`, { text: qkv.$("#text").value });
      qkv.drawAttention(qkv.$("#attention"), stack);
    } catch (e) {
      qkv.showError("#error", e);
    } finally {
      qkv.$("#go").disabled = false;
    }
  }
  qkv.$("#go").addEventListener("click", go);
  go();
})().catch((e) => qkv.showError("#error", e));
