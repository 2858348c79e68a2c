// The activity log: what was done to which resource, by whom, and why, newest first,
// with filters on time, resource group and resource.
import { arm, enc } from "./api.js";
import { el, table, time } from "./dom.js";

const LOG_API = "api-version=2015-04-01";

function rows(events) {
  return events.map((e) => [
    time(e.eventTimestamp),
    e.level || "-",
    e.operationName?.localizedValue || e.operationName?.value || "-",
    e.status?.value || "-",
    (e.resourceId || "").split("/").slice(-2).join("/") || "-",
    e.caller || "-",
    e.description || e.properties?.Description || e.properties?.statusMessage || "-",
  ]);
}

/// The newest events (about `resource` when given) as a table in `box`.
export async function activityTable(box, sub, { resource, group, since, limit = 100 } = {}) {
  const clauses = [];
  if (since) clauses.push(`eventTimestamp ge '${since}'`);
  if (resource) clauses.push(`resourceUri eq '${resource}'`);
  if (group) clauses.push(`resourceGroupName eq '${group}'`);
  const q = clauses.length ? `&$filter=${enc(clauses.join(" and "))}` : "";
  try {
    const r = await arm.get(`/subscriptions/${sub}/providers/Microsoft.Insights/eventtypes/management/values?${LOG_API}${q}`);
    box.replaceChildren(table("Events, newest first", ["Time", "Level", "Operation", "Status", "Resource", "Caller", "Description"],
      rows((r.value || []).slice(0, limit)), { class: "activity-log" }));
  } catch (e) {
    box.replaceChildren(el("p", { class: "error", role: "alert" }, String(e)));
  }
}

export async function activityPage(main, sub) {
  const params = new URLSearchParams(location.search);
  const f = el("form", { class: "inline-form", id: "activity-filter", role: "search", "aria-label": "Filter the activity log" },
    el("label", { for: "f-since" }, "Since"),
    el("select", { id: "f-since", name: "since" },
      [["1h", "Last hour"], ["6h", "Last 6 hours"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"]].map(([k, l]) =>
        el("option", { value: k, selected: params.get("since") === k }, l))),
    el("label", { for: "f-group" }, "Resource group"),
    el("input", { id: "f-group", name: "group", value: params.get("group") || "", autocomplete: "off" }),
    el("label", { for: "f-resource" }, "Resource id"),
    el("input", { id: "f-resource", name: "resource", value: params.get("resource") || "", autocomplete: "off" }),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Filter")));
  const box = el("div", { id: "activity" });
  main.replaceChildren(el("h1", {}, "Activity log"), f, box);
  const load = () => {
    const secs = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400 }[f.since.value] || 3600;
    return activityTable(box, sub, {
      since: new Date(Date.now() - secs * 1000).toISOString(),
      group: f.group.value.trim() || undefined,
      resource: f.resource.value.trim() || undefined,
      limit: 500,
    });
  };
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams({ since: f.since.value, group: f.group.value, resource: f.resource.value });
    history.replaceState(null, "", `/ui/activity?${p}`);
    load();
  });
  await load();
}
