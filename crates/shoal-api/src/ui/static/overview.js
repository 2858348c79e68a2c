// The overview: resource groups, scale sets with their health, and hosts by zone and
// fault domain with their load.
import { arm, COMPUTE, RESOURCES, setPath, v, enc } from "./api.js";
import { el, table, section, link, every, say } from "./dom.js";

export function health(inst) {
  const code = inst?.properties?.instanceView?.vmHealth?.status?.code || "";
  return code.replace("HealthState/", "") || "unknown";
}

export function shoalView(inst) {
  return inst?.properties?.instanceView?.shoal || inst?.properties?.shoal || {};
}

export function power(inst) {
  return shoalView(inst).powerState
    || inst?.properties?.instanceView?.statuses?.find((s) => s.code.startsWith("PowerState/"))?.code.slice(11)
    || "unknown";
}

/// The image version a set's model names (the last segment of a gallery id).
export function modelVersion(set) {
  const ref = set?.properties?.virtualMachineProfile?.storageProfile?.imageReference || {};
  const id = ref.id || ref.sharedGalleryImageId || "";
  const parts = id.split("/");
  const i = parts.findIndex((p) => p.toLowerCase() === "versions");
  return i >= 0 ? parts[i + 1] : ref.version || (id ? "latest" : "-");
}

/// The upgrade state of each set: its policy, and for sets that rolled out a model, the
/// newest rolling-upgrade event of the last day (one activity-log query for all).
async function upgradeStates(sub) {
  const since = new Date(Date.now() - 86400 * 1000).toISOString();
  const f = enc(`eventTimestamp ge '${since}'`);
  const log = await arm.get(`/subscriptions/${sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter=${f}`).catch(() => ({ value: [] }));
  const newest = new Map();
  for (const e of log.value || []) {
    if (e.eventName?.value !== "RollingUpgrade") continue;
    const id = (e.resourceId || "").toLowerCase();
    if (!newest.has(id)) newest.set(id, e);
  }
  return (set) => {
    const mode = set.properties?.upgradePolicy?.mode || "Manual";
    const e = newest.get(set.id.toLowerCase());
    return e ? `${mode}: ${e.status?.value || "-"}` : mode;
  };
}

async function setRows(sub, sets) {
  const upgradeState = await upgradeStates(sub);
  return Promise.all(sets.map(async (s) => {
    const rg = s.id.split("/")[4];
    let insts = [];
    try { insts = (await arm.get(`${setPath(sub, rg, s.name)}/virtualMachines?${v(COMPUTE)}&$expand=instanceView`)).value || []; } catch { /* shown as 0/0 */ }
    const healthy = insts.filter((i) => health(i) === "healthy").length;
    return [
      link(`/ui/scalesets/${enc(rg)}/${enc(s.name)}`, s.name), rg,
      String(s.sku?.capacity ?? "-"),
      el("span", { "data-healthy": healthy, "data-total": insts.length }, `${healthy}/${insts.length}`),
      modelVersion(s), s.properties?.orchestrationMode || "Uniform", upgradeState(s),
      s.properties?.provisioningState || "-",
    ];
  }));
}

/// Hosts grouped by zone, each zone a table ordered by fault domain.
export function hostsByZone(hosts) {
  const zones = new Map();
  for (const h of hosts) {
    const z = h.properties?.zone ?? "none";
    if (!zones.has(z)) zones.set(z, []);
    zones.get(z).push(h);
  }
  const out = [];
  for (const [z, list] of [...zones].sort((a, b) => String(a[0]).localeCompare(String(b[0])))) {
    list.sort((a, b) => (a.properties?.faultDomain ?? 0) - (b.properties?.faultDomain ?? 0));
    out.push(table(z === "none" ? "Hosts without a zone" : `Zone ${z}`,
      ["Host", "Fault domain", "State", "Instances", "vCPUs used", "Memory used", "Address"],
      list.map((h) => {
        const p = h.properties || {};
        const a = p.allocated || {}, c = p.capacity || {};
        const state = `${p.state || "-"}${p.cordoned ? " (cordoned)" : ""}${p.draining ? " (draining)" : ""}`;
        return [h.name, String(p.faultDomain ?? "-"), state, `${a.instances ?? 0}`,
          `${a.vCPUs ?? 0} of ${c.vCPUs ?? "-"}`, `${a.memoryMB ?? 0} of ${c.memoryMB ?? "-"} MB`, p.address || p.agentUrl || "-"];
      })));
  }
  return out;
}

export async function overview(main, sub) {
  const groupsBox = el("div"), setsBox = el("div", { id: "sets" }), hostsBox = el("div", { id: "hosts" });
  main.replaceChildren(
    el("h1", {}, "Overview"),
    el("p", {}, link("/ui/create", "Create a scale set")),
    section("Scale sets", "sets-section", setsBox),
    section("Hosts by zone and fault domain", "hosts-section", hostsBox),
    section("Resource groups", "groups-section", groupsBox),
  );
  await every(5000, setsBox, async () => {
    try {
      const [groups, sets, hosts] = await Promise.all([
        arm.get(`/subscriptions/${sub}/resourcegroups?${v(RESOURCES)}`),
        arm.get(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachineScaleSets?${v(COMPUTE)}`),
        arm.get(`/providers/Shoal.Infrastructure/hosts?${v(COMPUTE)}`).catch(() => ({ value: [] })),
      ]);
      const rows = await setRows(sub, sets.value || []);
      setsBox.replaceChildren(table("Scale sets in the subscription",
        ["Name", "Group", "Capacity", "Healthy/total", "Model version", "Orchestration", "Upgrade", "State"], rows, { id: "sets-table" }));
      hostsBox.replaceChildren(...hostsByZone(hosts.value || []));
      groupsBox.replaceChildren(table("Resource groups", ["Name", "Location", "State"],
        (groups.value || []).map((g) => [g.name, g.location, g.properties?.provisioningState || "-"])));
      say(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) { say(`Refresh failed: ${e}`); }
  });
}
