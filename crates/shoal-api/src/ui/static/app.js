// The portal's entry: who is signed in, the sign-in form, and a tiny path router.
import { session } from "./api.js";
import { overview, scaleSetPage, jsonPage, el, say } from "./views.js";

const main = document.getElementById("main");

function signInForm(info) {
  const f = el("form", { class: "card", id: "signin", "aria-labelledby": "signin-h" });
  f.append(
    el("h1", { id: "signin-h" }, "Sign in to Shoal"),
    el("label", { for: "tenant" }, "Directory (tenant) ID"),
    el("input", { id: "tenant", name: "tenant", autocomplete: "off", value: info.tenantId || "", required: "" }),
    el("label", { for: "clientId" }, "Application (client) ID"),
    el("input", { id: "clientId", name: "clientId", autocomplete: "username", required: "" }),
    el("label", { for: "clientSecret" }, "Client secret"),
    el("input", { id: "clientSecret", name: "clientSecret", type: "password", autocomplete: "current-password", required: "" }),
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

async function route(info) {
  const parts = location.pathname.replace(/^\/ui\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const sub = info.subscriptionId;
  if (parts[0] === "json") return jsonPage(main, new URLSearchParams(location.search).get("id"));
  if (parts[0] === "scalesets" && parts.length === 3) return scaleSetPage(main, sub, parts[1], parts[2]);
  return overview(main, sub);
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
  await route(info);
}

start();
