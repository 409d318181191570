// Agents: each thread (entity dafx-<agent>) as a conversation, with per-reply tokens, model and
// durations, tool calls and their results inline, structured outputs, links to every turn's
// timeline, and the turns still running with their pending approvals (Approve / Deny call the
// app's approval API: POST /api/agents/{name}/threads/{thread_id}/turns/{turn_id}/approvals/{call_id}).

import {
  API, AGENT_PREFIX, h, region, link, route, empty, heading, parseTime, timeEl, fmtDuration, preview, pretty,
  unwrap, num, api, entityUrl, allEntities, cell, facts, section, badge, live,
} from "./lib.js";

export const TURN_ORCHESTRATOR = "agent_turn";
const TURN_PREFIX = "turn-";  // turn instance ids: turn-<thread_key>-<turn_id> (api.run.turn_instance_id)

const turnInstance = (key, turnId) => `${TURN_PREFIX}${key}-${turnId}`;

/** Where a turn orchestration's thread lives, from its input ({agent, thread_key, thread_id}). */
export function threadOfTurn(input) {
  if (!input || typeof input !== "object" || !input.agent || !input.thread_key) return null;
  return { entity: `${AGENT_PREFIX}${String(input.agent).toLowerCase()}`, key: input.thread_key,
    threadId: input.thread_id || `@${AGENT_PREFIX}${String(input.agent).toLowerCase()}@${input.thread_key}` };
}

function agentName(entityName, state) {
  return (state && state.agent) || entityName.slice(AGENT_PREFIX.length);
}

export function agentsView() {
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
  return { el, title: "Agents", refresh,
    wants: (changes) => changes.entities.some((id) => id.startsWith(`@${AGENT_PREFIX}`)) };
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

/** Tool calls of a message in either spelling: [{id, name, arguments}] (arguments: JSON text). */
function toolCallsOf(message) {
  const calls = message.toolCalls || message.tool_calls;
  if (!Array.isArray(calls)) return [];
  return calls.map((c) => ({ id: c.id, name: c.name || c.function?.name,
    arguments: c.arguments ?? c.function?.arguments, result: c.result, error: c.error, status: c.status }));
}

function toolCallBlock(call, results) {
  const result = call.result !== undefined ? call.result : results.get(call.id);
  const args = unwrap(call.arguments);
  return h("li", { class: "tool-call" },
    h("div", { class: "tool-head" }, h("span", { class: "tag" }, "tool"), " ",
      h("strong", { class: "mono" }, call.name || "?"),
      h("code", { class: "tool-args" }, preview(args, 120)),
      call.status ? h("span", { class: "muted" }, ` · ${call.status}`) : null),
    result !== undefined
      ? h("details", { "data-k": `tool-${call.id}`, class: "tool-result" },
        h("summary", {}, h("span", { class: "d-key" }, call.error ? "Error" : "Result"), " ",
          h("span", { class: "d-preview" }, preview(unwrap(result), 100))),
        h("pre", { class: "json" }, pretty(unwrap(result))))
      : call.error ? h("p", { class: "err" }, String(call.error)) : null);
}

function bubble(message, agent, i, key, results) {
  const user = message.role === "user";
  const meta = [];
  if (!user) {
    if (message.model) meta.push(h("span", { class: "chip-meta", title: "Model" }, message.model));
    const usage = usageText(message.usage);
    if (usage) meta.push(h("span", { class: "chip-meta", title: "Token usage" }, usage));
    const dur = durationText(message.durationMs);
    if (dur) meta.push(h("span", { class: "chip-meta", title: "Durations" }, dur));
  }
  if (message.turnId && !user) {
    meta.push(link(route("instances", turnInstance(key, message.turnId)), "Turn timeline →"));
  }
  const calls = toolCallsOf(message);
  const output = message.output !== undefined ? message.output : message.structured;
  const who = user ? "User" : message.role === "assistant" ? agent : message.role || "message";
  return h("li", { class: `msg ${user ? "from-user" : "from-agent"}`, "data-k": i },
    h("div", { class: "msg-head" }, h("span", { class: "who" }, who), " ", timeEl(message.createdAt)),
    calls.length ? h("ul", { class: "tool-calls", "aria-label": "Tool calls" }, calls.map((c) => toolCallBlock(c, results))) : null,
    message.content !== undefined && message.content !== null && message.content !== ""
      ? h("div", { class: "msg-body" }, String(message.content)) : null,
    output !== undefined && output !== null
      ? h("div", { class: "structured" }, h("span", { class: "d-key" }, "Structured output"),
        h("pre", { class: "json", "aria-label": "Structured output" }, pretty(unwrap(output)))) : null,
    meta.length ? h("div", { class: "msg-meta" }, meta) : null);
}

/** Turns of this thread still running, with any approvals they wait for. */
function runningTurns(turns, threadId, key, onDecide) {
  if (!turns.length) return empty("No turn is running on this thread.");
  return h("ul", { class: "turns", "aria-label": "Running turns" }, turns.map((doc) => {
    const custom = doc.customStatus && typeof doc.customStatus === "object" ? doc.customStatus : {};
    const pending = Array.isArray(custom.pending) ? custom.pending : [];
    const turnId = doc.instanceId.slice(`${TURN_PREFIX}${key}-`.length);
    return h("li", { class: "turn-card" },
      h("div", { class: "turn-head" }, badge(doc.runtimeStatus), " ",
        link(route("instances", doc.instanceId), h("span", { class: "mono break" }, doc.instanceId)),
        custom.state ? h("span", { class: "tag" }, String(custom.state).replace(/_/g, " ")) : null),
      pending.length ? h("ul", { class: "approvals", "aria-label": "Pending approvals" }, pending.map((item) => {
        const reason = h("input", { type: "text", class: "approval-reason", placeholder: "reason (optional)",
          "aria-label": `Reason for ${item.tool}` });
        const status = h("span", { class: "approval-result", role: "status" });
        const decide = (approved) => onDecide(item, approved, reason.value.trim(), status, { threadId, turnId, doc });
        return h("li", { class: "approval" },
          h("div", {}, h("span", { class: "tag warn" }, "approval needed"), " ",
            h("strong", { class: "mono" }, item.tool || "?"), " ",
            h("code", { class: "tool-args" }, preview(unwrap(item.arguments), 160))),
          h("div", { class: "row" }, reason,
            h("button", { type: "button", class: "btn btn-primary", onclick: () => decide(true) }, "Approve"),
            h("button", { type: "button", class: "btn btn-danger", onclick: () => decide(false) }, "Deny"),
            status));
      })) : null);
  }));
}

/** The approval URL of a pending call: its approve_url's path (same origin), else the contract's. */
function approvalPath(item, agent, ctx) {
  if (item.approve_url) {
    const url = new URL(item.approve_url, location.href);
    return url.pathname + url.search;
  }
  return `/api/agents/${encodeURIComponent(agent)}/threads/${encodeURIComponent(ctx.threadId)}` +
    `/turns/${encodeURIComponent(ctx.turnId)}/approvals/${encodeURIComponent(item.id)}`;
}

export function threadView(name, key) {
  const head = region("div");
  const turnsRegion = region("div");
  const chat = region("div");
  let agent = name.slice(AGENT_PREFIX.length);

  async function decide(item, approved, reason, status, ctx) {
    status.textContent = "sending…";
    try {
      const answer = await api(approvalPath(item, agent, ctx), { method: "POST",
        body: JSON.stringify({ approved, reason: reason || (approved ? "approved in the dashboard" : "denied in the dashboard"),
          by: "devhost dashboard" }) });
      status.textContent = `${approved ? "Approved" : "Denied"} (HTTP ${answer.status})`;
    } catch (err) {
      status.textContent = `${approved ? "Approve" : "Deny"} failed: ${err.status ? `HTTP ${err.status} — ` : ""}${err.message}`;
      status.classList.add("err");
    }
    live.refresh();
  }

  async function refresh() {
    let state = null;
    const running = api(`${API}/instances/?instanceIdPrefix=${encodeURIComponent(`${TURN_PREFIX}${key}-`)}` +
      "&runtimeStatus=Running,Pending,Suspended&showInput=false");
    try {
      state = (await api(entityUrl(name, key))).data;
    } catch (err) {
      if (err.status !== 404) throw err;
    }
    const turns = (await running).data || [];
    if (!state || typeof state !== "object") {
      head.show("missing", () => empty("This thread does not exist (or was deleted)."));
      chat.show(null, () => []);
      turnsRegion.show(turns.map((t) => [t.instanceId, t.customStatus]), () =>
        runningTurns(turns, `@${name}@${key}`, key, decide));
      return;
    }
    agent = agentName(name, state);
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
    const threadId = state.threadId || `@${name}@${key}`;
    turnsRegion.show(turns.map((t) => [t.instanceId, t.runtimeStatus, t.customStatus]), () =>
      runningTurns(turns, threadId, key, decide));
    // tool results stored as their own messages (role "tool", tool_call_id) are shown under the call
    const results = new Map(messages.filter((m) => m.role === "tool")
      .map((m) => [m.tool_call_id || m.toolCallId, m.content]));
    const shown = messages.filter((m) => m.role !== "tool" || !results.has(m.tool_call_id || m.toolCallId) ||
      !messages.some((o) => toolCallsOf(o).some((c) => c.id === (m.tool_call_id || m.toolCallId))));
    chat.show(messages, () => shown.length
      ? h("ol", { class: "chat", "aria-label": "Transcript" }, shown.map((m, i) => bubble(m, agent, i, key, results)))
      : empty("No messages yet."));
  }
  const el = h("div", { class: "view" },
    h("p", { class: "crumbs" }, link("#/agents", "Agents"), " › ", h("span", { class: "mono" }, `@${name}@${key}`)),
    heading("Thread ", h("span", { class: "mono" }, key)),
    head.el,
    h("p", {}, link(route("entities", name, key), "Raw entity state →")),
    section("Running turns", turnsRegion.el),
    section("Transcript", chat.el));
  return { el, title: `Thread ${key}`, refresh,
    wants: (changes) => changes.entities.includes(`@${name}@${key}`) ||
      changes.instances.some((c) => c.instanceId.startsWith(`${TURN_PREFIX}${key}-`)) };
}
