// Pages: overview, one scale set (instance grid and actions), the JSON of a resource.
import { arm, COMPUTE } from "./api.js";

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function say(text) { document.getElementById("status").textContent = text; }

const V = `?api-version=${COMPUTE}`;
const setPath = (sub, rg, name) =>
  `/subscriptions/${sub}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.Compute/virtualMachineScaleSets/${encodeURIComponent(name)}`;

function table(caption, head, rows) {
  const t = el("table", {}, el("caption", { class: "reason" }, caption));
  t.append(el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col" }, h)))));
  const tb = el("tbody");
  for (const r of rows) tb.append(el("tr", {}, ...r.map((c) => el("td", {}, c))));
  t.append(tb);
  return el("div", { class: "table-wrap" }, t);
}

function health(inst) {
  const code = inst?.properties?.instanceView?.vmHealth?.status?.code || "";
  return code.replace("HealthState/", "") || "unknown";
}
function power(inst) { return inst?.properties?.shoal?.powerState || inst?.properties?.instanceView?.statuses?.find((s) => s.code.startsWith("PowerState/"))?.code.slice(11) || "unknown"; }

export async function overview(main, sub) {
  main.replaceChildren(el("h1", {}, "Overview"), el("p", {}, "Loading…"));
  const [groups, sets] = await Promise.all([
    arm.get(`/subscriptions/${sub}/resourcegroups?api-version=2022-09-01`),
    arm.get(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachineScaleSets${V}`),
  ]);
  const rows = [];
  for (const s of sets.value || []) {
    const rg = s.id.split("/")[4];
    let insts = [];
    try { insts = (await arm.get(`${setPath(sub, rg, s.name)}/virtualMachines${V}&$expand=instanceView`)).value || []; } catch { /* shown as 0 */ }
    const healthy = insts.filter((i) => health(i) === "healthy").length;
    const link = el("a", { href: `/ui/scalesets/${encodeURIComponent(rg)}/${encodeURIComponent(s.name)}` }, s.name);
    rows.push([link, rg, String(s.sku?.capacity ?? ""), `${healthy}/${insts.length}`,
      s.properties?.orchestrationMode || "Uniform", s.properties?.upgradePolicy?.mode || "", s.properties?.provisioningState || ""]);
  }
  main.replaceChildren(
    el("h1", {}, "Overview"),
    el("h2", {}, "Resource groups"),
    table("Resource groups", ["Name", "Location"], (groups.value || []).map((g) => [g.name, g.location])),
    el("h2", {}, "Scale sets"),
    table("Scale sets", ["Name", "Group", "Capacity", "Healthy/total", "Orchestration", "Upgrade policy", "State"], rows),
  );
}

async function act(label, fn, out) {
  if (!confirm(`${label}?`)) return;
  out.className = ""; out.textContent = `${label}: in progress…`;
  try { await fn(); out.className = "ok"; out.textContent = `${label}: accepted`; }
  catch (e) { out.className = "error"; out.textContent = `${label} failed. ${e}`; }
}

export async function scaleSetPage(main, sub, rg, name) {
  const base = setPath(sub, rg, name);
  const out = el("div", { id: "action-result", role: "alert" });
  const grid = el("div", { id: "instances" });
  const cap = el("input", { id: "capacity", type: "number", min: "0", inputmode: "numeric" });
  const scale = el("button", { type: "button", id: "scale" }, "Scale");
  const head = el("div", { class: "card" });
  main.replaceChildren(el("h1", {}, `Scale set ${name}`), head,
    el("div", { class: "actions" }, el("label", { for: "capacity" }, "Instance count"), cap, scale),
    out, el("h2", {}, "Instances"), grid,
    el("p", {}, el("a", { href: `/ui/json?id=${encodeURIComponent(base)}` }, "JSON view")));
  scale.addEventListener("click", () => act(`Scale ${name} to ${cap.value}`, async () => {
    const set = await arm.get(base + V);
    await arm.put(base + V, { location: set.location, sku: { ...set.sku, capacity: Number(cap.value) } });
    refresh();
  }, out));
  let first = true;
  async function refresh() {
    try {
      const set = await arm.get(base + V);
      if (first) { cap.value = set.sku?.capacity ?? 0; first = false; }
      head.replaceChildren(el("p", {}, `Capacity ${set.sku?.capacity} · ${set.properties?.orchestrationMode || "Uniform"} · upgrade ${set.properties?.upgradePolicy?.mode || "-"} · ${set.properties?.provisioningState}`));
      const insts = (await arm.get(`${base}/virtualMachines${V}&$expand=instanceView`)).value || [];
      const zones = new Map();
      for (const i of insts) {
        const z = (i.zones || ["none"])[0];
        if (!zones.has(z)) zones.set(z, []);
        zones.get(z).push(i);
      }
      const parts = [];
      for (const [z, list] of [...zones].sort()) {
        const g = el("div", { class: "grid" });
        for (const i of list.sort((a, b) => (a.properties?.instanceView?.platformFaultDomain ?? 0) - (b.properties?.instanceView?.platformFaultDomain ?? 0))) g.append(card(base, i, out));
        parts.push(el("section", { class: "zone", "aria-label": `Zone ${z}` }, el("h3", {}, `Zone ${z}`), g));
      }
      grid.replaceChildren(...(parts.length ? parts : [el("p", {}, "No instances.")]));
      say(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) { say(`Refresh failed: ${e}`); }
  }
  await refresh();
  setInterval(refresh, 3000);
}

function card(base, i, out) {
  const p = i.properties || {};
  const sh = p.shoal || {};
  const id = i.instanceId;
  const dl = el("dl");
  const row = (k, v) => dl.append(el("dt", {}, k), el("dd", {}, String(v ?? "-")));
  row("Host", sh.host); row("Address", sh.address); row("Power", power(i)); row("Health", health(i));
  row("Fault domain", p.instanceView?.platformFaultDomain); row("Latest model", p.latestModelApplied ? "yes" : "no");
  row("Protected", p.protectionPolicy?.protectFromScaleIn ? "yes" : "no");
  const acts = el("div", { class: "actions" });
  for (const [a, label] of [["restart", "Restart"], ["start", "Start"], ["powerOff", "Stop"], ["reimage", "Reimage"]]) {
    const b = el("button", { type: "button", class: "secondary", "data-action": a }, label);
    b.addEventListener("click", () => act(`${label} instance ${id}`, () => arm.post(`${base}/virtualMachines/${id}/${a}${V}`), out));
    acts.append(b);
  }
  const del = el("button", { type: "button", class: "secondary", "data-action": "delete" }, "Delete");
  del.addEventListener("click", () => act(`Delete instance ${id}`, () => arm.del(`${base}/virtualMachines/${id}${V}`), out));
  acts.append(del);
  return el("article", { class: "instance", "data-instance": id, "aria-label": `Instance ${id}` },
    el("h4", {}, `Instance ${id}`), dl, acts);
}

export async function jsonPage(main, id) {
  main.replaceChildren(el("h1", {}, "JSON view"), el("p", {}, id || ""));
  try {
    const v = await arm.get(`${id}${V}`);
    main.append(el("pre", { class: "json", tabindex: "0", "aria-label": "Resource JSON" }, JSON.stringify(v, null, 2)));
  } catch (e) { main.append(el("div", { class: "error", role: "alert" }, String(e))); }
}
