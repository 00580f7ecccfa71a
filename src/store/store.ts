/**
 * The storage boundary of the kernel. The core describes every durable change as a
 * list of mutations and hands them to `commit`; an implementation applies one list
 * atomically (one transaction) and may group several lists into one sync. The
 * promise resolves only once the changes are as durable as the store's mode
 * promises — the broker sends PUBACK/PUBREC after that, never before.
 *
 * Data is written once: a message body lives in the log under its offset, and every
 * consumer (session deliveries, and later the uplink and the history view) refers
 * to it by offset.
 */

export type QoS = 0 | 1 | 2;

/** The MQTT 5 properties that travel with an application message unchanged. */
export interface MessageProperties {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Uint8Array;
  userProperties?: Record<string, string | string[]>;
}

/** An application message as the broker keeps it. */
export interface Message {
  /** Log offset, unique and increasing; 0 for messages that were never logged (QoS 0). */
  offset: number;
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  /** The RETAIN flag the publisher set. */
  retain: boolean;
  /** Milliseconds since the epoch when Ferry received it. */
  receivedAt: number;
  /** Absolute expiry (ms since epoch) from the Message Expiry Interval, if any. */
  expiresAt?: number;
  properties?: MessageProperties;
  /**
   * Client id of the publisher (for No Local); empty for messages from the broker
   * itself; RETAINED_COPY_ORIGIN for a retained message's copy logged for a session.
   */
  origin: string;
}

/**
 * The origin of a retained message's copy that the broker logs so a persistent
 * session's delivery has a body even if the original is trimmed. It is not a new
 * publication, so log readers (the uplink) skip it. U+0000 cannot occur in a client
 * id [MQTT-1.5.4-2], so no client can be mistaken for it.
 */
export const RETAINED_COPY_ORIGIN = "\u0000retained";

export interface SubscriptionRecord {
  filter: string; // the full filter as subscribed, including any $share/group/ prefix
  qos: QoS;
  noLocal: boolean;
  retainAsPublished: boolean;
  retainHandling: 0 | 1 | 2;
  subscriptionId?: number;
}

export interface SessionRecord {
  clientId: string;
  /** Session Expiry Interval in seconds; 0xFFFFFFFF never expires. */
  expiryInterval: number;
  /** ms since epoch when the client disconnected; undefined while connected. */
  disconnectedAt?: number;
  protocolVersion: 3 | 4 | 5;
  subscriptions: SubscriptionRecord[];
  /**
   * The username that owns the session (`auth.bind_client_ids`): a string, null for an
   * anonymous client; absent in records written before owners were kept (then unbound).
   */
  owner?: string | null;
}

/** A session's own fields: its record without the subscriptions (those are stored one by one). */
export type SessionState = Omit<SessionRecord, "subscriptions">;

/**
 * One message owed to one session. `packetId` is set once it was sent; `phase`
 * 'pubrel' means PUBREC arrived for an outbound QoS 2 message and only PUBREL/PUBCOMP
 * remain.
 */
export interface DeliveryRecord {
  clientId: string;
  offset: number;
  qos: QoS;
  /** RETAIN flag as it will be sent (retain-as-published applied). */
  retain: boolean;
  subscriptionIds?: number[];
  packetId?: number;
  phase: "queued" | "sent" | "pubrel";
}

export type Mutation =
  | { op: "append"; message: Message }
  | { op: "retain"; topic: string; message: Message | null }
  /** The session and exactly these subscriptions (any stored before are replaced). */
  | { op: "session-put"; session: SessionRecord }
  /**
   * The session's own fields; its stored subscriptions stay as they are. A SUBSCRIBE
   * writes one subscription, not the whole record: rewriting every subscription per
   * SUBSCRIBE made a session of 20,000 filters quadratic (issue 13).
   */
  | { op: "session-update"; session: SessionState }
  | { op: "subscription-put"; clientId: string; subscription: SubscriptionRecord }
  | { op: "subscription-delete"; clientId: string; filter: string }
  | { op: "session-delete"; clientId: string }
  | { op: "delivery-put"; delivery: DeliveryRecord }
  /**
   * Copies the retained message of `topic`, as the store holds it when this list is
   * applied, into the log at `offset` (origin RETAINED_COPY_ORIGIN), and puts `delivery`
   * (whose offset is `offset`); nothing when the topic has no retained message. For a
   * retained message sent on SUBSCRIBE to a persistent session whose body the broker
   * does not hold in memory.
   */
  | { op: "retained-copy"; topic: string; offset: number; delivery: DeliveryRecord }
  | { op: "delivery-sent"; clientId: string; offset: number; packetId: number }
  /**
   * Deliveries are named by offset, never by packet id: (client_id, offset) is the key, so
   * each such change is one keyed lookup however long the session's queue (a lookup by
   * packet id scanned the whole queue per QoS 2 message: issue 19). It records the packet id
   * too, so it stands in for a "sent" mark that has not been written yet (WriteBehind.supersede).
   */
  | { op: "delivery-pubrel"; clientId: string; offset: number; packetId: number }
  | { op: "delivery-delete-offset"; clientId: string; offset: number }
  | { op: "qos2-in-put"; clientId: string; packetId: number }
  | { op: "qos2-in-delete"; clientId: string; packetId: number }
  /**
   * A log reader's position (the uplink): every offset <= `offset` is done with. Age
   * trimming keeps messages above the lowest cursor; only the size quota may drop them.
   */
  | { op: "cursor-put"; name: string; offset: number }
  | { op: "cursor-delete"; name: string }
  /**
   * A named counter that must outlive a restart (the uplink's skipped messages): the
   * value replaces the stored one. Counters hold nothing in the log.
   */
  | { op: "counter-put"; name: string; value: number };

/**
 * What a store hands back when it opens: enough to resume exactly, without message
 * bodies. Retained messages and queued deliveries come as an index in columns (topics,
 * offsets, sizes; no object per message); the broker reads bodies with `readRetained`
 * and `readMessages` when it needs them, so a large backlog is never in memory at once
 * (issue 13: loading every body made a start with 100,000 retained and 100,000 queued
 * messages take 476 MB).
 */
export interface Recovered {
  /** The next log offset to assign (greater than every offset in the log). */
  nextOffset: number;
  retained: RecoveredRetained;
  sessions: RecoveredSession[];
  /** Log readers' positions by name (see the cursor-put mutation). */
  cursors: Record<string, number>;
  /** Persisted counters by name (see the counter-put mutation); absent from stores that predate them. */
  counters?: Record<string, number>;
}

/** Retained messages without bodies, one per index, in no particular order. */
export interface RecoveredRetained {
  readonly topics: readonly string[];
  readonly qos: Uint8Array;
  /** Payload bytes. */
  readonly bytes: Uint32Array;
  /** Absolute expiry (ms since epoch); NaN for none. */
  readonly expiresAt: Float64Array;
}

/** A retained message without its body: what matching a subscription needs. */
export interface RetainedStub {
  topic: string;
  qos: QoS;
  /** Payload bytes. */
  bytes: number;
  expiresAt?: number;
}

export interface RecoveredSession {
  /** The record, with every stored subscription (in no particular order). */
  session: SessionRecord;
  /**
   * Deliveries sent and not completed (phase sent or pubrel, with a packet id), oldest
   * first, with their messages: bounded by the in-flight window, and re-sent at once.
   */
  inflight: Array<{ delivery: DeliveryRecord; message: Message }>;
  /** Deliveries not sent yet, oldest first, without bodies (read them with `readMessages`). */
  queued: QueuedDeliveries;
  /** QoS 2 packet ids received but not yet released (PUBREL). */
  qos2Incoming: number[];
}

/** One session's queued deliveries in columns, oldest first: index i is one delivery. */
export interface QueuedDeliveries {
  readonly length: number;
  readonly offsets: Float64Array;
  /** Payload bytes of each message. */
  readonly bytes: Uint32Array;
  /** The QoS to send in bits 0-1; bit 2 the RETAIN flag to send. */
  readonly flags: Uint8Array;
  /** Subscription identifiers by index, for the deliveries that carry any. */
  readonly subscriptionIds: ReadonlyMap<number, number[]>;
}

export const QUEUED_RETAIN = 0x04;

/** Delivery `i` of `q` as a record of session `clientId`. */
export function queuedDelivery(q: QueuedDeliveries, i: number, clientId: string): DeliveryRecord {
  const d: DeliveryRecord = {
    clientId,
    offset: q.offsets[i]!,
    qos: (q.flags[i]! & 3) as QoS,
    retain: (q.flags[i]! & QUEUED_RETAIN) !== 0,
    phase: "queued",
  };
  const ids = q.subscriptionIds.get(i);
  if (ids !== undefined) d.subscriptionIds = ids;
  return d;
}

/** Retained message `i` of `r`. */
export function retainedStub(r: RecoveredRetained, i: number): RetainedStub {
  const stub: RetainedStub = { topic: r.topics[i]!, qos: (r.qos[i]! & 3) as QoS, bytes: r.bytes[i]! };
  if (!Number.isNaN(r.expiresAt[i]!)) stub.expiresAt = r.expiresAt[i]!;
  return stub;
}

export interface StoreStats {
  /** Messages in the log. */
  messages: number;
  /** Bytes the store occupies (file size for SQLite, estimate for memory). */
  bytes: number;
  /** Messages dropped from the log by the size quota (maxBytes) since open. */
  droppedMessages?: number;
  /** Unreferenced messages trimmed from the log for age (message TTL) since open. */
  expiredMessages?: number;
  /** Transactions committed since open; with group commit, fewer than commit() calls. */
  transactions?: number;
  /** True while the store refuses appends (quota reached with nothing to drop, or disk full). */
  full?: boolean;
  /**
   * Bytes the store has caused to be written to storage since it opened, as the kernel
   * counts them (whole pages, WAL and checkpoints): the flash wear it costs. Absent where
   * the runtime cannot tell (not Linux) and for the memory store.
   */
  bytesWritten?: number;
}

/** Raised by `commit` when the store cannot take more (quota or disk full). */
export class StoreFullError extends Error {
  override name = "StoreFullError";
}

export interface Store {
  /** A short name for logs: "memory", "sqlite". */
  readonly kind: string;
  open(): Promise<Recovered>;
  /** Apply the mutations atomically; resolves when durable per the store's mode. */
  commit(mutations: readonly Mutation[]): Promise<void>;
  /** Messages from the log with offset >= `from`, oldest first, at most `limit`. */
  readLog(from: number, limit: number): Promise<Message[]>;
  /**
   * The messages of the log at `offsets`, in that order, leaving out those not in it. Like
   * every read, it sees the lists passed to `commit` before it was called, durable or not.
   */
  readMessages(offsets: readonly number[]): Promise<Message[]>;
  /** The retained messages of `topics`, in that order, leaving out topics without one. */
  readRetained(topics: readonly string[]): Promise<Message[]>;
  /**
   * True when message bodies live outside the JavaScript heap (a file): the broker may
   * then drop its references to bodies it queued and read them back when needed. False
   * for the memory store, whose bodies stay in the heap anyway.
   */
  readonly offloadsBodies: boolean;
  stats(): StoreStats;
  /**
   * True while a list handed to `commit` now would wait for a transaction that is coming
   * anyway (a commit window runs, or a batch goes at the end of this turn): bookkeeping
   * handed over now costs no transaction of its own (WriteBehind). Absent: never.
   */
  gathering?(): boolean;
  /** Flush everything pending and release resources. */
  close(): Promise<void>;
}

/** Whether `m` adds a message to the log: what a full store refuses. */
export function addsToLog(m: Mutation): boolean {
  return m.op === "append" || m.op === "retained-copy";
}
