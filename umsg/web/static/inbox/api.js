// The token API from the browser: the bearer token lives in sessionStorage (this tab only),
// media is fetched with the token and shown through blob: URLs (no token ever in a URL).

const KEY = "umsg.token";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export async function api(method, path, body) {
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
