/**
 * Bearer-token check for the admin API. Both sides are hashed with SHA-256 first and
 * the digests compared in constant time, so neither the token's content nor its length
 * leaks through response timing.
 */
const enc = new TextEncoder();

async function sha256(text: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", enc.encode(text)));
}

/** Constant-time equality of two equal-length byte arrays (false if lengths differ). */
export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

export class BearerToken {
  #expected: Promise<Uint8Array>;

  constructor(token: string) {
    this.#expected = sha256(token);
  }

  /** Whether an `Authorization` header value carries this token. */
  async accepts(header: string | undefined): Promise<boolean> {
    const m = /^Bearer +(\S+) *$/i.exec(header ?? "");
    const given = await sha256(m?.[1] ?? "");
    return timingSafeEqual(given, await this.#expected) && m !== null;
  }
}
