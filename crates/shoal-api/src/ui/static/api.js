// Calls the ARM API through the portal's session proxy (/ui/api/...), which adds the
// session's bearer token; state-changing calls send the CSRF token (double submit).
const API = "/ui/api";

export const COMPUTE = "2024-07-01";
export const NETWORK = "2024-05-01";
export const INSIGHTS = "2022-10-01";
export const AUTH = "2022-04-01";
export const RESOURCES = "2022-09-01";

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)shoal_csrf=([^;]+)/);
  return m ? m[1] : "";
}

export class ArmError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || String(status);
    this.target = e.target;
  }
  toString() { return `${this.code}: ${this.message}${this.target ? ` (target: ${this.target})` : ""}`; }
}

async function call(method, path, body, { text = false } = {}) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const raw = await resp.text();
  let json = null;
  try { json = raw ? JSON.parse(raw) : null; } catch { json = null; }
  if (resp.status === 401 && path.startsWith(API)) {
    // The session ended (signed out elsewhere, or its token expired): sign in again.
    location.assign("/ui/");
  }
  if (!resp.ok) throw new ArmError(resp.status, json);
  return { status: resp.status, json, text: text ? raw : undefined, headers: resp.headers };
}

/// The path (through the proxy) of an absolute operation URL the API answered.
function viaProxy(url) {
  const u = new URL(url, location.origin);
  return API + u.pathname + u.search;
}

/// Waits for a long-running operation the API accepted (202 with Azure-AsyncOperation or
/// Location) and resolves with its final status; throws the operation's ARM error.
async function settle(r, onProgress) {
  const op = r.headers.get("Azure-AsyncOperation") || r.headers.get("Location");
  if (r.status !== 202 || !op) return r.json;
  const deadline = Date.now() + 15 * 60 * 1000;
  while (Date.now() < deadline) {
    await new Promise((res) => setTimeout(res, 1000));
    const s = await call("GET", viaProxy(op));
    const status = s.json?.status || (s.status === 200 ? "Succeeded" : "InProgress");
    if (onProgress) onProgress(status);
    if (status === "Succeeded") return s.json;
    if (status === "Failed" || status === "Canceled") {
      throw new ArmError(400, { error: s.json?.error || { code: status, message: `The operation ${status.toLowerCase()}.` } });
    }
  }
  throw new ArmError(504, { error: { code: "Timeout", message: "The operation is still running; look again later." } });
}

export const arm = {
  get: (p) => call("GET", API + p).then((r) => r.json),
  text: (p) => call("GET", API + p, undefined, { text: true }).then((r) => r.text),
  put: (p, b) => call("PUT", API + p, b),
  patch: (p, b) => call("PATCH", API + p, b),
  post: (p, b) => call("POST", API + p, b),
  del: (p) => call("DELETE", API + p),
  settle,
};

export const session = {
  get: () => call("GET", "/ui/session").then((r) => r.json),
  signIn: (body) => call("POST", "/ui/session", body).then((r) => r.json),
  signOut: () => call("DELETE", "/ui/session"),
};

// ---------------------------------------------------------------------------------------
// Paths.

export const enc = encodeURIComponent;
export const groupPath = (sub, rg) => `/subscriptions/${sub}/resourceGroups/${enc(rg)}`;
export const setPath = (sub, rg, name) =>
  `${groupPath(sub, rg)}/providers/Microsoft.Compute/virtualMachineScaleSets/${enc(name)}`;
export const v = (api) => `api-version=${api}`;

// ---------------------------------------------------------------------------------------
// Access control: what the caller may do at a scope, as Azure's permissions API answers.

const cache = new Map();

/// The caller's permissions at `scope` (a list of {actions, notActions}); none when the
/// caller holds no role there.
export async function permissions(scope) {
  if (!cache.has(scope)) {
    cache.set(scope, arm.get(`${scope}/providers/Microsoft.Authorization/permissions?${v(AUTH)}`)
      .then((r) => r.value || [])
      .catch(() => []));
  }
  return cache.get(scope);
}

function matches(pattern, action) {
  const re = new RegExp("^" + pattern.split("*").map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, "\\$&")).join(".*") + "$", "i");
  return re.test(action);
}

/// Whether one of the caller's roles allows `action`.
export function can(perms, action) {
  return perms.some((p) => (p.actions || []).some((a) => matches(a, action))
    && !(p.notActions || []).some((a) => matches(a, action)));
}
