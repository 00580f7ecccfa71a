/** Sessions (connected or kept for offline clients): list and detail. */
import { Hono } from "hono";
import type { AdminContext } from "../deps.ts";
import { notFound } from "../errors.ts";
import { paginate } from "../pagination.ts";
import { sessionsQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { QUEUED_SHOWN, sessionDetailView, sessionView } from "../views.ts";

export function sessionRoutes(ctx: AdminContext): Hono {
  return new Hono()
    .get("/", (c) => {
      const q = parseQuery(c, sessionsQuery);
      const list = [...ctx.broker.sessions.values()].filter((s) =>
        (q.prefix === undefined || s.clientId.startsWith(q.prefix)) &&
        (q.connected === undefined || (s.client !== undefined) === q.connected)
      );
      return c.json(paginate(list, (s) => s.clientId, q, sessionView));
    })
    .get("/:id", async (c) => {
      const id = c.req.param("id");
      const s = ctx.broker.sessions.get(id);
      if (!s) throw notFound(`no session ${JSON.stringify(id)}`);
      // Queued messages whose bodies wait in the store are read for the view (not kept).
      const queued = await ctx.broker.registry.loader.peek(s, QUEUED_SHOWN);
      return c.json(sessionDetailView(s, queued));
    });
}
