// One instance: where it runs and how it is, its charts, and its output (the serial
// console of a VM, or the process's stdout and stderr) following live.
import { arm, COMPUTE, setPath, v, enc } from "./api.js";
import { el, table, section, every, jsonLink, link, say } from "./dom.js";
import { health, power, shoalView } from "./overview.js";
import { chartsSection } from "./charts.js";

export async function instancePage(main, sub, rg, name, id) {
  const set = setPath(sub, rg, name);
  const path = `${set}/virtualMachines/${enc(id)}`;
  const facts = el("div", { id: "instance-facts" });
  const charts = el("div", { id: "charts" });
  const logs = el("pre", { id: "logs", class: "logs", tabindex: 0, "aria-label": `Output of instance ${id}` }, "Loading…");
  const follow = el("input", { type: "checkbox", id: "follow", checked: true });
  main.replaceChildren(
    el("p", {}, link(`/ui/scalesets/${enc(rg)}/${enc(name)}`, `← Scale set ${name}`)),
    el("h1", {}, `Instance ${id} of ${name}`), facts,
    section("Charts", "charts-section", charts),
    section("Output (serial console / logs)", "logs-section",
      el("div", { class: "actions" }, follow, el("label", { for: "follow", class: "inline" }, "Follow (refresh every 3 s, scroll to the end)")), logs));
  await every(3000, facts, async () => {
    try {
      const i = await arm.get(`${path}?${v(COMPUTE)}&$expand=instanceView`);
      const sh = shoalView(i), p = i.properties || {};
      facts.replaceChildren(table(`Instance ${id}`, ["Host", "Address", "Power", "Health", "Zone", "Fault domain", "Image", "Latest model", "Restarts", "Process"],
        [[sh.host, sh.address, power(i), health(i), (i.zones || ["-"])[0], String(p.instanceView?.platformFaultDomain ?? "-"), sh.imageVersion,
          p.latestModelApplied ? "yes" : "no", String(sh.restarts ?? 0), String(sh.pid ?? "-")]]), el("p", {}, jsonLink(i.id)));
      say(`Updated ${new Date().toLocaleTimeString()}`);
    } catch (e) { facts.replaceChildren(el("p", { class: "error", role: "alert" }, String(e))); }
  });
  chartsSection(charts, { sub, set, instance: id });
  every(3000, logs, async () => {
    if (!follow.checked && logs.dataset.loaded) return;
    try {
      const text = await arm.text(`${path}/shoal/logs?${v(COMPUTE)}&tail=500`);
      logs.textContent = text || "(no output yet)";
      logs.dataset.loaded = "1";
      if (follow.checked) logs.scrollTop = logs.scrollHeight;
    } catch (e) { logs.textContent = String(e); }
  });
}
