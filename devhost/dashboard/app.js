// devhost dashboard: a pure client of the durable management API, /admin/host/status and the
// dashboard's read endpoints (/_devhost/api/: list with filters and counts, timelines, a
// changes-since-cursor feed, metrics). No framework, no build step. Every piece of data reaches
// the page through textContent or setAttribute (never innerHTML), so instance ids, inputs and
// chat messages cannot inject markup.

import {
  API, DASH, STATUSES, TERMINAL, ACTIVE, AGENT_PREFIX, PAUSE_STORAGE,
  h, swap, region, link, route, badge, empty, heading, parseTime, fmtTime, timeEl, fmtDuration,
  instanceDuration, fmtCoarse, unwrap, pretty, jsonBlock, preview, num, ApiError, setMasterKey,
  api, instanceUrl, entityUrl, cell, liveTick, facts, section, live,
} from "./lib.js";
import { timelineChart, historyTable } from "./timeline.js";
import { agentsView, threadView, TURN_ORCHESTRATOR, threadOfTurn } from "./agents.js";
import { metricsView } from "./metrics.js";

const LIVE_MS = 1000;  // how often the changes feed is asked (one small query; views re-fetch only on change)

// ---------------------------------------------------------------------------------------------
// routing

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [pathPart, queryPart = ""] = raw.split("?");
  const parts = pathPart.split("/").filter((p) => p !== "").map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { parts, query: new URLSearchParams(queryPart) };
}

/** The address for a view and its query (empty values left out). */
function withQuery(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const text = q.toString();
  return text ? `${base}?${text}` : base;
}

/** Filters live in the address: a new history entry (back button works, links are shareable). */
function pushQuery(base, params) {
  const target = withQuery(base, params);
  if (location.hash !== target) location.hash = target;  // hashchange renders the view
}

function setQuery(base, params) {
  history.replaceState(null, "", withQuery(base, params));
}

function resolve({ parts, query }) {
  const [section, a, b] = parts;
  if (!section || section === "overview") return { nav: "overview", view: () => overviewView() };
  if (section === "instances") {
    if (a !== undefined) return { nav: "instances", view: () => instanceView(a, query) };
    return { nav: "instances", view: () => instancesView(query) };
  }
  if (section === "entities") {
    if (a !== undefined && b !== undefined) return { nav: "entities", view: () => entityView(a, b) };
    return { nav: "entities", view: () => entitiesView(query) };
  }
  if (section === "metrics") return { nav: "metrics", view: () => metricsView(query) };
  if (section === "agents") {
    if (a !== undefined && b !== undefined) return { nav: "agents", view: () => threadView(a, b) };
    return { nav: "agents", view: () => agentsView() };
  }
  return { nav: null, view: () => notFoundView() };
}

// ---------------------------------------------------------------------------------------------
// shell: navigation, the refresh loop, the error banner, the master key prompt

const main = document.getElementById("view");
const banner = document.getElementById("banner");
const refreshState = document.getElementById("refresh-state");
const refreshToggle = document.getElementById("refresh-toggle");
const hubName = document.getElementById("hub-name");

let current = null;      // the view on screen: {el, title, refresh, wants?(changes)}
let paused = false;
try { paused = localStorage.getItem(PAUSE_STORAGE) === "1"; } catch { /* ignore */ }

function showBanner(message) {
  if (!message) {
    banner.hidden = true;
    banner.replaceChildren();
    return;
  }
  swap(banner, h("strong", {}, "Problem: "), message);
  banner.hidden = false;
}

function keyPrompt(error) {
  const input = h("input", { id: "master-key", type: "password", autocomplete: "off", required: true });
  const form = h("form", {
    class: "panel key-form",
    onsubmit: (e) => {
      e.preventDefault();
      setMasterKey(input.value.trim());
      render();
    },
  },
  h("h2", {}, "Master key needed"),
  h("p", {}, "This devhost enforces keys: the management API answered “", error.message,
    "”. Enter the master key (DEVHOST_MASTER_KEY); it is kept in this tab's session storage only."),
  h("label", { for: "master-key" }, "Master key"),
  h("div", { class: "row" }, input, h("button", { class: "btn btn-primary", type: "submit" }, "Use key")));
  return form;
}

/** Refresh the view on screen; a call while one runs makes it run once more afterwards. */
async function refreshView(initial = false) {
  const view = current;
  if (!view) return;
  if (view.busy) {
    view.again = true;
    return;
  }
  view.busy = true;
  try {
    do {
      view.again = false;
      await view.refresh(initial);
      initial = false;
    } while (view.again && view === current);
    view.refreshedAt = Date.now();
    if (view !== current) return;
    showBanner(null);
    const at = fmtTime(new Date().toISOString());
    refreshState.textContent = paused ? `Auto-refresh paused · updated ${at}` : `Updated ${at}`;
  } catch (err) {
    if (view !== current) return;
    if (err instanceof ApiError && err.status === 401) {
      main.replaceChildren(keyPrompt(err));
      current = null;
      return;
    }
    console.warn(err);
    showBanner(err instanceof ApiError && err.status ? `HTTP ${err.status}: ${err.message}` : String(err.message || err));
  } finally {
    view.busy = false;
  }
}

async function render() {
  const target = resolve(parseHash());
  for (const a of document.querySelectorAll("nav.tabs a")) {
    if (a.dataset.nav === target.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const view = target.view();
  current = view;
  main.replaceChildren(view.el);
  document.title = `${view.title} · devhost`;
  await refreshView(true);
  if (view === current) {
    const h1 = main.querySelector("h1");
    if (h1 && document.activeElement === document.body) h1.focus({ preventScroll: true });
  }
}

function updateToggle() {
  refreshToggle.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
  refreshToggle.setAttribute("aria-pressed", paused ? "true" : "false");
  document.body.classList.toggle("paused", paused);
  if (paused) refreshState.textContent = "Auto-refresh paused";
}

refreshToggle.addEventListener("click", () => {
  paused = !paused;
  try { localStorage.setItem(PAUSE_STORAGE, paused ? "1" : "0"); } catch { /* ignore */ }
  updateToggle();
  if (!paused) refreshView();
});
document.getElementById("refresh-now").addEventListener("click", () => refreshView());

async function loadHub() {
  try {
    const { data } = await api("/admin/host/status");
    hubName.textContent = data.hub ? `hub ${data.hub}` : "";
  } catch { /* the overview reports connection problems */ }
}


// ---------------------------------------------------------------------------------------------
// shared pieces

function instancesTable(docs, { caption } = {}) {
  const rows = docs.map((doc) => {
    const target = route("instances", doc.instanceId);
    return h("tr", {
      class: "clickable",
      onclick: (e) => {
        if (e.target.closest("a") || String(window.getSelection() || "")) return;
        location.hash = target;
      },
    },
    cell("Instance ID", {}, h("a", { href: target, class: "mono" }, doc.instanceId)),
    cell("Name", {}, doc.name),
    cell("Status", {}, badge(doc.runtimeStatus)),
    cell("Created", {}, timeEl(doc.createdTime)),
    cell("Updated", {}, timeEl(doc.lastUpdatedTime)),
    cell("Duration", { class: "num" },
      fmtCoarse(instanceDuration(doc)), ACTIVE.has(doc.runtimeStatus) ? h("span", { class: "muted" }, " so far") : null));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "grid responsive" },
    caption ? h("caption", {}, caption) : null,
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Instance ID"), h("th", { scope: "col" }, "Name"),
      h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Created"),
      h("th", { scope: "col" }, "Updated"), h("th", { scope: "col", class: "num" }, "Duration"))),
    h("tbody", {}, rows)));
}

// ---------------------------------------------------------------------------------------------
// 1. overview

function overviewView() {
  const statusRegion = region("div");
  const workRegion = region("div");
  const recentRegion = region("div");
  const el = h("div", { class: "view" },
    heading("Overview"),
    section("Orchestrations by status", statusRegion.el),
    section("Pending work", workRegion.el),
    section("Recent orchestrations", recentRegion.el,
      h("p", {}, link("#/instances", "All orchestrations →"))));

  async function refresh() {
    const [{ data: host }, recent] = await Promise.all([
      api("/admin/host/status"),
      api(`${API}/instances/?top=10&showInput=false`),
    ]);
    if (host.hub) hubName.textContent = `hub ${host.hub}`;
    const counts = (host.counts && host.counts.instances) || {};
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    const extra = Object.keys(counts).filter((s) => !STATUSES.includes(s));
    statusRegion.show({ counts, hub: host.hub, state: host.state }, () => [
      facts([["Task hub", h("span", { class: "mono" }, host.hub || "—")],
        ["Host state", host.state || "—"], ["Instances", num(total)]]),
      h("ul", { class: "cards", role: "list" }, [...STATUSES, ...extra].map((status) =>
        h("li", {}, h("a", {
          class: `stat st-${status}${counts[status] ? "" : " zero"}`,
          href: `#/instances?status=${encodeURIComponent(status)}`,
          "aria-label": `${counts[status] || 0} ${status}`,
        },
        h("span", { class: "stat-num" }, num(counts[status] || 0)),
        h("span", { class: "stat-label" }, status))))),
    ]);
    const c = host.counts || {};
    workRegion.show(c, () => h("ul", { class: "cards", role: "list" },
      [["Pending activities", c.pendingActivities, null],
        ["Pending entity operations", c.pendingEntityOperations, null],
        ["Entities", c.entities, "#/entities"]].map(([label, value, href]) =>
        h("li", {}, h(href ? "a" : "div", {
          class: `stat plain${value ? "" : " zero"}`, href, "aria-label": `${value ?? 0} ${label}` },
        h("span", { class: "stat-num" }, num(value ?? 0)),
        h("span", { class: "stat-label" }, label))))));
    const docs = Array.isArray(recent.data) ? recent.data : [];
    recentRegion.show({ docs, tick: liveTick(docs) }, () => docs.length ? instancesTable(docs)
      : empty("No orchestrations yet. Start one and it appears here."));
  }
  return { el, title: "Overview", refresh };
}

// ---------------------------------------------------------------------------------------------
// 2. orchestrations: filters in the address, counted pages (the dashboard list endpoint)

/** datetime-local value (local time) ⇄ ISO UTC kept in the address. */
function localInput(iso) {
  const t = parseTime(iso);
  if (t === null) return "";
  const d = new Date(t);
  const p2 = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p2(d.getMonth() + 1)}-${p2(d.getDate())}T${p2(d.getHours())}:${p2(d.getMinutes())}`;
}

function isoFromInput(value) {
  if (!value) return "";
  const t = Date.parse(value);
  return Number.isNaN(t) ? "" : new Date(t).toISOString();
}

function instancesView(query) {
  const state = {
    statuses: new Set((query.get("status") || "").split(",").filter((s) => STATUSES.includes(s))),
    name: query.get("name") || "",
    prefix: query.get("prefix") || "",
    from: query.get("from") || "",
    to: query.get("to") || "",
    top: /^\d{1,3}$/.test(query.get("top") || "") && +query.get("top") >= 1 ? String(+query.get("top")) : "25",
    page: /^\d{1,9}$/.test(query.get("page") || "") && +query.get("page") >= 1 ? +query.get("page") : 1,
    pages: 1,
  };
  const list = region("div");
  const pageInfo = h("span", { class: "page-info", "aria-live": "polite" });
  const goto = (page) => navigate({ page: page > 1 ? String(page) : "" });
  const firstBtn = h("button", { type: "button", class: "btn", onclick: () => goto(1) }, "First page");
  const prevBtn = h("button", { type: "button", class: "btn", onclick: () => goto(state.page - 1) }, "← Previous");
  const nextBtn = h("button", { type: "button", class: "btn", onclick: () => goto(state.page + 1) }, "Next →");
  const lastBtn = h("button", { type: "button", class: "btn", onclick: () => goto(state.pages) }, "Last page");

  const names = h("datalist", { id: "f-names" });
  const nameInput = h("input", { id: "f-name", type: "search", value: state.name, list: "f-names",
    placeholder: "any", autocomplete: "off", spellcheck: "false" });
  const prefixInput = h("input", { id: "f-prefix", type: "search", value: state.prefix,
    placeholder: "e.g. order-", autocomplete: "off", spellcheck: "false" });
  const fromInput = h("input", { id: "f-from", type: "datetime-local", value: localInput(state.from) });
  const toInput = h("input", { id: "f-to", type: "datetime-local", value: localInput(state.to) });
  const topSelect = h("select", { id: "f-top", onchange: apply },
    [...new Set(["10", "25", "50", "100", state.top])].sort((a, b) => a - b)
      .map((n) => h("option", { value: n, selected: n === state.top }, n)));
  const boxes = STATUSES.map((s) => h("label", { class: `chip st-${s}` },
    h("input", { type: "checkbox", value: s, checked: state.statuses.has(s), onchange: apply }), s));
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("fieldset", {}, h("legend", {}, "Status"), h("div", { class: "chips" }, boxes)),
    h("div", { class: "field-row" },
      h("div", { class: "field" }, h("label", { for: "f-name" }, "Orchestration name"), nameInput, names),
      h("div", { class: "field" }, h("label", { for: "f-prefix" }, "Instance ID prefix"), prefixInput),
      h("div", { class: "field" }, h("label", { for: "f-from" }, "Created from"), fromInput),
      h("div", { class: "field" }, h("label", { for: "f-to" }, "Created to"), toInput),
      h("div", { class: "field shrink" }, h("label", { for: "f-top" }, "Per page"), topSelect)),
    h("div", { class: "row" }, h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
      h("button", { type: "button", class: "btn", onclick: clear }, "Clear")));

  function params(overrides = {}) {
    return { status: [...state.statuses].join(","), name: state.name, prefix: state.prefix,
      from: state.from, to: state.to, top: state.top === "25" ? "" : state.top,
      page: state.page > 1 ? String(state.page) : "", ...overrides };
  }

  function navigate(overrides) {
    pushQuery("#/instances", params(overrides));
  }

  function apply() {
    state.statuses = new Set(boxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value));
    state.name = nameInput.value.trim();
    state.prefix = prefixInput.value.trim();
    state.from = isoFromInput(fromInput.value);
    state.to = isoFromInput(toInput.value);
    state.top = topSelect.value;
    navigate({ page: "" });
  }

  function clear() {
    pushQuery("#/instances", {});
  }

  async function refresh() {
    const q = new URLSearchParams({ top: state.top, page: String(state.page) });
    if (state.statuses.size) q.set("status", [...state.statuses].join(","));
    if (state.name) q.set("name", state.name);
    if (state.prefix) q.set("prefix", state.prefix);
    if (state.from) q.set("createdFrom", state.from);
    if (state.to) q.set("createdTo", state.to);
    const { data } = await api(`${DASH}/instances?${q}`);
    const docs = data.instances;
    state.pages = data.pages;
    const known = data.names.join("\n");
    if (names.dataset.known !== known) {
      names.dataset.known = known;
      names.replaceChildren(...data.names.map((n) => h("option", { value: n })));
    }
    const first = (state.page - 1) * +state.top + 1;
    pageInfo.textContent = data.total
      ? `Page ${state.page} of ${num(data.pages)} · ${num(first)}–${num(first + docs.length - 1)} of ${num(data.total)} instance${data.total === 1 ? "" : "s"}`
      : `Page ${state.page}`;
    prevBtn.disabled = firstBtn.disabled = state.page <= 1;
    nextBtn.disabled = lastBtn.disabled = state.page >= data.pages;
    const filtered = state.statuses.size || state.prefix || state.name || state.from || state.to;
    list.show({ docs, tick: liveTick(docs) }, () => docs.length ? instancesTable(docs)
      : empty(filtered ? "No orchestrations match these filters." : "No orchestrations yet."));
  }

  const el = h("div", { class: "view" }, heading("Orchestrations"), form, list.el,
    h("nav", { class: "pager", "aria-label": "Pages" }, firstBtn, prevBtn, pageInfo, nextBtn, lastBtn));
  return { el, title: "Orchestrations", refresh };
}

function instanceView(id, query) {
  const tab = query.get("tab") === "history" ? "history" : "timeline";
  const summary = region("div");
  const data = region("div", { class: "data-grid" });
  const historyRegion = region("div");
  const timelineRegion = region("div");
  const result = h("div", { class: "result", role: "status", "aria-live": "polite" });
  let doc = null;

  const reason = h("input", { id: "a-reason", type: "text", autocomplete: "off", placeholder: "optional" });
  const buttons = {};
  const actionDefs = [
    ["suspend", "Suspend", "", "Pause the instance until resumed."],
    ["resume", "Resume", "", "Continue a suspended instance."],
    ["rewind", "Rewind", "", "Re-run what failed in a Failed instance."],
    ["restart", "Restart", "", "Start a new instance with the same input."],
    ["terminate", "Terminate", "danger", "Stop the instance now (Terminated)."],
    ["purge", "Purge", "danger", "Delete the instance and its history."],
  ];
  for (const [op, label, tone, help] of actionDefs) {
    buttons[op] = h("button", { type: "button", class: `btn${tone ? " btn-" + tone : ""}`, title: help,
      onclick: () => act(op, label) }, label);
  }
  const eventInput = h("input", { id: "e-name", type: "text", required: true, autocomplete: "off", spellcheck: "false" });
  const eventPayload = h("textarea", { id: "e-payload", rows: "3", spellcheck: "false", placeholder: "{\"approved\": true}" });
  const eventButton = h("button", { type: "submit", class: "btn btn-primary" }, "Raise event");
  const eventForm = h("form", { class: "raise", onsubmit: raise, "aria-label": "Raise event" },
    h("h3", {}, "Raise an event"),
    h("div", { class: "field" }, h("label", { for: "e-name" }, "Event name"), eventInput),
    h("div", { class: "field" }, h("label", { for: "e-payload" }, "Payload (JSON, optional)"), eventPayload),
    h("div", { class: "row" }, eventButton));

  function report(ok, ...message) {
    swap(result, h("p", { class: ok ? "ok" : "err" }, ...message));
  }

  async function act(op, label) {
    if ((op === "terminate" || op === "purge") &&
        !window.confirm(`${label} instance ${id}?${op === "purge" ? " Its history is deleted." : ""}`)) return;
    const why = reason.value.trim();
    const tail = op === "purge" ? "" : `/${op}${why && op !== "restart" ? `?reason=${encodeURIComponent(why)}` : ""}`;
    try {
      const answer = await api(instanceUrl(id, tail), { method: op === "purge" ? "DELETE" : "POST" });
      if (op === "restart" && answer.data && answer.data.id) {
        report(true, "Restarted as ", link(route("instances", answer.data.id), answer.data.id), ".");
      } else if (op === "purge") {
        const n = answer.data && answer.data.instancesDeleted;
        report(true, `Purged ${n ?? 1} instance${n === 1 || n == null ? "" : "s"}. `, link("#/instances", "Back to orchestrations"));
      } else {
        report(true, `${label}: accepted (HTTP ${answer.status}).`);
      }
    } catch (err) {
      report(false, `${label} failed: `, err.status ? `HTTP ${err.status} — ` : "", err.message);
    }
    refreshSoon();
  }

  async function raise(e) {
    e.preventDefault();
    const name = eventInput.value.trim();
    if (!name) { report(false, "Raise event: give the event a name."); eventInput.focus(); return; }
    const text = eventPayload.value.trim();
    if (text) {
      try { JSON.parse(text); } catch (err) {
        report(false, "Raise event: the payload is not valid JSON (", err.message, ").");
        eventPayload.focus();
        return;
      }
    }
    try {
      const answer = await api(instanceUrl(id, `/raiseEvent/${encodeURIComponent(name)}`),
        { method: "POST", body: text || undefined });
      report(true, `Event “${name}” raised (HTTP ${answer.status}).`);
    } catch (err) {
      report(false, `Raise event “${name}” failed: `, err.status ? `HTTP ${err.status} — ` : "", err.message);
    }
    refreshSoon();
  }

  function refreshSoon() {
    setTimeout(() => { if (current === view) refreshView(); }, 150);
  }

  function enableActions(status) {
    const known = status !== null;
    const allowed = {
      terminate: ACTIVE.has(status), suspend: status === "Running" || status === "Pending",
      resume: status === "Suspended", rewind: status === "Failed", restart: known, purge: known,
    };
    for (const [op, btn] of Object.entries(buttons)) btn.disabled = !allowed[op];
    eventButton.disabled = !ACTIVE.has(status);
  }

  async function load() {
    let answer;
    try {
      answer = await api(instanceUrl(id, "?showHistory=true&showHistoryOutput=true"));
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
    return answer.data;
  }

  async function loadTimeline() {
    try {
      return (await api(`${DASH}/instances/${encodeURIComponent(id)}/timeline`)).data;
    } catch (err) {
      if (err.status === 404) return null;
      throw err;
    }
  }

  async function refreshData() {
    let tl;
    [doc, tl] = await Promise.all([load(), tab === "timeline" ? loadTimeline() : null]);
    if (!doc) {
      summary.show("missing", () => h("p", { class: "empty" },
        "No orchestration instance with this id (it may have been purged). ", link("#/instances", "Back to orchestrations")));
      data.show(null, () => []);
      historyRegion.show(null, () => []);
      timelineRegion.show(null, () => []);
      enableActions(null);
      return;
    }
    const events = Array.isArray(doc.historyEvents) ? doc.historyEvents : [];
    const started = parseTime(events.find((e) => e.EventType === "ExecutionStarted")?.Timestamp);
    const finished = parseTime(events.find((e) => e.EventType === "ExecutionCompleted" || e.EventType === "ExecutionTerminated")?.Timestamp);
    const duration = started !== null && finished !== null ? finished - started : instanceDuration(doc);
    const shownDuration = TERMINAL.has(doc.runtimeStatus) ? fmtDuration(duration)
      : `${fmtCoarse(instanceDuration(doc))} so far`;
    const { name, instanceId, runtimeStatus, createdTime, lastUpdatedTime } = doc;
    const parent = tl ? tl.parentInstanceId : summary.parent;
    summary.parent = parent;
    const thread = doc.name === TURN_ORCHESTRATOR ? threadOfTurn(unwrap(doc.input)) : null;
    summary.show({ name, instanceId, runtimeStatus, createdTime, lastUpdatedTime, shownDuration, parent, thread }, () =>
      facts([
        ["Status", badge(doc.runtimeStatus)],
        ["Name", h("span", { class: "mono" }, doc.name)],
        ["Created", timeEl(doc.createdTime)],
        ["Last updated", timeEl(doc.lastUpdatedTime)],
        ["Duration", shownDuration],
        parent ? ["Parent", link(route("instances", parent), h("span", { class: "mono break" }, parent)), { wide: true }] : null,
        thread ? ["Thread", link(route("agents", thread.entity, thread.key), h("span", { class: "mono break" }, thread.threadId)), { wide: true }] : null,
      ]));
    data.show({ i: doc.input, o: doc.output, c: doc.customStatus }, () => [
      h("section", { class: "panel", "aria-label": "Input" }, h("h2", {}, "Input"), jsonBlock(unwrap(doc.input), "Input")),
      h("section", { class: "panel", "aria-label": "Output" }, h("h2", {}, "Output"),
        doc.runtimeStatus === "Failed" ? h("pre", { class: "json err" }, pretty(doc.output)) : jsonBlock(doc.output, "Output")),
      h("section", { class: "panel", "aria-label": "Custom status" }, h("h2", {}, "Custom status"), jsonBlock(doc.customStatus, "Custom status")),
    ]);
    if (tab === "history") {
      historyRegion.show(events, () =>
        events.length ? historyTable(events, doc) : empty("No history yet."));
    } else if (tl) {
      // running instances: the open bars grow with time, so "now" is part of what is drawn
      const { now, ...shown } = tl;
      timelineRegion.show(tl.finished ? shown : tl, () => timelineChart(tl));
    }
    enableActions(doc.runtimeStatus);
  }

  async function refresh() {
    await refreshData();
  }

  const el = h("div", { class: "view" },
    h("p", { class: "crumbs" }, link("#/instances", "Orchestrations"), " › ", h("span", { class: "mono" }, id)),
    heading("Orchestration ", h("span", { class: "mono" }, id)),
    summary.el,
    h("nav", { class: "subtabs", "aria-label": "Instance views" },
      link(`${route("instances", id)}`, "Timeline"), link(`${route("instances", id)}?tab=history`, "History")),
    tab === "history" ? section("History", historyRegion.el) : section("Timeline", timelineRegion.el),
    data.el,
    section("Actions",
      h("div", { class: "action-grid" },
        h("div", { class: "manage" },
          h("h3", {}, "Manage the instance"),
          h("div", { class: "field" }, h("label", { for: "a-reason" }, "Reason (terminate, suspend, resume, rewind)"), reason),
          h("div", { class: "actions" },
            h("div", { class: "group" }, buttons.suspend, buttons.resume, buttons.rewind, buttons.restart),
            h("div", { class: "group" }, buttons.terminate, buttons.purge))),
        eventForm),
      result));
  for (const a of el.querySelectorAll(".subtabs a")) {
    if ((a.textContent === "History") === (tab === "history")) a.setAttribute("aria-current", "page");
  }
  const view = { el, title: `Orchestration ${id}`, refresh,
    wants: (changes) => changes.instances.some((c) => c.instanceId === id) || changes.totalChanged };
  return view;
}

// ---------------------------------------------------------------------------------------------
// 4. entities

function entitiesView(query) {
  const state = { name: query.get("name") || "", skip: 0, top: 50 };
  const list = region("div");
  const pageInfo = h("span", { class: "page-info", "aria-live": "polite" });
  const prevBtn = h("button", { type: "button", class: "btn", onclick: () => go(Math.max(0, state.skip - state.top)) }, "← Previous");
  const nextBtn = h("button", { type: "button", class: "btn", onclick: () => go(state.skip + state.top) }, "Next →");
  const nameInput = h("input", { id: "f-entity", type: "search", value: state.name, autocomplete: "off", spellcheck: "false", placeholder: "e.g. counter" });
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    state.name = nameInput.value.trim();
    setQuery("#/entities", { name: state.name });
    go(0);
  } },
  h("div", { class: "field" }, h("label", { for: "f-entity" }, "Entity name (exact)"),
    h("div", { class: "row" }, nameInput, h("button", { type: "submit", class: "btn btn-primary" }, "Apply"))));

  function go(skip) {
    state.skip = skip;
    list.reset();
    refreshView();
  }

  async function refresh() {
    const path = state.name ? `${API}/entities/${encodeURIComponent(state.name.toLowerCase())}` : `${API}/entities/`;
    const { data } = await api(`${path}?top=${state.top}&skip=${state.skip}`);
    const items = Array.isArray(data) ? data : [];
    prevBtn.disabled = state.skip === 0;
    nextBtn.disabled = items.length < state.top;
    pageInfo.textContent = `Page ${Math.floor(state.skip / state.top) + 1}`;
    list.show(items, () => items.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid responsive" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Key"),
        h("th", { scope: "col" }, "Last operation"), h("th", { scope: "col" }, "State"))),
      h("tbody", {}, items.map((item) => {
        const { name, key } = item.entityId || {};
        const target = route("entities", name, key);
        return h("tr", { class: "clickable", onclick: (e) => { if (!e.target.closest("a")) location.hash = target; } },
          cell("Name", {}, h("span", { class: "mono" }, name),
            String(name).startsWith(AGENT_PREFIX) ? h("span", { class: "tag" }, "agent thread") : null),
          cell("Key", {}, h("a", { href: target, class: "mono" }, key)),
          cell("Last operation", {}, timeEl(item.lastOperationTime)),
          cell("State", { class: "state-preview" }, h("code", {}, preview(item.state, 90))));
      }))))
      : empty(state.name ? `No entities named “${state.name}”.` : "No entities yet."));
  }

  const el = h("div", { class: "view" }, heading("Entities"), form, list.el,
    h("nav", { class: "pager", "aria-label": "Pages" }, prevBtn, pageInfo, nextBtn));
  return { el, title: "Entities", refresh };
}

function entityView(name, key) {
  const body = region("div");
  async function refresh() {
    let state;
    let found = true;
    try {
      state = (await api(entityUrl(name, key))).data;
    } catch (err) {
      if (err.status !== 404) throw err;
      found = false;
    }
    body.show({ found, state }, () => found ? [
      facts([["Name", h("span", { class: "mono" }, name)], ["Key", h("span", { class: "mono break" }, key)],
        ["Entity ID", h("span", { class: "mono break" }, `@${name}@${key}`), { wide: true }]]),
      name.startsWith(AGENT_PREFIX) ? h("p", {}, link(route("agents", name, key), "Open as a chat transcript →")) : null,
      section("State", jsonBlock(state, "Entity state")),
    ] : empty("This entity has no state (it does not exist or was deleted)."));
  }
  const el = h("div", { class: "view" },
    h("p", { class: "crumbs" }, link("#/entities", "Entities"), " › ", h("span", { class: "mono" }, `@${name}@${key}`)),
    heading("Entity ", h("span", { class: "mono" }, `@${name}@${key}`)), body.el);
  return { el, title: `Entity @${name}@${key}`, refresh };
}

// ---------------------------------------------------------------------------------------------

function notFoundView() {
  const el = h("div", { class: "view" }, heading("Not found"),
    h("p", {}, "This dashboard has no page at this address. ", link("#/", "Go to the overview")));
  return { el, title: "Not found", refresh: async () => {} };
}

// ---------------------------------------------------------------------------------------------
// start

{ // ?code=<master key> on the dashboard URL: remember it and drop it from the address bar
  const params = new URLSearchParams(location.search);
  if (params.get("code")) {
    setMasterKey(params.get("code"));
    params.delete("code");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
}

// Live updates: ask the changes feed what was written since the cursor; refresh the view on
// screen only when something it shows changed (views say so with wants(changes)).
let cursor = null;
async function poll() {
  if (!paused && !document.hidden && current) {
    try {
      const { data } = await api(`${DASH}/changes${cursor ? `?since=${encodeURIComponent(cursor)}` : ""}`);
      const changes = { instances: data.instances, entities: data.entities, totalChanged: data.total !== lastTotal };
      cursor = data.cursor;
      lastTotal = data.total;
      const any = changes.instances.length || changes.entities.length || changes.totalChanged;
      const view = current;
      const due = view && view.every && Date.now() - (view.refreshedAt || 0) >= view.every;
      if (view && (due || (any && (!view.wants || view.wants(changes))))) refreshView();
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) console.warn(err);
    }
  }
  setTimeout(poll, LIVE_MS);
}
let lastTotal = null;
live.refresh = () => refreshView();

window.addEventListener("hashchange", () => render());
updateToggle();
loadHub();
// The cursor is taken before the first render, so nothing written in between is missed.
api(`${DASH}/changes`).then(({ data }) => { cursor = data.cursor; lastTotal = data.total; }, () => {})
  .finally(() => render().then(() => setTimeout(poll, LIVE_MS)));
