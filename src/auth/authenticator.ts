import { RC } from "../mqtt/reason-codes.ts";
import { DEFAULT_ITERATIONS, dummyHash, type PasswordHash, verifyPassword } from "./password-hash.ts";

/** What a CONNECT offers to prove who it is. */
export interface Credentials {
  username: string | undefined;
  password: Uint8Array | undefined;
  /** The TLS client certificate, on TLS listeners that asked for one. */
  certificate: { verified: boolean; commonName: string | undefined } | undefined;
}

export type AuthResult =
  | {
    ok: true;
    username: string | undefined;
    via: "anonymous" | "password" | "certificate" | "unchecked";
    /** The client id to use instead of the one sent (`useUsernameAsClientId`). */
    clientId?: string | undefined;
  }
  | { ok: false; code: number; reason: string };

export interface AuthenticatorOptions {
  allowAnonymous: boolean;
  /** Take a verified certificate's Common Name as the username (Mosquitto's use_identity_as_username). */
  useIdentityAsUsername: boolean;
  /** The username replaces the client id; clients without one are refused (Mosquitto's use_username_as_clientid). */
  useUsernameAsClientId?: boolean;
  /** A session opened by one username cannot be taken over by another (`auth.bind_client_ids`). */
  bindClientIds?: boolean;
  /** Password checks run at once; the rest wait (each costs tens of milliseconds of CPU). */
  maxConcurrentChecks?: number;
  /** Password checks allowed to wait; beyond this CONNECT gets 0x89 Server busy. */
  maxWaitingChecks?: number;
}

/**
 * The hash an unknown username is verified against: the kind and cost most users in the
 * file have (ties: the costlier), so that a refusal takes as long for a user that does not
 * exist as for one that does. A fixed high cost would betray every user of a file made by
 * `mosquitto_passwd` (101 iterations: 0.6 ms against the dummy's 100 ms). Without a file,
 * or with an empty one, the default cost.
 */
export function dummyFor(users: ReadonlyMap<string, PasswordHash> | undefined): PasswordHash {
  const counts = new Map<string, { n: number; h: PasswordHash }>();
  for (const h of users?.values() ?? []) {
    const key = h.kind === "sha512" ? "sha512" : `pbkdf2:${h.iterations}`;
    const c = counts.get(key);
    if (c) c.n++;
    else counts.set(key, { n: 1, h });
  }
  let best: { n: number; h: PasswordHash } | undefined;
  for (const c of counts.values()) {
    if (!best || c.n > best.n || (c.n === best.n && cost(c.h) > cost(best.h))) best = c;
  }
  if (!best) return dummyHash(DEFAULT_ITERATIONS);
  const h = best.h;
  return h.kind === "sha512"
    ? { kind: "sha512", salt: randomBytes(h.salt.length), hash: randomBytes(h.hash.length) }
    : { ...dummyHash(h.iterations), salt: randomBytes(h.salt.length) };
}

function cost(h: PasswordHash): number {
  return h.kind === "sha512" ? 1 : h.iterations;
}

function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** Verified credentials remembered, so a reconnect storm does not cost one PBKDF2 per client. */
const CACHE_SIZE = 10_000;

/**
 * Decides whether a CONNECT may proceed: client certificate identity, then username and
 * password against the password file, then anonymous access.
 *
 * Timing: an unknown username is checked against a dummy hash with the parameters most of
 * the file's users have (see `dummyFor`), so it takes as long as a wrong password for them. Hashing runs in WebCrypto, off the event loop,
 * at most `maxConcurrentChecks` at a time, so a flood of logins cannot starve the broker.
 */
export class Authenticator {
  #users: Map<string, PasswordHash> | undefined;
  #dummy: PasswordHash = dummyHash(DEFAULT_ITERATIONS);
  /** Passed checks: username → SHA-256 of (secret key, stored hash, password). */
  #verified = new Map<string, Uint8Array>();
  #cacheKey = crypto.getRandomValues(new Uint8Array(32));
  #running = 0;
  #waiting: Array<() => void> = [];
  readonly #maxRunning: number;
  readonly #maxWaiting: number;

  constructor(private options: AuthenticatorOptions) {
    this.#maxRunning = options.maxConcurrentChecks ?? 2;
    this.#maxWaiting = options.maxWaitingChecks ?? 1000;
  }

  /** Install (or replace) the users from a password file; undefined means no password file. */
  setUsers(users: Map<string, PasswordHash> | undefined): void {
    this.#users = users;
    this.#verified.clear();
    this.#dummy = dummyFor(users);
  }

  /** What an unknown username is verified against (for tests: its kind and cost). */
  get dummy(): Readonly<PasswordHash> {
    return this.#dummy;
  }

  get hasPasswordFile(): boolean {
    return this.#users !== undefined;
  }

  get allowAnonymous(): boolean {
    return this.options.allowAnonymous;
  }

  /** Password checks under way or waiting. */
  get pending(): number {
    return this.#running + this.#waiting.length;
  }

  async authenticate(c: Credentials): Promise<AuthResult> {
    const result = await this.#authenticate(c);
    if (!result.ok || !this.options.useUsernameAsClientId) return result;
    // As Mosquitto: with use_username_as_clientid a client without a username is not authorized.
    if (result.username === undefined) {
      return {
        ok: false,
        code: RC.NOT_AUTHORIZED,
        reason: "use_username_as_clientid: no username to use as client id",
      };
    }
    return { ...result, clientId: result.username };
  }

  /**
   * May a client acting as `username` take over a session `owner` opened? Only the same
   * username (null: anonymous) when `bindClientIds` is on; a session whose owner is not
   * known (recorded before owners were kept) may be taken and then belongs to the taker.
   */
  claim(username: string | undefined, owner: string | null | undefined): AuthResult | undefined {
    if (!this.options.bindClientIds || owner === undefined || owner === (username ?? null)) return undefined;
    return { ok: false, code: RC.NOT_AUTHORIZED, reason: "client id belongs to another user's session" };
  }

  async #authenticate(c: Credentials): Promise<AuthResult> {
    const cert = c.certificate;
    if (this.options.useIdentityAsUsername && cert?.verified && cert.commonName) {
      return { ok: true, username: cert.commonName, via: "certificate" };
    }
    if (c.username === undefined) {
      if (this.options.allowAnonymous) return { ok: true, username: undefined, via: "anonymous" };
      return { ok: false, code: RC.NOT_AUTHORIZED, reason: "anonymous access refused" };
    }
    const users = this.#users;
    if (users === undefined) {
      // No password file: a username is a label only, as in Mosquitto without password_file.
      if (this.options.allowAnonymous) return { ok: true, username: c.username, via: "unchecked" };
      return { ok: false, code: RC.NOT_AUTHORIZED, reason: "no password file to check the username against" };
    }
    const stored = users.get(c.username);
    const password = c.password ?? new Uint8Array(0);
    if (stored && (await this.#cached(c.username, stored, password))) {
      return { ok: true, username: c.username, via: "password" };
    }
    if (this.#running >= this.#maxRunning && this.#waiting.length >= this.#maxWaiting) {
      return { ok: false, code: RC.SERVER_BUSY, reason: "too many password checks waiting" };
    }
    await this.#acquire();
    let ok: boolean;
    try {
      // The dummy makes an unknown user cost the same as a known one with a wrong password.
      ok = await verifyPassword(password, stored ?? this.#dummy);
    } finally {
      this.#release();
    }
    if (!ok || !stored || users !== this.#users) {
      return { ok: false, code: RC.BAD_USERNAME_OR_PASSWORD, reason: "bad username or password" };
    }
    this.#remember(c.username, stored, password);
    return { ok: true, username: c.username, via: "password" };
  }

  async #digest(stored: PasswordHash, password: Uint8Array): Promise<Uint8Array> {
    // Keyed with a per-process random key, so the cache is useless outside this process.
    const parts = [this.#cacheKey, stored.salt, stored.hash, password];
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length + 4, 0));
    let at = 0;
    for (const p of parts) {
      new DataView(all.buffer).setUint32(at, p.length);
      all.set(p, at + 4);
      at += p.length + 4;
    }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
  }

  async #cached(user: string, stored: PasswordHash, password: Uint8Array): Promise<boolean> {
    const known = this.#verified.get(user);
    if (!known) return false;
    const d = await this.#digest(stored, password);
    let diff = 0;
    for (let i = 0; i < d.length; i++) diff |= d[i]! ^ known[i]!;
    return diff === 0;
  }

  #remember(user: string, stored: PasswordHash, password: Uint8Array): void {
    void this.#digest(stored, password).then((d) => {
      if (this.#users?.get(user) !== stored) return; // the file changed meanwhile
      this.#verified.delete(user);
      this.#verified.set(user, d);
      if (this.#verified.size > CACHE_SIZE) this.#verified.delete(this.#verified.keys().next().value!);
    });
  }

  #acquire(): Promise<void> {
    if (this.#running < this.#maxRunning) {
      this.#running++;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next(); // the slot passes straight to the next waiter
    else this.#running--;
  }
}
