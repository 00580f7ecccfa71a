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
    endpoints: s.endpoints.map((e) => ({
      url: e.url,
      in_use: e.url === s.url && s.state === "connected",
      attempts: e.attempts,
      last_error: e.lastError ?? null,
      last_error_at: iso(e.lastErrorAt),
      last_connected_at: iso(e.lastConnectedAt),
    })),
    state: s.state,
    cursor: s.cursor,
    backlog_messages: s.backlogEntries,
    oldest_pending_ms: s.oldestPendingMs,
    inflight: s.inflight,
    window: s.window,
    sent: s.sent,
    acknowledged: s.acknowledged,
    drain_rate: s.drainRate,
    dropped: { ttl: s.droppedTtl, refused: s.droppedRefused, buffer: s.droppedBuffer, invalid: s.droppedInvalid },
    quota_backoffs: s.quotaBackoffs,
    downlink_received: s.downlinkReceived,
    downlink_refused: s.downlinkRefused,
    reconnects: s.reconnects,
    connect_attempts: s.connectAttempts,
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
