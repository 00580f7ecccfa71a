import type { Packet, SubscribePacket, UnsubscribePacket } from "../mqtt/packets.ts";
import { encode } from "../mqtt/codec.ts";
import { MqttError, RC } from "../mqtt/reason-codes.ts";
import { parseSubscriptionFilter, topicFilterProblem } from "../mqtt/topic.ts";
import type { Broker } from "./broker.ts";
import type { ClientConnection } from "./client-connection.ts";
import { ActiveSubscription, subscriptionOptions } from "./subscription.ts";

/**
 * SUBSCRIBE and UNSUBSCRIBE from a connected client: filters checked, ACL asked, the
 * router changed, one store write per changed filter (never the session's other
 * subscriptions), then SUBACK/UNSUBACK once that write is durable and, after a SUBACK,
 * the retained messages [MQTT-3.3.1-9]. A protocol error throws MqttError; the connection
 * closes on it.
 */
export function handleSubscribe(c: ClientConnection, broker: Broker, p: SubscribePacket): void {
  const opts = broker.options;
  const subId = p.properties?.subscriptionIdentifier;
  if (subId === 0) throw new MqttError(RC.PROTOCOL_ERROR, "Subscription Identifier of 0"); // spec 3.8.2.1.2
  // The codec lets a filter-less SUBSCRIBE through; it is a protocol error [MQTT-3.8.3-2].
  if (p.subscriptions.length === 0) throw new MqttError(RC.PROTOCOL_ERROR, "SUBSCRIBE without a topic filter");
  // Check the whole packet for this protocol error first, so a refused SUBSCRIBE
  // leaves no partial subscriptions behind.
  for (const s of p.subscriptions) {
    if (s.nl && s.topic.startsWith("$share/")) {
      throw new MqttError(RC.PROTOCOL_ERROR, "No Local on a shared subscription"); // [MQTT-3.8.3-4]
    }
  }
  const session = c.session!;
  const granted: number[] = [];
  const accepted: ActiveSubscription[] = [];
  const isNew: boolean[] = [];
  for (let i = 0; i < p.subscriptions.length; i++) {
    const s = p.subscriptions[i]!;
    const parsed = parseSubscriptionFilter(s.topic);
    const problem = typeof parsed === "string" ? parsed : topicFilterProblem(parsed.filter, opts);
    if (typeof parsed === "string" || problem) {
      granted.push(c.isV5 ? RC.TOPIC_FILTER_INVALID : 0x80);
      continue;
    }
    // A shared subscription is checked on its filter, without the $share/group/ prefix.
    if (!broker.acl.allows(c, "subscribe", parsed.filter)) {
      broker.metrics.aclDeniedSubscribe++;
      granted.push(c.isV5 ? opts.aclDenyCode : 0x80);
      continue;
    }
    const options = subscriptionOptions(s.qos, s.nl ?? false, s.rap ?? false, (s.rh ?? 0) as 0 | 1 | 2);
    const sub = new ActiveSubscription(session, s.topic, parsed.filter, parsed.group, options, subId);
    isNew.push(broker.router.subscribe(sub));
    accepted.push(sub);
    granted.push(s.qos);
  }
  const ack: Suback = { c, broker, messageId: p.messageId ?? 0, granted, accepted, isNew };
  // One write per accepted filter, never the session's other subscriptions (issue 13). A
  // persistent session's writes wait for the rest of the read, to go to the store as one
  // list; a SUBACK waits behind the batch's earlier ones even when it has nothing to write.
  const batch = open;
  if (batch !== undefined && batch.c === c) {
    for (const sub of accepted) batch.changes.push(sub);
    batch.acks.push(ack);
    return;
  }
  if (accepted.length === 0 || !session.persistent) {
    const commit = accepted.length > 0 ? broker.registry.persistSubscriptions(session, accepted) : undefined;
    if (commit) commit.then(() => sendSuback(ack), (err: unknown) => c.fault(err));
    else sendSuback(ack);
    return;
  }
  flushSubscribes();
  open = { c, broker, changes: accepted.slice(), acks: [ack] };
  // The end of this read: microtasks run before the next socket's data, timer or answer.
  queueMicrotask(flushSubscribes);
}

/** A SUBACK to send once its subscriptions are durable, then the retained messages they get. */
interface Suback {
  c: ClientConnection;
  broker: Broker;
  messageId: number;
  granted: number[];
  /** The subscriptions made, and which of them are new (Retain Handling 1, [MQTT-3.3.1-10]). */
  accepted: ActiveSubscription[];
  isNew: boolean[];
}

function sendSuback(a: Suback): void {
  const c = a.c;
  if (c.state === "closed") return;
  c.write(encode({ cmd: "suback", messageId: a.messageId, granted: a.granted }, c.version));
  // Retained messages follow the SUBACK [MQTT-3.3.1-9].
  for (let i = 0; i < a.accepted.length; i++) a.broker.sendRetained(a.accepted[i]!, a.isNew[i]!);
}

/**
 * SUBSCRIBEs of one persistent session's connection handled in one read, whose writes go to
 * the store as one list: a session that sends thousands of SUBSCRIBEs at once (issue 13) then
 * costs one commit per read, not one per SUBSCRIBE with its promise, its callbacks and the
 * storage thread's per-list work (about half of the memory the storm grew by was that
 * garbage). Nothing else can run between the packets of one read, so the store gets the
 * same writes in the same order as one commit per SUBSCRIBE would give it, in the same
 * transaction (a group commit takes every list handed in during a turn).
 */
interface SubscribeBatch {
  c: ClientConnection;
  broker: Broker;
  changes: ActiveSubscription[];
  acks: Suback[];
}
let open: SubscribeBatch | undefined;

/**
 * Commit the open batch, if any: at the end of the read (a microtask), and before its
 * connection's next packet that is not a SUBSCRIBE (ClientConnection), so that whatever that
 * packet writes reaches the store after these subscriptions, as it did unbatched.
 */
export function flushSubscribes(): void {
  const batch = open;
  if (batch === undefined) return;
  open = undefined;
  const session = batch.c.session!;
  const commit = batch.broker.registry.persistSubscriptions(session, batch.changes);
  const acks = batch.acks;
  if (commit === undefined) {
    for (const a of acks) sendSuback(a);
    return;
  }
  commit.then(() => {
    for (const a of acks) sendSuback(a);
  }, (err: unknown) => batch.c.fault(err));
}

export function handleUnsubscribe(c: ClientConnection, broker: Broker, p: UnsubscribePacket): void {
  if (p.unsubscriptions.length === 0) {
    throw new MqttError(RC.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter"); // [MQTT-3.10.3-2]
  }
  const codes = p.unsubscriptions.map((filter) =>
    broker.router.unsubscribe(c.session!, filter) ? RC.SUCCESS : RC.NO_SUBSCRIPTION_EXISTED
  );
  const finish = () => {
    if (c.state === "closed") return;
    const packet: Record<string, unknown> = { cmd: "unsuback", messageId: p.messageId ?? 0 };
    if (c.isV5) packet.granted = codes;
    c.write(encode(packet as unknown as Packet, c.version));
  };
  const commit = broker.registry.persistSubscriptions(c.session!, p.unsubscriptions);
  if (commit) commit.then(finish, (err: unknown) => c.fault(err));
  else finish();
}
