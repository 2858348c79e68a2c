// A small SVG line chart (no library): time on x, one or more series, and markers (a
// vertical line per event, e.g. an autoscale action) that show their text on hover and
// on keyboard focus. The figure carries `data-max` (largest value drawn) and a list of
// its markers under it, so what the chart says is also in text.
import { el } from "./dom.js";

const W = 640, H = 200, L = 48, R = 8, T = 10, B = 24;
const COLORS = ["#0b57a4", "#b2440a", "#0a6b2a", "#6b2a8a", "#7a4d00", "#00606b", "#8a1a4a", "#3d3d3d"];

function ticks(max) {
  if (max <= 0) return [0];
  const step = Math.pow(10, Math.floor(Math.log10(max)));
  const n = max / step;
  const s = n > 5 ? step * 2 : n > 2 ? step : step / 2;
  const out = [];
  for (let y = 0; y <= max + 1e-9; y += s) out.push(y);
  return out;
}

function short(n, unit) {
  if (unit === "Bytes") {
    const u = ["B", "K", "M", "G", "T"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return `${n.toFixed(n >= 10 || i === 0 ? 0 : 1)}${u[i]}`;
  }
  if (unit === "Percent") return `${Math.round(n)}%`;
  return Math.abs(n) >= 1000 ? `${(n / 1000).toFixed(1)}k` : `${Math.round(n * 10) / 10}`;
}

/// `series`: [{name, points: [[ms, value], …]}]; `markers`: [{t: ms, label, kind}].
export function lineChart({ id, title, unit, series, markers = [], from, to, fixedMax }) {
  const max = Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1])));
  const top = fixedMax ?? (max > 0 ? max * 1.15 : 1);
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (val) => T + (1 - val / top) * (H - T - B);
  const svg = el("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-title`, class: "chart", preserveAspectRatio: "none" });
  svg.append(el("title", { id: `${id}-title` }, `${title}: ${series.length} series, largest value ${short(max, unit)}`));
  for (const t of ticks(top)) {
    svg.append(el("line", { x1: L, x2: W - R, y1: y(t), y2: y(t), class: "grid-line" }));
    svg.append(el("text", { x: L - 4, y: y(t) + 4, "text-anchor": "end", class: "axis" }, short(t, unit)));
  }
  for (const frac of [0, 0.5, 1]) {
    const t = from + frac * (to - from);
    svg.append(el("text", { x: x(t), y: H - 6, "text-anchor": frac === 0 ? "start" : frac === 1 ? "end" : "middle", class: "axis" },
      new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" })));
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const pts = s.points.map(([t, val]) => `${x(t).toFixed(1)},${y(val).toFixed(1)}`).join(" ");
    svg.append(el("polyline", { points: pts, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, class: "series" }));
  });
  const items = [];
  for (const m of markers) {
    if (m.t < from || m.t > to) continue;
    const g = el("g", { class: `marker ${m.kind || ""}`, tabindex: 0, role: "img", "aria-label": m.label },
      el("title", {}, m.label),
      el("line", { x1: x(m.t), x2: x(m.t), y1: T, y2: H - B }),
      el("circle", { cx: x(m.t), cy: T + 4, r: 5 }));
    svg.append(g);
    items.push(el("li", { class: `marker-item ${m.kind || ""}` }, m.label));
  }
  const legend = el("ul", { class: "legend" }, series.map((s, i) =>
    el("li", {}, el("span", { class: `swatch c${i % COLORS.length}`, "aria-hidden": "true" }), s.name)));
  return el("figure", { class: "chart-box", id, "data-max": String(max), "data-markers": String(items.length) },
    el("figcaption", {}, `${title}${unit && unit !== "Unspecified" ? ` (${unit})` : ""}`),
    svg, series.length > 1 ? legend : null,
    items.length ? el("ul", { class: "markers", "aria-label": `${title}: events` }, items) : null);
}

/// Azure Monitor's answer (one metric) as chart series: one per timeseries, named by
/// its VMName metadata (or `fallback`), keeping only points that carry `agg`.
export function toSeries(metric, agg, fallback) {
  return (metric?.timeseries || []).map((ts) => ({
    name: ts.metadatavalues?.[0]?.value !== undefined ? `Instance ${ts.metadatavalues[0].value}` : fallback,
    points: (ts.data || []).filter((p) => typeof p[agg] === "number").map((p) => [Date.parse(p.timeStamp), p[agg]]),
  }));
}
