// Shared pieces of the devhost dashboard: DOM helpers (text only, never innerHTML), formatting,
// the API client and small building blocks used by every view.

export const API = "/runtime/webhooks/durabletask";
export const DASH = "/_devhost/api";  // the dashboard's read endpoints (devhost/dashboard_api.py)
export const STATUSES = ["Running", "Pending", "Suspended", "ContinuedAsNew", "Completed", "Failed", "Terminated"];
export const TERMINAL = new Set(["Completed", "Failed", "Terminated"]);
export const ACTIVE = new Set(["Running", "Pending", "Suspended", "ContinuedAsNew"]);
export const AGENT_PREFIX = "dafx-";
export const KEY_STORAGE = "devhost.masterKey";
export const PAUSE_STORAGE = "devhost.refreshPaused";

// ---------------------------------------------------------------------------------------------
// DOM helpers

/** Element from a tag, attributes/handlers and children (strings become text nodes). */
export function h(tag, props, ...children) {
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

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace a container's children, keeping <details data-k> open and the focused control. */
export function swap(container, ...children) {
  const open = new Set([...container.querySelectorAll("details[data-k][open]")].map((d) => d.dataset.k));
  container.replaceChildren();
  append(container, children);
  for (const d of container.querySelectorAll("details[data-k]")) {
    if (open.has(d.dataset.k)) d.open = true;
  }
}

/** A region re-rendered only when its data changed (no flicker, state kept between polls). */
export function region(tag = "div", props = {}) {
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

export function link(route, ...children) {
  return h("a", { href: route }, ...children);
}

export function route(...parts) {
  return "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

export function badge(status) {
  const known = STATUSES.includes(status) ? status : "Unknown";
  return h("span", { class: `badge st-${known}` }, status || "Unknown");
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

export function heading(text, ...extra) {
  return h("h1", { tabindex: "-1" }, text, ...extra);
}

// ---------------------------------------------------------------------------------------------
// formatting

export function parseTime(text) {
  if (!text) return null;
  // .NET-style 7 fractional digits: keep milliseconds (Date.parse wants at most 3).
  const t = Date.parse(String(text).replace(/(\.\d{3})\d+/, "$1"));
  return Number.isNaN(t) ? null : t;
}

export const pad = (n, w = 2) => String(n).padStart(w, "0");

export function fmtTime(text, { ms = false } = {}) {
  const t = parseTime(text);
  if (t === null) return text ? String(text) : "—";
  const d = new Date(t);
  const today = new Date();
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const clock = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    (ms ? `.${pad(d.getMilliseconds(), 3)}` : "");
  return d.toDateString() === today.toDateString() ? clock : `${day} ${clock}`;
}

export function timeEl(text, opts) {
  if (!text) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: String(text), title: String(text) }, fmtTime(text, opts));
}

export function fmtDuration(ms) {
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
export function instanceDuration(doc) {
  const start = parseTime(doc.createdTime);
  if (start === null) return null;
  const end = TERMINAL.has(doc.runtimeStatus) ? parseTime(doc.lastUpdatedTime) : Date.now();
  return end === null ? null : Math.max(0, end - start);
}

/** Status documents carry whole-second times: say so instead of a false "0 ms". */
export function fmtCoarse(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return "< 1 s";
  if (ms < 60000) return `${Math.round(ms / 1000)} s`;
  return fmtDuration(Math.round(ms / 1000) * 1000);
}

/** JSON text inside JSON (history Input fields) decoded for display when it parses. */
export function unwrap(value) {
  if (typeof value !== "string") return value;
  const s = value.trim();
  if (!s || !/^[[{"\d\-tfn]/.test(s)) return value;
  try { return JSON.parse(s); } catch { return value; }
}

export function pretty(value) {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

export function jsonBlock(value, label) {
  if (value === null || value === undefined) return h("p", { class: "muted" }, "null");
  return h("pre", { class: "json", tabindex: "0", "aria-label": label }, pretty(value));
}

export function preview(value, max = 80) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > max ? text.slice(0, max - 1) + "…" : text;
}

export function num(n) {
  return typeof n === "number" ? n.toLocaleString() : (n ?? "—");
}

// ---------------------------------------------------------------------------------------------
// the API client

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function masterKey() {
  try { return sessionStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

export function setMasterKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lives until reload */ }
}

/** fetch + JSON; non-2xx answers throw ApiError with the body's {"error": ...} message. */
export async function api(path, { method = "GET", body, headers = {} } = {}) {
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
    if (message && typeof message === "object" && message.message) message = message.message;
    if (!message) message = response.status === 404 ? "not found" : response.statusText || "request failed";
    if (typeof message !== "string") message = JSON.stringify(message);
    throw new ApiError(response.status, message);
  }
  return { status: response.status, headers: response.headers, data };
}

export const instanceUrl = (id, tail = "") => `${API}/instances/${encodeURIComponent(id)}${tail}`;
export const entityUrl = (name, key) => `${API}/entities/${encodeURIComponent(name)}/${encodeURIComponent(key)}`;

/** Every entity of the hub (paged through `top`/`skip`), for the agent thread list. */
export async function allEntities(limit = 5000) {
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


/** A table cell whose content is one block, so narrow-window card rows lay out cleanly. */
export function cell(label, props, ...children) {
  return h("td", { "data-label": label, ...props }, h("div", { class: "cell" }, ...children));
}

/** Changes every second while a listed instance runs, so its "so far" duration keeps moving. */
export function liveTick(docs) {
  return docs.some((d) => ACTIVE.has(d.runtimeStatus)) ? Math.floor(Date.now() / 1000) : 0;
}

/** A definition list of [term, value, {wide}] rows; wide ones span two grid columns. */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([term, value, opts = {}]) =>
    h("div", { class: opts.wide ? "wide" : null }, h("dt", {}, term), h("dd", {}, value))));
}

export function section(title, ...children) {
  return h("section", { class: "panel", "aria-label": title }, h("h2", {}, title), ...children);
}

/** Hooks the shell fills in for modules that need them (refresh the view on screen). */
export const live = { refresh: () => {} };
