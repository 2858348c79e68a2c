// Calls the ARM API through the portal's session proxy (/ui/api/...), which adds the
// session's bearer token; state-changing calls send the CSRF token (double submit).
const API = "/ui/api";

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
  toString() { return `${this.code}: ${this.message}`; }
}

async function call(method, path, body) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { json = null; }
  if (!resp.ok) throw new ArmError(resp.status, json);
  return { status: resp.status, json, headers: resp.headers };
}

export const arm = {
  get: (p) => call("GET", API + p).then((r) => r.json),
  put: (p, b) => call("PUT", API + p, b),
  post: (p, b) => call("POST", API + p, b),
  del: (p) => call("DELETE", API + p),
};

export const session = {
  get: () => call("GET", "/ui/session").then((r) => r.json),
  signIn: (body) => call("POST", "/ui/session", body).then((r) => r.json),
  signOut: () => call("DELETE", "/ui/session"),
};

export const COMPUTE = "2024-07-01";
