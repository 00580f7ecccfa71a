/**
 * When the admin API may start: a module of its own so the start-up check does not load
 * the admin app (Hono, routes, schemas), which `serve.ts` imports only on the first request.
 */
import { isLoopbackHost } from "../config/schema.ts";

/** Why this admin configuration must not start, or undefined. */
export function adminTokenProblem(host: string, token: string | undefined): string | undefined {
  if (token !== undefined || isLoopbackHost(host)) return undefined;
  return `admin API on ${host} (not loopback) needs admin.token; set one, bind admin.host to 127.0.0.1, or disable it with admin.port null`;
}
