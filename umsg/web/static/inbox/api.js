// The token API from the browser: the bearer token lives in sessionStorage (this tab only),
// media is fetched with the token and shown through blob: URLs (no token ever in a URL).

const KEY = "umsg.token";
// A browser session expires unless refreshed; the page refreshes it (a new token, the old one
// revoked) on the first request after half its lifetime, so an inbox in use stays signed in
// and an abandoned one lapses (accounts.session_idle_seconds on the server).
const EXPIRES = "umsg.token.expires";
const ISSUED = "umsg.token.issued";
const REFRESH = "/api/v1/session/refresh";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value, expiresAt) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
  if (value && expiresAt) {
    sessionStorage.setItem(EXPIRES, expiresAt);
    sessionStorage.setItem(ISSUED, new Date().toISOString());
  } else {
    sessionStorage.removeItem(EXPIRES);
    sessionStorage.removeItem(ISSUED);
  }
}

let refreshing = null;

// One refresh at a time: requests made meanwhile wait for it and then use the new token.
async function refreshIfDue() {
  const expires = Date.parse(sessionStorage.getItem(EXPIRES) || "");
  const issued = Date.parse(sessionStorage.getItem(ISSUED) || "");
  if (!token() || Number.isNaN(expires) || Number.isNaN(issued) || Date.now() < issued + (expires - issued) / 2) return;
  refreshing ??= (async () => {
    try {
      const resp = await fetch(REFRESH, { method: "POST", headers: { Accept: "application/json", Authorization: `Bearer ${token()}` } });
      if (resp.ok) {
        const data = await resp.json();
        setToken(data.token, data.expires_at);
      }
    } catch {
      // The request that follows reports the network error; the old token still works until it expires.
    } finally {
      refreshing = null;
    }
  })();
  await refreshing;
}

export async function api(method, path, body) {
  if (path !== "/api/v1/session" || method !== "POST") await refreshIfDue();
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const data = resp.headers.get("Content-Type")?.includes("json") ? await resp.json() : null;
  if (!resp.ok) {
    const message = data?.error?.message || `${method} ${path}: HTTP ${resp.status}`;
    if (resp.status === 401 && path !== "/api/v1/session") window.dispatchEvent(new CustomEvent("umsg-signed-out"));
    throw new ApiError(resp.status, message);
  }
  return data;
}

// One blob: URL per media path, kept while the page lives (media of a part never changes).
const blobs = new Map();

export function mediaUrl(path) {
  if (!blobs.has(path)) {
    blobs.set(path, (async () => {
      await refreshIfDue();
      const resp = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
      if (!resp.ok) throw new ApiError(resp.status, `cannot load ${path}: HTTP ${resp.status}`);
      return URL.createObjectURL(await resp.blob());
    })());
    blobs.get(path).catch(() => blobs.delete(path));
  }
  return blobs.get(path);
}

export function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}
