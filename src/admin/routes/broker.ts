/** GET /api/v1/broker: identity, uptime, counts and store statistics in one object. */
import { Hono } from "hono";
import type { AdminContext } from "../deps.ts";
import { iso } from "../views.ts";

export function brokerRoutes(ctx: AdminContext): Hono {
  return new Hono().get("/", (c) => {
    const b = ctx.broker;
    const m = b.metrics;
    const now = b.clock.now();
    let subscriptions = 0;
    let queued = 0;
    let inflight = 0;
    let online = 0;
    for (const s of b.sessions.values()) {
      subscriptions += s.subscriptions.size;
      queued += s.queuedCount;
      inflight += s.inflight.size;
      if (s.client) online++;
    }
    const byQos = (v: readonly number[]) => ({ qos0: v[0]!, qos1: v[1]!, qos2: v[2]!, total: v[0]! + v[1]! + v[2]! });
    const store = b.store.stats();
    return c.json({
      name: "ferry",
      version: b.options.version,
      edge_id: ctx.config.edge_id,
      started_at: iso(m.startedAt),
      now: iso(now),
      uptime_seconds: Math.floor((now - m.startedAt) / 1000),
      connections: b.connectedCount,
      /** Sockets, including those that have not finished CONNECT. */
      sockets: b.clients.size,
      connections_total: m.connectionsTotal,
      connections_refused: m.connectionsRefused,
      sessions: { total: b.sessions.size, connected: online, offline: b.sessions.size - online },
      subscriptions,
      retained_messages: b.retained.size,
      queued_messages: queued,
      inflight_messages: inflight,
      messages: {
        received: byQos(m.messagesReceived),
        sent: byQos(m.messagesSent),
        dropped: {
          queue_full: m.droppedQueueFull,
          slow_consumer: m.droppedSlowConsumer,
          expired: m.droppedExpired,
          too_large: m.droppedTooLarge,
          total: m.droppedQueueFull + m.droppedSlowConsumer + m.droppedExpired + m.droppedTooLarge,
        },
        refused_storage_full: m.refusedStorageFull,
      },
      bytes: { received: m.bytesReceived, sent: m.bytesSent },
      protocol_errors: m.protocolErrors,
      keepalive_timeouts: m.keepaliveTimeouts,
      store: {
        kind: b.store.kind,
        messages: store.messages,
        bytes: store.bytes,
        full: store.full ?? false,
        dropped_messages: store.droppedMessages ?? 0,
        expired_messages: store.expiredMessages ?? 0,
        transactions: store.transactions ?? 0,
      },
      log: { next_offset: b.nextOffset },
      uplinks: ctx.uplinks.links.length,
      listeners: ctx.listeners(),
      auth: { token_required: ctx.tokenRequired },
    });
  });
}
