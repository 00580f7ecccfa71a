/**
 * The options of one connection attempt to the cloud, from the uplink's config. Files
 * (CA, client certificate and key, password) are read at every attempt, so renewed
 * certificates and passwords need no restart. The client id is the same at every
 * endpoint of the uplink, so a cluster keeps the session (and downlink subscriptions)
 * across a failover.
 */
import type { UplinkConfig } from "../config/schema.ts";
import type { CloudConnectOptions } from "./cloud-client.ts";

/** How long one connection attempt may take before it counts as failed. */
export const CONNECT_TIMEOUT_MS = 10_000;

export function defaultClientId(c: UplinkConfig, edgeId: string): string {
  return c.client_id ?? `ferry-${edgeId}-${c.name}`;
}

export async function cloudConnectOptions(
  c: UplinkConfig,
  url: string,
  edgeId: string,
  readFile: (path: string) => Promise<Uint8Array>,
): Promise<CloudConnectOptions> {
  const read = (p: string | undefined) => (p === undefined ? Promise.resolve(undefined) : readFile(p));
  const [ca, cert, key, pw] = await Promise.all([
    read(c.tls.ca),
    read(c.tls.cert),
    read(c.tls.key),
    read(c.password_file),
  ]);
  const password = pw !== undefined
    ? trimNewline(pw)
    : c.password !== undefined
    ? new TextEncoder().encode(c.password)
    : undefined;
  return {
    url,
    clientId: defaultClientId(c, edgeId),
    username: c.username,
    password,
    protocolVersion: c.protocol_version,
    keepalive: c.keepalive,
    cleanStart: c.clean_start,
    sessionExpiry: c.session_expiry,
    ca,
    cert,
    key,
    rejectUnauthorized: c.tls.reject_unauthorized,
    connectTimeoutMs: CONNECT_TIMEOUT_MS,
  };
}

function trimNewline(b: Uint8Array): Uint8Array {
  let end = b.byteLength;
  while (end > 0 && (b[end - 1] === 10 || b[end - 1] === 13)) end--;
  return b.subarray(0, end);
}
