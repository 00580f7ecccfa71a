/** Operations endpoints: liveness, readiness and Prometheus metrics. */
import { Hono } from "hono";
import type { AdminContext } from "../deps.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "../metrics.ts";

export function opsRoutes(ctx: AdminContext): Hono {
  return new Hono()
    // Liveness: the process answers. Never needs a token.
    .get("/healthz", (c) => c.json({ status: "ok" }))
    .get("/readyz", (c) => {
      const checks = ctx.ready();
      const ready = checks.store_open && checks.listeners_up;
      if (ready) return c.json({ ready, checks });
      const failing = Object.entries(checks).filter(([, ok]) => !ok).map(([name]) => name);
      return c.json({ ready, checks, error: { code: "not_ready", message: `not ready: ${failing.join(", ")}` } }, 503);
    })
    .get("/metrics", (c) => {
      const text = renderMetrics(ctx.snapshot());
      return c.body(text, 200, { "Content-Type": METRICS_CONTENT_TYPE });
    });
}
