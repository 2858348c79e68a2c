// Access control: the role assignments that apply at a scope (inherited from above or
// made there), with the role's name and the principal's name where the caller may read it.
import { arm, AUTH, v } from "./api.js";
import { el, table } from "./dom.js";

async function names(sub) {
  const roles = new Map(), principals = new Map();
  try {
    const r = await arm.get(`/subscriptions/${sub}/providers/Microsoft.Authorization/roleDefinitions?${v(AUTH)}`);
    for (const d of r.value || []) roles.set(d.name.toLowerCase(), d.properties?.roleName);
  } catch { /* ids shown */ }
  try {
    const r = await arm.get(`/providers/Shoal.Directory/servicePrincipals?api-version=2024-01-01`);
    for (const p of r.value || []) principals.set((p.objectId || p.id || "").toLowerCase(), p.displayName || p.appId);
  } catch { /* a Reader may not list principals: ids shown */ }
  return { roles, principals };
}

/// The assignments at or above `scope`, as a table in `box`.
export async function assignmentsTable(box, sub, scope) {
  const [list, { roles, principals }] = await Promise.all([
    arm.get(`${scope}/providers/Microsoft.Authorization/roleAssignments?${v(AUTH)}&$filter=${encodeURIComponent("atScope()")}`)
      .catch(() => arm.get(`/subscriptions/${sub}/providers/Microsoft.Authorization/roleAssignments?${v(AUTH)}`)),
    names(sub),
  ]);
  const lower = scope.toLowerCase();
  const rows = (list.value || [])
    .filter((a) => { const s = (a.properties?.scope || "").toLowerCase(); return s === "/" || lower === s || lower.startsWith(`${s}/`); })
    .map((a) => {
      const p = a.properties || {};
      const roleId = (p.roleDefinitionId || "").split("/").pop().toLowerCase();
      return [roles.get(roleId) || roleId, principals.get((p.principalId || "").toLowerCase()) || p.principalId, p.principalType || "-",
        p.scope === scope ? "This resource" : `Inherited from ${p.scope}`];
    });
  box.replaceChildren(table(`Role assignments that apply to ${scope}`, ["Role", "Principal", "Type", "Scope"], rows, { class: "assignments" }));
}

export async function accessPage(main, sub) {
  const box = el("div", { id: "access" });
  main.replaceChildren(el("h1", {}, "Access control"),
    el("p", {}, "Roles are assigned with ", el("code", {}, "shoal ad sp create-for-rbac --role ROLE --scopes SCOPE"), " or az role assignment create."), box);
  await assignmentsTable(box, sub, `/subscriptions/${sub}`);
}
