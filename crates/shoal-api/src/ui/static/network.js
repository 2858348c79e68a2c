// Load balancers and application gateways of the subscription: frontends, rules, probes
// and members with their probe state (the health their balancer reports for each instance).
import { arm, COMPUTE, NETWORK, v } from "./api.js";
import { el, table, section } from "./dom.js";
import { frontendsAndRules } from "./scaleset.js";
import { health, power, shoalView } from "./overview.js";

/// Instances of every set whose pools name `resourceId`, by pool id.
async function membersOf(sub, resourceId) {
  const sets = (await arm.get(`/subscriptions/${sub}/providers/Microsoft.Compute/virtualMachineScaleSets?${v(COMPUTE)}`)).value || [];
  const rows = [];
  for (const s of sets) {
    const pools = (s.properties?.virtualMachineProfile?.networkProfile?.networkInterfaceConfigurations || [])
      .flatMap((n) => n.properties?.ipConfigurations || [])
      .flatMap((c) => [...(c.properties?.loadBalancerBackendAddressPools || []), ...(c.properties?.applicationGatewayBackendAddressPools || [])])
      .map((p) => p.id).filter((id) => id.toLowerCase().startsWith(`${resourceId.toLowerCase()}/`));
    if (!pools.length) continue;
    const insts = (await arm.get(`${s.id}/virtualMachines?${v(COMPUTE)}&$expand=instanceView`)).value || [];
    for (const i of insts) rows.push([pools.map((p) => p.split("/").pop()).join(", "), `${s.name}/${i.instanceId}`, shoalView(i).address || "-", health(i), power(i)]);
  }
  return rows;
}

export async function networkPage(main, sub) {
  main.replaceChildren(el("h1", {}, "Load balancers and gateways"), el("p", {}, "Loading…"));
  const [lbs, gws] = await Promise.all([
    arm.get(`/subscriptions/${sub}/providers/Microsoft.Network/loadBalancers?${v(NETWORK)}`).then((r) => r.value || []).catch(() => []),
    arm.get(`/subscriptions/${sub}/providers/Microsoft.Network/applicationGateways?${v(NETWORK)}`).then((r) => r.value || []).catch(() => []),
  ]);
  const parts = [];
  for (const r of [...lbs, ...gws]) {
    const members = await membersOf(sub, r.id).catch(() => []);
    parts.push(section(r.name, `lb-${r.name}`, frontendsAndRules(r),
      table(`Members of ${r.name}`, ["Pool", "Instance", "Address", "Probe state", "Power"], members)));
  }
  main.replaceChildren(el("h1", {}, "Load balancers and gateways"), ...(parts.length ? parts : [el("p", {}, "No load balancer or application gateway yet.")]));
}
