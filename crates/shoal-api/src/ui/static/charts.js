// Live charts of a scale set (or one instance): CPU, memory, network and requests from
// Azure Monitor's metrics API, and the instance count over time with every autoscale
// action and repair from the activity log marked on it. A time-range picker; the charts
// redraw every few seconds.
import { arm, enc } from "./api.js";
import { el, every } from "./dom.js";
import { lineChart, toSeries } from "./chart.js";

const RANGES = [
  ["5m", "Last 5 minutes", 5 * 60, "PT5S"],
  ["15m", "Last 15 minutes", 15 * 60, "PT15S"],
  ["1h", "Last hour", 3600, "PT1M"],
  ["6h", "Last 6 hours", 6 * 3600, "PT5M"],
  ["24h", "Last 24 hours", 24 * 3600, "PT15M"],
];
const METRICS = ["Percentage CPU", "Available Memory Bytes", "Network In Total", "Network Out Total", "Request Count"];

/// One series summing `series` point by point.
function sum(series, name) {
  const at = new Map();
  for (const s of series) for (const [t, val] of s.points) at.set(t, (at.get(t) || 0) + val);
  return { name, points: [...at].sort((a, b) => a[0] - b[0]) };
}

/// How many instances reported a sample in each interval.
function counted(series) {
  const at = new Map();
  for (const s of series) for (const [t] of s.points) at.set(t, (at.get(t) || 0) + 1);
  return { name: "Instances", points: [...at].sort((a, b) => a[0] - b[0]) };
}

function marker(e) {
  const op = e.operationName?.value || "";
  const p = e.properties || {};
  if (op.startsWith("Microsoft.Insights/AutoscaleSettings/")) {
    const what = op.split("/")[2];
    const counts = p.NewInstancesCount ? ` (${p.OldInstancesCount} → ${p.NewInstancesCount})` : "";
    const kind = what === "Scaleup" ? "scale-out" : what === "Scaledown" ? "scale-in" : "blocked";
    return { t: Date.parse(e.eventTimestamp), kind, label: `Autoscale ${what === "Scaleup" ? "scale out" : what === "Scaledown" ? "scale in" : what}${counts} at ${new Date(e.eventTimestamp).toLocaleTimeString()}: ${p.Description || e.description || ""}` };
  }
  if (e.eventName?.value === "AutomaticRepair") {
    return { t: Date.parse(e.eventTimestamp), kind: "repair", label: `Repair at ${new Date(e.eventTimestamp).toLocaleTimeString()}: ${e.description}` };
  }
  if (op.endsWith("/redeploy/action")) {
    return { t: Date.parse(e.eventTimestamp), kind: "repair", label: `Moved at ${new Date(e.eventTimestamp).toLocaleTimeString()}: ${e.description}` };
  }
  return null;
}

/// The charts of the set at `set` (its ARM path), or of one of its instances.
export function chartsSection(box, { sub, set, instance }) {
  const picker = el("select", { id: "range" }, RANGES.map(([key, label]) => el("option", { value: key }, label)));
  const body = el("div", { class: "charts", "aria-live": "off" });
  const note = el("p", { class: "reason" });
  box.replaceChildren(el("div", { class: "actions" }, el("label", { for: "range", class: "inline" }, "Time range"), picker), note, body);
  const draw = async () => {
    const [, , secs, interval] = RANGES.find(([k]) => k === picker.value);
    const to = Date.now(), from = to - secs * 1000;
    const span = `${new Date(from).toISOString()}/${new Date(to).toISOString()}`;
    const filter = instance === undefined ? "VMName eq '*'" : `VMName eq '${instance}'`;
    try {
      const q = `${set}/providers/Microsoft.Insights/metrics?api-version=2023-10-01&metricnames=${enc(METRICS.join(","))}`
        + `&aggregation=Average,Total,Maximum&interval=${interval}&timespan=${enc(span)}&$filter=${enc(filter)}`;
      const m = await arm.get(q);
      const by = (name) => (m.value || []).find((x) => x.name?.value === name);
      const cpu = toSeries(by("Percentage CPU"), "average", "CPU");
      const mem = toSeries(by("Available Memory Bytes"), "average", "Memory");
      const netIn = sum(toSeries(by("Network In Total"), "total", "In"), "In");
      const netOut = sum(toSeries(by("Network Out Total"), "total", "Out"), "Out");
      const req = toSeries(by("Request Count"), "total", "Requests");
      const range = { from, to };
      const charts = [
        lineChart({ id: "chart-cpu", title: "CPU", unit: "Percent", series: cpu, fixedMax: 100, ...range }),
        lineChart({ id: "chart-memory", title: "Available memory", unit: "Bytes", series: mem, ...range }),
        lineChart({ id: "chart-network", title: `Network per ${interval.slice(2).toLowerCase()}`, unit: "Bytes", series: [netIn, netOut], ...range }),
        lineChart({ id: "chart-requests", title: `Requests per ${interval.slice(2).toLowerCase()}`, unit: "Count", series: instance === undefined && req.length > 1 ? [sum(req, "All instances"), ...req] : req, ...range }),
      ];
      if (instance === undefined) {
        let markers = [];
        try {
          const f = `eventTimestamp ge '${new Date(from).toISOString()}' and resourceUri eq '${set}'`;
          const log = await arm.get(`/subscriptions/${sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter=${enc(f)}`);
          markers = (log.value || []).map(marker).filter(Boolean);
        } catch { /* no markers */ }
        charts.unshift(lineChart({ id: "chart-instances", title: "Instances reporting", unit: "Count", series: [counted(cpu)], markers, ...range }));
      }
      body.replaceChildren(...charts);
      note.textContent = `${cpu.length} instance series, every ${interval.slice(2).toLowerCase()}, updated ${new Date().toLocaleTimeString()}.`;
    } catch (e) {
      note.textContent = `The charts could not be drawn: ${e}`;
    }
  };
  picker.addEventListener("change", draw);
  every(5000, body, draw);
}
