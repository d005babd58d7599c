"use strict";
// Chat: the page keeps the conversation; every reply is the model's continuation of all of it.
(async function () {
  const run = await qkv.header("chat");
  const name = qkv.runName();
  const s = run.sample;
  qkv.$("#temperature").value = s.temperature;
  if (s.top_k) qkv.$("#top_k").value = s.top_k;
  if (s.top_p) qkv.$("#top_p").value = s.top_p;
  qkv.$("#max_new_tokens").max = run.limits.max_new_tokens;  // the server's cap (qkv serve --max-new-tokens)
  qkv.$("#max_new_tokens").value = Math.min(s.max_new_tokens, run.limits.max_new_tokens);
  if (s.system) qkv.$("#system").textContent = `system message: ${s.system}`;
  let messages = [];  // {role, content}
  let controller = null;

  function render() {
    const box = qkv.$("#chat");
    box.replaceChildren(...messages.map((m, i) => {
      const actions = m.role === "user"
        ? [qkv.el("button", { class: "secondary", onclick: () => edit(i), "aria-label": `edit message ${i + 1}` }, "edit")]
        : [qkv.el("button", { class: "secondary", onclick: () => regenerate(i), "aria-label": `regenerate reply ${i + 1}` }, "regenerate")];
      return qkv.el("div", { class: `msg ${m.role}`, "data-index": i },
        qkv.el("span", { class: "role" }, m.role === "user" ? "you" : run.name),
        qkv.el("span", { class: "content" }, m.content),
        controller ? null : qkv.el("div", { class: "actions" }, actions));
    }));
  }

  async function reply() {
    qkv.showError("#error", null);
    const body = { messages: messages.slice(), temperature: qkv.num("#temperature"), top_k: qkv.num("#top_k"),
                   top_p: qkv.num("#top_p"), seed: qkv.num("#seed"), max_new_tokens: qkv.num("#max_new_tokens") };
    const answer = { role: "assistant", content: "" };
    messages.push(answer);
    controller = new AbortController();
    qkv.$("#send").disabled = true;
    qkv.$("#stopbtn").disabled = false;
    render();
    const content = () => qkv.$(`#chat .msg[data-index="${messages.length - 1}"] .content`);
    try {
      await qkv.sse(`/api/runs/${encodeURIComponent(name)}/chat`, body, (ev, d) => {
        if (ev === "token") { answer.content += d.text; content().textContent = answer.content; }
        else if (ev === "done") {
          qkv.$("#stats").textContent = `${d.tokens} tokens, ${d.tokens_per_s} tokens/s · ended: ${d.reason}` +
            (d.trimmed ? ` · the ${d.trimmed} oldest exchange(s) no longer fit the context and were left out` : "");
        } else if (ev === "error") qkv.showError("#error", d.error);
      }, controller.signal);
    } catch (e) {
      if (e.name !== "AbortError") { qkv.showError("#error", e); messages.pop(); }
    } finally {
      controller = null;
      qkv.$("#send").disabled = false;
      qkv.$("#stopbtn").disabled = true;
      render();
    }
  }

  function send() {
    const text = qkv.$("#message").value;
    if (!text.trim() || controller) return;
    messages.push({ role: "user", content: text });
    qkv.$("#message").value = "";
    reply();
  }

  function edit(i) {
    const box = qkv.$(`#chat .msg[data-index="${i}"]`);
    const area = qkv.el("textarea", { class: "edit", "aria-label": "edited message" });
    area.value = messages[i].content;
    const save = () => {
      if (!area.value.trim()) return;
      messages = messages.slice(0, i);
      messages.push({ role: "user", content: area.value });
      reply();
    };
    area.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); save(); }
      if (e.key === "Escape") render();
    });
    box.replaceChildren(area, qkv.el("div", { class: "actions" },
      qkv.el("button", { onclick: save }, "send edited"), qkv.el("button", { class: "secondary", onclick: render }, "cancel")));
    area.focus();
  }

  function regenerate(i) {
    messages = messages.slice(0, i);
    reply();
  }

  qkv.$("#send").addEventListener("click", send);
  qkv.$("#message").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); send(); } });
  qkv.$("#stopbtn").addEventListener("click", () => controller && controller.abort());
  qkv.$("#clear").addEventListener("click", () => { if (controller) controller.abort(); messages = []; render(); });
})().catch((e) => qkv.showError("#error", e));
