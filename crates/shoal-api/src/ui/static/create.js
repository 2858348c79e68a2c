// Create a scale set from an image: the same PUT `shoal vmss create` sends, with an
// optional HTTP health probe (the Application Health extension) so the grid shows health.
import { arm, COMPUTE, RESOURCES, groupPath, setPath, permissions, v, enc } from "./api.js";
import { el, act, actionButton, resultLine } from "./dom.js";

async function imageVersions(sub) {
  const galleries = (await arm.get(`/subscriptions/${sub}/providers/Microsoft.Compute/galleries?${v(COMPUTE)}`)).value || [];
  const out = [];
  for (const g of galleries) {
    const images = (await arm.get(`${g.id}/images?${v(COMPUTE)}`).catch(() => ({ value: [] }))).value || [];
    for (const i of images) {
      const versions = (await arm.get(`${i.id}/versions?${v(COMPUTE)}`).catch(() => ({ value: [] }))).value || [];
      for (const ver of versions) out.push({ id: ver.id, label: `${g.name}/${i.name}:${ver.name}`, port: ver.properties?.shoal?.port });
    }
  }
  return out;
}

function field(id, label, input, hint) {
  return [el("label", { for: id }, label), input, hint ? el("p", { class: "reason", id: `${id}-hint` }, hint) : null];
}

export async function createPage(main, sub) {
  main.replaceChildren(el("h1", {}, "Create a scale set"), el("p", {}, "Loading images and sizes…"));
  const [groups, images, sizes, perms] = await Promise.all([
    arm.get(`/subscriptions/${sub}/resourcegroups?${v(RESOURCES)}`).then((r) => r.value || []),
    imageVersions(sub),
    arm.get(`/subscriptions/${sub}/providers/Microsoft.Compute/locations/local/vmSizes?${v(COMPUTE)}`).then((r) => r.value || []).catch(() => []),
    permissions(`/subscriptions/${sub}`),
  ]);
  const out = resultLine();
  const sizeNames = sizes.map((s) => s.name);
  const preferred = sizeNames.find((n) => n.startsWith("Shoal_1vCPU")) || sizeNames[0] || "Shoal_1vCPU_512MB";
  const f = el("form", { id: "create-form", class: "card" },
    ...field("c-group", "Resource group", el("input", { id: "c-group", name: "group", list: "c-groups", required: true, autocomplete: "off", value: groups[0]?.name || "" }),
      "An existing group, or a new name (created in location 'local')."),
    el("datalist", { id: "c-groups" }, groups.map((g) => el("option", { value: g.name }))),
    ...field("c-name", "Scale set name", el("input", { id: "c-name", name: "name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", autocomplete: "off" })),
    ...field("c-image", "Image", el("select", { id: "c-image", name: "image", required: true },
      images.length ? images.map((i) => el("option", { value: i.id, "data-port": i.port ?? "" }, i.label)) : el("option", { value: "" }, "No image yet: upload one with shoal image create")),
      null),
    ...field("c-size", "Size", el("select", { id: "c-size", name: "size" }, sizeNames.map((n) => el("option", { value: n, selected: n === preferred }, n)))),
    ...field("c-count", "Instance count", el("input", { id: "c-count", name: "count", type: "number", min: 0, max: 1000, value: 2, required: true })),
    ...field("c-upgrade", "Upgrade policy", el("select", { id: "c-upgrade", name: "upgrade" }, ["Manual", "Automatic", "Rolling"].map((m) => el("option", { value: m }, m)))),
    ...field("c-zones", "Zones (optional)", el("input", { id: "c-zones", name: "zones", placeholder: "1 2 3", autocomplete: "off" }), "Spread instances over hosts in these zones."),
    ...field("c-health", "Health probe path (optional)", el("input", { id: "c-health", name: "health", value: "/", autocomplete: "off" }),
      "Instances report healthy when this path answers 2xx on the image's port. Leave empty for no probe."),
    ...field("c-data", "Custom data (optional)", el("textarea", { id: "c-data", name: "data", rows: 3 })));
  const submit = actionButton(perms, "Microsoft.Compute/virtualMachineScaleSets/write", "Create", null, { type: "submit", id: "c-submit" });
  f.append(el("div", { class: "actions" }, submit), out);
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (submit.disabled) return;
    const rg = f.group.value.trim(), name = f.name.value.trim();
    const image = images.find((i) => i.id === f.image.value);
    const props = {
      orchestrationMode: "Uniform",
      upgradePolicy: { mode: f.upgrade.value },
      virtualMachineProfile: {
        osProfile: { computerNamePrefix: name },
        storageProfile: { imageReference: { id: f.image.value } },
      },
    };
    if (f.data.value) props.virtualMachineProfile.osProfile.customData = btoa(unescape(encodeURIComponent(f.data.value)));
    if (f.health.value.trim() && image?.port) {
      props.virtualMachineProfile.extensionProfile = { extensions: [{ name: "health", properties: {
        publisher: "Microsoft.ManagedServices", type: "ApplicationHealthLinux", typeHandlerVersion: "1.0",
        settings: { protocol: "http", port: image.port, requestPath: f.health.value.trim() } } }] };
    }
    const body = { location: "local", sku: { name: f.size.value, capacity: Number(f.count.value) }, properties: props };
    const zones = f.zones.value.split(/[\s,]+/).filter(Boolean);
    if (zones.length) body.zones = zones;
    act(`Create scale set ${name} in ${rg}`, async (progress) => {
      if (!groups.some((g) => g.name.toLowerCase() === rg.toLowerCase())) {
        await arm.put(`${groupPath(sub, rg)}?${v(RESOURCES)}`, { location: "local" });
      }
      const r = await arm.put(`${setPath(sub, rg, name)}?${v(COMPUTE)}`, body);
      // The set exists once the PUT is accepted; its page shows the instances coming up.
      history.pushState(null, "", `/ui/scalesets/${enc(rg)}/${enc(name)}`);
      dispatchEvent(new PopStateEvent("popstate"));
      return r;
    }, out, { ask: false });
  });
  main.replaceChildren(el("h1", {}, "Create a scale set"), f);
}
