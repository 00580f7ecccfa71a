import { parseHash, type PasswordHash } from "./password-hash.ts";

/**
 * A password file as Mosquitto writes it: one `username:hash` per line, `#` comments and
 * blank lines ignored. Parsing keeps the text of every line so that `ferry passwd` can
 * change one user and write the rest back as they were.
 */
export class PasswordFile {
  /** Lines in file order: a user entry, or any other line kept verbatim. */
  #lines: Array<{ user: string; hash: string } | { text: string }> = [];

  /** Parse `text`; bad lines are reported by line number (never with their hash) and skipped. */
  static parse(text: string): { file: PasswordFile; problems: string[] } {
    const file = new PasswordFile();
    const problems: string[] = [];
    const seen = new Set<string>();
    const lines = text.split(/\r?\n/);
    if (lines.at(-1) === "") lines.pop();
    lines.forEach((line, i) => {
      const trimmed = line.trim();
      if (trimmed === "" || trimmed.startsWith("#")) {
        file.#lines.push({ text: line });
        return;
      }
      const colon = line.indexOf(":");
      const user = colon > 0 ? line.slice(0, colon) : "";
      const hash = colon > 0 ? line.slice(colon + 1).trim() : "";
      const problem = colon <= 0 ? "expected username:hash" : usernameProblem(user) ?? hashProblem(hash);
      if (problem) {
        problems.push(`line ${i + 1}: ${problem}`);
        return;
      }
      if (seen.has(user)) {
        problems.push(`line ${i + 1}: user '${user}' appears again; the first entry counts`);
        return;
      }
      seen.add(user);
      file.#lines.push({ user, hash });
    });
    return { file, problems };
  }

  /** The stored hash of every user, parsed. */
  users(): Map<string, PasswordHash> {
    const out = new Map<string, PasswordHash>();
    for (const l of this.#lines) if ("user" in l) out.set(l.user, parseHash(l.hash));
    return out;
  }

  has(user: string): boolean {
    return this.#lines.some((l) => "user" in l && l.user === user);
  }

  /** Add `user`, or replace its hash in place. */
  set(user: string, hash: string): void {
    const problem = usernameProblem(user) ?? hashProblem(hash);
    if (problem) throw new RangeError(problem);
    const at = this.#lines.find((l) => "user" in l && l.user === user);
    if (at && "user" in at) at.hash = hash;
    else this.#lines.push({ user, hash });
  }

  /** Remove `user`; returns whether it was there. */
  delete(user: string): boolean {
    const i = this.#lines.findIndex((l) => "user" in l && l.user === user);
    if (i < 0) return false;
    this.#lines.splice(i, 1);
    return true;
  }

  format(): string {
    return this.#lines.map((l) => ("user" in l ? `${l.user}:${l.hash}` : l.text)).join("\n") + "\n";
  }
}

/** Why `user` cannot be a password file username (a colon or line break would corrupt the file). */
export function usernameProblem(user: string): string | undefined {
  if (user.length === 0) return "empty username";
  if (/[:\r\n]/.test(user)) return "username contains ':' or a line break";
  if (user !== user.trim()) return "username starts or ends with white space";
  if (new TextEncoder().encode(user).length > 65535) return "username longer than 65535 bytes";
  return undefined;
}

function hashProblem(hash: string): string | undefined {
  try {
    parseHash(hash);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}
