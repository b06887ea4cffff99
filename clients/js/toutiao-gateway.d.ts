/** An answer of the gateway that is not a success: its HTTP status and the gateway's `message`. */
export class GatewayError extends Error {
  constructor(status: number, message: string, body?: unknown);
  readonly status: number;
  /** The gateway's JSON error body, e.g. `{"message": "Invalid code."}`, when there was one. */
  readonly body: unknown;
}

/** The refresh token is dead (403 from the refresh endpoint, or none is stored): log in again. */
export class LoginRequiredError extends GatewayError {}

/** What `login` takes: a mobile and an SMS code, or a password with a mobile or an account. */
export type Credentials =
  | { mobile: string; code: string }
  | { mobile: string; password: string }
  | { account: string; password: string };

export interface Tokens {
  token: string;
  refresh_token: string;
}

export interface ClientOptions {
  /** The gateway's address; "" (the default) for the page's own origin. */
  baseUrl?: string;
  /** Where the tokens live (under a key of their gateway's); localStorage by default, shared by the tabs. */
  storage?: Pick<Storage, "getItem" | "setItem" | "removeItem">;
  /** Called once the tokens are gone (the refresh token died, or another tab logged out). */
  onLoginRequired?: () => void;
  /** The fetch to send with; globalThis.fetch by default. */
  fetch?: typeof fetch;
}

export interface Client {
  /** GET /v1_0/sms/codes/{mobile}. Resolves with the mobile as the gateway normalized it. */
  requestCode(mobile: string): Promise<string>;
  /** POST /v1_0/authorizations; stores the pair. Rejects with a GatewayError (400, 403, 429, 503). */
  login(credentials: Credentials): Promise<Tokens>;
  /** DELETE /v1_0/authorizations, then clears the stored tokens whatever the answer. */
  logout(): Promise<void>;
  /**
   * The call with `Authorization: Bearer <access token>`. On 401: one refresh (shared by every call that
   * needs one, and with other tabs where the browser has Web Locks), then one more try, unless the body is
   * a stream. Resolves with the Response whatever its status; rejects with LoginRequiredError (after
   * clearing the tokens and calling onLoginRequired) when the refresh endpoint answers 403, with a
   * GatewayError when the refresh fails otherwise (429, 503), and as fetch does when the network fails.
   */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  isLoggedIn(): boolean;
  /** The stored tokens, or null. */
  tokens(): Tokens | null;
}

export function createClient(options?: ClientOptions): Client;

/** Seconds until a token's `exp`, read from its payload without verifying it: for display only. */
export function secondsLeft(token: string, now?: number): number;
