/**
 * Salted, slow password hashes in Mosquitto's `$7$` format, so a Ferry password file and a
 * Mosquitto 2 password file are interchangeable:
 *
 *     $7$<iterations>$<base64 salt>$<base64 PBKDF2-HMAC-SHA512 output, 64 bytes>
 *
 * The algorithm and its cost live in every line, so the cost can be raised later without
 * invalidating old lines. WebCrypto (`crypto.subtle`, in Bun and Deno alike) derives the
 * bits off the event loop. Mosquitto 1.x's `$6$` lines (one salted SHA-512) are still
 * verified, but are weak; `weakness()` names the problem so it can be logged.
 */

/** PBKDF2 iterations for new hashes: OWASP's 2023 figure for PBKDF2-HMAC-SHA512. */
export const DEFAULT_ITERATIONS = 210_000;
/** Fewest iterations `ferry passwd` writes; older or foreign lines below it are flagged as weak. */
export const MIN_ITERATIONS = 100_000;
/** A bound on the cost a password file may demand, so one bad line cannot stall every login. */
export const MAX_ITERATIONS = 10_000_000;
/** Mosquitto 2 accepts exactly 12 bytes of salt; 96 random bits per user are plenty to make every hash unique. */
const SALT_BYTES = 12;
const HASH_BYTES = 64;

export type PasswordHash =
  | { kind: "pbkdf2-sha512"; iterations: number; salt: Uint8Array; hash: Uint8Array }
  | { kind: "sha512"; salt: Uint8Array; hash: Uint8Array };

const enc = new TextEncoder();

/** Parse `$7$…` or `$6$…`; throws Error (with no secret in its message) when malformed. */
export function parseHash(text: string): PasswordHash {
  const parts = text.split("$");
  // "$7$i$s$h" splits into ["", "7", i, s, h].
  if (parts[0] !== "") throw new Error("hash does not start with '$'");
  if (parts[1] === "7" && parts.length === 5) {
    const iterations = Number(parts[2]);
    if (!/^\d+$/.test(parts[2]!) || iterations < 1 || iterations > MAX_ITERATIONS) {
      throw new Error(`iteration count out of range 1..${MAX_ITERATIONS}`);
    }
    const salt = fromBase64(parts[3]!);
    const hash = fromBase64(parts[4]!);
    if (salt.length === 0 || hash.length !== HASH_BYTES) throw new Error("salt or hash has the wrong length");
    return { kind: "pbkdf2-sha512", iterations, salt, hash };
  }
  if (parts[1] === "6" && parts.length === 4) {
    const salt = fromBase64(parts[2]!);
    const hash = fromBase64(parts[3]!);
    if (salt.length === 0 || hash.length !== HASH_BYTES) throw new Error("salt or hash has the wrong length");
    return { kind: "sha512", salt, hash };
  }
  throw new Error("unknown hash format (expected $7$ PBKDF2-SHA512 or $6$ SHA-512)");
}

export function formatHash(h: PasswordHash): string {
  return h.kind === "pbkdf2-sha512"
    ? `$7$${h.iterations}$${toBase64(h.salt)}$${toBase64(h.hash)}`
    : `$6$${toBase64(h.salt)}$${toBase64(h.hash)}`;
}

/** Why a stored hash is weaker than what `ferry passwd` writes today, or undefined. */
export function weakness(h: PasswordHash): string | undefined {
  if (h.kind === "sha512") return "a $6$ (single SHA-512) hash";
  if (h.iterations < MIN_ITERATIONS) return `only ${h.iterations} PBKDF2 iterations`;
  return undefined;
}

/** A new `$7$` hash of `password` with a fresh random salt. */
export async function hashPassword(password: string, iterations = DEFAULT_ITERATIONS): Promise<string> {
  if (!Number.isInteger(iterations) || iterations < 1 || iterations > MAX_ITERATIONS) {
    throw new RangeError(`iterations must be an integer in 1..${MAX_ITERATIONS}`);
  }
  const salt = crypto.getRandomValues(new Uint8Array(SALT_BYTES));
  const hash = await pbkdf2(enc.encode(password), salt, iterations);
  return formatHash({ kind: "pbkdf2-sha512", iterations, salt, hash });
}

/** Whether `password` matches `stored`, compared in constant time. */
export async function verifyPassword(password: Uint8Array, stored: PasswordHash): Promise<boolean> {
  const derived = stored.kind === "pbkdf2-sha512"
    ? await pbkdf2(password, stored.salt, stored.iterations)
    : new Uint8Array(await crypto.subtle.digest("SHA-512", concat(password, stored.salt) as BufferSource));
  return constantTimeEqual(derived, stored.hash);
}

/** A hash no password matches, with the given cost: verified for unknown users so they take as long. */
export function dummyHash(iterations: number): PasswordHash {
  return {
    kind: "pbkdf2-sha512",
    iterations,
    salt: crypto.getRandomValues(new Uint8Array(SALT_BYTES)),
    hash: crypto.getRandomValues(new Uint8Array(HASH_BYTES)),
  };
}

async function pbkdf2(password: Uint8Array, salt: Uint8Array, iterations: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", password as BufferSource, "PBKDF2", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "PBKDF2", hash: "SHA-512", salt: salt as BufferSource, iterations },
    key,
    HASH_BYTES * 8,
  );
  return new Uint8Array(bits);
}

/** Compares every byte whatever the first difference, so timing says nothing about the hash. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function fromBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new Error("not base64");
  const s = atob(text);
  return Uint8Array.from(s, (c) => c.charCodeAt(0));
}
