// An instance's Timeline (a Gantt on a shared time axis, from /_devhost/api/instances/{id}/timeline)
// and its History (the management API's events, entity calls rendered as calls, raw one click away).

import {
  ACTIVE, h, route, link, empty, cell, parseTime, timeEl, fmtDuration, unwrap, pretty, preview, num,
} from "./lib.js";

const KIND_LABEL = {
  activity: "activity", http: "HTTP call", suborchestration: "sub-orchestration", timer: "durable timer",
  retry: "retry delay", entity: "entity operation", signal: "entity signal", event: "external event",
};

/** The short line under a row's name: what a person looks for first. */
function detailText(row) {
  if (row.status === "failed") return `failed: ${preview(row.error, 100)}`;
  const out = row.output;
  if (row.kind === "activity" && out && typeof out === "object" && !Array.isArray(out)) {
    const parts = [];
    if (out.model) parts.push(out.model);
    const tokens = out.usage && out.usage.total_tokens;
    if (tokens !== undefined) parts.push(`${num(tokens)} tokens`);
    const calls = Array.isArray(out.tool_calls) ? out.tool_calls : [];
    if (calls.length) parts.push(`asks for ${calls.map((c) => c.name).join(", ")}`);
    else if (typeof out.reply === "string") parts.push(`“${preview(out.reply, 60)}”`);
    if (out.ok === false && out.error) parts.push(`error: ${preview(out.error.message || out.error, 80)}`);
    if (parts.length) return parts.join(" · ");
  }
  if (row.kind === "timer") {
    return row.status === "waiting" ? `until ${new Date(parseTime(row.fireAt)).toLocaleTimeString()}`
      : row.status === "cancelled" ? "cancelled (never fired)" : "fired";
  }
  if (row.kind === "retry") return "back-off before the next attempt";
  if (row.kind === "signal") return `signal${row.input !== null && row.input !== undefined ? ` · input ${preview(row.input, 60)}` : ""}`;
  if (row.kind === "event") {
    if (row.status === "waiting") return `waiting${row.waitingFor ? ` for approval of ${row.waitingFor}` : ""}`;
    const by = row.raisedBy ? `raised by ${row.raisedBy}` : "received";
    return `${by}${row.output !== null && row.output !== undefined ? ` · ${preview(row.output, 60)}` : ""}`;
  }
  if (row.status === "running") return "running…";
  if (row.status === "abandoned") return "never completed";
  if (out === null || out === undefined) return row.status;
  return `→ ${preview(out, 80)}`;
}

function rowName(row) {
  if (row.kind === "entity" || row.kind === "signal") {
    return [h("span", { class: "mono" }, row.operation ?? "?"), " ", h("span", { class: "muted mono" }, row.entity.id)];
  }
  return h("span", { class: "mono" }, row.name || KIND_LABEL[row.kind] || row.kind);
}

function payload(title, value, tone) {
  if (value === null || value === undefined) return null;
  return h("div", { class: "tl-payload" }, h("h4", {}, title),
    h("pre", { class: `json${tone ? " " + tone : ""}`, tabindex: "0" }, pretty(unwrap(value))));
}

function rowDetails(row) {
  const started = row.start !== null ? new Date(row.start).toISOString() : null;
  const ended = row.end !== null && row.end !== undefined ? new Date(row.end).toISOString() : null;
  return h("div", { class: "tl-detail" },
    h("p", { class: "tl-facts" },
      h("span", { class: "tag" }, KIND_LABEL[row.kind] || row.kind), " ",
      row.attempt > 1 ? h("span", { class: "tag" }, `attempt ${row.attempt}`) : null, " ",
      started ? ["from ", timeEl(started, { ms: true })] : null,
      ended ? [" to ", timeEl(ended, { ms: true }), ` (${fmtDuration(row.end - row.start)})`] : null,
      row.raisedBy ? ` · raised by ${row.raisedBy}` : null),
    row.kind === "suborchestration" && row.instanceId
      ? h("p", {}, link(route("instances", row.instanceId), `Open sub-orchestration ${row.instanceId} →`)) : null,
    row.kind === "entity" || row.kind === "signal"
      ? h("p", {}, "Entity ", link(route("entities", row.entity.name, row.entity.key), row.entity.id),
        row.requestId ? h("span", { class: "muted" }, ` · request ${row.requestId}`) : null) : null,
    payload(row.kind === "entity" || row.kind === "signal" ? "Request" : "Input", row.input),
    row.status === "failed" ? payload("Error", row.error, "err") : payload(row.kind === "entity" ? "Result" : "Output", row.output),
    row.details ? payload("Details", row.details, "err") : null);
}

/** The Gantt. `tl` is the timeline document; bars are <summary>s so a click opens the payloads. */
export function timelineChart(tl) {
  const start = tl.start;
  const span = Math.max(1, tl.end - start);
  const pos = (t) => Math.min(100, Math.max(0, ((t - start) / span) * 100));
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    h("span", { class: "tl-tick", style: `left:${f * 100}%` }, `+${fmtDuration(f * span)}`));
  const episodes = h("div", { class: "tl-track", "aria-hidden": "true" },
    tl.episodes.map((t) => h("span", { class: "tl-episode", style: `left:${pos(t)}%` })));
  const rows = tl.rows.map((row) => {
    const from = row.start ?? start;
    const to = row.end ?? tl.end;
    const left = pos(from);
    const width = Math.max(0.6, Math.min(100 - left, pos(to) - left));
    const duration = row.end !== null && row.end !== undefined ? fmtDuration(row.end - from) : "so far";
    const bar = h("span", {
      class: `tl-bar k-${row.kind} s-${row.status}`, style: `left:${left}%;width:${width}%`,
      title: `${row.name}: ${row.status}, ${duration}`,
    });
    const label = h("div", { class: "tl-label" },
      h("div", { class: "tl-name" }, rowName(row),
        row.attempt > 1 ? h("span", { class: "tag attempt" }, `attempt ${row.attempt}`) : null,
        row.kind === "suborchestration" && row.instanceId
          ? h("a", { href: route("instances", row.instanceId), class: "tl-open", onclick: (e) => e.stopPropagation() },
            "open ↗") : null),
      h("div", { class: `tl-sub${row.status === "failed" ? " err" : ""}` }, detailText(row)));
    return h("li", { class: `tl-row k-${row.kind} s-${row.status}`, "data-kind": row.kind, "data-status": row.status },
      h("details", { "data-k": `tl-${row.seq}` },
        h("summary", { "aria-label": `${row.name} (${KIND_LABEL[row.kind] || row.kind}, ${row.status}, ${duration})` },
          label, h("div", { class: "tl-track" }, bar), h("span", { class: "tl-dur num" }, duration)),
        rowDetails(row)));
  });
  const lifecycle = tl.lifecycle.map((m) => h("li", { class: `tl-mark m-${m.kind.replace(/\s/g, "-")}` },
    h("strong", {}, m.kind), " ", timeEl(new Date(m.at).toISOString(), { ms: true }),
    m.text ? [" · ", typeof m.text === "string" ? m.text : JSON.stringify(m.text)] : null));
  return h("div", { class: "tl" },
    h("div", { class: "tl-head", "aria-hidden": "true" },
      h("div", { class: "tl-label" }, `${num(tl.rows.length)} steps · ${num(tl.episodes.length)} episodes`),
      h("div", { class: "tl-track tl-axis" }, ticks), h("span", { class: "tl-dur" }, fmtDuration(span))),
    h("div", { class: "tl-episodes" },
      h("div", { class: "tl-label" }, h("span", { class: "muted" }, "orchestrator episodes")), episodes,
      h("span", { class: "tl-dur" })),
    tl.rows.length ? h("ol", { class: "tl-rows", "aria-label": "Timeline" }, rows)
      : empty("Nothing scheduled yet."),
    lifecycle.length ? h("ul", { class: "tl-marks", "aria-label": "Lifecycle" }, lifecycle) : null);
}

// ---------------------------------------------------------------------------------------------
// History: the raw events, entity calls rendered as calls

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

/** Entity requests (EventSent to @name@key) by request id, so their answers can be named. */
function entityRequests(events) {
  const byId = new Map();
  for (const ev of events) {
    if (ev.EventType !== "EventSent" || !String(ev.InstanceId || "").startsWith("@")) continue;
    const request = unwrap(ev.Input);
    if (request && typeof request === "object" && request.id) byId.set(request.id, { ev, request });
  }
  return byId;
}

function detailsBlock(key, title, value, open = false) {
  return h("details", { "data-k": key, open, class: `d-${title}` },
    h("summary", {}, h("span", { class: "d-key" }, title), " ", h("span", { class: "d-preview" }, preview(value, 60))),
    h("pre", { class: "json" }, pretty(value)));
}

/** What an entity event means, or null for any other event. */
function entityMeaning(ev, requests) {
  if (ev.EventType === "EventSent" && String(ev.InstanceId || "").startsWith("@")) {
    const request = unwrap(ev.Input);
    if (!request || typeof request !== "object") return null;
    return { label: request.signal ? "Entity signal" : "Entity call", op: request.op, entity: ev.InstanceId,
      value: ["Input", unwrap(request.input)], kind: "sched" };
  }
  if (ev.EventType === "EventRaised" && requests.has(ev.Name)) {
    const { request, ev: sent } = requests.get(ev.Name);
    const body = unwrap(ev.Input) || {};
    const failed = Boolean(body.exceptionType);
    return { label: failed ? "Entity call failed" : "Entity result", op: request.op, entity: sent.InstanceId,
      value: [failed ? "Error" : "Result", unwrap(body.result)], kind: failed ? "fail" : "ok" };
  }
  return null;
}

function entityLink(scheduler) {
  const m = /^@([^@]*)@(.*)$/.exec(scheduler);
  return m ? link(route("entities", m[1], m[2]), scheduler) : scheduler;
}

export function historyTable(events, doc) {
  const requests = entityRequests(events);
  const start = parseTime(events.find((e) => e.EventType === "ExecutionStarted")?.Timestamp) ?? parseTime(doc.createdTime);
  const ends = events.map((e) => parseTime(e.Timestamp)).filter((t) => t !== null);
  const end = Math.max(...ends, ACTIVE.has(doc.runtimeStatus) ? Date.now() : 0);
  const span = Math.max(1, end - (start ?? end));
  const rows = events.map((ev, i) => {
    const at = parseTime(ev.Timestamp);
    const scheduled = parseTime(ev.ScheduledTime);
    const duration = scheduled !== null && at !== null ? at - scheduled : null;
    const failedEnd = ev.EventType === "ExecutionCompleted" && ev.OrchestrationStatus && ev.OrchestrationStatus !== "Completed";
    const meaning = entityMeaning(ev, requests);
    const kind = meaning ? meaning.kind : failedEnd ? "fail" : EVENT_KIND[ev.EventType] || "other";
    let what;
    let details;
    if (meaning) {
      what = [h("span", { class: "mono" }, meaning.op ?? "?"), " on ", h("span", { class: "mono" }, entityLink(meaning.entity))];
      details = [
        h("div", { class: "extra" }, h("span", { class: "d-key" }, meaning.value[0]), " ",
          h("span", { class: "mono" }, preview(meaning.value[1], 120))),
        detailsBlock(`${i}-raw`, "Raw event", ev),
      ];
    } else {
      const name = ev.FunctionName || ev.Name || "";
      what = name ? h("span", { class: "mono" }, name) : h("span", { class: "muted" }, "—");
      const extras = Object.entries(ev).filter(([k, v]) => !HIDDEN_FIELDS.has(k) && v !== null && v !== undefined);
      details = [
        extras.map(([k, v]) => h("div", { class: "extra" }, h("span", { class: "d-key" }, k), " ",
          /Time|FireAt/.test(k) ? timeEl(v, { ms: true }) : h("span", { class: "mono" }, preview(v, 120)))),
        DETAIL_FIELDS.filter((k) => ev[k] !== null && ev[k] !== undefined && ev[k] !== "")
          .map((k) => detailsBlock(`${i}-${k}`, k, unwrap(ev[k]), k === "Reason" || (failedEnd && k === "Result"))),
      ];
    }
    let bar = null;
    if (start !== null && at !== null) {
      const from = scheduled ?? at;
      const left = Math.min(100, Math.max(0, ((from - start) / span) * 100));
      const width = Math.max(0.8, Math.min(100 - left, (((at - from) || 0) / span) * 100));
      bar = h("div", { class: "track", "aria-hidden": "true" },
        h("span", { class: `bar k-${kind}`, style: `left:${left}%;width:${width}%` }));
    }
    return h("tr", { class: `ev k-${kind}` },
      cell("Time", {}, timeEl(ev.Timestamp, { ms: true }),
        start !== null && at !== null ? h("span", { class: "offset" }, `+${fmtDuration(at - start)}`) : null),
      cell("Event", {}, h("span", { class: `ev-type k-${kind}` }, meaning ? meaning.label : ev.EventType),
        meaning ? h("span", { class: "muted raw-type" }, ` ${ev.EventType}`) : null),
      cell("Function", {}, what),
      cell("Duration", { class: "num" }, duration !== null ? fmtDuration(duration) : h("span", { class: "muted" }, "—"), bar),
      cell("Details", { class: "ev-details" }, details));
  });
  return h("div", { class: "table-wrap" }, h("table", { class: "grid responsive timeline" },
    h("caption", { class: "sr-only" }, "History events, oldest first"),
    h("thead", {}, h("tr", {},
      h("th", { scope: "col" }, "Time"), h("th", { scope: "col" }, "Event"),
      h("th", { scope: "col" }, "Function"), h("th", { scope: "col", class: "num" }, "Duration"),
      h("th", { scope: "col" }, "Details"))),
    h("tbody", {}, rows)));
}
