import { type Mutation, type QoS, RETAINED_COPY_ORIGIN } from "../store/store.ts";
import type { Broker } from "./broker.ts";
import { deliveryRecord } from "./outbound-flow.ts";
import { isResident } from "./retained-index.ts";
import { type ActiveSubscription, type Outbound, Pending } from "./session.ts";

/**
 * Retained messages for a new subscription, per its Retain Handling [MQTT-3.3.1-9..11].
 * Those whose body is only in the store (recovered) are queued as pending entries, read
 * a page at a time as the session drains; messages published meanwhile queue behind
 * them, so a subscriber never gets an older retained value after a newer live one.
 */
export function sendRetained(broker: Broker, made: ActiveSubscription, isNew: boolean): void {
  // Nothing retained: none of the work below (a persistent session's thousands of SUBSCRIBEs).
  if (broker.retained.size === 0) return;
  const s = made.session;
  if (s.ended) return;
  // The subscription as it is now: one that a later SUBSCRIBE of the same filter replaced
  // while this one's write was being committed sends by the replacement's options, one an
  // UNSUBSCRIBE removed meanwhile sends nothing.
  const sub = made.index >= 0 ? made : broker.router.subscriptionOf(s, made.filter);
  if (!sub || sub.group !== undefined) return; // shared subscriptions get no retained messages
  if (sub.retainHandling === 2 || (sub.retainHandling === 1 && !isNew)) return;
  const now = broker.clock.now();
  const mutations: Mutation[] = [];
  const outbounds: Outbound[] = [];
  const pending: Pending[] = [];
  const subIds = sub.subscriptionId !== undefined ? [sub.subscriptionId] : undefined;
  for (const m of broker.retained.match(sub.plainFilter)) {
    if (m.expiresAt !== undefined && m.expiresAt <= now) {
      broker.retained.set(m.topic, undefined);
      mutations.push({ op: "retain", topic: m.topic, message: null });
      continue;
    }
    const qos = Math.min(m.qos, sub.qos) as QoS;
    if (!isResident(m)) {
      if (qos > 0 && s.persistent) {
        // The store copies the body into the log itself, as it holds it when the copy is applied.
        const offset = broker.takeOffset();
        const delivery = { clientId: s.clientId, offset, qos, retain: true, phase: "queued" as const };
        mutations.push({
          op: "retained-copy",
          topic: m.topic,
          offset,
          delivery: subIds ? { ...delivery, subscriptionIds: subIds } : delivery,
        });
        pending.push(new Pending(offset, undefined, m.bytes, qos, true, subIds));
      } else pending.push(new Pending(0, m.topic, m.bytes, qos, true, subIds));
      continue;
    }
    let message = m;
    if (qos > 0 && s.persistent) {
      // The log may have trimmed the original; log a copy so the delivery has a body to
      // point to. Marked as a copy, so the uplink does not forward it a second time.
      message = { ...m, offset: broker.takeOffset(), origin: RETAINED_COPY_ORIGIN };
      mutations.push({ op: "append", message });
      mutations.push({ op: "delivery-put", delivery: deliveryRecord(s, message, qos, true, sub.subscriptionId) });
    }
    outbounds.push({
      message,
      qos,
      retain: true, // [MQTT-3.3.1-9] retained messages sent on subscribe keep RETAIN=1
      subscriptionIds: subIds,
      packetId: 0,
      phase: "queued",
      shareKey: undefined,
      cache: undefined,
    });
  }
  // Committed before delivery, so that a QoS 2 copy to a persistent session can wait for
  // its record (Outbound.recordCommit); QoS 0/1 ones go at once.
  const commit = mutations.length > 0 ? broker.store.commit(mutations) : undefined;
  if (commit !== undefined) {
    const copies = s.persistent ? outbounds.filter((o) => o.qos > 0) : [];
    for (const o of copies) o.recordCommit = commit;
    const settled = () => {
      for (const o of copies) if (o.recordCommit === commit) o.recordCommit = undefined;
    };
    commit.then(settled, (err: unknown) => {
      broker.logger.error(`store commit failed: ${String(err)}`);
      settled();
    });
  }
  for (const o of outbounds) broker.outbound.deliver(s, o);
  // Pending entries are read after that commit (a read sees every commit made before it),
  // so their records are durable by the time they are sent.
  if (pending.length > 0 && !s.ended) {
    for (const p of pending) s.enqueue(p);
    broker.outbound.pump(s);
  }
}
