// Autoscale settings of one scale set: profiles and rules in the sentence the CLI's
// `--condition` takes, editing with validation (the sentence is checked here, the setting
// by the server, whose ARM error is shown), and what autoscale did.
import { arm, INSIGHTS, groupPath, v, enc } from "./api.js";
import { el, table, act, actionButton, time } from "./dom.js";

const OPS = [["==", "Equals"], ["!=", "NotEquals"], [">=", "GreaterThanOrEqual"], ["<=", "LessThanOrEqual"], [">", "GreaterThan"], ["<", "LessThan"]];
const AGGS = { avg: "Average", average: "Average", min: "Minimum", minimum: "Minimum", max: "Maximum", maximum: "Maximum", total: "Total", sum: "Total", count: "Count", last: "Last" };
const STATS = { avg: "Average", average: "Average", min: "Min", max: "Max", sum: "Sum", total: "Sum", count: "Count" };

/// "30s", "5m", "1h" (or an ISO 8601 duration) as ISO 8601.
export function iso(text) {
  const t = String(text).trim();
  if (/^P/i.test(t)) return t.toUpperCase();
  const m = t.match(/^(\d+)\s*([smhd]?)$/i);
  if (!m) throw new Error(`'${t}' is not a duration: write e.g. 30s, 5m or 1h.`);
  const unit = (m[2] || "m").toLowerCase();
  return unit === "d" ? `P${m[1]}D` : `PT${m[1]}${unit.toUpperCase()}`;
}

/// ISO 8601 as the short form ("PT5M" → "5m").
export function shortDuration(d) {
  const m = String(d || "").match(/^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/i);
  if (!m) return d || "-";
  const parts = [];
  if (m[1]) parts.push(`${m[1]}d`);
  if (m[2]) parts.push(`${m[2]}h`);
  if (m[3]) parts.push(`${m[3]}m`);
  if (m[4]) parts.push(`${m[4]}s`);
  return parts.join("") || "0s";
}

/// The CLI's condition sentence of a rule's trigger.
export function sentence(t) {
  const op = OPS.find(([, n]) => n === t.operator)?.[0] || t.operator;
  const agg = Object.entries(AGGS).find(([, n]) => n === t.timeAggregation)?.[0] || t.timeAggregation;
  const ns = t.metricNamespace && t.metricNamespace.toLowerCase() !== "microsoft.compute/virtualmachinescalesets" ? `[${t.metricNamespace}] ` : "";
  const dims = (t.dimensions || []).map((d) => `${d.DimensionName} ${d.Operator === "NotEquals" ? "!=" : "=="} ${(d.Values || []).join(" or ")}`);
  return `${ns}${t.metricName} ${op} ${t.threshold} ${agg} ${shortDuration(t.timeWindow)}${dims.length ? ` where ${dims.join(" and ")}` : ""}`;
}

function scaleText(a) {
  const n = a.value;
  switch (a.type) {
    case "ExactCount": return `set the count to ${n}`;
    case "PercentChangeCount": return `scale ${a.direction === "Increase" ? "out" : "in"} by ${n}%`;
    default: return `scale ${a.direction === "Increase" ? "out" : "in"} by ${n}`;
  }
}

/// Parses "METRIC OP THRESHOLD AGG PERIOD" as the CLI does; throws with what is wrong.
export function parseCondition(text) {
  const tokens = text.trim().split(/\s+/);
  const pos = tokens.findIndex((t) => OPS.some(([s]) => s === t));
  if (pos <= 0 || tokens.length !== pos + 4) {
    throw new Error(`'${text}' is not a condition: write METRIC OPERATOR THRESHOLD AGGREGATION PERIOD, e.g. "Percentage CPU > 70 avg 5m".`);
  }
  const threshold = Number(tokens[pos + 1]);
  if (!Number.isFinite(threshold)) throw new Error(`'${tokens[pos + 1]}' is not a number.`);
  const agg = AGGS[tokens[pos + 2].toLowerCase()];
  if (!agg) throw new Error(`'${tokens[pos + 2]}' is not an aggregation: use avg, min, max, total, count or last.`);
  return {
    metricName: tokens.slice(0, pos).join(" "),
    operator: OPS.find(([s]) => s === tokens[pos])[1],
    threshold, timeAggregation: agg, timeWindow: iso(tokens[pos + 3]),
  };
}

/// "out 1", "in 2", "out 20%", "to 5" as a scale action.
export function parseScale(text, cooldown) {
  const m = text.trim().match(/^(out|in|to)\s+(\d+)(%?)$/i);
  if (!m) throw new Error(`'${text}' is not a scale action: write out N, in N, out N% or to N.`);
  const dir = m[1].toLowerCase();
  return {
    direction: dir === "in" ? "Decrease" : "Increase",
    type: dir === "to" ? "ExactCount" : m[3] ? "PercentChangeCount" : "ChangeCount",
    value: m[2], cooldown: iso(cooldown),
  };
}

export function parseTimeGrain(text) {
  const parts = text.trim().split(/\s+/);
  const [stat, grain] = parts.length === 1 ? ["avg", parts[0]] : parts;
  const statistic = STATS[String(stat).toLowerCase()];
  if (!statistic || parts.length > 2) throw new Error(`'${text}' is not a time grain: write e.g. "avg 1m" or "max 1s".`);
  return { statistic, timeGrain: iso(grain) };
}

/// The autoscale setting that targets `setId`, if any.
export async function settingOf(sub, rg, setId) {
  const list = await arm.get(`${groupPath(sub, rg)}/providers/Microsoft.Insights/autoscalesettings?${v(INSIGHTS)}`);
  return (list.value || []).find((s) => (s.properties?.targetResourceUri || "").toLowerCase() === setId.toLowerCase()) || null;
}

function field(id, label, attrs = {}) {
  const input = el("input", { id, name: id, autocomplete: "off", ...attrs });
  input.addEventListener("input", () => { input.dataset.touched = "1"; });
  return [el("label", { for: id }, label), input];
}

/// The autoscale section of a scale set page; `perms` decides what can be edited.
export async function autoscaleSection(box, { sub, rg, set, perms, out, onChange }) {
  const setting = await settingOf(sub, rg, set.id).catch(() => null);
  const write = "Microsoft.Insights/autoscalesettings/write";
  const parts = [];
  if (!setting) {
    parts.push(el("p", {}, "No autoscale setting targets this scale set."));
    const f = el("form", { id: "autoscale-create", class: "inline-form" },
      ...field("as-min", "Minimum instances", { type: "number", min: 0, value: 1, required: true }),
      ...field("as-max", "Maximum instances", { type: "number", min: 1, value: 10, required: true }),
      ...field("as-default", "Default instances", { type: "number", min: 0, value: set.sku?.capacity ?? 1, required: true }),
      ...field("as-interval", "Evaluate every (Shoal: 1s to 1m)", { value: "15s" }));
    const submit = actionButton(perms, write, "Enable autoscale", null, { type: "submit", id: "as-create" });
    f.append(el("div", { class: "actions" }, submit));
    f.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (submit.disabled) return;
      act("Enable autoscale", async () => {
        const body = {
          location: set.location,
          properties: {
            enabled: true, targetResourceUri: set.id,
            profiles: [{ name: "default", capacity: { minimum: f["as-min"].value, maximum: f["as-max"].value, default: f["as-default"].value }, rules: [] }],
            shoal: { evaluationInterval: iso(f["as-interval"].value) },
          },
        };
        await arm.put(`${groupPath(sub, rg)}/providers/Microsoft.Insights/autoscalesettings/${enc(set.name)}-autoscale?${v(INSIGHTS)}`, body);
        onChange();
      }, out, { ask: false });
    });
    parts.push(f);
    box.replaceChildren(...parts);
    return;
  }
  const path = `${setting.id}?${v(INSIGHTS)}`;
  const save = async (mutate) => {
    const fresh = await arm.get(path);
    mutate(fresh.properties);
    await arm.put(path, { location: fresh.location, tags: fresh.tags, properties: fresh.properties });
    onChange();
  };
  const p = setting.properties;
  parts.push(el("p", {}, `Setting ${setting.name}: ${p.enabled === false ? "disabled" : "enabled"}`,
    p.shoal?.evaluationInterval ? `, evaluated every ${shortDuration(p.shoal.evaluationInterval)}` : ""));
  (p.profiles || []).forEach((prof, pi) => {
    const rows = (prof.rules || []).map((r, ri) => {
      const t = r.metricTrigger || {};
      const del = actionButton(perms, write, "Remove", () => act(`Remove rule "${sentence(t)}"`,
        () => save((props) => props.profiles[pi].rules.splice(ri, 1)), out), { class: "secondary", "data-action": "remove-rule" });
      return [el("code", {}, sentence(t)), `${(t.statistic || "Average").toLowerCase()} ${shortDuration(t.timeGrain)}`,
        scaleText(r.scaleAction || {}), shortDuration(r.scaleAction?.cooldown), del];
    });
    const when = prof.recurrence ? `every ${(prof.recurrence.schedule?.days || []).join(", ")} at ${(prof.recurrence.schedule?.hours || []).join(",")}:${(prof.recurrence.schedule?.minutes || []).join(",")} (${prof.recurrence.schedule?.timeZone || "UTC"})`
      : prof.fixedDate ? `from ${time(prof.fixedDate.start)} to ${time(prof.fixedDate.end)}` : "always (default profile)";
    parts.push(el("h3", {}, `Profile ${prof.name}: ${prof.capacity?.minimum}–${prof.capacity?.maximum} instances, default ${prof.capacity?.default}, ${when}`));
    parts.push(table(`Rules of profile ${prof.name}`, ["When", "Time grain", "Then", "Cooldown", ""], rows, { class: "rules" }));
  });
  const f = el("form", { id: "rule-add", class: "inline-form", novalidate: true },
    el("h3", {}, "Add a rule"),
    ...field("rule-condition", "Condition", { placeholder: "Percentage CPU > 70 avg 5m", required: true }),
    ...field("rule-timegrain", "Time grain", { value: "avg 1m" }),
    ...field("rule-scale", "Scale", { placeholder: "out 1", required: true }),
    ...field("rule-cooldown", "Cooldown", { value: "5m" }));
  const err = el("p", { id: "rule-error", class: "field-error", role: "alert" });
  const submit = actionButton(perms, write, "Add rule", null, { type: "submit", id: "rule-submit" });
  f.append(err, el("div", { class: "actions" }, submit));
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    err.textContent = "";
    let rule;
    try {
      const trigger = parseCondition(f["rule-condition"].value);
      const grain = parseTimeGrain(f["rule-timegrain"].value);
      rule = { metricTrigger: { ...trigger, ...grain, metricResourceUri: set.id }, scaleAction: parseScale(f["rule-scale"].value, f["rule-cooldown"].value) };
    } catch (e) {
      err.textContent = e.message;
      f["rule-condition"].setAttribute("aria-invalid", "true");
      return;
    }
    f["rule-condition"].removeAttribute("aria-invalid");
    act(`Add rule "${sentence(rule.metricTrigger)}"`, () => save((props) => {
      const prof = props.profiles.find((x) => !x.recurrence && !x.fixedDate) || props.profiles[0];
      prof.rules = [...(prof.rules || []), rule];
    }), out, { ask: false });
  });
  parts.push(f);
  try {
    const h = await arm.get(`${setting.id}/history?${v(INSIGHTS)}`);
    const rows = (h.value || []).slice(-20).reverse().map((e) => [time(e.time), e.outcome,
      e.newCapacity !== undefined && e.newCapacity !== null ? `${e.oldCapacity} → ${e.newCapacity}` : String(e.oldCapacity ?? "-"), e.reason || "-"]);
    parts.push(table("What autoscale did (newest first)", ["Time", "Outcome", "Instances", "Why"], rows, { id: "autoscale-history" }));
  } catch { /* no history yet */ }
  box.replaceChildren(...parts);
}
