import type { Listener } from "../listener.ts";

/** Serve HTTP (the admin API) with `Bun.serve`; port 0 picks a free port. */
export function listenHttp(
  host: string,
  port: number,
  fetch: (request: Request) => Response | Promise<Response>,
): Listener {
  const server = Bun.serve({ hostname: host, port, fetch: (request) => fetch(request) });
  return {
    host,
    port: server.port ?? port,
    // Close keep-alive connections too (the dashboard polls over one), so stopping is prompt.
    stop: () => void server.stop(true),
  };
}
