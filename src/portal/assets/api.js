// Calls to the events API (/events/...) and the portal's own routes, with the session cookie the
// browser sends by itself and, on every change, the session's CSRF token — held only here, in
// memory, never in storage or a cookie the page can read.
let csrf = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export function session(token, signedOut) { csrf = token; if (signedOut) onSignedOut = signedOut; }

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(path, {
    method, headers, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await parse(response);
  if (response.status === 401 && csrf) { csrf = null; onSignedOut(); }
  if (!response.ok) throw new ApiError(response.status, (data && data.message) || response.statusText);
  return data;
}

async function parse(response) {
  const text = await response.text();
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

// Trades the key for a session; the key goes in one header of one request and is not kept.
export async function signIn(key) {
  const response = await fetch("/portal/api/session", {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { Accept: "application/json", "X-API-Key": key },
  });
  const data = await parse(response);
  if (!response.ok) throw new ApiError(response.status, (data && data.message) || response.statusText);
  return data;
}

export async function currentSession() {
  const response = await fetch("/portal/api/session", { credentials: "same-origin", cache: "no-store" });
  return response.ok ? parse(response) : null;
}

export const webhookPath = (id, rest = "") => "/portal/events/webhooks/" + encodeURIComponent(id) + rest;

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? "?" + text : "";
}
