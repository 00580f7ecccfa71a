/**
 * Start the admin API on `admin.host:admin.port` with the runtime's HTTP listener, or
 * nothing when `admin.port` is null. Refuses a non-loopback address without a token.
 */
import type { Listener } from "../runtime/listener.ts";
import type { AdminDeps } from "./deps.ts";
import { adminTokenProblem } from "./token-policy.ts";
import { countTopTopics } from "./top-topics.ts";
import { MetricsHistory } from "./metrics-history.ts";
import { takeSnapshot } from "./metrics-snapshot.ts";

type Fetch = (request: Request) => Response | Promise<Response>;

/** A runtime's HTTP server: serve `fetch` on host:port (port 0 picks a free one). */
export type ListenHttp = (
  host: string,
  port: number,
  fetch: Fetch,
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
  // Top topics count from start-up, even before anyone asks for them; the charts' history too.
  const topTopics = deps.topTopics ?? countTopTopics(deps.broker);
  const history = deps.history ?? new MetricsHistory(
    () =>
      takeSnapshot({
        broker: deps.broker,
        uplinks: () => deps.uplinks.links.map((l) => l.status()),
        recent: deps.recent,
        process: deps.process,
        build: deps.build,
      }),
    deps.config.admin.history_interval_seconds * 1000,
  );
  if (!deps.history) history.start();
  // The app (Hono, its routes, the zod schemas of their queries, the dashboard and the
  // OpenAPI document) is loaded and built on the first request, not at start: a broker
  // nobody administers keeps that memory. The first request waits a few milliseconds for it.
  let app: Promise<Fetch> | undefined;
  const load = (): Promise<Fetch> =>
    app ??= import("./app.ts").then(
      ({ createAdminApp }) => {
        const hono = createAdminApp({ ...deps, token, topTopics, history });
        return (request) => hono.fetch(request);
      },
      (err: unknown) => {
        app = undefined; // let the next request try again
        throw err;
      },
    );
  try {
    const listener = await listenHttp(host, port, async (request) => (await load())(request));
    return {
      host: listener.host,
      port: listener.port,
      stop: () => {
        if (!deps.history) history.stop();
        listener.stop();
      },
    };
  } catch (err) {
    if (!deps.history) history.stop();
    throw err;
  }
}
