/** Retained messages: list (prefix filter), get one by topic, delete one. */
import { Hono } from "hono";
import { isResident, type RetainedEntry } from "../../core/retained-index.ts";
import type { Message } from "../../store/store.ts";
import type { AdminContext } from "../deps.ts";
import { notFound } from "../errors.ts";
import { paginate } from "../pagination.ts";
import { retainedQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { messageView } from "../views.ts";

export function retainedRoutes(ctx: AdminContext): Hono {
  const retained = ctx.broker.retained;
  /**
   * The messages of `entries`: the index holds recovered retained messages as stubs, whose
   * bodies are read from the store (one that was cleared meanwhile is left out).
   */
  const bodies = async (entries: RetainedEntry[]): Promise<Message[]> => {
    const stubs = entries.filter((e) => !isResident(e)).map((e) => e.topic);
    const read = new Map((await ctx.broker.store.readRetained(stubs)).map((m) => [m.topic, m]));
    return entries.flatMap((e) => {
      const m = isResident(e) ? e : read.get(e.topic);
      return m ? [m] : [];
    });
  };
  return new Hono()
    .get("/", async (c) => {
      const q = parseQuery(c, retainedQuery);
      const list = [...retained.all()].filter((m) => q.prefix === undefined || m.topic.startsWith(q.prefix));
      const page = paginate(list, (m) => m.topic, q, (m) => m);
      return c.json({ ...page, data: (await bodies(page.data)).map(messageView) });
    })
    // The topic is the rest of the path, slashes included (percent-encode other reserved characters).
    .get("/:topic{.+}", async (c) => {
      const topic = c.req.param("topic");
      const entry = retained.get(topic);
      const m = entry ? (await bodies([entry]))[0] : undefined;
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
