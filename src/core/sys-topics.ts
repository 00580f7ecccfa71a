import type { Broker } from "./broker.ts";

const enc = new TextEncoder();

/**
 * Publish the `$SYS/broker/...` topics Mosquitto users look for. They are retained in
 * memory (never written to the store) so a new subscriber sees the latest values.
 */
export function publishSysTopics(broker: Broker): void {
  const m = broker.metrics;
  const now = broker.clock.now();
  const sum = (a: number[]) => a[0]! + a[1]! + a[2]!;
  const values: Array<[string, string | number]> = [
    ["version", `ferry ${broker.options.version}`],
    ["uptime", `${Math.floor((now - m.startedAt) / 1000)} seconds`],
    ["clients/connected", broker.connectedCount],
    ["clients/total", broker.sessions.size],
    ["clients/disconnected", broker.sessions.size - broker.connectedCount],
    ["messages/received", sum(m.messagesReceived)],
    ["messages/sent", sum(m.messagesSent)],
    ["messages/dropped", m.droppedQueueFull + m.droppedSlowConsumer + m.droppedExpired + m.droppedTooLarge],
    ["publish/messages/received", sum(m.messagesReceived)],
    ["publish/messages/sent", sum(m.messagesSent)],
    ["bytes/received", m.bytesReceived],
    ["bytes/sent", m.bytesSent],
    ["retained messages/count", broker.retained.size],
    ["subscriptions/count", [...broker.sessions.values()].reduce((n, s) => n + s.subscriptions.size, 0)],
    ["store/messages", broker.store.stats().messages],
    ["store/bytes", broker.store.stats().bytes],
  ];
  for (const source of broker.sysSources) values.push(...source());
  for (const [topic, value] of values) {
    broker.publishInternal(`$SYS/broker/${topic}`, enc.encode(String(value)), true);
  }
}
