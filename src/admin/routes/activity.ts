/** What the dashboard watches besides counters: the busiest topics and recent warnings/errors. */
import { Hono } from "hono";
import type { AdminContext } from "../deps.ts";
import { logsQuery, topTopicsQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { iso } from "../views.ts";

export function activityRoutes(ctx: AdminContext): Hono {
  return new Hono()
    .get("/top-topics", (c) => {
      const q = parseQuery(c, topTopicsQuery);
      const t = ctx.topTopics;
      return c.json({
        data: t.top(q.limit),
        total_messages: t.total,
        tracked: t.tracked,
        capacity: t.capacity,
        since: iso(ctx.broker.metrics.startedAt),
      });
    })
    .get("/logs", (c) => {
      const q = parseQuery(c, logsQuery);
      const r = ctx.recent;
      const all = r ? r.entries() : [];
      const data = all.filter((e) => q.level === undefined || e.level === q.level).slice(0, q.limit)
        .map((e) => ({ seq: e.seq, at: iso(e.at), level: e.level, message: e.message }));
      return c.json({ data, counts: r ? { ...r.counts } : { warn: 0, error: 0 }, capacity: r?.capacity ?? 0 });
    });
}
