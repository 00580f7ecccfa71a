/**
 * Start the admin API on `admin.host:admin.port` with the runtime's HTTP listener, or
 * nothing when `admin.port` is null. Refuses a non-loopback address without a token.
 */
import type { Listener } from "../runtime/listener.ts";
import { adminTokenProblem, createAdminApp } from "./app.ts";
import type { AdminDeps } from "./deps.ts";

/** A runtime's HTTP server: serve `fetch` on host:port (port 0 picks a free one). */
export type ListenHttp = (
  host: string,
  port: number,
  fetch: (request: Request) => Response | Promise<Response>,
) => Listener | Promise<Listener>;

export class AdminConfigError extends Error {
  override name = "AdminConfigError";
}

export async function listenAdmin(
  listenHttp: ListenHttp,
  deps: Omit<AdminDeps, "token">,
): Promise<Listener | undefined> {
  const { host, port, token } = deps.config.admin;
  if (port === null) return undefined;
  const problem = adminTokenProblem(host, token);
  if (problem) throw new AdminConfigError(problem);
  const app = createAdminApp({ ...deps, token });
  return await listenHttp(host, port, (request) => app.fetch(request));
}
