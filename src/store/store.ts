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
  | { op: "session-put"; session: SessionRecord }
  | { op: "session-delete"; clientId: string }
  | { op: "delivery-put"; delivery: DeliveryRecord }
  | { op: "delivery-sent"; clientId: string; offset: number; packetId: number }
  /**
   * Deliveries are named by offset, never by packet id: (client_id, offset) is the key, so
   * each such change is one keyed lookup however long the session's queue (a lookup by
   * packet id scanned the whole queue per QoS 2 message: issue 19).
   */
  | { op: "delivery-pubrel"; clientId: string; offset: number }
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

/** What a store hands back when it opens: enough to resume exactly. */
export interface Recovered {
  /** The next log offset to assign (greater than every offset in the log). */
  nextOffset: number;
  retained: Message[];
  sessions: RecoveredSession[];
  /** Log readers' positions by name (see the cursor-put mutation). */
  cursors: Record<string, number>;
  /** Persisted counters by name (see the counter-put mutation); absent from stores that predate them. */
  counters?: Record<string, number>;
}

export interface RecoveredSession {
  session: SessionRecord;
  /** Owed messages in delivery order (by offset), with their bodies. */
  deliveries: Array<{ delivery: DeliveryRecord; message: Message }>;
  /** QoS 2 packet ids received but not yet released (PUBREL). */
  qos2Incoming: number[];
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
  stats(): StoreStats;
  /** Flush everything pending and release resources. */
  close(): Promise<void>;
}
