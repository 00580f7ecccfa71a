import type { Broker } from "./broker.ts";
import { type BrokerSnapshot, brokerSnapshot, droppedByReason, sum3 } from "./metrics-snapshot.ts";

const enc = new TextEncoder();

/**
 * Publish the `$SYS/broker/...` topics, rendered from the metrics snapshot, under the names
 * Mosquitto uses where they mean the same (`clients/connected`, `store/messages/count`,
 * `load/messages/received/1min`, …) and Ferry's own names for what Mosquitto does not have.
 * They are retained in memory (never written to the store) so a new subscriber sees the
 * latest values. Components outside the kernel add theirs through `broker.sysSources`.
 */
export function publishSysTopics(broker: Broker): void {
  const snap = brokerSnapshot(broker);
  const values = sysValues(snap, loadsOf(broker).update(snap));
  for (const source of broker.sysSources) values.push(...source());
  for (const [topic, value] of values) {
    broker.publishInternal(`$SYS/broker/${topic}`, enc.encode(String(value)), true);
  }
}

/** The snapshot as $SYS topics (below `$SYS/broker/`). */
export function sysValues(s: BrokerSnapshot, loads: Array<[string, number]> = []): Array<[string, string | number]> {
  const c = s.counters;
  const g = s.gauges;
  const dropped = droppedByReason(c);
  const droppedTotal = Object.values(dropped).reduce((a, b) => a + b, 0);
  const values: Array<[string, string | number]> = [
    ["version", `ferry version ${s.version}`],
    ["uptime", `${s.uptimeSeconds} seconds`],
    ["clients/connected", g.connected],
    ["clients/disconnected", g.disconnected],
    ["clients/total", g.sessions],
    ["clients/sockets", g.sockets],
    ["messages/received", sum3(s.messagesReceived)],
    ["messages/sent", sum3(s.messagesSent)],
    ["messages/inflight", g.inflight],
    ["messages/queued", g.queued],
    ["publish/messages/received", sum3(s.messagesReceived)],
    ["publish/messages/sent", sum3(s.messagesSent)],
    ["publish/messages/dropped", droppedTotal],
    ["messages/dropped", droppedTotal],
    ...Object.entries(dropped).map(([reason, n]): [string, number] => [`messages/dropped/${reason}`, n]),
    ["messages/refused/storage_full", c.refusedStorageFull],
    ["publish/messages/held", c.publishesHeld],
    ["clients/stalled", c.subscribersStalled],
    ["bytes/received", c.bytesReceived],
    ["bytes/sent", c.bytesSent],
    ["connections/total", c.connectionsTotal],
    ["connections/refused", c.connectionsRefused],
    ["connections/protocol_errors", c.protocolErrors],
    ["connections/keepalive_timeouts", c.keepaliveTimeouts],
    ["connections/paused", g.pausedConnections],
    ["connections/reading_paused", c.pausedReading],
    ["connections/paced", c.pacedPublishers],
    ["connections/disconnected/not_reading", c.disconnectedNotReading],
    ["connections/disconnected/packet_timeout", c.disconnectedPacketTimeout],
    ["connections/output_bytes", g.outputBytes],
    ["connections/partial_bytes", g.partialBytes],
    ["connections/preauth_bytes", g.preAuthBytes],
    ["memory/limit", s.memory.limit],
    ["memory/used", s.memory.used],
    ["memory/peak", s.memory.peak],
    ["memory/messages", s.memory.messages],
    ["memory/clients", s.memory.clients],
    ["memory/output", s.memory.output],
    ["memory/input", s.memory.input],
    ["memory/publishers/slowed", s.memory.slowedPublishers],
    ["memory/publishers/slowed_total", c.throttledPublishers],
    ["memory/collections_total", s.memory.collections],
    ["memory/refused/connections", c.refusedMemoryConnections],
    ["memory/refused/publishes", c.refusedMemoryPublishes],
    ...(s.memory.residentBytes === undefined ? [] : [["memory/rss", s.memory.residentBytes] as [string, number]]),
    ["retained messages/count", g.retained],
    ["subscriptions/count", g.subscriptions],
    ["store/messages/count", s.store.messages],
    ["store/messages/bytes", s.store.bytes],
    ["store/full", s.store.full ? 1 : 0],
    ["store/dropped", s.store.droppedMessages],
    ["store/expired", s.store.expiredMessages],
    ...(s.store.bytesWritten !== null ? [["store/bytes_written", s.store.bytesWritten] as [string, number]] : []),
    ["security/auth/bad_credentials", c.authBadCredentials],
    ["security/auth/not_authorized", c.authNotAuthorized],
    ["security/auth/busy", c.authBusy],
    ["security/acl/denied_publish", c.aclDeniedPublish],
    ["security/acl/denied_subscribe", c.aclDeniedSubscribe],
    ["security/acl/denied_delivery", c.aclDeniedDelivery],
    ["security/refused/connection_rate", c.refusedConnectionRate],
    ["security/refused/connections_per_ip", c.refusedConnectionsPerIp],
    ["security/refused/banned", c.refusedBanned],
    ["security/refused/preauth_bytes", c.refusedPreAuthBytes],
    ["security/bans/flapping", c.bansFlapping],
    ["security/bans/auth_failures", c.bansAuthFailures],
    ["security/disconnected/message_rate", c.disconnectedMessageRate],
  ];
  values.push(...loads);
  return values;
}

/**
 * Mosquitto's `load/...` topics: exponentially weighted moving averages, per minute, over
 * 1, 5 and 15 minutes, updated at every $SYS publish from the change of each counter.
 */
class LoadAverages {
  #last: Map<string, number> | undefined;
  #lastAt = 0;
  #avg = new Map<string, number>();

  update(s: BrokerSnapshot): Array<[string, number]> {
    const current = new Map<string, number>([
      ["messages/received", sum3(s.messagesReceived)],
      ["messages/sent", sum3(s.messagesSent)],
      ["publish/received", sum3(s.messagesReceived)],
      ["publish/sent", sum3(s.messagesSent)],
      ["publish/dropped", Object.values(droppedByReason(s.counters)).reduce((a, b) => a + b, 0)],
      ["bytes/received", s.counters.bytesReceived],
      ["bytes/sent", s.counters.bytesSent],
      ["connections", s.counters.connectionsTotal],
    ]);
    const out: Array<[string, number]> = [];
    const dt = (s.at - this.#lastAt) / 1000;
    for (const [name, value] of current) {
      for (const minutes of [1, 5, 15]) {
        const key = `${name}/${minutes}min`;
        let avg = this.#avg.get(key) ?? 0;
        if (this.#last !== undefined && dt > 0) {
          const perMinute = ((value - (this.#last.get(name) ?? 0)) * 60) / dt;
          const k = Math.exp(-dt / (60 * minutes));
          avg = avg * k + perMinute * (1 - k);
          this.#avg.set(key, avg);
        }
        out.push([`load/${key}`, Math.round(avg * 100) / 100]);
      }
    }
    this.#last = current;
    this.#lastAt = s.at;
    return out;
  }
}

const loads = new WeakMap<Broker, LoadAverages>();
function loadsOf(broker: Broker): LoadAverages {
  let l = loads.get(broker);
  if (!l) loads.set(broker, l = new LoadAverages());
  return l;
}
