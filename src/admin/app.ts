/**
 * The admin HTTP app (Hono): REST API under /api/v1, /metrics, /healthz, /readyz and
 * the dashboard at /. Runtime-free: the runtime adapter serves `app.fetch` (see
 * `serve.ts`), and tests call `app.request()` without a socket.
 */
import { Hono } from "hono";
import { BearerToken } from "./auth.ts";
import { DASHBOARD_HTML } from "./dashboard.ts";
import type { AdminContext, AdminDeps } from "./deps.ts";
import { ApiError } from "./errors.ts";
import { openApiDocument } from "./openapi.ts";
import { requestGuard } from "./request-guard.ts";
import { activityRoutes } from "./routes/activity.ts";
import { brokerRoutes, metricsRoutes } from "./routes/broker.ts";
import { clientRoutes } from "./routes/clients.ts";
import { historyRoutes } from "./routes/history.ts";
import { opsRoutes } from "./routes/ops.ts";
import { publishRoutes } from "./routes/publish.ts";
import { retainedRoutes } from "./routes/retained.ts";
import { sessionRoutes } from "./routes/sessions.ts";
import { subscriptionRoutes } from "./routes/subscriptions.ts";
import { uplinkRoutes } from "./routes/uplinks.ts";
import { countTopTopics } from "./top-topics.ts";
import { takeSnapshot } from "./metrics-snapshot.ts";

export type { AdminDeps, Readiness } from "./deps.ts";
export { adminTokenProblem } from "./token-policy.ts";

/**
 * Open without a token: liveness, and the dashboard page, which holds no data (its
 * script asks for the token and sends it with every API call).
 */
const PUBLIC_PATHS = new Set(["/healthz", "/"]);

export function createAdminApp(deps: AdminDeps): Hono {
  const topTopics = deps.topTopics ?? countTopTopics(deps.broker);
  const ctx: AdminContext = {
    broker: deps.broker,
    uplinks: deps.uplinks,
    config: deps.config,
    tokenRequired: deps.token !== undefined,
    recent: deps.recent,
    ready: deps.ready ?? (() => ({ store_open: true, listeners_up: true })),
    listeners: deps.listeners ?? (() => ({})),
    topTopics,
    snapshot: () =>
      takeSnapshot({
        broker: deps.broker,
        uplinks: () => deps.uplinks.links.map((l) => l.status()),
        recent: deps.recent,
        process: deps.process,
        build: deps.build,
      }),
    history: deps.history,
  };

  const app = new Hono();
  // Before anything else, the token check included: a rebinding page learns nothing.
  app.use("*", requestGuard({ allowedHosts: deps.config.admin.allowed_hosts, ownNames: deps.ownNames ?? [] }));
  app.use("*", async (c, next) => {
    await next();
    if (c.req.path.startsWith("/api/")) c.header("Cache-Control", "no-store");
  });
  if (deps.token !== undefined) {
    const bearer = new BearerToken(deps.token);
    app.use("*", async (c, next) => {
      if (PUBLIC_PATHS.has(c.req.path)) return next();
      if (await bearer.accepts(c.req.header("Authorization"))) return next();
      const message = c.req.header("Authorization")
        ? "wrong bearer token"
        : "this API needs Authorization: Bearer <admin.token>";
      return c.json({ error: { code: "unauthorized", message } }, 401, { "WWW-Authenticate": 'Bearer realm="ferry"' });
    });
  }

  app.get("/", (c) =>
    c.html(DASHBOARD_HTML, 200, {
      "Content-Security-Policy":
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
      "Cache-Control": "no-store",
    }));
  app.route("/", opsRoutes(ctx));
  app.get("/api/v1/openapi.json", (c) => c.json(openApiDocument(deps.broker.options.version)));
  app.route("/api/v1/broker", brokerRoutes(ctx));
  app.route("/api/v1/metrics", metricsRoutes(ctx));
  app.route("/api/v1/clients", clientRoutes(ctx));
  app.route("/api/v1/sessions", sessionRoutes(ctx));
  app.route("/api/v1/subscriptions", subscriptionRoutes(ctx));
  app.route("/api/v1/retained", retainedRoutes(ctx));
  app.route("/api/v1/publish", publishRoutes(ctx));
  app.route("/api/v1/uplinks", uplinkRoutes(ctx));
  app.route("/api/v1/history", historyRoutes(ctx));
  app.route("/api/v1", activityRoutes(ctx));

  app.notFound((c) => c.json({ error: { code: "not_found", message: `no route ${c.req.method} ${c.req.path}` } }, 404));
  app.onError((err, c) => {
    if (err instanceof ApiError) return c.json(err.body, err.status);
    deps.broker.logger.error(
      `admin API ${c.req.method} ${c.req.path}: ${err instanceof Error ? err.stack ?? err.message : String(err)}`,
    );
    return c.json({ error: { code: "internal", message: "internal error; see the broker log" } }, 500);
  });
  return app;
}
