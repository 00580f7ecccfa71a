/**
 * Every counter and gauge of the kernel at one instant, as plain data. $SYS
 * (sys-topics.ts), /metrics and the REST API (src/admin) all render this one object, so a
 * counter added to BrokerMetrics shows in all three or, by a test, in none.
 */
import type { Broker } from "./broker.ts";
import type { BrokerMetrics } from "./metrics.ts";

/** Every numeric field of BrokerMetrics but the start time; the QoS arrays are split out below. */
export type BrokerCounters = {
  [K in keyof BrokerMetrics as BrokerMetrics[K] extends number ? (K extends "startedAt" ? never : K) : never]: number;
};

export interface BrokerSnapshot {
  version: string;
  at: number;
  startedAt: number;
  uptimeSeconds: number;
  counters: BrokerCounters;
  messagesReceived: readonly [number, number, number];
  messagesSent: readonly [number, number, number];
  gauges: {
    /** Clients past CONNACK. */
    connected: number;
    /** Network connections, including those that have not finished CONNECT. */
    sockets: number;
    sessions: number;
    /** Sessions with no connection (persistent sessions of offline clients). */
    disconnected: number;
    subscriptions: number;
    retained: number;
    /** Messages queued beyond sessions' in-flight windows. */
    queued: number;
    /** QoS>0 messages sent to clients and not acknowledged. */
    inflight: number;
    logNextOffset: number;
    /** Connections Ferry is not reading from because their output is over limits.max_output_bytes. */
    pausedConnections: number;
    /** Bytes waiting to be written to clients (adapters' buffers and output held for a commit). */
    outputBytes: number;
    /** Bytes of incomplete packets held for connections. */
    partialBytes: number;
    /** The part of those held for connections without a CONNACK (the pre-auth budget's count), plus packets behind their CONNECT. */
    preAuthBytes: number;
  };
  /** The memory budget (limits.max_memory; memory-budget.ts), in bytes. */
  memory: {
    /** The budget; 0 when counted but not enforced. */
    limit: number;
    used: number;
    /** The highest `used` since start. */
    peak: number;
    /** Message bodies in memory and queued or in-flight deliveries. */
    messages: number;
    /** Connections, sessions and subscriptions. */
    clients: number;
    /** Output waiting for clients, as last counted. */
    output: number;
    /** Bytes read and not handled yet. */
    input: number;
    /** Publishing connections slowed by the budget now. */
    slowedPublishers: number;
    /** The process's resident memory as the OS sees it, when the runtime can tell. */
    residentBytes: number | undefined;
    /** Full collections the resident watch asked for, since start (resident-watch.ts). */
    collections: number;
  };
  store: {
    kind: string;
    messages: number;
    bytes: number;
    full: boolean;
    droppedMessages: number;
    expiredMessages: number;
    transactions: number;
    /** Bytes the store caused to be written to storage since start (flash wear); null where unknown. */
    bytesWritten: number | null;
  };
}

export function brokerSnapshot(broker: Broker): BrokerSnapshot {
  const m = broker.metrics;
  const now = broker.clock.now();
  let subscriptions = 0;
  let queued = 0;
  let inflight = 0;
  for (const s of broker.sessions.values()) {
    subscriptions += s.subscriptions.size;
    queued += s.queuedCount;
    inflight += s.inflight.size;
  }
  const counters = {} as Record<string, number>;
  for (const [key, value] of Object.entries(m)) {
    if (typeof value === "number" && key !== "startedAt") counters[key] = value;
  }
  const store = broker.store.stats();
  const budget = broker.budget;
  return {
    version: broker.options.version,
    at: now,
    startedAt: m.startedAt,
    uptimeSeconds: Math.floor((now - m.startedAt) / 1000),
    counters: counters as BrokerCounters,
    messagesReceived: [...m.messagesReceived],
    messagesSent: [...m.messagesSent],
    gauges: {
      connected: broker.connectedCount,
      sockets: broker.clients.size,
      sessions: broker.sessions.size,
      disconnected: broker.sessions.size - broker.connectedCount,
      subscriptions,
      retained: broker.retained.size,
      queued,
      inflight,
      logNextOffset: broker.nextOffset,
      pausedConnections: broker.connectionBytes.pausedConnections,
      outputBytes: broker.connectionBytes.outputBytes(),
      partialBytes: broker.connectionBytes.partialBytes(),
      preAuthBytes: broker.connectionBytes.preAuthBytes,
    },
    memory: {
      limit: budget.limit,
      used: budget.used,
      peak: budget.peak,
      messages: budget.messages,
      clients: budget.clients,
      output: budget.output,
      input: budget.input,
      slowedPublishers: budget.throttled,
      residentBytes: broker.residentBytes(),
      collections: broker.residentWatch.collections,
    },
    store: {
      kind: broker.store.kind,
      messages: store.messages,
      bytes: store.bytes,
      full: store.full ?? false,
      droppedMessages: store.droppedMessages ?? 0,
      expiredMessages: store.expiredMessages ?? 0,
      transactions: store.transactions ?? 0,
      bytesWritten: store.bytesWritten ?? null,
    },
  };
}

/** Messages dropped before reaching a subscriber, by reason (the names /metrics labels use). */
export function droppedByReason(c: BrokerCounters): Record<string, number> {
  return {
    queue_full: c.droppedQueueFull,
    queue_bytes: c.droppedQueueBytes,
    slow_consumer: c.droppedSlowConsumer,
    expired: c.droppedExpired,
    too_large: c.droppedTooLarge,
    memory: c.droppedMemory,
  };
}

export const sum3 = (v: readonly number[]): number => v[0]! + v[1]! + v[2]!;
