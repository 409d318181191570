// Metrics over the last N minutes (/_devhost/api/metrics): work pending and running, turns per
// minute, failures, p50/p95 turn and model latency.

import { DASH, h, region, link, route, empty, heading, fmtDuration, timeEl, preview, num, api, section } from "./lib.js";

const WINDOWS = ["5", "15", "60", "240", "1440"];

function stat(label, value, extra) {
  return h("li", {}, h("div", { class: "stat plain", "aria-label": `${label}: ${value}` },
    h("span", { class: "stat-num" }, value), h("span", { class: "stat-label" }, label),
    extra ? h("span", { class: "stat-extra muted" }, extra) : null));
}

const ms = (v) => (v === null || v === undefined ? "—" : fmtDuration(v));

function perMinuteChart(counts) {
  const top = Math.max(1, ...counts);
  return h("div", { class: "spark", role: "img", "aria-label": `turns per minute: ${counts.join(", ")}` },
    counts.map((n, i) => h("span", { class: "spark-bar", title: `${counts.length - i} min ago: ${n}`,
      style: `height:${Math.max(2, (n / top) * 100)}%` })));
}

export function metricsView(query) {
  const minutes = WINDOWS.includes(query.get("minutes") || "") ? query.get("minutes") : "15";
  const body = region("div");
  const select = h("select", { id: "m-window", onchange: () => { location.hash = `#/metrics?minutes=${select.value}`; } },
    WINDOWS.map((w) => h("option", { value: w, selected: w === minutes }, `last ${+w >= 60 ? `${w / 60} h` : `${w} min`}`)));

  async function refresh() {
    const { data: m } = await api(`${DASH}/metrics?minutes=${minutes}`);
    const t = m.turns;
    body.show({ ...m, now: null }, () => [
      section("Work now",
        h("ul", { class: "cards", role: "list" },
          stat("Pending orchestrations", num(m.orchestrations.pending)),
          stat("Running orchestrations", num(m.orchestrations.running),
            m.orchestrations.suspended ? `${num(m.orchestrations.suspended)} suspended` : null),
          stat("Activities queued", num(m.activities.queued)),
          stat("Activities running", num(m.activities.running)),
          stat("Entity operations queued", num(m.entityOperations.queued)),
          stat("Entities running a batch", num(m.entityOperations.entitiesRunning))),
        Object.keys(m.orchestrations.activeByName).length
          ? h("table", { class: "grid compact" }, h("caption", {}, "Active orchestrations by name"),
            h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", { class: "num" }, "Pending"),
              h("th", { class: "num" }, "Running"), h("th", { class: "num" }, "Suspended"))),
            h("tbody", {}, Object.entries(m.orchestrations.activeByName).map(([name, c]) =>
              h("tr", {}, h("td", {}, link(`#/instances?name=${encodeURIComponent(name)}&status=Running,Pending,Suspended`, name)),
                h("td", { class: "num" }, num(c.Pending || 0)), h("td", { class: "num" }, num(c.Running || 0)),
                h("td", { class: "num" }, num(c.Suspended || 0))))))
          : null),
      section(`Agent turns, last ${minutes} min`,
        h("ul", { class: "cards", role: "list" },
          stat("Turns completed", num(t.completed)),
          stat("Turns per minute", num(t.ratePerMinute)),
          stat("Turn latency p50", ms(t.latencyMs.p50)),
          stat("Turn latency p95", ms(t.latencyMs.p95)),
          stat("Model latency p50", ms(t.modelLatencyMs.p50)),
          stat("Model latency p95", ms(t.modelLatencyMs.p95))),
        h("h3", {}, "Turns per minute (oldest left)"), perMinuteChart(t.perMinute)),
      section(`Failures, last ${minutes} min`,
        h("ul", { class: "cards", role: "list" }, stat("Failed orchestrations", num(m.failures.count))),
        m.failures.recent.length ? h("ul", { class: "failures" }, m.failures.recent.map((f) =>
          h("li", {}, timeEl(f.at), " ", link(route("instances", f.instanceId), h("span", { class: "mono" }, f.instanceId)),
            " ", h("span", { class: "muted" }, f.name), h("div", { class: "err" }, preview(f.error, 200)))))
          : empty("No failures in this window.")),
    ]);
  }
  const el = h("div", { class: "view" }, heading("Metrics"),
    h("div", { class: "field shrink" }, h("label", { for: "m-window" }, "Window"), select), body.el);
  // The window slides even when nothing is written: refresh at least every 10 s.
  return { el, title: "Metrics", refresh, every: 10000 };
}
