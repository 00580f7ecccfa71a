/**
 * `/metrics` in the Prometheus text exposition format (version 0.0.4): broker counters
 * and gauges, store size, uplink state, and the admin layer's log counts. Names follow
 * Prometheus conventions: `ferry_` prefix, `_total` for counters, base units.
 */
import type { Broker } from "../core/broker.ts";
import type { LinkStatus } from "../sync/uplink-link.ts";
import type { RecentLog } from "./recent-log.ts";

type Labels = Record<string, string>;
type Sample = [labels: Labels | undefined, value: number];

export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

const escapeLabel = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
const escapeHelp = (v: string) => v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Number.POSITIVE_INFINITY) return "+Inf";
  if (v === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(v);
}

class Exposition {
  #lines: string[] = [];

  add(name: string, type: "counter" | "gauge", help: string, samples: Sample[] | number): void {
    this.#lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
    const list: Sample[] = typeof samples === "number" ? [[undefined, samples]] : samples;
    for (const [labels, value] of list) {
      const l = labels && Object.keys(labels).length > 0
        ? `{${Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`
        : "";
      this.#lines.push(`${name}${l} ${formatValue(value)}`);
    }
  }

  toString(): string {
    return this.#lines.join("\n") + "\n";
  }
}

export interface MetricsSources {
  broker: Broker;
  uplinks: () => LinkStatus[];
  recent?: RecentLog | undefined;
}

export function renderMetrics({ broker, uplinks, recent }: MetricsSources): string {
  const m = broker.metrics;
  const out = new Exposition();
  const qos = (values: readonly number[]): Sample[] => values.map((v, i) => [{ qos: String(i) }, v]);
  let subscriptions = 0;
  let queued = 0;
  let inflight = 0;
  for (const s of broker.sessions.values()) {
    subscriptions += s.subscriptions.size;
    queued += s.queuedCount;
    inflight += s.inflight.size;
  }
  const store = broker.store.stats();
  const now = broker.clock.now();

  out.add("ferry_info", "gauge", "Ferry build information", [[{ version: broker.options.version }, 1]]);
  out.add("ferry_uptime_seconds", "gauge", "Seconds since the broker started", (now - m.startedAt) / 1000);
  out.add("ferry_connections", "gauge", "Clients connected (past CONNACK)", broker.connectedCount);
  out.add("ferry_connections_total", "counter", "Network connections accepted", m.connectionsTotal);
  out.add("ferry_connections_refused_total", "counter", "CONNECTs refused", m.connectionsRefused);
  out.add("ferry_sessions", "gauge", "Sessions, connected or not", broker.sessions.size);
  out.add("ferry_subscriptions", "gauge", "Subscriptions over all sessions", subscriptions);
  out.add("ferry_retained_messages", "gauge", "Retained messages", broker.retained.size);
  out.add("ferry_queued_messages", "gauge", "Messages queued for sessions beyond their in-flight window", queued);
  out.add("ferry_inflight_messages", "gauge", "QoS>0 messages sent to clients and not yet acknowledged", inflight);
  out.add("ferry_messages_received_total", "counter", "PUBLISH packets received, by QoS", qos(m.messagesReceived));
  out.add("ferry_messages_sent_total", "counter", "PUBLISH packets sent, by QoS", qos(m.messagesSent));
  out.add("ferry_bytes_received_total", "counter", "Bytes received from clients", m.bytesReceived);
  out.add("ferry_bytes_sent_total", "counter", "Bytes sent to clients", m.bytesSent);
  out.add("ferry_dropped_messages_total", "counter", "Messages dropped before reaching a subscriber, by reason", [
    [{ reason: "queue_full" }, m.droppedQueueFull],
    [{ reason: "slow_consumer" }, m.droppedSlowConsumer],
    [{ reason: "expired" }, m.droppedExpired],
    [{ reason: "too_large" }, m.droppedTooLarge],
  ]);
  out.add("ferry_refused_messages_total", "counter", "Publishes refused, by reason", [[
    { reason: "storage_full" },
    m.refusedStorageFull,
  ]]);
  out.add(
    "ferry_protocol_errors_total",
    "counter",
    "Connections closed for a malformed packet or protocol violation",
    m.protocolErrors,
  );
  out.add(
    "ferry_keepalive_timeouts_total",
    "counter",
    "Clients disconnected for exceeding their keep alive",
    m.keepaliveTimeouts,
  );
  out.add("ferry_store_bytes", "gauge", "Bytes the store occupies", store.bytes);
  out.add("ferry_store_messages", "gauge", "Messages in the durable log", store.messages);
  out.add("ferry_store_full", "gauge", "1 while the store refuses appends", store.full ? 1 : 0);
  out.add(
    "ferry_store_dropped_messages_total",
    "counter",
    "Log messages dropped by the size quota",
    store.droppedMessages ?? 0,
  );
  out.add("ferry_store_expired_messages_total", "counter", "Log messages trimmed for age", store.expiredMessages ?? 0);
  out.add("ferry_store_transactions_total", "counter", "Store transactions committed", store.transactions ?? 0);
  out.add("ferry_log_next_offset", "gauge", "Offset the next logged message gets", broker.nextOffset);

  const links = uplinks();
  const per = (f: (s: LinkStatus) => number): Sample[] => links.map((s) => [{ uplink: s.name }, f(s)]);
  out.add(
    "ferry_uplink_connected",
    "gauge",
    "1 while the uplink is connected to its cloud broker",
    per((s) => (s.state === "connected" ? 1 : 0)),
  );
  out.add(
    "ferry_uplink_paused",
    "gauge",
    "1 while the uplink is paused by the admin API",
    per((s) => (s.state === "paused" ? 1 : 0)),
  );
  out.add(
    "ferry_uplink_backlog_messages",
    "gauge",
    "Log entries behind the uplink's cursor (upper bound)",
    per((s) => s.backlogEntries),
  );
  out.add(
    "ferry_uplink_inflight_messages",
    "gauge",
    "Messages sent to the cloud and not yet acknowledged",
    per((s) => s.inflight),
  );
  out.add(
    "ferry_uplink_oldest_pending_seconds",
    "gauge",
    "Age of the oldest message not yet acknowledged",
    per((s) => s.oldestPendingMs / 1000),
  );
  out.add("ferry_uplink_cursor", "gauge", "Log offset up to which everything is forwarded", per((s) => s.cursor));
  out.add("ferry_uplink_sent_total", "counter", "Messages sent to the cloud (re-sends included)", per((s) => s.sent));
  out.add("ferry_uplink_acknowledged_total", "counter", "Messages the cloud acknowledged", per((s) => s.acknowledged));
  out.add(
    "ferry_uplink_dropped_total",
    "counter",
    "Messages the uplink gave up on, by reason",
    links.flatMap((s): Sample[] => [
      [{ uplink: s.name, reason: "ttl" }, s.droppedTtl],
      [{ uplink: s.name, reason: "refused" }, s.droppedRefused],
      [{ uplink: s.name, reason: "buffer" }, s.droppedBuffer],
      [{ uplink: s.name, reason: "invalid_topic" }, s.droppedInvalid],
    ]),
  );
  out.add(
    "ferry_uplink_reconnects_total",
    "counter",
    "Uplink connections that ended after being established",
    per((s) => s.reconnects),
  );
  out.add(
    "ferry_uplink_connect_attempts_total",
    "counter",
    "Uplink connection attempts, every endpoint tried",
    per((s) => s.connectAttempts),
  );
  out.add(
    "ferry_uplink_quota_backoffs_total",
    "counter",
    "Times the cloud answered 0x96/0x97 and the uplink held back",
    per((s) => s.quotaBackoffs),
  );
  out.add("ferry_uplink_window", "gauge", "Messages the uplink may have in flight now", per((s) => s.window));
  out.add(
    "ferry_uplink_downlink_received_total",
    "counter",
    "Cloud messages published locally",
    per((s) => s.downlinkReceived),
  );

  if (recent) {
    out.add("ferry_log_messages_total", "counter", "Warnings and errors logged", [
      [{ level: "warn" }, recent.counts.warn],
      [{ level: "error" }, recent.counts.error],
    ]);
  }
  return out.toString();
}
