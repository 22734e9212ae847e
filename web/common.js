// Shared helpers for the portal and the dashboard. No third-party code;
// every text goes through textContent (never innerHTML), so data from the
// server can never become markup.
"use strict";

const askee = {
  // el("p", {class: "x"}, ["text", child]) builds an element.
  el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children || []) {
      if (c === null || c === undefined) continue;
      e.append(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return e;
  },

  svg(tag, attrs, children) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, String(v));
    }
    for (const c of children || []) e.append(c);
    return e;
  },

  // fetch with JSON in and out; answers {ok, status, body}.
  async api(method, path, headers, body) {
    const init = { method, headers: Object.assign({}, headers || {}), cache: "no-store" };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, body: { title: "the server cannot be reached", detail: String(e) } };
    }
    let parsed = null;
    try {
      parsed = await resp.json();
    } catch (_) {
      parsed = null;
    }
    return { ok: resp.ok, status: resp.status, body: parsed };
  },

  // A problem document in one line of plain words.
  problemText(p) {
    if (!p) return "the server gave no explanation";
    let s = p.detail || p.title || "request refused";
    if (Array.isArray(p.errors) && p.errors.length) {
      s += ": " + p.errors.map((e) => e.field + " " + e.problem).join("; ");
    }
    return s;
  },

  when(unixSeconds) {
    if (unixSeconds === null || unixSeconds === undefined) return "";
    return new Date(unixSeconds * 1000).toLocaleString();
  },

  whenMs(ms) {
    if (ms === null || ms === undefined) return "";
    return new Date(ms).toLocaleString();
  },

  duration(seconds) {
    if (seconds % 86400 === 0) return seconds / 86400 + " day(s)";
    if (seconds % 3600 === 0) return seconds / 3600 + " hour(s)";
    if (seconds % 60 === 0) return seconds / 60 + " minute(s)";
    return seconds + " second(s)";
  },

  short(key) {
    return key && key.length > 16 ? key.slice(0, 12) + "…" : key;
  },

  table(caption, headers, rows) {
    const t = askee.el("table", {}, [
      askee.el("caption", { text: caption }),
      askee.el("thead", {}, [askee.el("tr", {}, headers.map((h) => askee.el("th", { scope: "col", text: h })))]),
    ]);
    const body = askee.el("tbody");
    for (const r of rows) {
      body.append(askee.el("tr", {}, r.map((c) => (c instanceof Node ? askee.el("td", {}, [c]) : askee.el("td", { text: String(c) })))));
    }
    if (!rows.length) {
      body.append(askee.el("tr", {}, [askee.el("td", { colspan: headers.length, text: "none yet" })]));
    }
    t.append(body);
    return t;
  },

  // A bar chart as inline SVG: values with labels, accessible by its title.
  barChart(title, labels, values, maxValue) {
    const w = 600, h = 160, pad = 24;
    const n = Math.max(values.length, 1);
    const top = Math.max(maxValue || 0, ...values, 1);
    const bw = (w - 2 * pad) / n;
    const s = askee.svg("svg", { viewBox: `0 0 ${w} ${h}`, role: "img", "aria-label": title, class: "chart" });
    s.append(askee.svg("title", { text: title }));
    s.append(askee.svg("line", { x1: pad, y1: h - pad, x2: w - pad, y2: h - pad, class: "axis" }));
    values.forEach((v, i) => {
      const bh = ((h - 2 * pad) * v) / top;
      const r = askee.svg("rect", { x: pad + i * bw + 1, y: h - pad - bh, width: Math.max(bw - 2, 1), height: bh, class: "bar" });
      r.append(askee.svg("title", { text: `${labels[i]}: ${v}` }));
      s.append(r);
    });
    s.append(askee.svg("text", { x: pad, y: pad - 8, class: "chart-label", text: `max ${top}` }));
    return s;
  },
};
