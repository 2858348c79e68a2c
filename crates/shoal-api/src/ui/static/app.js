// The portal's entry: who is signed in, the sign-in form, and a small path router.
import { arm, session, COMPUTE, v } from "./api.js";
import { el, say } from "./dom.js";
import { overview } from "./overview.js";
import { scaleSetPage } from "./scaleset.js";
import { instancePage } from "./instance.js";
import { createPage } from "./create.js";
import { networkPage } from "./network.js";
import { activityPage } from "./activity.js";
import { accessPage } from "./access.js";

const main = document.getElementById("main");

function signInForm(info) {
  const f = el("form", { class: "card", id: "signin", "aria-labelledby": "signin-h" });
  f.append(
    el("h1", { id: "signin-h" }, "Sign in to Shoal"),
    el("p", {}, "With a service principal (", el("code", {}, "shoal ad sp create-for-rbac"), "): its tenant, application id and secret."),
    el("label", { for: "tenant" }, "Directory (tenant) ID"),
    el("input", { id: "tenant", name: "tenant", autocomplete: "off", value: info.tenantId || "", required: true }),
    el("label", { for: "clientId" }, "Application (client) ID"),
    el("input", { id: "clientId", name: "clientId", autocomplete: "username", required: true }),
    el("label", { for: "clientSecret" }, "Client secret"),
    el("input", { id: "clientSecret", name: "clientSecret", type: "password", autocomplete: "current-password", required: true }),
    el("div", { class: "actions" }, el("button", { type: "submit" }, "Sign in")),
  );
  const err = el("div", { id: "signin-error", role: "alert" });
  f.append(err);
  f.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = ""; err.className = "";
    try {
      await session.signIn({ tenant: f.tenant.value, clientId: f.clientId.value, clientSecret: f.clientSecret.value });
      location.reload();
    } catch (e) { err.className = "error"; err.textContent = String(e); }
  });
  main.replaceChildren(f);
  if (info.ownerSignIn) {
    const b = el("button", { type: "button", class: "secondary", id: "owner-signin" }, "Sign in as local owner");
    b.addEventListener("click", async () => {
      try { await session.signIn({ owner: true }); location.reload(); }
      catch (e) { err.className = "error"; err.textContent = String(e); }
    });
    main.append(el("div", { class: "card" },
      el("p", {}, "On this machine you can use the owner credential the server made at first start."), b));
  }
}

async function jsonPage(id) {
  main.replaceChildren(el("h1", {}, "JSON view"), el("p", {}, el("code", {}, id || "")));
  try {
    const api = /virtualMachineScaleSets|galleries/i.test(id) ? COMPUTE : /Microsoft\.Network/i.test(id) ? "2024-05-01" : "2022-09-01";
    const val = await arm.get(`${id}?${v(api)}`);
    main.append(el("pre", { class: "json", tabindex: "0", "aria-label": "Resource JSON" }, JSON.stringify(val, null, 2)));
  } catch (e) { main.append(el("div", { class: "error", role: "alert" }, String(e))); }
}

async function route(info) {
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const sub = info.subscriptionId;
  const note = document.getElementById("role-note");
  note.hidden = true; note.textContent = "";
  for (const a of document.querySelectorAll("#nav a")) {
    const here = a.getAttribute("href") === `/ui/${parts[0] || ""}`.replace(/\/$/, "/");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    if (parts[0] === "json") return await jsonPage(new URLSearchParams(location.search).get("id"));
    if (parts[0] === "scalesets" && parts.length === 3) return await scaleSetPage(main, sub, parts[1], parts[2]);
    if (parts[0] === "scalesets" && parts.length === 5 && parts[3] === "instances") return await instancePage(main, sub, parts[1], parts[2], parts[4]);
    if (parts[0] === "create") return await createPage(main, sub);
    if (parts[0] === "network") return await networkPage(main, sub);
    if (parts[0] === "activity") return await activityPage(main, sub);
    if (parts[0] === "access") return await accessPage(main, sub);
    return await overview(main, sub);
  } catch (e) {
    main.replaceChildren(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert" }, String(e)));
  }
}

async function start() {
  let info;
  try { info = await session.get(); } catch (e) { say(String(e)); return; }
  if (!info.signedIn) return signInForm(info);
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = `Signed in as ${info.appId}`;
  const out = document.getElementById("signout");
  out.hidden = false;
  out.addEventListener("click", async () => { await session.signOut().catch(() => {}); location.assign("/ui/"); });
  // Links inside the portal change the page without reloading it.
  document.addEventListener("click", (ev) => {
    const a = ev.target.closest?.("a[href^='/ui/']");
    if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    history.pushState(null, "", a.getAttribute("href"));
    route(info);
  });
  addEventListener("popstate", () => route(info));
  await route(info);
}

start();
