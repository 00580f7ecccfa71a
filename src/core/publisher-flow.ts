import type { Clock } from "./clock.ts";
import type { Logger } from "./logger.ts";
import type { BrokerMetrics } from "./metrics.ts";
import type { Session } from "./session.ts";

/**
 * A publish waiting for room in the queues of some online subscribers: `ready` runs once
 * every one of them has room again, went offline, or stalled (see PublisherFlow).
 */
export class RoomHold {
  constructor(
    /** Sessions still to be heard from. */
    public pending: number,
    readonly ready: () => void,
  ) {}
}

/**
 * Publisher flow control: slow a publisher down rather than acknowledge a message and then
 * drop it for an online subscriber whose queue is full (issue 13).
 *
 * When a QoS>0 message meets an online session whose queue is at its bound
 * (`mqtt.max_queued_messages` / `max_queued_bytes`), Broker.publish queues it anyway, over
 * the bound, and the publisher's PUBACK/PUBREC waits here until that queue has room again.
 * A publisher's acknowledgements go in order [MQTT-4.6.0-2] [MQTT-4.6.0-3], so the held one
 * holds the ones behind it, and the publisher's own window stops it: its Receive Maximum in
 * v5, its library's in-flight limit in 3.1.1 (and InboundFlow stops reading a 3.1.1 client
 * that goes past `receive_maximum` all the same). So a queue exceeds its bound by at most
 * the windows of the publishers writing to it, and nothing acknowledged is dropped for an
 * online subscriber.
 *
 * Bounded wait: a subscriber that makes no progress at all (not one message acknowledged or
 * taken from its queue) for `stalledSubscriberMs` while publishers wait for it is stalled. Its
 * waiting publishers are released, and until it has emptied its queue it is treated like an
 * offline session: messages past its bound are dropped and counted, and nobody waits for it.
 * One stuck client can thus slow its publishers for at most that long, not stop them for good
 * (Mosquitto and EMQX never make a publisher wait for a subscriber; 0 turns the waiting off).
 */
export class PublisherFlow {
  constructor(
    private readonly options: {
      readonly maxQueuedMessages: number;
      readonly maxQueuedBytes: number;
      readonly stalledSubscriberMs: number;
    },
    private readonly clock: Clock,
    private readonly metrics: BrokerMetrics,
    private readonly logger: Logger,
  ) {}

  /** Whether a message for `s` whose queue is full may go over the bound while its publisher waits. */
  mayHold(s: Session): boolean {
    return this.options.stalledSubscriberMs > 0 && s.client !== undefined && !s.stalled;
  }

  /** Wait for room in each of `sessions` (full, online, from `mayHold`), then call `ready`. */
  hold(sessions: readonly Session[], ready: () => void): RoomHold {
    this.metrics.publishesHeld++;
    const h = new RoomHold(sessions.length, ready);
    for (const s of sessions) {
      if (s.roomWaiters === undefined) {
        s.roomWaiters = [h];
        this.#watch(s);
      } else s.roomWaiters.push(h);
    }
    return h;
  }

  /** `s`'s queue got shorter: if it has room now, its waiting publishers go on. */
  shrank(s: Session): void {
    if (s.queuedCount === 0) s.stalled = false; // caught up: it may hold publishers again
    if (s.roomWaiters === undefined) return;
    const o = this.options;
    if (s.queuedCount < o.maxQueuedMessages && s.queuedBytes < o.maxQueuedBytes) this.#release(s);
  }

  /** `s` has no connection any more (closed, taken over, ended): nobody waits for it now. */
  offline(s: Session): void {
    s.stalled = false;
    if (s.roomWaiters !== undefined) this.#release(s);
  }

  #release(s: Session): void {
    const waiters = s.roomWaiters!;
    s.roomWaiters = undefined;
    for (const h of waiters) if (--h.pending === 0) h.ready();
  }

  /** Check now and then whether `s` makes progress while publishers wait for it. */
  #watch(s: Session): void {
    if (s.stallTimer !== undefined) return;
    const mark = s.progress;
    s.stallTimer = this.clock.setTimeout(() => {
      s.stallTimer = undefined;
      if (s.roomWaiters === undefined) return; // released meanwhile; a new hold watches again
      if (s.progress !== mark) {
        this.#watch(s);
        return;
      }
      s.stalled = true;
      this.metrics.subscribersStalled++;
      this.logger.warn(
        `client ${s.clientId} took no message for ${this.options.stalledSubscriberMs} ms with its queue full: ` +
          `publishers no longer wait for it, and messages past its queue bound are dropped until it catches up`,
      );
      this.#release(s);
    }, this.options.stalledSubscriberMs);
  }
}
