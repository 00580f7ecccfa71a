import type { Message, Store } from "../store/store.ts";
import type { Logger } from "./logger.ts";
import { type Outbound, PAGE, Pending } from "./delivery-queue.ts";
import type { QueueLoader, Session } from "./session.ts";

/**
 * Reads the bodies of a session's pending queue entries from the store, a page at a time,
 * and pumps the session when they arrive. A session's queue recovered after a restart, or
 * set aside while it was offline, is then never in memory at once: what is resident is
 * the in-flight window plus about one page (issue 13).
 */
export class StoreQueueLoader implements QueueLoader {
  /** Entries per read (see QueueLoader.pageSize; tests lower it). */
  pageSize = PAGE;
  /** At most this much payload per read, so that a page of large messages stays small. */
  pageBytes = 4 * 1024 * 1024;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly pump: (s: Session) => void,
  ) {}

  load(s: Session): void {
    if (s.loading || s.ended) return;
    const page = s.queue.unreadPage(this.pageSize, this.pageBytes);
    if (page.length === 0) return;
    s.loading = true;
    const offsets: number[] = [];
    const topics: string[] = [];
    for (const p of page) {
      if (p.topic === undefined) offsets.push(p.offset);
      else topics.push(p.topic);
    }
    Promise.all([this.store.readMessages(offsets), this.store.readRetained(topics)]).then(
      ([messages, retained]) => {
        s.loading = false;
        if (s.ended) return;
        const gone = fill(s, page, messages, retained);
        if (gone > 0) {
          this.logger.warn(
            `session ${s.clientId}: ${gone} queued messages were no longer in the store and are skipped`,
          );
        }
        this.pump(s);
      },
      (err: unknown) => {
        s.loading = false;
        // The entries stay pending: the next pump (an ack, a reconnect) asks again.
        this.logger.error(`session ${s.clientId}: cannot read queued messages from the store: ${String(err)}`);
      },
    );
  }

  /** The first `max` queued deliveries of `s` with their messages, read but not kept (admin views). */
  async peek(s: Session, max: number): Promise<Outbound[]> {
    const head = s.queue.head(max);
    const want = head.filter((e): e is Pending => e instanceof Pending && e.unread);
    const offsets = want.filter((p) => p.topic === undefined).map((p) => p.offset);
    const topics = want.flatMap((p) => (p.topic === undefined ? [] : [p.topic]));
    const [messages, retained] = await Promise.all([this.store.readMessages(offsets), this.store.readRetained(topics)]);
    const byOffset = new Map(messages.map((m) => [m.offset, m]));
    const byTopic = new Map(retained.map((m) => [m.topic, m]));
    const out: Outbound[] = [];
    for (const e of head) {
      if (!(e instanceof Pending)) out.push(e);
      else if (e.loaded !== undefined) out.push(e.loaded);
      else {
        const message = e.topic === undefined ? byOffset.get(e.offset) : byTopic.get(e.topic);
        if (message) out.push(e.deliveryOf(message));
      }
    }
    return out;
  }
}

/** Hands each pending entry of `s`'s queue its message, or marks it gone; returns how many were gone. */
function fill(s: Session, page: Pending[], messages: Message[], retained: Message[]): number {
  const byOffset = new Map<number, Message>();
  for (const m of messages) byOffset.set(m.offset, m);
  const byTopic = new Map<string, Message>();
  for (const m of retained) byTopic.set(m.topic, m);
  let gone = 0;
  for (const p of page) {
    // Loaded meanwhile (the admin view does not load), or emptied by a redistribution.
    if (p.loaded !== undefined || p.gone) continue;
    const message = p.topic === undefined ? byOffset.get(p.offset) : byTopic.get(p.topic);
    if (message) s.queue.fill(p, p.deliveryOf(message));
    else {
      p.gone = true;
      // A retained message cleared since the SUBSCRIBE is simply no longer there.
      if (p.topic === undefined) gone++;
    }
  }
  return gone;
}
