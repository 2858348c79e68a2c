// Small DOM helpers every page uses: elements, tables, the confirmation dialog, action
// buttons that respect the caller's role, and formatting.
import { can } from "./api.js";

/// An element: `attrs` values that are functions become event listeners (`onclick`),
/// `false`/`null` attributes are left out.
export function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "line", "polyline", "rect", "text", "circle", "title", "path"].includes(tag);
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [k, val] of Object.entries(attrs)) {
    if (val === false || val === null || val === undefined) continue;
    if (typeof val === "function") e.addEventListener(k.replace(/^on/, ""), val);
    else e.setAttribute(k, val === true ? "" : String(val));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

export function say(text) { document.getElementById("status").textContent = text; }

export function table(caption, head, rows, attrs = {}) {
  const t = el("table", attrs, el("caption", { class: "reason" }, caption));
  t.append(el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))));
  t.append(el("tbody", {}, rows.length
    ? rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c ?? "-"))))
    : el("tr", {}, el("td", { colspan: head.length }, "None."))));
  return el("div", { class: "table-wrap", tabindex: 0, role: "region", "aria-label": caption }, t);
}

export function section(title, id, ...children) {
  return el("section", { class: "card", "aria-labelledby": `${id}-h`, id }, el("h2", { id: `${id}-h` }, title), ...children);
}

/// Asks before an action; resolves true when the user confirms.
export function confirmAction(text) {
  return new Promise((resolve) => {
    const d = el("dialog", { "aria-labelledby": "confirm-text", id: "confirm" });
    const done = (ok) => { d.close(); d.remove(); resolve(ok); };
    d.append(
      el("p", { id: "confirm-text" }, text),
      el("div", { class: "actions" },
        el("button", { type: "button", class: "secondary", id: "confirm-cancel", onclick: () => done(false) }, "Cancel"),
        el("button", { type: "button", id: "confirm-ok", onclick: () => done(true) }, "Confirm")),
    );
    d.addEventListener("cancel", (ev) => { ev.preventDefault(); done(false); });
    document.body.append(d);
    d.showModal();
    d.querySelector("#confirm-ok").focus();
  });
}

/// The line under a page's actions that says how the last one went.
export function resultLine() {
  return el("div", { id: "action-result", role: "alert", class: "result" });
}

/// Runs `fn` after a confirmation, showing progress and the outcome (the ARM error when
/// it fails) in `out`.
export async function act(label, fn, out, { ask = true } = {}) {
  if (ask && !(await confirmAction(`${label}?`))) return false;
  out.className = "result"; out.textContent = `${label}: in progress…`;
  try {
    await fn((status) => { out.textContent = `${label}: ${status}…`; });
    out.className = "result ok"; out.textContent = `${label}: done.`;
    return true;
  } catch (e) {
    out.className = "result error"; out.textContent = `${label} failed. ${e}`;
    return false;
  }
}

/// A button for `action` (an ARM action name): disabled, with the reason shown, when the
/// caller's role does not allow it.
export function actionButton(perms, action, label, onclick, attrs = {}) {
  const allowed = can(perms, action);
  const b = el("button", { type: "button", ...attrs, disabled: !allowed, onclick: allowed ? onclick : null }, label);
  if (!allowed) {
    b.title = `Your role does not allow ${action} here.`;
    b.setAttribute("aria-describedby", "role-note");
    const note = document.getElementById("role-note");
    note.hidden = false;
    note.textContent = "Some actions are off: your role does not allow them here (hover or focus a button for the action it needs). Ask an Owner for a role such as Contributor.";
  }
  return b;
}

export function time(t) {
  if (!t) return "-";
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toLocaleString();
}

export function bytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${units[i]}`;
}

export function link(href, text) { return el("a", { href }, text); }

/// A link to the JSON view of a resource.
export function jsonLink(id) { return link(`/ui/json?id=${encodeURIComponent(id)}`, "JSON view"); }

/// Calls `fn` now and every `ms` while the page shows `node`; stops when it is replaced.
export function every(ms, node, fn) {
  const tick = async () => {
    if (!node.isConnected) return;
    await fn();
    if (node.isConnected) setTimeout(tick, ms);
  };
  return tick();
}
