/** Every subscription of every session, filterable by client, exact filter or matching topic. */
import { Hono } from "hono";
import { topicMatches } from "../../mqtt/topic.ts";
import type { ActiveSubscription } from "../../core/session.ts";
import type { AdminContext } from "../deps.ts";
import { paginate } from "../pagination.ts";
import { subscriptionsQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { subscriptionView } from "../views.ts";

export function subscriptionRoutes(ctx: AdminContext): Hono {
  return new Hono().get("/", (c) => {
    const q = parseQuery(c, subscriptionsQuery);
    const list: Array<{ clientId: string; sub: ActiveSubscription }> = [];
    const sessions = q.client_id !== undefined
      ? [ctx.broker.sessions.get(q.client_id)].filter((s) => s !== undefined)
      : ctx.broker.sessions.values();
    for (const s of sessions) {
      for (const sub of s.subscriptions.values()) {
        if (q.filter !== undefined && sub.filter !== q.filter) continue;
        if (q.topic !== undefined && !topicMatches(sub.plainFilter, q.topic)) continue;
        list.push({ clientId: s.clientId, sub });
      }
    }
    return c.json(
      paginate(list, (e) => `${e.clientId}\u0000${e.sub.filter}`, q, (e) => subscriptionView(e.clientId, e.sub)),
    );
  });
}
