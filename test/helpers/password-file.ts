/** Password files for tests, written with the same code `ferry passwd` uses. */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hashPassword, MIN_ITERATIONS } from "../../src/auth/password-hash.ts";

/** Write a password file holding `users` (name → password) and return its path. */
export async function writePasswordFile(users: Record<string, string>, dir?: string): Promise<string> {
  const path = join(dir ?? mkdtempSync(join(tmpdir(), "ferry-pw-")), "passwords");
  const lines: string[] = [];
  // The lowest cost `ferry passwd` accepts keeps the tests quick.
  for (const [user, password] of Object.entries(users)) {
    lines.push(`${user}:${await hashPassword(password, MIN_ITERATIONS)}`);
  }
  writeFileSync(path, lines.join("\n") + "\n", { mode: 0o600 });
  return path;
}
