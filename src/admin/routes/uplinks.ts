/** Cloud uplinks: status, and pause/resume (the cursor is kept; resume forwards the backlog). */
import { Hono } from "hono";
import type { LinkStatus, UplinkLink } from "../../sync/uplink-link.ts";
import type { AdminContext } from "../deps.ts";
import { ApiError, notFound } from "../errors.ts";
import { iso } from "../views.ts";

export function uplinkView(s: LinkStatus) {
  return {
    name: s.name,
    url: s.url,
    state: s.state,
    cursor: s.cursor,
    backlog_messages: s.backlogEntries,
    oldest_pending_ms: s.oldestPendingMs,
    inflight: s.inflight,
    sent: s.sent,
    acknowledged: s.acknowledged,
    drain_rate: s.drainRate,
    dropped: { ttl: s.droppedTtl, refused: s.droppedRefused, buffer: s.droppedBuffer },
    downlink_received: s.downlinkReceived,
    reconnects: s.reconnects,
    last_error: s.lastError ?? null,
    connected_since: iso(s.connectedSince),
  };
}

export function uplinkRoutes(ctx: AdminContext): Hono {
  const find = (name: string): UplinkLink => {
    const link = ctx.uplinks.links.find((l) => l.name === name);
    if (!link) throw notFound(`no uplink ${JSON.stringify(name)}`);
    return link;
  };
  const serving = () => {
    const r = ctx.ready();
    if (!r.store_open) throw new ApiError(503, "not_ready", "the broker is stopping");
  };
  return new Hono()
    .get("/", (c) => c.json({ data: ctx.uplinks.links.map((l) => uplinkView(l.status())) }))
    .get("/:name", (c) => c.json(uplinkView(find(c.req.param("name")).status())))
    .post("/:name/pause", async (c) => {
      const link = find(c.req.param("name"));
      serving();
      if (link.state !== "paused") {
        ctx.broker.logger.info(`admin API: uplink ${link.name} paused`);
        await link.pause();
      }
      return c.json(uplinkView(link.status()));
    })
    .post("/:name/resume", (c) => {
      const link = find(c.req.param("name"));
      serving();
      if (link.state === "paused") {
        ctx.broker.logger.info(`admin API: uplink ${link.name} resumed`);
        link.resume();
      }
      return c.json(uplinkView(link.status()));
    });
}
