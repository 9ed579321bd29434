// kubetrail console: Trace List, trace detail, resource history and overview.
// Every view's state is in the URL fragment (#/view?filters), so a link can be
// shared. No framework and nothing fetched from elsewhere; all text is set with
// textContent, never parsed as HTML.
"use strict";

const FILTERS = ["verb", "group", "resource", "name", "namespace", "user", "rating", "ip", "id"];
const PRESETS = ["15m", "1h", "6h", "24h", "7d"];
const TOKEN_KEY = "kubetrail.token";

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// The route: "#/traces?tracker=x&verb=delete" → {view, params}.
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, qs] = h.split("?");
  return { view: view || "traces", params: new URLSearchParams(qs || "") };
}

function link(view, params) {
  const p = new URLSearchParams();
  for (const [k, v] of params) if (v !== "" && v !== null && v !== undefined) p.set(k, v);
  return "#/" + view + "?" + p.toString();
}

// Parameters that follow the user from view to view.
function common(params) {
  const keep = new URLSearchParams();
  for (const k of ["ns", "tracker", "cluster", "last", "from", "to"]) {
    if (params.get(k)) keep.set(k, params.get(k));
  }
  return keep;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body && body.error ? body.error : "HTTP " + status);
    this.status = status;
  }
}

async function api(path, params) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch("api/v1/" + path + "?" + params.toString(), { headers, credentials: "omit" });
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

function fmtTime(t) {
  if (!t) return "";
  return String(t).replace("T", " ").replace(/(\.\d{3})\d*Z$/, "$1Z");
}

function rating(r) {
  return el("span", { class: "rating " + (r || "normal"), text: r || "normal" });
}

function verbOf(t) {
  return (t.trace_name || "").split(" ")[0];
}

function showError(e) {
  const box = document.getElementById("error");
  box.hidden = false;
  box.textContent = e.message;
  document.body.dataset.state = "error";
  // No (valid) token, or no namespace to act in: ask for both.
  if (e.status === 401 || (e.status === 400 && /namespace is required/.test(e.message))) {
    document.getElementById("login").hidden = false;
  }
}

let me = null;

async function whoami(params) {
  const key = (params.get("ns") || "") + "|" + (sessionStorage.getItem(TOKEN_KEY) || "");
  if (me && me.key === key) return me;
  const who = await api("whoami", new URLSearchParams({ ns: params.get("ns") || "" }));
  me = { key, ...who };
  const sees = who.scope === "all" ? "all namespaces" : "namespace " + who.scope;
  document.getElementById("who").textContent =
    (who.user ? who.user + " · " : "") + "sees " + sees + " · cluster " + who.cluster;
  return me;
}

// Fills the tracker when the link has none: the chart's default tracker
// (`system`) if there is one, else the first.
function withTracker(params, who) {
  if (!params.get("tracker") && who.trackers.length) {
    params.set("tracker", who.trackers.includes("system") ? "system" : who.trackers[0]);
  }
  return params;
}

function timeControls(view, params) {
  const presets = el("div", { class: "presets" },
    PRESETS.map((p) => {
      const q = new URLSearchParams(params);
      q.set("last", p); q.delete("from"); q.delete("to"); q.delete("cursor");
      const active = !params.get("from") && (params.get("last") || "1h") === p;
      return el("a", { href: link(view, q), class: active ? "active" : "", "data-preset": p, text: p });
    }));
  return presets;
}

function filterForm(view, params, who) {
  const tracker = el("select", { name: "tracker" },
    who.trackers.map((t) => el("option", { value: t, selected: t === params.get("tracker"), text: t })));
  const input = (name, label, placeholder) =>
    el("label", {}, label, el("input", { name, value: params.get(name) || "", placeholder: placeholder || "" }));
  const form = el("form", { class: "filters", id: "filters" },
    el("label", {}, "Tracker", tracker),
    input("cluster", "Cluster", (who.clusters || [who.cluster]).join(", ")),
    el("label", {}, "Range", timeControls(view, params)),
    input("from", "From (UTC)", "2026-12-01T03:00:00Z"),
    input("to", "To (UTC)", "now"),
    view === "traces" ? [
      input("verb", "Verb", "delete,patch"),
      input("resource", "Resource", "secrets"),
      input("name", "Name"),
      input("namespace", "Namespace"),
      input("user", "User"),
      el("label", {}, "Rating", el("select", { name: "rating" },
        ["", "normal", "warning", "incident"].map((r) =>
          el("option", { value: r, selected: r === (params.get("rating") || ""), text: r || "any" })))),
      input("ip", "Source IP"),
      input("id", "Trace ID"),
    ] : [],
    el("button", { type: "submit", text: "Search" }));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = common(new URLSearchParams({ ns: params.get("ns") || "" }));
    for (const [k, v] of new FormData(form)) if (String(v).trim()) q.set(k, String(v).trim());
    if (q.get("from")) q.delete("last"); else q.set("last", params.get("last") || "1h");
    location.hash = link(view, q);
  });
  return form;
}

function traceLink(params, t) {
  const q = common(params);
  q.set("id", t.trace_id);
  // A narrow range around the trace finds it fast.
  const ms = Date.parse(t.time);
  if (!isNaN(ms)) { q.delete("last"); q.set("from", String(ms)); q.set("to", String(ms + 1)); }
  if (t.cluster) q.set("cluster", t.cluster);
  return link("trace", q);
}

function historyLink(params, t) {
  const q = common(params);
  q.set("resource", t.resource_type);
  q.set("name", t.resource_name || "");
  if (t.namespace) q.set("namespace", t.namespace);
  if (t.service_type) q.set("group", t.service_type);
  if (!params.get("from")) q.set("last", "7d");
  return link("history", q);
}

async function viewTraces(params) {
  const who = await whoami(params);
  withTracker(params, who);
  const view = document.getElementById("view");
  view.replaceChildren(el("h1", { text: "Trace List" }), filterForm("traces", params, who));
  const q = new URLSearchParams(params);
  if (!q.get("from") && !q.get("last")) q.set("last", "1h");
  const page = await api("traces", q);
  const rows = page.traces.map((t) => el("tr", { class: "trace", "data-id": t.trace_id },
    el("td", { class: "mono" }, el("a", { href: traceLink(params, t), text: fmtTime(t.time) })),
    el("td", {}, t.trace_name),
    el("td", {}, rating(t.trace_rating)),
    el("td", {}, t.code === undefined ? "" : String(t.code)),
    el("td", {}, t.user),
    el("td", {}, t.namespace || ""),
    el("td", {}, t.resource_name
      ? el("a", { href: historyLink(params, t), class: "history", text: t.resource_name })
      : ""),
    el("td", { class: "mono" }, (t.source_ips || []).join(", ")),
    el("td", {}, t.source || ""),
  ));
  const status = el("div", { class: "status", id: "status" },
    page.traces.length + " traces shown" + (page.next ? ", more older ones" : " of " + page.matched + " matched") + " · " +
    page.scanned.objects + " files, " + page.scanned.traces + " traces read in " + page.elapsedMs + " ms");
  const pager = el("div", { class: "pager" });
  if (params.get("cursor")) {
    const first = new URLSearchParams(params); first.delete("cursor");
    pager.append(el("a", { id: "first", href: link("traces", first), text: "⇤ Newest" }));
  }
  if (page.next) {
    const next = new URLSearchParams(params);
    next.set("cursor", page.next);
    // A page is fixed in time: the next one has the same end, not "now".
    if (!next.get("to")) { next.delete("last"); next.set("from", String(page.from)); next.set("to", String(page.to)); }
    pager.append(el("a", { id: "next", href: link("traces", next), text: "Older →" }));
  }
  view.append(status,
    el("table", { id: "traces" },
      el("thead", {}, el("tr", {}, ["Time (UTC)", "Operation", "Rating", "Code", "User", "Namespace", "Resource", "Source IP", "Source"].map((h) => el("th", { text: h })))),
      el("tbody", {}, rows)),
    pager);
}

async function viewTrace(params) {
  const who = await whoami(params);
  withTracker(params, who);
  const view = document.getElementById("view");
  const page = await api("traces", params);
  const t = page.traces[0];
  if (!t) {
    view.replaceChildren(el("h1", { text: "Trace not found" }),
      el("p", { text: "No trace " + params.get("id") + " in that range that you may see." }));
    return;
  }
  const json = JSON.stringify(t, null, 2);
  const fields = el("dl", { class: "fields", id: "fields" },
    Object.entries(t).filter(([, v]) => typeof v !== "object" || Array.isArray(v)).map(([k, v]) => [
      el("dt", { text: k }), el("dd", { "data-field": k, text: Array.isArray(v) ? v.join(", ") : String(v) }),
    ]));
  const copy = el("button", { class: "plain", id: "copy", text: "Copy as JSON" });
  copy.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText(json); copy.textContent = "Copied"; }
    catch (_) { copy.textContent = "Copy failed: select the text below"; }
  });
  const bodies = ["request", "response", "old_object", "annotations"].filter((k) => t[k] !== undefined)
    .map((k) => [el("h2", { text: k }), el("pre", { class: "body", "data-body": k, text: JSON.stringify(t[k], null, 2) })]);
  view.replaceChildren(
    el("h1", { text: (t.trace_name || t.trace_type || "trace") + " · " + fmtTime(t.time) }),
    el("p", {}, rating(t.trace_rating), " ",
      t.resource_name ? el("a", { href: historyLink(params, t), id: "history-link", text: "History of " + t.resource_type + "/" + t.resource_name }) : ""),
    fields, ...bodies.flat(),
    el("h2", {}, "Whole trace ", copy),
    el("pre", { id: "json", text: json }));
}

async function viewHistory(params) {
  const who = await whoami(params);
  withTracker(params, who);
  const view = document.getElementById("view");
  const what = params.get("resource") + "/" + params.get("name") +
    (params.get("namespace") ? " in " + params.get("namespace") : "");
  view.replaceChildren(el("h1", { text: "History of " + what }), filterForm("history", params, who));
  const q = new URLSearchParams(params);
  q.set("limit", "500");
  const page = await api("history", q);
  const items = page.traces.map((t) => {
    const failed = (t.code || 0) >= 400;
    return el("li", { class: "event " + (t.trace_rating === "incident" ? "incident" : failed ? "failed" : "ok"), "data-verb": verbOf(t) },
      el("div", { class: "when" }, el("a", { href: traceLink(params, t), text: fmtTime(t.time) })),
      el("div", {}, el("strong", { text: verbOf(t) }), " by ", t.user || "",
        t.code !== undefined ? " → " + t.code : "", failed && t.message ? " (" + t.message + ")" : ""));
  });
  view.append(
    el("div", { class: "status", id: "status" }, page.traces.length + " operations, oldest first"),
    el("ol", { id: "timeline" }, items));
  if (page.next) {
    const next = new URLSearchParams(params); next.set("cursor", page.next);
    view.append(el("div", { class: "pager" }, el("a", { id: "next", href: link("history", next), text: "Later →" })));
  }
}

function chart(o) {
  const w = 960, h = 240, pad = 34;
  const s = svg("svg", { id: "chart", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none" });
  const max = Math.max(1, ...o.buckets.map((b) => b[0] + b[1] + b[2]));
  const n = Math.max(1, o.buckets.length);
  const bw = (w - pad - 6) / n;
  const colors = ["#3a9a5b", "#d99a1e", "#c73a3a"];
  const names = ["normal", "warning", "incident"];
  s.append(svg("line", { x1: pad, y1: h - 20, x2: w, y2: h - 20, stroke: "#cdd3dc" }));
  const label = svg("text", { x: 2, y: 14, "font-size": 11, fill: "#667085" });
  label.textContent = String(max);
  s.append(label);
  o.buckets.forEach((b, i) => {
    let y = h - 20;
    b.forEach((count, r) => {
      if (!count) return;
      const bh = (count / max) * (h - 40);
      y -= bh;
      const rect = svg("rect", {
        class: "bar", x: pad + i * bw + 1, y, width: Math.max(1, bw - 2), height: bh, fill: colors[r],
        "data-bucket": new Date(o.fromMs + i * o.bucketMs).toISOString(), "data-rating": names[r], "data-count": count,
      });
      const tip = svg("title", {});
      tip.textContent = new Date(o.fromMs + i * o.bucketMs).toISOString() + " " + names[r] + ": " + count;
      rect.append(tip);
      s.append(rect);
    });
  });
  for (const i of [0, Math.floor(n / 2), n - 1]) {
    const t = svg("text", { x: pad + i * bw, y: h - 5, "font-size": 11, fill: "#667085" });
    t.textContent = fmtTime(new Date(o.fromMs + i * o.bucketMs).toISOString()).slice(5, 16);
    s.append(t);
  }
  return s;
}

function topTable(id, title, column, rows, make) {
  return el("div", {}, el("h2", { text: title }),
    el("table", { id },
      el("thead", {}, el("tr", {}, el("th", { text: column }), el("th", { text: "Traces" }))),
      el("tbody", {}, rows.map(([k, n]) => el("tr", { class: "top" }, el("td", {}, make(k)), el("td", { text: String(n) }))))));
}

async function viewOverview(params) {
  const who = await whoami(params);
  withTracker(params, who);
  const view = document.getElementById("view");
  view.replaceChildren(el("h1", { text: "Overview" }), filterForm("overview", params, who));
  const q = new URLSearchParams(params);
  if (!q.get("from") && !q.get("last")) q.set("last", "24h");
  const o = await api("overview", q);
  const userLink = (u) => { const p = common(params); p.set("user", u); return el("a", { href: link("traces", p), text: u }); };
  const opLink = (op) => {
    const [verb, resource] = op.split(" ");
    const p = common(params); p.set("verb", verb); if (resource) p.set("resource", resource); p.set("rating", "warning");
    return el("a", { href: link("traces", p), text: op });
  };
  view.append(
    el("div", { class: "status", id: "status" }, o.total + " traces · per " + (o.bucketMs / 60000 >= 60 ? "hour" : o.bucketMs / 60000 + " minutes") +
      " by rating · " + o.scannedObjects + " files read in " + o.elapsedMs + " ms"),
    el("div", { class: "legend" }, ["normal", "warning", "incident"].map((r) => el("span", {}, el("i", { class: r }), r))),
    chart(o),
    el("div", { class: "cards" },
      topTable("top-users", "Top users", "User", o.topUsers, userLink),
      topTable("top-denied", "Top denied operations", "Operation", o.topDenied, opLink)));
}

const VIEWS = { traces: viewTraces, trace: viewTrace, history: viewHistory, overview: viewOverview };

async function render() {
  const { view, params } = route();
  document.body.dataset.state = "loading";
  document.getElementById("error").hidden = true;
  document.getElementById("login").hidden = true;
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.id === "nav-" + (view === "overview" ? "overview" : "traces"));
    a.href = link(a.id === "nav-overview" ? "overview" : "traces", common(params));
  }
  try {
    await (VIEWS[view] || viewTraces)(params);
    document.body.dataset.state = "ready";
  } catch (e) {
    showError(e);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const { params } = route();
  document.getElementById("login-ns").value = params.get("ns") || "default";
  document.getElementById("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("login-token").value.trim());
    const p = route().params;
    p.set("ns", document.getElementById("login-ns").value.trim());
    me = null;
    location.hash = link(route().view, p);
    render();
  });
  window.addEventListener("hashchange", render);
  render();
});
