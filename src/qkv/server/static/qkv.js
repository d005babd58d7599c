// qkv playground: what every page shares. Model output is only ever put in the page as text
// (textContent, never innerHTML), and the server's Content-Security-Policy allows no inline script.
"use strict";

const qkv = {};

// el("div", {class: "x", onclick: f}, "text", child, ...): an element; strings become text nodes.
qkv.el = function (tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return e;
};

qkv.$ = (sel) => document.querySelector(sel);

// the JSON error line of a failed response
qkv.errorOf = async function (r) {
  try {
    const j = await r.json();
    return j.error || `${r.status} ${r.statusText}`;
  } catch (e) {
    return `${r.status} ${r.statusText}`;
  }
};

qkv.api = async function (path, body, opts) {
  const init = Object.assign({ headers: {} }, opts || {});
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (!r.ok) throw new Error(await qkv.errorOf(r));
  return r.json();
};

// POST `body` to a server-sent-events endpoint; onEvent(name, data) for each event. Abort with `signal`.
qkv.sse = async function (path, body, onEvent, signal) {
  const r = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal,
  });
  if (!r.ok) throw new Error(await qkv.errorOf(r));
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const chunk = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let name = "message", data = "";
      for (const line of chunk.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(name, JSON.parse(data));
    }
  }
};

// the run name of a /runs/{name}/{page} URL
qkv.runName = function () {
  const m = location.pathname.match(/^\/runs\/([^/]+)\//);
  return m ? decodeURIComponent(m[1]) : null;
};

qkv.showError = function (where, err) {
  const box = typeof where === "string" ? qkv.$(where) : where;
  box.textContent = err ? String(err.message || err) : "";
};

qkv.pageLabels = { explain: "look inside" };

// whether the run (its /api/runs/{name} description) can do `capability` (qkv.tasks.capabilities)
qkv.can = (run, capability) => run.capabilities.includes(capability);

// header: brand, the run, links to its pages; returns the run's description
qkv.header = async function (page) {
  const name = qkv.runName();
  const header = qkv.el("header", {}, qkv.el("a", { class: "brand", href: "/" }, "qkv"));
  document.body.prepend(header);
  if (!name) return null;
  const run = await qkv.api(`/api/runs/${encodeURIComponent(name)}`);
  header.append(qkv.el("span", { class: "run" }, `${run.name} · ${run.task} · ${qkv.human(run.params)} parameters`));
  const nav = qkv.el("nav", {});
  for (const p of run.pages) {
    nav.append(qkv.el("a", { href: `/runs/${encodeURIComponent(name)}/${p}`, class: p === page ? "here" : null },
      qkv.pageLabels[p] || p));
  }
  if (run.report) nav.append(qkv.el("a", { href: `/runs/${encodeURIComponent(name)}/report` }, "report"));
  header.append(nav);
  document.title = `${page} · ${run.name} · qkv`;
  return run;
};

qkv.human = function (n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "B";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(n);
};

qkv.num = function (sel) {
  const v = qkv.$(sel).value.trim();
  return v === "" ? null : Number(v);
};

// A heatmap as a table: rows × cols weights in [0, 1], darker = more; hover a cell for its value.
qkv.heatmap = function (weights, rows, cols, ylabel, xlabel) {
  const t = qkv.el("table", { class: "heat" });
  const head = qkv.el("tr", {}, qkv.el("th", { class: "axis" }, `${ylabel} ↓  ${xlabel} →`));
  cols.forEach((c) => head.append(qkv.el("th", { class: "col" }, c)));
  t.append(head);
  weights.forEach((row, i) => {
    const tr = qkv.el("tr", {}, qkv.el("th", {}, rows[i]));
    row.forEach((w, j) => {
      const td = qkv.el("td", { title: `${rows[i]} → ${cols[j]}: ${w.toFixed(3)}` });
      td.style.background = `rgba(33, 86, 201, ${Math.min(1, Math.max(0, w))})`;
      tr.append(td);
    });
    t.append(tr);
  });
  return t;
};

// mean over the heads of one layer: [head][row][col] -> [row][col]
qkv.meanHeads = function (layer) {
  return layer[0].map((row, i) => row.map((_, j) => layer.reduce((s, h) => s + h[i][j], 0) / layer.length));
};

// layer and head pickers for an attention stack; onChange(layerIndex, headIndexOrNull)
qkv.attentionPickers = function (stack, onChange) {
  const layer = qkv.el("select", { id: "layer" });
  for (let l = 0; l < stack.layers; l++) layer.append(qkv.el("option", { value: l, selected: l === stack.layers - 1 }, `layer ${l}`));
  const head = qkv.el("select", { id: "head" }, qkv.el("option", { value: "" }, "mean of heads"));
  for (let h = 0; h < stack.heads; h++) head.append(qkv.el("option", { value: h }, `head ${h}`));
  const fire = () => onChange(Number(layer.value), head.value === "" ? null : Number(head.value));
  layer.addEventListener("change", fire);
  head.addEventListener("change", fire);
  return [qkv.el("label", {}, "layer", layer), qkv.el("label", {}, "head", head), fire];
};

qkv.drawAttention = function (box, stack) {
  box.textContent = "";
  const pickers = qkv.attentionPickers(stack, (l, h) => {
    const w = h === null ? qkv.meanHeads(stack.weights[l]) : stack.weights[l][h];
    const title = `${stack.kind}, ${stack.kind === "cross-attention" ? "decoder " : ""}layer ${l}, ${h === null ? "mean over heads" : "head " + h}`;
    map.replaceChildren(qkv.el("p", { class: "stats" }, title), qkv.heatmap(w, stack.rows, stack.cols, stack.ylabel, stack.xlabel));
  });
  const map = qkv.el("div", { id: "heatmap" });
  box.append(qkv.el("div", { class: "controls" }, pickers[0], pickers[1]), map);
  pickers[2]();
};
