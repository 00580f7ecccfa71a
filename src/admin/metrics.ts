/**
 * `/metrics` in the Prometheus text exposition format (version 0.0.4), rendered from the
 * metrics snapshot: broker counters and gauges, security counters, store size, uplink
 * state, the log's counts, the standard `process_*` metrics and `ferry_build_info`. Names
 * follow Prometheus conventions: `ferry_` prefix, `_total` for counters, base units.
 */
import { droppedByReason } from "../core/metrics-snapshot.ts";
import type { LinkStatus } from "../sync/uplink-link.ts";
import type { MetricsSnapshot } from "./metrics-snapshot.ts";

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

export function renderMetrics(snap: MetricsSnapshot): string {
  const b = snap.broker;
  const c = b.counters;
  const g = b.gauges;
  const out = new Exposition();
  const qos = (values: readonly number[]): Sample[] => values.map((v, i) => [{ qos: String(i) }, v]);
  const labelled = (label: string, values: Record<string, number>): Sample[] =>
    Object.entries(values).map(([k, v]) => [{ [label]: k }, v]);

  out.add("ferry_build_info", "gauge", "Ferry build: version, git commit and runtime; always 1", [[
    { version: snap.build.version, commit: snap.build.commit, runtime: snap.build.runtime },
    1,
  ]]);
  out.add("ferry_info", "gauge", "Ferry version (ferry_build_info has the commit too)", [[{ version: b.version }, 1]]);
  out.add("ferry_uptime_seconds", "gauge", "Seconds since the broker started", (b.at - b.startedAt) / 1000);
  out.add("ferry_connections", "gauge", "Clients connected (past CONNACK)", g.connected);
  out.add("ferry_sockets", "gauge", "Network connections, including those that have not sent CONNECT", g.sockets);
  out.add("ferry_connections_total", "counter", "Network connections accepted", c.connectionsTotal);
  out.add("ferry_connections_refused_total", "counter", "CONNECTs refused", c.connectionsRefused);
  out.add("ferry_sessions", "gauge", "Sessions, connected or not", g.sessions);
  out.add("ferry_subscriptions", "gauge", "Subscriptions over all sessions", g.subscriptions);
  out.add("ferry_retained_messages", "gauge", "Retained messages", g.retained);
  out.add("ferry_queued_messages", "gauge", "Messages queued for sessions beyond their in-flight window", g.queued);
  out.add("ferry_inflight_messages", "gauge", "QoS>0 messages sent to clients and not yet acknowledged", g.inflight);
  out.add("ferry_messages_received_total", "counter", "PUBLISH packets received, by QoS", qos(b.messagesReceived));
  out.add("ferry_messages_sent_total", "counter", "PUBLISH packets sent, by QoS", qos(b.messagesSent));
  out.add("ferry_bytes_received_total", "counter", "Bytes received from clients", c.bytesReceived);
  out.add("ferry_bytes_sent_total", "counter", "Bytes sent to clients", c.bytesSent);
  out.add(
    "ferry_dropped_messages_total",
    "counter",
    "Messages dropped before reaching a subscriber, by reason",
    labelled("reason", droppedByReason(c)),
  );
  out.add("ferry_refused_messages_total", "counter", "Publishes refused, by reason", [[
    { reason: "storage_full" },
    c.refusedStorageFull,
  ]]);
  out.add(
    "ferry_publishes_held_total",
    "counter",
    "QoS>0 publishes whose acknowledgement waited for room in an online subscriber's full queue",
    c.publishesHeld,
  );
  out.add(
    "ferry_subscribers_stalled_total",
    "counter",
    "Times an online subscriber with a full queue took no message for mqtt.stalled_subscriber_ms",
    c.subscribersStalled,
  );
  out.add(
    "ferry_protocol_errors_total",
    "counter",
    "Connections closed for a malformed packet or protocol violation",
    c.protocolErrors,
  );
  out.add(
    "ferry_keepalive_timeouts_total",
    "counter",
    "Clients disconnected for exceeding their keep alive",
    c.keepaliveTimeouts,
  );
  out.add(
    "ferry_connections_paused",
    "gauge",
    "Connections Ferry is not reading from because their output is over limits.max_output_bytes",
    g.pausedConnections,
  );
  out.add(
    "ferry_reading_paused_total",
    "counter",
    "Times Ferry stopped reading from a client whose output was over limits.max_output_bytes",
    c.pausedReading,
  );
  out.add(
    "ferry_publishers_paced_total",
    "counter",
    "Times Ferry paused reading a publisher whose QoS 0 messages slow consumers dropped (faster than 1 MiB/s)",
    c.pacedPublishers,
  );
  out.add(
    "ferry_disconnected_total",
    "counter",
    "Connections Ferry closed for not reading (limits.send_timeout) or for a packet too slow to arrive (limits.packet_timeout)",
    labelled("reason", { not_reading: c.disconnectedNotReading, packet_timeout: c.disconnectedPacketTimeout }),
  );
  out.add("ferry_output_bytes", "gauge", "Bytes waiting to be written to clients", g.outputBytes);
  out.add("ferry_partial_packet_bytes", "gauge", "Bytes of incomplete packets held for connections", g.partialBytes);
  out.add(
    "ferry_preauth_bytes",
    "gauge",
    "Bytes held for connections without a CONNACK (limits.max_preauth_bytes)",
    g.preAuthBytes,
  );
  const mem = b.memory;
  out.add("ferry_memory_limit_bytes", "gauge", "The memory budget, limits.max_memory (0: not enforced)", mem.limit);
  out.add("ferry_memory_used_bytes", "gauge", "What the memory budget counts now", mem.used);
  out.add("ferry_memory_peak_bytes", "gauge", "The most the memory budget counted since start", mem.peak);
  out.add(
    "ferry_memory_bytes",
    "gauge",
    "What the memory budget counts, by part",
    labelled("part", { messages: mem.messages, clients: mem.clients, output: mem.output, input: mem.input }),
  );
  out.add(
    "ferry_memory_publishers_slowed",
    "gauge",
    "Publishing connections the memory budget slows now (acks held, reading paused)",
    mem.slowedPublishers,
  );
  out.add(
    "ferry_memory_collections_total",
    "counter",
    "Full garbage collections asked for because resident memory grew past the budget's headroom",
    mem.collections,
  );
  out.add(
    "ferry_memory_publishers_slowed_total",
    "counter",
    "Times the memory budget slowed a publishing connection",
    c.throttledPublishers,
  );
  out.add(
    "ferry_memory_refused_total",
    "counter",
    "CONNECTs and QoS 1/2 publishes the memory budget refused",
    labelled("what", { connections: c.refusedMemoryConnections, publishes: c.refusedMemoryPublishes }),
  );
  out.add(
    "ferry_auth_refused_total",
    "counter",
    "CONNECTs refused by authentication, by reason",
    labelled("reason", {
      bad_credentials: c.authBadCredentials,
      not_authorized: c.authNotAuthorized,
      busy: c.authBusy,
    }),
  );
  out.add(
    "ferry_acl_denied_total",
    "counter",
    "Operations the ACL refused, by action",
    labelled("action", {
      publish: c.aclDeniedPublish,
      subscribe: c.aclDeniedSubscribe,
      delivery: c.aclDeniedDelivery,
    }),
  );
  out.add(
    "ferry_limits_refused_total",
    "counter",
    "Connections refused by abuse limits, by reason",
    labelled("reason", {
      connection_rate: c.refusedConnectionRate,
      connections_per_ip: c.refusedConnectionsPerIp,
      banned: c.refusedBanned,
      preauth_bytes: c.refusedPreAuthBytes,
    }),
  );
  out.add(
    "ferry_bans_total",
    "counter",
    "Bans issued, by reason",
    labelled("reason", {
      flapping: c.bansFlapping,
      auth_failures: c.bansAuthFailures,
    }),
  );
  out.add(
    "ferry_disconnected_message_rate_total",
    "counter",
    "Clients disconnected for publishing faster than limits.max_publish_rate",
    c.disconnectedMessageRate,
  );
  out.add("ferry_store_bytes", "gauge", "Bytes the store occupies", b.store.bytes);
  out.add("ferry_store_messages", "gauge", "Messages in the durable log", b.store.messages);
  out.add("ferry_store_full", "gauge", "1 while the store refuses appends", b.store.full ? 1 : 0);
  out.add(
    "ferry_store_dropped_messages_total",
    "counter",
    "Log messages dropped by the size quota",
    b.store.droppedMessages,
  );
  out.add("ferry_store_expired_messages_total", "counter", "Log messages trimmed for age", b.store.expiredMessages);
  out.add("ferry_store_transactions_total", "counter", "Store transactions committed", b.store.transactions);
  if (b.store.bytesWritten !== null) {
    out.add(
      "ferry_store_written_bytes_total",
      "counter",
      "Bytes the store caused to be written to storage (whole pages, as the kernel counts them): flash wear",
      b.store.bytesWritten,
    );
  }
  out.add("ferry_log_next_offset", "gauge", "Offset the next logged message gets", g.logNextOffset);

  const links = snap.uplinks;
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

  if (snap.log) {
    out.add("ferry_log_messages_total", "counter", "Warnings and errors logged", [
      [{ level: "warn" }, snap.log.warn],
      [{ level: "error" }, snap.log.error],
    ]);
  }

  // The standard process metrics (names as the Prometheus client libraries export them).
  const p = snap.process;
  const maybe = (name: string, type: "counter" | "gauge", help: string, v: number | undefined) => {
    if (v !== undefined) out.add(name, type, help, v);
  };
  maybe("process_resident_memory_bytes", "gauge", "Resident memory size in bytes", p.residentBytes);
  maybe("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds", p.cpuSeconds);
  maybe("process_open_fds", "gauge", "Number of open file descriptors", p.openFds);
  maybe("process_max_fds", "gauge", "Maximum number of open file descriptors", p.maxFds);
  maybe(
    "process_start_time_seconds",
    "gauge",
    "Start time of the process since unix epoch in seconds",
    p.startTimeSeconds,
  );
  maybe("process_heap_bytes", "gauge", "JavaScript heap in use, in bytes", p.heapBytes);
  return out.toString();
}
