/**
 * GET /api/v1/broker: identity, uptime, counts and store statistics in one object, and
 * GET /api/v1/metrics: the whole metrics snapshot as JSON. Both render the same snapshot
 * /metrics and $SYS do.
 */
import { Hono } from "hono";
import { droppedByReason } from "../../core/metrics-snapshot.ts";
import type { AdminContext } from "../deps.ts";
import { iso } from "../views.ts";
import { notFound } from "../errors.ts";

export function brokerRoutes(ctx: AdminContext): Hono {
  return new Hono().get("/", (c) => {
    const snap = ctx.snapshot();
    const b = snap.broker;
    const m = b.counters;
    const g = b.gauges;
    const byQos = (v: readonly number[]) => ({ qos0: v[0]!, qos1: v[1]!, qos2: v[2]!, total: v[0]! + v[1]! + v[2]! });
    const dropped = droppedByReason(m);
    return c.json({
      name: "ferry",
      version: b.version,
      commit: snap.build.commit,
      edge_id: ctx.config.edge_id,
      started_at: iso(b.startedAt),
      now: iso(b.at),
      uptime_seconds: b.uptimeSeconds,
      connections: g.connected,
      /** Sockets, including those that have not finished CONNECT. */
      sockets: g.sockets,
      connections_total: m.connectionsTotal,
      connections_refused: m.connectionsRefused,
      sessions: { total: g.sessions, connected: g.connected, offline: g.disconnected },
      subscriptions: g.subscriptions,
      retained_messages: g.retained,
      queued_messages: g.queued,
      inflight_messages: g.inflight,
      messages: {
        received: byQos(b.messagesReceived),
        sent: byQos(b.messagesSent),
        dropped: { ...dropped, total: Object.values(dropped).reduce((x, y) => x + y, 0) },
        refused_storage_full: m.refusedStorageFull,
        held: m.publishesHeld,
      },
      stalled_subscribers: m.subscribersStalled,
      bytes: { received: m.bytesReceived, sent: m.bytesSent },
      protocol_errors: m.protocolErrors,
      keepalive_timeouts: m.keepaliveTimeouts,
      backpressure: {
        paused_connections: g.pausedConnections,
        reading_paused: m.pausedReading,
        publishers_paced: m.pacedPublishers,
        disconnected_not_reading: m.disconnectedNotReading,
        disconnected_packet_timeout: m.disconnectedPacketTimeout,
        output_bytes: g.outputBytes,
        partial_bytes: g.partialBytes,
        preauth_bytes: g.preAuthBytes,
      },
      memory: {
        limit_bytes: b.memory.limit,
        used_bytes: b.memory.used,
        peak_bytes: b.memory.peak,
        parts: {
          messages: b.memory.messages,
          clients: b.memory.clients,
          output: b.memory.output,
          input: b.memory.input,
        },
        publishers_slowed: b.memory.slowedPublishers,
        publishers_slowed_total: m.throttledPublishers,
        collections_total: b.memory.collections,
        refused_connections: m.refusedMemoryConnections,
        refused_publishes: m.refusedMemoryPublishes,
      },
      security: {
        auth: { bad_credentials: m.authBadCredentials, not_authorized: m.authNotAuthorized, busy: m.authBusy },
        acl_denied: { publish: m.aclDeniedPublish, subscribe: m.aclDeniedSubscribe, delivery: m.aclDeniedDelivery },
        refused: {
          connection_rate: m.refusedConnectionRate,
          connections_per_ip: m.refusedConnectionsPerIp,
          banned: m.refusedBanned,
          preauth_bytes: m.refusedPreAuthBytes,
        },
        bans: { flapping: m.bansFlapping, auth_failures: m.bansAuthFailures },
        disconnected_message_rate: m.disconnectedMessageRate,
      },
      store: {
        kind: b.store.kind,
        messages: b.store.messages,
        bytes: b.store.bytes,
        full: b.store.full,
        dropped_messages: b.store.droppedMessages,
        expired_messages: b.store.expiredMessages,
        transactions: b.store.transactions,
        written_bytes: b.store.bytesWritten,
      },
      process: {
        resident_bytes: snap.process.residentBytes ?? null,
        cpu_seconds: snap.process.cpuSeconds ?? null,
        open_fds: snap.process.openFds ?? null,
        heap_bytes: snap.process.heapBytes ?? null,
        start_time: snap.process.startTimeSeconds === undefined ? null : iso(snap.process.startTimeSeconds * 1000),
      },
      log: { next_offset: g.logNextOffset },
      uplinks: ctx.uplinks.links.length,
      listeners: ctx.listeners(),
      auth: { token_required: ctx.tokenRequired },
    });
  });
}

/** GET /api/v1/metrics: the snapshot itself, every counter by its BrokerMetrics name. */
export function metricsRoutes(ctx: AdminContext): Hono {
  return new Hono()
    .get("/", (c) => c.json(ctx.snapshot()))
    .get("/history", (c) => {
      if (!ctx.history) throw notFound("no history is kept by this admin app");
      return c.json(ctx.history.series());
    });
}
