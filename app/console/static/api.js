// The API client: the key of this tab's session (sessionStorage only: never a cookie, never a URL), requests with
// it, and the run events WebSocket. A 401 from the API (an unknown, expired or revoked key) ends the session.

const STORAGE = "workflow-console.session";
const ROLE_RANK = { read: 0, submit: 1, admin: 2 };
let onUnauthenticated = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const session = {
  get current() {
    const stored = sessionStorage.getItem(STORAGE);
    return stored ? JSON.parse(stored) : null;
  },
  start(key, identity) {
    sessionStorage.setItem(STORAGE, JSON.stringify({ key, name: identity.name, role: identity.role }));
  },
  end() {
    sessionStorage.removeItem(STORAGE);
  },
  // Whether the signed-in key holds `role` or a higher one (the API's own rule; the API enforces it anyway).
  may(role) {
    const current = this.current;
    return Boolean(current) && ROLE_RANK[current.role] >= ROLE_RANK[role];
  },
};

export function whenUnauthenticated(handler) {
  onUnauthenticated = handler;
}

async function request(key, path, { method = "GET", body, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, value);
  }
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 204) return null;
  const answer = await response.json().catch(() => null);
  if (!response.ok) {
    const error = answer && answer.error ? answer.error : { code: "http_error", message: response.statusText };
    throw new ApiError(response.status, error.code, error.message);
  }
  return answer;
}

// The identity of a key (its name and role), checking that the API accepts it.
export function identify(key) {
  return request(key, "/v1/me");
}

export async function api(path, options) {
  const current = session.current;
  if (!current) throw new ApiError(401, "unauthenticated", "not signed in");
  try {
    return await request(current.key, path, options);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) onUnauthenticated(error.message);
    throw error;
  }
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

// The run's events after `after`, each passed to `onEvent`; `onClose(code)` when the stream ends. The key travels
// as a WebSocket subprotocol, so it is in no URL.
export function runEvents(runId, after, { onEvent, onClose }) {
  const current = session.current;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/v1/runs/${encodeURIComponent(runId)}/events?after=${after}`;
  const socket = new WebSocket(url, ["workflow-platform", `bearer.${base64url(current.key)}`]);
  socket.addEventListener("message", (message) => onEvent(JSON.parse(message.data)));
  socket.addEventListener("close", (closed) => {
    if (closed.code === 4401) onUnauthenticated(closed.reason || "unknown or revoked API key");
    else onClose(closed.code);
  });
  return socket;
}
