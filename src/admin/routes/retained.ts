/** Retained messages: list (prefix filter), get one by topic, delete one. */
import { Hono } from "hono";
import type { AdminContext } from "../deps.ts";
import { notFound } from "../errors.ts";
import { paginate } from "../pagination.ts";
import { retainedQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { messageView } from "../views.ts";

export function retainedRoutes(ctx: AdminContext): Hono {
  const retained = ctx.broker.retained;
  return new Hono()
    .get("/", (c) => {
      const q = parseQuery(c, retainedQuery);
      const list = [...retained.all()].filter((m) => q.prefix === undefined || m.topic.startsWith(q.prefix));
      return c.json(paginate(list, (m) => m.topic, q, messageView));
    })
    // The topic is the rest of the path, slashes included (percent-encode other reserved characters).
    .get("/:topic{.+}", (c) => {
      const topic = c.req.param("topic");
      const m = retained.get(topic);
      if (!m) throw notFound(`no retained message on ${JSON.stringify(topic)}`);
      return c.json(messageView(m));
    })
    .delete("/:topic{.+}", async (c) => {
      const topic = c.req.param("topic");
      if (!retained.get(topic)) throw notFound(`no retained message on ${JSON.stringify(topic)}`);
      // Durable first, like a publish with an empty retained payload; but nothing is sent to subscribers.
      await ctx.broker.persist([{ op: "retain", topic, message: null }], true);
      retained.set(topic, undefined);
      ctx.broker.logger.info(`admin API: retained message on ${topic} deleted`);
      return c.json({ topic, deleted: true });
    });
}
