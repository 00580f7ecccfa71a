import type { Listener } from "../listener.ts";
import { deno } from "./deno-api.ts";

/** Serve HTTP (the admin API) with `Deno.serve`; port 0 picks a free port. */
export async function listenHttp(
  host: string,
  port: number,
  fetch: (request: Request) => Response | Promise<Response>,
): Promise<Listener> {
  let bound!: (addr: { hostname: string; port: number }) => void;
  const listening = new Promise<{ hostname: string; port: number }>((resolve) => (bound = resolve));
  const server = deno.serve(
    { hostname: host, port, onListen: (addr) => bound(addr) },
    (request) => fetch(request),
  );
  const addr = await listening;
  return {
    host: addr.hostname,
    port: addr.port,
    stop() {
      void server.shutdown().catch(() => {});
    },
  };
}
