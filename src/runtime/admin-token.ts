/**
 * The admin token Ferry makes for itself (`admin.generate_token`): once MQTT needs
 * passwords, a tokenless admin API on loopback would let any local user or process publish
 * anything, retained commands included, past every password and ACL. So then Ferry makes a
 * random token on first start, keeps it in `<data_dir>/admin-token` (0600, readable by
 * Ferry's user and root only), and requires it. Never logged: the log names the file.
 * (node:fs and node:path: Bun and Deno both provide them.)
 */
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { authConfigured } from "../config/security-options.ts";
import type { FerryConfig } from "../config/schema.ts";
import type { Logger } from "../core/logger.ts";

export const ADMIN_TOKEN_FILE = "admin-token";

/** `admin.generate_token`, resolved: as configured, or — when null — whenever MQTT authenticates. */
export function resolveGenerateToken(config: FerryConfig): boolean {
  return config.admin.generate_token ?? authConfigured(config);
}

/** The token the admin API requires: `admin.token`, the generated one, or none. */
export function adminToken(config: FerryConfig, logger: Logger): string | undefined {
  const { token, port } = config.admin;
  if (token !== undefined || port === null || !resolveGenerateToken(config)) return token;
  const path = join(config.data_dir, ADMIN_TOKEN_FILE);
  if (existsSync(path)) {
    const kept = readFileSync(path, "utf8").trim();
    if (kept.length >= 16) {
      logger.info(`admin API: requires the token in ${path}`);
      return kept;
    }
    throw new Error(`${path}: not an admin token (16+ characters); delete it and Ferry makes a new one`);
  }
  if (!existsSync(config.data_dir)) {
    mkdirSync(config.data_dir, { recursive: true, mode: 0o700 });
    chmodSync(config.data_dir, 0o700);
  }
  const made = Array.from(crypto.getRandomValues(new Uint8Array(32)), (b) => b.toString(16).padStart(2, "0")).join("");
  const fd = openSync(path, "wx", 0o600); // exclusive: two starts at once cannot both write one
  try {
    chmodSync(path, 0o600); // not filtered by the umask
    writeSync(fd, `${made}\n`);
  } finally {
    closeSync(fd);
  }
  logger.info(`admin API: authentication is configured, so a token was made in ${path}; it is required from now on`);
  return made;
}
