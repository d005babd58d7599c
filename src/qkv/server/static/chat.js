"use strict";
// Chat: the page keeps the conversation; every reply is the model's continuation of all of it. Compare mode sends
// one message to several runs (a pipeline's stages) and shows their replies side by side.
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

  // ---- compare: one message to several runs at once, each reply in its own column (the runs' own endpoints,
  // side by side: a chat run's /chat, a run that only continues text its /generate)
  let mode = "chat";
  const canChat = (r) => qkv.can(r, "chat");
  const canPrompt = (r) => canChat(r) || qkv.can(r, "continuation");
  let others = null;  // the runs a message can go to, in the server's order (a pipeline's in stage order)

  async function loadPicker() {
    if (others) return;
    others = (await qkv.api("/api/runs")).filter(canPrompt);
    const p = run.pipeline;
    const ticked = new Set(p ? p.runs : others.map((r) => r.name));  // a pipeline's stages, else every run
    const box = qkv.$("#compare-runs");
    for (const r of others) {
      const kind = canChat(r) ? "chat" : "continues the text";
      const stage = r.pipeline && r.pipeline.stage !== r.name ? `stage ${r.pipeline.stage} · ` : "";
      box.append(qkv.el("label", { class: "pick" },
        qkv.el("input", { type: "checkbox", value: r.name, checked: ticked.has(r.name) }),
        ` ${r.name} `, qkv.el("span", { class: "stats" }, `(${stage}${kind})`)));
    }
  }

  async function setMode(m) {
    mode = m;
    qkv.$("#single").classList.toggle("hidden", m !== "chat");
    qkv.$("#compare").classList.toggle("hidden", m !== "compare");
    for (const [id, on] of [["#mode-chat", m === "chat"], ["#mode-compare", m === "compare"]]) {
      qkv.$(id).classList.toggle("secondary", !on);
      qkv.$(id).setAttribute("aria-pressed", String(on));
    }
    qkv.$("#message").placeholder = m === "chat"
      ? "Your message (Enter to send, Shift+Enter for a new line)"
      : "One message for every ticked run (Enter to send, Shift+Enter for a new line)";
    qkv.$("#clear").textContent = m === "chat" ? "New conversation" : "Clear";
    qkv.$("#stats").textContent = "";
    history.replaceState(null, "", m === "compare" ? "#compare" : location.pathname);
    if (m === "compare") await loadPicker();
  }

  function sampling() {
    return { temperature: qkv.num("#temperature"), top_k: qkv.num("#top_k"), top_p: qkv.num("#top_p"),
             seed: qkv.num("#seed"), max_new_tokens: qkv.num("#max_new_tokens") };
  }

  // one run's column: its name and what it does as the header, its output as text only
  function column(r, text, signal) {
    const chats = canChat(r);
    const reply = qkv.el("span", { class: "reply" });
    const stats = qkv.el("div", { class: "stats" });
    const error = qkv.el("div", { class: "error" });
    const box = qkv.el("section", { class: "column", "data-run": r.name },
      qkv.el("h2", {}, r.name, " ", qkv.el("span", { class: "kind" },
        chats ? "chat reply" : "continues the text: no chat template")),
      qkv.el("div", { class: "output" }, chats ? null : qkv.el("span", { class: "prompt" }, text), reply),
      stats, error);
    async function go() {
      const path = `/api/runs/${encodeURIComponent(r.name)}/${chats ? "chat" : "generate"}`;
      const body = Object.assign(chats ? { messages: [{ role: "user", content: text }] } : { prompt: text }, sampling());
      let n = 0;
      try {
        await qkv.sse(path, body, (ev, d) => {
          if (ev === "token") { n += 1; reply.textContent += d.text; stats.textContent = `${n} tokens…`; }
          else if (ev === "done") stats.textContent = `${d.tokens} tokens, ${d.tokens_per_s} tokens/s · ended: ${d.reason}`;
          else if (ev === "error") qkv.showError(error, d.error);
        }, signal);
      } catch (e) {
        if (e.name === "AbortError") stats.textContent = `stopped after ${n} tokens`;
        else qkv.showError(error, e);
      }
      box.classList.add("done");
    }
    return { box, go };
  }

  async function compare() {
    const text = qkv.$("#message").value;
    if (!text.trim() || controller) return;
    const names = [...document.querySelectorAll("#compare-runs input:checked")].map((x) => x.value);
    if (!names.length) { qkv.showError("#error", "tick at least one run to compare"); return; }
    qkv.showError("#error", null);
    controller = new AbortController();
    qkv.$("#send").disabled = true;
    qkv.$("#stopbtn").disabled = false;
    qkv.$("#message").value = "";
    qkv.$("#compare-prompt").textContent = `you: ${text}`;
    const cols = names.map((n) => column(others.find((r) => r.name === n), text, controller.signal));
    qkv.$("#columns").replaceChildren(...cols.map((c) => c.box));
    try {
      await Promise.all(cols.map((c) => c.go()));  // in parallel: each run has its own worker on the server
    } finally {
      controller = null;
      qkv.$("#send").disabled = false;
      qkv.$("#stopbtn").disabled = true;
    }
  }

  const submit = () => (mode === "compare" ? compare() : send());
  qkv.$("#send").addEventListener("click", submit);
  qkv.$("#message").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); } });
  qkv.$("#stopbtn").addEventListener("click", () => controller && controller.abort());
  qkv.$("#clear").addEventListener("click", () => {
    if (controller) controller.abort();
    if (mode === "compare") { qkv.$("#columns").replaceChildren(); qkv.$("#compare-prompt").textContent = ""; }
    else { messages = []; render(); }
  });
  qkv.$("#mode-chat").addEventListener("click", () => { if (!controller) setMode("chat"); });
  qkv.$("#mode-compare").addEventListener("click", () => {
    if (!controller) setMode("compare").catch((e) => qkv.showError("#error", e));
  });
  if (location.hash === "#compare") await setMode("compare");
})().catch((e) => qkv.showError("#error", e));
