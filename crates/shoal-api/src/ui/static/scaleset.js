// One scale set: its state and actions, the instance grid by zone and fault domain,
// live charts with autoscale actions and repairs marked, autoscale, rolling upgrades,
// load balancing, access control and its activity log.
import { arm, COMPUTE, NETWORK, setPath, groupPath, permissions, v, enc } from "./api.js";
import { el, table, section, act, actionButton, resultLine, time, every, say, jsonLink, link } from "./dom.js";
import { health, power, shoalView, modelVersion } from "./overview.js";
import { chartsSection } from "./charts.js";
import { autoscaleSection } from "./autoscale.js";
import { activityTable } from "./activity.js";
import { assignmentsTable } from "./access.js";

const VMSS = "Microsoft.Compute/virtualMachineScaleSets";
const INSTANCE_ACTIONS = [["start", "Start"], ["powerOff", "Stop"], ["restart", "Restart"], ["reimage", "Reimage"]];

function fd(i) { return i.properties?.instanceView?.platformFaultDomain ?? 0; }

function card(base, i, perms, out, refresh) {
  const p = i.properties || {};
  const sh = shoalView(i);
  const id = i.instanceId;
  const dl = el("dl");
  const row = (k, val, key) => dl.append(el("dt", {}, k), el("dd", key ? { "data-field": key } : {}, String(val ?? "-")));
  row("Host", sh.host, "host"); row("Address", sh.address, "address"); row("Power", power(i), "power");
  row("Health", health(i), "health"); row("Fault domain", fd(i), "fd");
  row("Latest model", p.latestModelApplied ? "yes" : "no", "latest");
  row("Protected", p.protectionPolicy?.protectFromScaleIn ? "from scale-in" : p.protectionPolicy?.protectFromScaleSetActions ? "from set actions" : "no", "protected");
  row("Process", sh.pid, "pid");
  if (sh.message) row("Note", sh.message, "message");
  const acts = el("div", { class: "actions" });
  for (const [a, label] of INSTANCE_ACTIONS) {
    acts.append(actionButton(perms, `${VMSS}/virtualMachines/${a}/action`, label,
      () => act(`${label} instance ${id}`, async (progress) => arm.settle(await arm.post(`${base}/virtualMachines/${id}/${a}?${v(COMPUTE)}`), progress).then(refresh), out),
      { class: "secondary", "data-action": a }));
  }
  const protect = !p.protectionPolicy?.protectFromScaleIn;
  acts.append(actionButton(perms, `${VMSS}/virtualMachines/write`, protect ? "Protect" : "Unprotect",
    () => act(`${protect ? "Protect" : "Unprotect"} instance ${id} ${protect ? "from" : "against"} scale-in`, async (progress) =>
      arm.settle(await arm.put(`${base}/virtualMachines/${id}?${v(COMPUTE)}`, { properties: { protectionPolicy: { ...(p.protectionPolicy || {}), protectFromScaleIn: protect } } }), progress).then(refresh), out),
    { class: "secondary", "data-action": "protect" }));
  acts.append(actionButton(perms, `${VMSS}/virtualMachines/delete`, "Delete",
    () => act(`Delete instance ${id}`, async (progress) => arm.settle(await arm.del(`${base}/virtualMachines/${id}?${v(COMPUTE)}`), progress).then(refresh), out),
    { class: "secondary danger", "data-action": "delete" }));
  const rg = base.split("/")[4], name = base.split("/")[8];
  return el("article", { class: `instance h-${health(i)}`, "data-instance": id, "aria-label": `Instance ${id}` },
    el("h4", {}, link(`/ui/scalesets/${enc(rg)}/${enc(name)}/instances/${enc(id)}`, `Instance ${id}`)), dl, acts);
}

function grid(base, insts, perms, out, refresh) {
  if (!insts.length) return [el("p", {}, "No instances.")];
  const zones = new Map();
  for (const i of insts) {
    const z = (i.zones || ["none"])[0];
    if (!zones.has(z)) zones.set(z, new Map());
    const fds = zones.get(z);
    if (!fds.has(fd(i))) fds.set(fd(i), []);
    fds.get(fd(i)).push(i);
  }
  const out2 = [];
  for (const [z, fds] of [...zones].sort((a, b) => String(a[0]).localeCompare(String(b[0])))) {
    const cols = [...fds].sort((a, b) => a[0] - b[0]).map(([f, list]) =>
      el("div", { class: "fd", "aria-label": `Fault domain ${f}` }, el("h4", { class: "fd-h" }, `Fault domain ${f}`),
        el("div", { class: "grid" }, list.sort((a, b) => Number(a.instanceId) - Number(b.instanceId)).map((i) => card(base, i, perms, out, refresh)))));
    out2.push(el("section", { class: "zone", "aria-label": z === "none" ? "No zone" : `Zone ${z}` },
      el("h3", {}, z === "none" ? "No zone" : `Zone ${z}`), el("div", { class: "fds" }, cols)));
  }
  return out2;
}

async function rollingSection(box, set, sub, perms, out, refresh) {
  const base = set.id;
  const acts = el("div", { class: "actions" },
    actionButton(perms, `${VMSS}/osRollingUpgrade/action`, "Start rolling upgrade",
      () => act("Start a rolling upgrade to the latest model", async () => { await arm.post(`${base}/osRollingUpgrade?${v(COMPUTE)}`); refresh(); }, out), { "data-action": "rolling-start" }),
    actionButton(perms, `${VMSS}/rollingUpgrades/cancel/action`, "Cancel rolling upgrade",
      () => act("Cancel the rolling upgrade", async () => { await arm.post(`${base}/rollingUpgrades/cancel?${v(COMPUTE)}`); refresh(); }, out), { class: "secondary", "data-action": "rolling-cancel" }));
  const parts = [el("p", {}, `Upgrade policy: ${set.properties?.upgradePolicy?.mode || "Manual"}`), acts];
  try {
    // The activity log says whether a rolling upgrade ever ran (the latest-upgrade
    // resource is a 404 until then).
    const log = await arm.get(`/subscriptions/${sub}/providers/Microsoft.Insights/eventtypes/management/values?api-version=2015-04-01&$filter=${enc(`resourceUri eq '${base}'`)}`);
    const batches = (log.value || []).filter((e) => e.eventName?.value === "RollingUpgrade").reverse();
    if (!batches.length) {
      parts.push(el("p", { id: "rolling-status" }, "No rolling upgrade has run on this scale set."));
    } else {
      const r = await arm.get(`${base}/rollingUpgrades/latest?${v(COMPUTE)}`);
      const rs = r.properties?.runningStatus || {}, pr = r.properties?.progress || {};
      parts.push(el("p", { id: "rolling-status" }, `Latest: ${rs.code || "-"} (started ${time(rs.startTime)}${rs.lastAction ? `, last action ${rs.lastAction}` : ""})`));
      parts.push(table("Instances in the latest upgrade", ["Upgraded", "Failed", "In progress", "Pending"],
        [[String(pr.successfulInstanceCount ?? 0), String(pr.failedInstanceCount ?? 0), String(pr.inProgressInstanceCount ?? 0), String(pr.pendingInstanceCount ?? 0)]]));
      if (r.properties?.error) parts.push(el("p", { class: "error" }, `${r.properties.error.code}: ${r.properties.error.message}`));
      parts.push(table("Batch by batch (oldest first)", ["Time", "Status", "What happened"],
        batches.map((e) => [time(e.eventTimestamp), e.status?.value || "-", e.description || "-"]), { id: "rolling-batches" }));
    }
  } catch (e) {
    parts.push(el("p", { class: "error" }, String(e)));
  }
  box.replaceChildren(...parts);
}

/// Load balancers and gateways whose pools the set's model names, with the set's
/// instances as members and their probe state.
async function networkSection(box, set, insts) {
  const ipcs = (set.properties?.virtualMachineProfile?.networkProfile?.networkInterfaceConfigurations || [])
    .flatMap((n) => n.properties?.ipConfigurations || []);
  const pools = ipcs.flatMap((c) => [...(c.properties?.loadBalancerBackendAddressPools || []), ...(c.properties?.applicationGatewayBackendAddressPools || [])]).map((p) => p.id);
  const parents = [...new Set(pools.map((id) => id.split("/").slice(0, 9).join("/")))];
  if (!parents.length) { box.replaceChildren(el("p", {}, "No load balancer or application gateway sends traffic to this scale set.")); return; }
  const parts = [];
  for (const id of parents) {
    try {
      const r = await arm.get(`${id}?${v(NETWORK)}`);
      parts.push(frontendsAndRules(r));
    } catch (e) { parts.push(el("p", { class: "error" }, `${id}: ${e}`)); }
  }
  parts.push(table("Members (this set's instances)", ["Instance", "Address", "Probe state", "Power"],
    insts.map((i) => [i.instanceId, shoalView(i).address || "-", health(i), power(i)]), { id: "members" }));
  box.replaceChildren(...parts);
}

/// A load balancer's or gateway's frontends and rules, as tables.
export function frontendsAndRules(r) {
  const p = r.properties || {};
  const isGw = r.type?.toLowerCase().includes("applicationgateways");
  const parts = [el("h3", {}, `${isGw ? "Application gateway" : "Load balancer"} ${r.name} `, jsonLink(r.id))];
  if (isGw) {
    parts.push(table(`Listeners of ${r.name}`, ["Name", "Port", "Protocol", "Host"],
      (p.httpListeners || []).map((l) => {
        const port = (p.frontendPorts || []).find((fp) => fp.id === l.properties?.frontendPort?.id);
        return [l.name, String(port?.properties?.port ?? "-"), l.properties?.protocol || "-", l.properties?.hostName || (l.properties?.hostNames || []).join(", ") || "*"];
      })));
    parts.push(table(`Routing rules of ${r.name}`, ["Name", "Type", "Priority"],
      (p.requestRoutingRules || []).map((x) => [x.name, x.properties?.ruleType || "-", String(x.properties?.priority ?? "-")])));
    parts.push(table(`Probes of ${r.name}`, ["Name", "Protocol", "Path", "Interval"],
      (p.probes || []).map((x) => [x.name, x.properties?.protocol || "-", x.properties?.path || "-", `${x.properties?.interval ?? "-"} s`])));
  } else {
    parts.push(table(`Frontends of ${r.name}`, ["Name", "Address"],
      (p.frontendIPConfigurations || []).map((f) => [f.name, f.properties?.privateIPAddress || f.properties?.publicIPAddress?.id || "-"])));
    parts.push(table(`Rules of ${r.name}`, ["Name", "Protocol", "Frontend port", "Backend port", "Probe"],
      (p.loadBalancingRules || []).map((x) => [x.name, x.properties?.protocol || "-", String(x.properties?.frontendPort ?? "-"), String(x.properties?.backendPort ?? "-"), (x.properties?.probe?.id || "-").split("/").pop()])));
    parts.push(table(`Probes of ${r.name}`, ["Name", "Protocol", "Port", "Every", "Path"],
      (p.probes || []).map((x) => [x.name, x.properties?.protocol || "-", String(x.properties?.port ?? "-"), `${x.properties?.intervalInSeconds ?? "-"} s`, x.properties?.requestPath || "-"])));
  }
  return el("div", { class: "lb" }, parts);
}

export async function scaleSetPage(main, sub, rg, name) {
  const base = setPath(sub, rg, name);
  const perms = await permissions(groupPath(sub, rg));
  const out = resultLine();
  const head = el("div", { id: "set-head" });
  const gridBox = el("div", { id: "instances" });
  const cap = el("input", { id: "capacity", type: "number", min: "0", inputmode: "numeric" });
  const charts = el("div", { id: "charts" }), autoscale = el("div", { id: "autoscale" }), rolling = el("div", { id: "rolling" });
  const network = el("div", { id: "network" }), access = el("div", { id: "access" }), activity = el("div", { id: "activity" });
  let set = null, insts = [];
  const scale = actionButton(perms, `${VMSS}/write`, "Scale", () => act(`Scale ${name} to ${cap.value} instances`, async (progress) => {
    const r = await arm.patch(`${base}?${v(COMPUTE)}`, { sku: { capacity: Number(cap.value) } });
    refresh();
    await arm.settle(r, progress);
  }, out), { id: "scale" });
  const setAction = (a, label) => actionButton(perms, `${VMSS}/${a}/action`, `${label} all`,
    () => act(`${label} every instance of ${name}`, async () => { await arm.post(`${base}/${a}?${v(COMPUTE)}`); refresh(); }, out),
    { class: "secondary", "data-action": `set-${a}` });
  main.replaceChildren(
    el("h1", {}, `Scale set ${name}`), head,
    el("div", { class: "actions" }, el("label", { for: "capacity", class: "inline" }, "Instance count"), cap, scale,
      setAction("start", "Start"), setAction("powerOff", "Stop"), setAction("restart", "Restart"), setAction("reimage", "Reimage")),
    out,
    section("Instances by zone and fault domain", "instances-section", gridBox),
    section("Charts", "charts-section", charts),
    section("Autoscale", "autoscale-section", autoscale),
    section("Rolling upgrades", "rolling-section", rolling),
    section("Load balancing", "network-section", network),
    section("Access control", "access-section", access),
    section("Activity log", "activity-section", activity),
  );
  let first = true;
  async function refresh() {
    try {
      set = await arm.get(`${base}?${v(COMPUTE)}`);
      insts = (await arm.get(`${base}/virtualMachines?${v(COMPUTE)}&$expand=instanceView`)).value || [];
      if (first) { cap.value = set.sku?.capacity ?? 0; }
      const healthy = insts.filter((i) => health(i) === "healthy").length;
      const pr = set.properties || {};
      head.replaceChildren(el("p", { class: "facts" },
        el("span", { id: "set-capacity" }, `Capacity ${set.sku?.capacity}`), " · ",
        el("span", { id: "set-health", "data-healthy": healthy, "data-total": insts.length }, `${healthy}/${insts.length} healthy`), " · ",
        `${set.sku?.name} · image ${modelVersion(set)} · ${pr.orchestrationMode || "Uniform"} · upgrade ${pr.upgradePolicy?.mode || "Manual"} · ${pr.provisioningState} · `,
        jsonLink(set.id)));
      gridBox.replaceChildren(...grid(base, insts, perms, out, refresh));
      say(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) { say(`Refresh failed: ${e}`); }
  }
  const slow = async (force = false) => {
    if (!set) return;
    // Not while the user is editing a rule.
    const editing = !force && (autoscale.contains(document.activeElement) || [...autoscale.querySelectorAll("input")].some((i) => i.dataset.touched));
    await Promise.all([
      editing ? null : autoscaleSection(autoscale, { sub, rg, set, perms, out, onChange: () => slow(true) }).catch((e) => autoscale.replaceChildren(el("p", { class: "error" }, String(e)))),
      rollingSection(rolling, set, sub, perms, out, refresh),
      networkSection(network, set, insts).catch((e) => network.replaceChildren(el("p", { class: "error" }, String(e)))),
      activityTable(activity, sub, { resource: set.id, limit: 30 }),
    ]);
  };
  await refresh();
  first = false;
  chartsSection(charts, { sub, set: base, title: name });
  assignmentsTable(access, sub, base).catch((e) => access.replaceChildren(el("p", { class: "error" }, String(e))));
  setTimeout(() => every(3000, gridBox, refresh), 3000);
  every(10000, autoscale, slow);
}
