/**
 * The narrow port through which the uplink and the HTTP history read the durable log:
 * read by offset, save a cursor (and counters that must outlive a restart), the next
 * offset, the clock and the logger. Nothing else of the broker is reachable through it,
 * so the uplink can be driven in tests by an in-memory log and a manual clock.
 */
import type { Broker } from "../core/broker.ts";
import type { Clock } from "../core/clock.ts";
import { topicNameProblem } from "../mqtt/topic.ts";
import type { Logger } from "../core/logger.ts";
import type { Message } from "../store/store.ts";

export interface LogPort {
  /** Messages with offset >= `from`, oldest first, at most `limit`. */
  readLog(from: number, limit: number): Promise<Message[]>;
  /** Durably record that the reader `name` is done with every offset <= `offset`. */
  saveCursor(name: string, offset: number): Promise<void>;
  /** Readers' cursors found in the store at start, by name. */
  savedCursors(): Record<string, number>;
  /** Forget readers no longer configured, so they stop holding the log. */
  deleteCursors(names: readonly string[]): Promise<void>;
  /** Durably record counters (name → value) that must survive a restart. */
  saveCounters(values: Record<string, number>): Promise<void>;
  /** Counters saved before the last start. */
  savedCounters(): Record<string, number>;
  /** The offset the next logged message gets (every committed offset is below it). */
  nextOffset(): number;
  readonly clock: Clock;
  readonly logger: Logger;
}

/** Who the local ACL sees publishing a cloud command (downlink_acl). */
export interface DownlinkIdentity {
  username: string | undefined;
  clientId: string;
}

/** What a downlink needs besides the log: validate a local topic, and publish a command durably. */
export interface LocalPublishPort {
  /** Why `topic` cannot be published locally, or undefined. */
  topicProblem(topic: string): string | undefined;
  /** Routed like any publish; resolves once durable and handed to subscribers. */
  inject(message: Message): Promise<void>;
  /** Whether the local ACL lets `subject` publish on `topic`. */
  mayPublish(identity: DownlinkIdentity, topic: string): boolean;
}

export function brokerLogPort(broker: Broker): LogPort {
  return {
    readLog: (from, limit) => broker.store.readLog(from, limit),
    saveCursor: (name, offset) => broker.store.commit([{ op: "cursor-put", name, offset }]),
    savedCursors: () => broker.recoveredCursors,
    deleteCursors: (names) => broker.store.commit(names.map((name) => ({ op: "cursor-delete" as const, name }))),
    saveCounters: (values) =>
      broker.store.commit(Object.entries(values).map(([name, value]) => ({ op: "counter-put" as const, name, value }))),
    savedCounters: () => broker.recoveredCounters,
    nextOffset: () => broker.nextOffset,
    clock: broker.clock,
    logger: broker.logger,
  };
}

export function brokerPublishPort(broker: Broker): LocalPublishPort {
  return {
    topicProblem: (topic) => topicNameProblem(topic, broker.options),
    inject: (message) => broker.injectMessage(message),
    // A cloud command has no network peer of its own: the ACL sees the identity only.
    mayPublish: (identity, topic) =>
      broker.acl.allows({ ...identity, remoteAddress: "uplink", remoteIp: undefined }, "publish", topic),
  };
}
