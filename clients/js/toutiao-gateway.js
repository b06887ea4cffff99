// toutiao-gateway's client: the front-end half of its token scheme, with no dependencies.
//
// Send the access token with every call; on 401 refresh with the refresh token and try the call once
// more; when the refresh endpoint answers 403 the refresh token is dead too: clear the tokens and go
// back to the login screen. Calls that fail together wait for one refresh (single flight), and tabs of
// one origin share their tokens through `storage`, so that two tabs never spend one refresh token twice
// where the browser can prevent it (Web Locks), and stay logged in where it cannot (the gateway hands
// concurrent refreshes the same successor for `jwt.rotation_grace`).

const TOKENS = "toutiao-gateway:tokens"; // the storage key, per gateway: ":<baseUrl>" follows unless it is ""
const LOCK = "toutiao-gateway:refresh";

/** An answer of the gateway that is not a success: its HTTP status and the gateway's `message`. */
export class GatewayError extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.name = "GatewayError";
    this.status = status;
    this.body = body;
  }
}

/** The refresh token is dead (403 from the refresh endpoint, or there is none): log in again. */
export class LoginRequiredError extends GatewayError {
  constructor(status, message, body = null) {
    super(status, message, body);
    this.name = "LoginRequiredError";
  }
}

/**
 * @param {object} [options]
 * @param {string} [options.baseUrl] the gateway's address, "" for the page's own origin
 * @param {Storage} [options.storage] where the tokens live (localStorage: shared by the origin's tabs)
 * @param {() => void} [options.onLoginRequired] called once the tokens are gone: show the login screen
 * @param {typeof fetch} [options.fetch] the fetch to send with
 */
export function createClient({
  baseUrl = "",
  storage = globalThis.localStorage,
  onLoginRequired,
  fetch: send = globalThis.fetch?.bind(globalThis),
} = {}) {
  if (!storage) throw new TypeError("createClient needs a storage (localStorage in a browser)");
  if (!send) throw new TypeError("createClient needs a fetch");
  const base = baseUrl.replace(/\/+$/, "");
  const key = base ? `${TOKENS}:${base}` : TOKENS; // tokens are a gateway's, never sent to another
  let inFlight = null; // the refresh under way in this tab: every call that needs one waits for it

  const read = () => {
    try {
      const tokens = JSON.parse(storage.getItem(key));
      return tokens && typeof tokens.token === "string" && typeof tokens.refresh_token === "string" ? tokens : null;
    } catch {
      return null;
    }
  };
  const write = (tokens) => storage.setItem(key, JSON.stringify(tokens));
  const forget = () => storage.removeItem(key);

  // Clear the tokens; onLoginRequired once per clearing (not again for calls that find them gone).
  const loginRequired = async (response) => {
    const had = read() !== null;
    forget();
    if (had && onLoginRequired) onLoginRequired();
    const body = response ? await bodyOf(response) : null;
    return new LoginRequiredError(response ? response.status : 401,
      (body && body.message) || "Log in again: the session is over.", body);
  };

  // Another tab logged out (or its refresh token died): this one is logged out too.
  if (typeof globalThis.addEventListener === "function") {
    globalThis.addEventListener("storage", (event) => {
      if (event.key === key && event.newValue === null && event.oldValue !== null && onLoginRequired) {
        onLoginRequired();
      }
    });
  }

  async function own(method, path, { body, token } = {}) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers["Authorization"] = `Bearer ${token}`;
    return send(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  async function failed(response) {
    const body = await bodyOf(response);
    return new GatewayError(response.status, (body && body.message) || response.statusText || "Request failed.", body);
  }

  /** GET /v1_0/sms/codes/{mobile}: the gateway sends a code. Resolves with the normalized mobile. */
  async function requestCode(mobile) {
    const response = await own("GET", `/v1_0/sms/codes/${encodeURIComponent(mobile)}`);
    if (!response.ok) throw await failed(response);
    return (await response.json()).mobile;
  }

  /** POST /v1_0/authorizations with {mobile, code}, {mobile, password} or {account, password}. */
  async function login(credentials) {
    const response = await own("POST", "/v1_0/authorizations", { body: credentials });
    if (response.status !== 201) throw await failed(response);
    const tokens = await response.json();
    write({ token: tokens.token, refresh_token: tokens.refresh_token });
    return tokens;
  }

  /** DELETE /v1_0/authorizations, then the tokens are cleared, whatever the answer. */
  async function logout() {
    const tokens = read();
    try {
      if (tokens) await own("DELETE", "/v1_0/authorizations", { token: tokens.refresh_token });
    } finally {
      forget();
    }
  }

  /** A fresh access token, from one refresh however many calls ask at once. `stale`: the token a call got
   * 401 with; when storage already holds another (another call or tab refreshed), that one is used. */
  function refreshed(stale) {
    if (!inFlight) {
      inFlight = acrossTabs(() => refresh(stale)).finally(() => {
        inFlight = null;
      });
    }
    return inFlight;
  }

  function acrossTabs(job) {
    const locks = globalThis.navigator && globalThis.navigator.locks;
    return locks ? locks.request(LOCK, job) : job();
  }

  async function refresh(stale) {
    const tokens = read();
    if (!tokens) throw await loginRequired(null);
    if (tokens.token !== stale) return tokens.token; // refreshed meanwhile, here or in another tab
    const response = await own("PUT", "/v1_0/authorizations", { token: tokens.refresh_token });
    if (response.status === 201) {
      const fresh = await response.json();
      const now = read();
      if (!now || now.refresh_token !== tokens.refresh_token) {
        // Storage changed while the refresh was under way: a logout (do not bring the tokens back) or
        // another tab's login; theirs stand.
        if (!now) throw await loginRequired(null);
        return now.token;
      }
      // with jwt.rotate_refresh_tokens a new refresh token comes too, and the old one is spent
      write({ token: fresh.token, refresh_token: fresh.refresh_token || tokens.refresh_token });
      return fresh.token;
    }
    if (response.status === 403) throw await loginRequired(response);
    throw await failed(response);
  }

  /** The call, with the access token; on 401 one refresh and one more try. Resolves with the Response,
   * whatever its status; rejects with LoginRequiredError when the session is over, with a GatewayError
   * when the refresh itself failed otherwise (429, 503), and as fetch does when the network fails. */
  async function call(path, init = {}) {
    const tokens = read();
    const token = tokens ? tokens.token : null;
    const first = await send(base + path, withToken(init, token));
    if (first.status !== 401 || !tokens || !replayable(init.body)) return first;
    const fresh = await refreshed(token);
    if (first.body) first.body.cancel().catch(() => {}); // the 401 is not read: let its connection go
    return send(base + path, withToken(init, fresh));
  }

  return {
    requestCode,
    login,
    logout,
    fetch: call,
    isLoggedIn: () => read() !== null,
    /** The stored tokens, or null (for showing the access token's remaining time, say). */
    tokens: read,
  };
}

function withToken(init, token) {
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", `Bearer ${token}`);
  else headers.delete("Authorization");
  return { ...init, headers };
}

/** A body that can be sent a second time: none, a string, bytes, form data or search params; not a stream. */
function replayable(body) {
  if (body === undefined || body === null || typeof body === "string") return true;
  if (typeof ReadableStream !== "undefined" && body instanceof ReadableStream) return false;
  return !(body && typeof body.getReader === "function") && !(body && typeof body.pipe === "function");
}

async function bodyOf(response) {
  try {
    return await response.clone().json();
  } catch {
    return null;
  }
}

/** Seconds until a JWT's `exp`, from its payload (not verified: for display only). */
export function secondsLeft(token, now = Date.now()) {
  try {
    const payload = JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    return Math.max(0, Math.round(payload.exp - now / 1000));
  } catch {
    return 0;
  }
}
