// devhost dashboard: a pure client of the durable management API and /admin/host/status.
// No framework, no build step. Every piece of data reaches the page through textContent or
// setAttribute (never innerHTML), so instance ids, inputs and chat messages cannot inject markup.

const API = "/runtime/webhooks/durabletask";
const STATUSES = ["Running", "Pending", "Suspended", "ContinuedAsNew", "Completed", "Failed", "Terminated"];
const TERMINAL = new Set(["Completed", "Failed", "Terminated"]);
const ACTIVE = new Set(["Running", "Pending", "Suspended", "ContinuedAsNew"]);
const AGENT_PREFIX = "dafx-";
const REFRESH_MS = 2000;
const KEY_STORAGE = "devhost.masterKey";
const PAUSE_STORAGE = "devhost.refreshPaused";

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Element from a tag, attributes/handlers and children (strings become text nodes). */
function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace a container's children, keeping <details data-k> open and the focused control. */
function swap(container, ...children) {
  const open = new Set([...container.querySelectorAll("details[data-k][open]")].map((d) => d.dataset.k));
  container.replaceChildren();
  append(container, children);
  for (const d of container.querySelectorAll("details[data-k]")) {
    if (open.has(d.dataset.k)) d.open = true;
  }
}

/** A region re-rendered only when its data changed (no flicker, state kept between polls). */
function region(tag = "div", props = {}) {
  const el = h(tag, props);
  let last;
  return {
    el,
    show(data, build) {
      const key = JSON.stringify(data === undefined ? null : data);
      if (key === last) return;
      last = key;
      swap(el, build(data));
    },
    reset() { last = undefined; },
  };
}

function link(route, ...children) {
  return h("a", { href: route }, ...children);
}

function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

function badge(status) {
  const known = STATUSES.includes(status) ? status : "Unknown";
  return h("span", { class: `badge st-${known}` }, status || "Unknown");
}

function empty(text) {
  return h("p", { class: "empty" }, text);
}

function heading(text, ...extra) {
  return h("h1", { tabindex: "-1" }, text, ...extra);
}

// ---------------------------------------------------------------------------------------------
// formatting

function parseTime(text) {
  if (!text) return null;
  // .NET-style 7 fractional digits: keep milliseconds (Date.parse wants at most 3).
  const t = Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(t) ? null : t;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

function fmtTime(text, { ms = false } = {}) {
  const t = parseTime(text);
  if (t === null) return text ? String(text) : "—";
  const d = new Date(t);
  const today = new Date();
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    (ms ? `.${pad(d.getMilliseconds(), 3)}` : "");
  return d.toDateString() === today.toDateString() ? clock : `${day} ${clock}`;
}

function timeEl(text, opts) {
  if (!text) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: String(text), title: String(text) }, fmtTime(text, opts));
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  const hr = Math.floor(m / 60);
  if (hr < 24) return `${hr} h ${m % 60} min`;
  return `${Math.floor(hr / 24)} d ${hr % 24} h`;
}

/** The instance's run time: finished ones end at their last update, running ones at now. */
function instanceDuration(doc) {
  const start = parseTime(doc.createdTime);
  if (start === null) return null;
  const end = TERMINAL.has(doc.runtimeStatus) ? parseTime(doc.lastUpdatedTime) : Date.now();
  return end === null ? null : Math.max(0, end - start);
}

/** Status documents carry whole-second times: say so instead of a false "0 ms". */
function fmtCoarse(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return "< 1 s";
  if (ms < 60000) return `${Math.round(ms / 1000)} s`;
  return fmtDuration(Math.round(ms / 1000) * 1000);
}

/** JSON text inside JSON (history Input fields) decoded for display when it parses. */
function unwrap(value) {
  if (typeof value !== "string") return value;
  const s = value.trim();
  if (!s || !/^[[{"\d\-tfn]/.test(s)) return value;
  try { return JSON.parse(s); } catch { return value; }
}

function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

function jsonBlock(value, label) {
  if (value === null || value === undefined) return h("p", { class: "muted" }, "null");
  return h("pre", { class: "json", tabindex: "0", "aria-label": label }, pretty(value));
}

function preview(value, max = 80) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

function num(n) {
  return typeof n === "number" ? n.toLocaleString() : (n ?? "—");
}

// ---------------------------------------------------------------------------------------------
// the API client

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function masterKey() {
  try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

function setMasterKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lives until reload */ }
}

/** fetch + JSON; non-2xx answers throw ApiError with the body's {"error": ...} message. */
async function api(path, { method = "GET", body, headers = {} } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers }, cache: "no-store" };
  const key = masterKey();
  if (key) init.headers["x-functions-key"] = key;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = body;
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, `cannot reach devhost (${err.message || err})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try { data = JSON.parse(text); } catch { data = text; }
  }
  if (!response.ok) {
    let message = data && typeof data === "object" ? (data.error || data.Message) : data;
    if (!message) message = response.status === 404 ? "not found" : response.statusText || "request failed";
    if (typeof message !== "string") message = JSON.stringify(message);
    throw new ApiError(response.status, message);
  }
  return { status: response.status, headers: response.headers, data };
}

const instanceUrl = (id, tail = "") => `${API}/instances/${encodeURIComponent(id)}${tail}`;
const entityUrl = (name, key) => `${API}/entities/${encodeURIComponent(name)}/${encodeURIComponent(key)}`;

/** Every entity of the hub (paged through `top`/`skip`), for the agent thread list. */
async function allEntities(limit = 5000) {
  const out = [];
  const top = 200;
  for (let skip = 0; skip < limit; skip += top) {
    const { data } = await api(`${API}/entities/?top=${top}&skip=${skip}`);
    const page = Array.isArray(data) ? data : [];
    out.push(...page);
    if (page.length < top) break;
  }
  return out;
}

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

function setQuery(base, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v) q.set(k, v);
  const text = q.toString();
  history.replaceState(null, "", text ? `${base}?${text}` : base);
}

function resolve({ parts, query }) {
  const [section, a, b] = parts;
  if (!section || section === "overview") return { nav: "overview", view: () => overviewView() };
  if (section === "instances") {
    if (a !== undefined) return { nav: "instances", view: () => instanceView(a) };
    return { nav: "instances", view: () => instancesView(query) };
  }
  if (section === "entities") {
    if (a !== undefined && b !== undefined) return { nav: "entities", view: () => entityView(a, b) };
    return { nav: "entities", view: () => entitiesView(query) };
  }
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

let current = null;      // the view on screen: {el, title, refresh}
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

/** A table cell whose content is one block, so narrow-window card rows lay out cleanly. */
function cell(label, props, ...children) {
  return h("td", { "data-label": label, ...props }, h("div", { class: "cell" }, ...children));
}

/** Changes every second while a listed instance runs, so its "so far" duration keeps moving. */
function liveTick(docs) {
  return docs.some((d) => ACTIVE.has(d.runtimeStatus)) ? Math.floor(Date.now() / 1000) : 0;
}

/** A definition list of [term, value, {wide}] rows; wide ones span two grid columns. */
function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value, opts = {}]) =>
    h("div", { class: opts.wide ? "wide" : null }, h("dt", {}, term), h("dd", {}, value))));
}

function section(title, ...children) {
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), ...children);
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
// 2. orchestrations

function instancesView(query) {
  const state = {
    statuses: new Set((query.get("status") || "").split(",").filter((s) => STATUSES.includes(s))),
    prefix: query.get("prefix") || "",
    top: /^\d{1,4}$/.test(query.get("top") || "") && +query.get("top") >= 1 ? String(+query.get("top")) : "25",
    token: null,      // continuation token of the page on screen (null: first page)
    previous: [],     // tokens of the pages before it
    next: null,
  };
  const list = region("div");
  const pageInfo = h("span", { class: "page-info", "aria-live": "polite" });
  const prevBtn = h("button", { type: "button", class: "btn", onclick: () => go(state.previous.pop() ?? null) }, "← Previous");
  const firstBtn = h("button", { type: "button", class: "btn", onclick: () => { state.previous = []; go(null); } }, "First page");
  const nextBtn = h("button", {
    type: "button", class: "btn",
    onclick: () => { state.previous.push(state.token); go(state.next); },
  }, "Next →");

  const prefixInput = h("input", { id: "f-prefix", type: "search", value: state.prefix,
    placeholder: "e.g. order-", autocomplete: "off", spellcheck: "false" });
  const topSelect = h("select", { id: "f-top", onchange: apply },
    [...new Set(["10", "25", "50", "100", state.top])].sort((a, b) => a - b)
      .map((n) => h("option", { value: n, selected: n === state.top }, n)));
  const boxes = STATUSES.map((s) => h("label", { class: `chip st-${s}` },
    h("input", { type: "checkbox", value: s, checked: state.statuses.has(s), onchange: apply }), s));
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => { e.preventDefault(); apply(); } },
    h("fieldset", {}, h("legend", {}, "Status"), h("div", { class: "chips" }, boxes)),
    h("div", { class: "field" }, h("label", { for: "f-prefix" }, "Instance ID prefix"),
      h("div", { class: "row" }, prefixInput, h("button", { type: "submit", class: "btn btn-primary" }, "Apply"),
        h("button", { type: "button", class: "btn", onclick: clear }, "Clear"))),
    h("div", { class: "field shrink" }, h("label", { for: "f-top" }, "Per page"), topSelect));

  function apply() {
    state.statuses = new Set(boxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value));
    state.prefix = prefixInput.value.trim();
    state.top = topSelect.value;
    setQuery("#/instances", { status: [...state.statuses].join(","), prefix: state.prefix,
      top: state.top === "25" ? "" : state.top });
    state.previous = [];
    go(null);
  }

  function clear() {
    for (const l of boxes) l.querySelector("input").checked = false;
    prefixInput.value = "";
    apply();
  }

  function go(token) {
    state.token = token;
    list.reset();
    refreshView();
  }

  async function refresh() {
    const q = new URLSearchParams({ top: state.top, showInput: "false" });
    if (state.statuses.size) q.set("runtimeStatus", [...state.statuses].join(","));
    if (state.prefix) q.set("instanceIdPrefix", state.prefix);
    const headers = state.token ? { "x-ms-continuation-token": state.token } : {};
    const { data, headers: answer } = await api(`${API}/instances/?${q}`, { headers });
    const docs = Array.isArray(data) ? data : [];
    state.next = answer.get("x-ms-continuation-token");
    const page = state.previous.length + 1;
    pageInfo.textContent = docs.length
      ? `Page ${page} · ${docs.length} instance${docs.length === 1 ? "" : "s"}` : `Page ${page}`;
    prevBtn.disabled = state.previous.length === 0;
    firstBtn.disabled = state.previous.length === 0;
    nextBtn.disabled = !state.next;
    const filtered = state.statuses.size || state.prefix;
    list.show({ docs, tick: liveTick(docs) }, () => docs.length ? instancesTable(docs)
      : empty(filtered ? "No orchestrations match these filters." : "No orchestrations yet."));
  }

  const el = h("div", { class: "view" }, heading("Orchestrations"), form, list.el,
    h("nav", { class: "pager", "aria-label": "Pages" }, firstBtn, prevBtn, pageInfo, nextBtn));
  return { el, title: "Orchestrations", refresh };
}

// ---------------------------------------------------------------------------------------------
// 3. instance detail

const EVENT_KIND = {
  ExecutionStarted: "start", ExecutionCompleted: "done", ExecutionFailed: "fail",
  ExecutionTerminated: "fail", TaskScheduled: "sched", TaskCompleted: "ok", TaskFailed: "fail",
  SubOrchestrationInstanceCreated: "sched", SubOrchestrationInstanceCompleted: "ok",
  SubOrchestrationInstanceFailed: "fail", TimerCreated: "timer", TimerFired: "timer",
  EventSent: "event", EventRaised: "event", ContinueAsNew: "start", GenericEvent: "other",
  ExecutionSuspended: "pause", ExecutionResumed: "start",
};
const DETAIL_FIELDS = ["Input", "Result", "Reason", "Details", "Data"];
const HIDDEN_FIELDS = new Set(["EventType", "Timestamp", "FunctionName", "ScheduledTime",
  "Correlation", "ScheduledStartTime", "ParentInstance", ...DETAIL_FIELDS]);

function eventName(ev) {
  return ev.FunctionName || ev.Name || "";
}

function historyTable(events, doc) {
  const start = parseTime(events.find((e) => e.EventType === "ExecutionStarted")?.Timestamp) ?? parseTime(doc.createdTime);
  const ends = events.map((e) => parseTime(e.Timestamp)).filter((t) => t !== null);
  const end = Math.max(...ends, ACTIVE.has(doc.runtimeStatus) ? Date.now() : 0);
  const span = Math.max(1, end - (start ?? end));
  const rows = events.map((ev, i) => {
    const at = parseTime(ev.Timestamp);
    const scheduled = parseTime(ev.ScheduledTime);
    const duration = scheduled !== null && at !== null ? at - scheduled : null;
    const failedEnd = ev.EventType === "ExecutionCompleted" && ev.OrchestrationStatus && ev.OrchestrationStatus !== "Completed";
    const kind = failedEnd ? "fail" : EVENT_KIND[ev.EventType] || "other";
    const extras = Object.entries(ev).filter(([k, v]) => !HIDDEN_FIELDS.has(k) && v !== null && v !== undefined);
    const details = DETAIL_FIELDS.filter((k) => ev[k] !== null && ev[k] !== undefined && ev[k] !== "")
      .map((k) => {
        const value = unwrap(ev[k]);
        const open = k === "Reason" || (failedEnd && k === "Result");
        return h("details", { "data-k": `${i}-${k}`, open, class: `d-${k}` },
          h("summary", {}, h("span", { class: "d-key" }, k), " ", h("span", { class: "d-preview" }, preview(value, 60))),
          h("pre", { class: "json" }, pretty(value)));
      });
    let bar = null;
    if (start !== null && at !== null) {
      const from = scheduled ?? at;
      const left = Math.min(100, Math.max(0, ((from - start) / span) * 100));
      const width = Math.max(0.8, Math.min(100 - left, (((at - from) || 0) / span) * 100));
      bar = h("div", { class: "track", "aria-hidden": "true" }, h("span", { class: `bar k-${kind}` }));
      bar.firstChild.style.left = `${left}%`;
      bar.firstChild.style.width = `${width}%`;
    }
    return h("tr", { class: `ev k-${kind}` },
      cell("Time", {}, timeEl(ev.Timestamp, { ms: true }),
        start !== null && at !== null ? h("span", { class: "offset" }, `+${fmtDuration(at - start)}`) : null),
      cell("Event", {}, h("span", { class: `ev-type k-${kind}` }, ev.EventType)),
      cell("Function", {}, eventName(ev) ? h("span", { class: "mono" }, eventName(ev)) : h("span", { class: "muted" }, "—")),
      cell("Duration", { class: "num" }, duration !== null ? fmtDuration(duration) : h("span", { class: "muted" }, "—"), bar),
      cell("Details", { class: "ev-details" },
        extras.map(([k, v]) => h("div", { class: "extra" }, h("span", { class: "d-key" }, k), " ",
          /Time|FireAt/.test(k) ? timeEl(v, { ms: true }) : h("span", { class: "mono" }, preview(v, 120)))),
        details));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "grid responsive timeline" },
    h("caption", { class: "sr-only" }, "History events, oldest first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Event"),
      h("th", { scope: "col" }, "Function"), h("th", { scope: "col", class: "num" }, "Duration"),
      h("th", { scope: "col" }, "Details"))),
    h("tbody", {}, rows)));
}

function instanceView(id) {
  const summary = region("div");
  const data = region("div", { class: "data-grid" });
  const historyRegion = region("div");
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

  async function refreshData() {
    doc = await load();
    if (!doc) {
      summary.show("missing", () => h("p", { class: "empty" },
        "No orchestration instance with this id (it may have been purged). ", link("#/instances", "Back to orchestrations")));
      data.show(null, () => []);
      historyRegion.show(null, () => []);
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
    summary.show({ name, instanceId, runtimeStatus, createdTime, lastUpdatedTime, shownDuration }, () =>
      facts([
        ["Status", badge(doc.runtimeStatus)],
        ["Name", h("span", { class: "mono" }, doc.name)],
        ["Created", timeEl(doc.createdTime)],
        ["Last updated", timeEl(doc.lastUpdatedTime)],
        ["Duration", shownDuration],
      ]));
    data.show({ i: doc.input, o: doc.output, c: doc.customStatus }, () => [
      h("section", { class: "panel", "aria-label": "Input" }, h("h2", {}, "Input"), jsonBlock(unwrap(doc.input), "Input")),
      h("section", { class: "panel", "aria-label": "Output" }, h("h2", {}, "Output"),
        doc.runtimeStatus === "Failed" ? h("pre", { class: "json err" }, pretty(doc.output)) : jsonBlock(doc.output, "Output")),
      h("section", { class: "panel", "aria-label": "Custom status" }, h("h2", {}, "Custom status"), jsonBlock(doc.customStatus, "Custom status")),
    ]);
    historyRegion.show(events, () =>
      events.length ? historyTable(events, doc) : empty("No history yet."));
    enableActions(doc.runtimeStatus);
  }

  async function refresh() {
    await refreshData();
  }

  const el = h("div", { class: "view" },
    h("p", { class: "crumbs" }, link("#/instances", "Orchestrations"), " › ", h("span", { class: "mono" }, id)),
    heading("Orchestration ", h("span", { class: "mono" }, id)),
    summary.el,
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
      result),
    section("History", historyRegion.el));
  const view = { el, title: `Orchestration ${id}`, refresh };
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
// 5. agents

function agentName(entityName, state) {
  return (state && state.agent) || entityName.slice(AGENT_PREFIX.length);
}

function agentsView() {
  const list = region("div");
  async function refresh() {
    const threads = (await allEntities()).filter((e) => String(e.entityId?.name || "").startsWith(AGENT_PREFIX));
    const rows = threads.map((e) => {
      const { name, key } = e.entityId;
      const s = e.state && typeof e.state === "object" ? e.state : {};
      const messages = Array.isArray(s.messages) ? s.messages : [];
      const last = messages[messages.length - 1];
      return { name, key, agent: agentName(name, s), count: messages.length,
        tokens: s.totals ? s.totals.total_tokens : null, updated: s.updatedAt || e.lastOperationTime,
        last: last ? `${last.role === "user" ? "User" : "Agent"}: ${preview(last.content, 70)}` : "" };
    }).sort((a, b) => (parseTime(b.updated) ?? 0) - (parseTime(a.updated) ?? 0));
    list.show(rows, () => rows.length ? h("div", { class: "table-wrap" }, h("table", { class: "grid responsive" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Agent"), h("th", { scope: "col" }, "Thread ID"),
        h("th", { scope: "col", class: "num" }, "Messages"), h("th", { scope: "col", class: "num" }, "Tokens"),
        h("th", { scope: "col" }, "Updated"), h("th", { scope: "col" }, "Last message"))),
      h("tbody", {}, rows.map((r) => {
        const target = route("agents", r.name, r.key);
        return h("tr", { class: "clickable", onclick: (e) => { if (!e.target.closest("a")) location.hash = target; } },
          cell("Agent", {}, h("strong", {}, r.agent)),
          cell("Thread ID", {}, h("a", { href: target, class: "mono break" }, `@${r.name}@${r.key}`)),
          cell("Messages", { class: "num" }, num(r.count)),
          cell("Tokens", { class: "num" }, num(r.tokens)),
          cell("Updated", {}, timeEl(r.updated)),
          cell("Last message", { class: "muted last-msg" }, r.last));
      }))))
      : empty(`No agent threads yet. Threads are entities named ${AGENT_PREFIX}<agent>; they appear after an agent's first run.`));
  }
  const el = h("div", { class: "view" }, heading("Agents"),
    h("p", { class: "lede" }, "Conversation threads of the durable agents: one entity per thread."), list.el);
  return { el, title: "Agents", refresh };
}

function usageText(usage) {
  if (!usage || typeof usage !== "object") return null;
  const parts = [];
  if (usage.total_tokens !== undefined) parts.push(`${num(usage.total_tokens)} tokens`);
  if (usage.prompt_tokens !== undefined || usage.completion_tokens !== undefined) {
    parts.push(`(${num(usage.prompt_tokens ?? 0)} in / ${num(usage.completion_tokens ?? 0)} out)`);
  }
  return parts.join(" ");
}

function durationText(d) {
  if (typeof d === "number") return fmtDuration(d);
  if (!d || typeof d !== "object") return null;
  return Object.entries(d).filter(([, v]) => typeof v === "number")
    .map(([k, v]) => `${k} ${fmtDuration(v)}`).join(" · ");
}

function bubble(message, agent, i) {
  const user = message.role === "user";
  const meta = [];
  if (!user) {
    if (message.model) meta.push(h("span", { class: "chip-meta", title: "Model" }, message.model));
    const usage = usageText(message.usage);
    if (usage) meta.push(h("span", { class: "chip-meta", title: "Token usage" }, usage));
    const dur = durationText(message.durationMs);
    if (dur) meta.push(h("span", { class: "chip-meta", title: "Durations" }, dur));
  }
  const who = user ? "User" : message.role === "assistant" ? agent : message.role || "message";
  return h("li", { class: `msg ${user ? "from-user" : "from-agent"}`, "data-k": i },
    h("div", { class: "msg-head" }, h("span", { class: "who" }, who), " ", timeEl(message.createdAt)),
    h("div", { class: "msg-body" }, String(message.content ?? "")),
    meta.length ? h("div", { class: "msg-meta" }, meta) : null);
}

function threadView(name, key) {
  const head = region("div");
  const chat = region("div");
  async function refresh() {
    let state = null;
    try {
      state = (await api(entityUrl(name, key))).data;
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    if (!state || typeof state !== "object") {
      head.show("missing", () => empty("This thread does not exist (or was deleted)."));
      chat.show(null, () => []);
      return;
    }
    const agent = agentName(name, state);
    const messages = Array.isArray(state.messages) ? state.messages : [];
    const totals = state.totals || {};
    head.show({ ...state, messages: messages.length }, () => facts([
      ["Agent", h("strong", {}, agent)],
      ["Thread ID", h("span", { class: "mono break" }, state.threadId || `@${name}@${key}`), { wide: true }],
      ["Messages", num(messages.length)],
      // Long threads move their oldest messages to archive pages; the app's thread API reads
      // them back. Say so instead of pretending the transcript below is everything.
      ...(state.archive && state.archive.messages
        ? [["Archived", `${num(state.archive.messages)} older messages not shown`]] : []),
      ["Turns", num(totals.turns)],
      ["Tokens", `${num(totals.total_tokens)} (${num(totals.prompt_tokens)} in / ${num(totals.completion_tokens)} out)`],
      ["Created", timeEl(state.createdAt)],
      ["Updated", timeEl(state.updatedAt)],
    ]));
    chat.show(messages, () => messages.length
      ? h("ol", { class: "chat", "aria-label": "Transcript" }, messages.map((m, i) => bubble(m, agent, i)))
      : empty("No messages yet."));
  }
  const el = h("div", { class: "view" },
    h("p", { class: "crumbs" }, link("#/agents", "Agents"), " › ", h("span", { class: "mono" }, `@${name}@${key}`)),
    heading("Thread ", h("span", { class: "mono" }, key)),
    head.el,
    h("p", {}, link(route("entities", name, key), "Raw entity state →")),
    section("Transcript", chat.el));
  return { el, title: `Thread ${key}`, refresh };
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

window.addEventListener("hashchange", () => render());
setInterval(() => {
  if (!paused && !document.hidden) refreshView();
}, REFRESH_MS);
updateToggle();
loadHub();
render();
