import type { Packet, SubscribePacket, UnsubscribePacket } from "../mqtt/packets.ts";
import { encode } from "../mqtt/codec.ts";
import { encodeSuback } from "../mqtt/subscribe-fast-path.ts";
import { MqttError, RC } from "../mqtt/reason-codes.ts";
import { parseSubscriptionFilter, topicFilterProblem } from "../mqtt/topic.ts";
import type { Broker } from "./broker.ts";
import type { ClientConnection } from "./client-connection.ts";
import type { Session } from "./session.ts";
import { ActiveSubscription, subscriptionOptions } from "./subscription.ts";

/**
 * SUBSCRIBE and UNSUBSCRIBE from a connected client: filters checked, ACL asked, the
 * router changed, one store write per changed filter (never the session's other
 * subscriptions), then SUBACK/UNSUBACK once that write is durable and, after a SUBACK,
 * the retained messages [MQTT-3.3.1-9]. A protocol error throws MqttError; the connection
 * closes on it.
 */
export function handleSubscribe(c: ClientConnection, broker: Broker, p: SubscribePacket): void {
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
  const messageId = p.messageId ?? 0;
  if (p.subscriptions.length === 1) {
    // One filter, the common case (and a SUBSCRIBE storm's): no arrays of its own.
    const made = makeSubscription(c, broker, session, p.subscriptions[0]!, subId);
    const fresh = typeof made !== "number" && broker.router.subscribe(made);
    const batch = open !== undefined && open.c === c
      ? open
      : typeof made !== "number" && session.persistent
      ? openBatch(c, broker)
      : undefined;
    if (batch !== undefined) {
      if (typeof made !== "number") batch.changes.push(made);
      // The SUBACK as two entries: its packet id (negative when the subscription replaced
      // one, for Retain Handling 1), then its code, or the subscription made (its QoS is the
      // code, and retained messages may follow).
      batch.acks.push(fresh ? messageId : -messageId, made);
      return;
    }
    const accepted = typeof made === "number" ? [] : [made];
    return finishAlone(c, broker, session, {
      c,
      broker,
      messageId,
      granted: [qosOrCode(made)],
      accepted,
      isNew: [fresh],
    });
  }
  const granted: number[] = [];
  const accepted: ActiveSubscription[] = [];
  const isNew: boolean[] = [];
  for (const s of p.subscriptions) {
    const made = makeSubscription(c, broker, session, s, subId);
    granted.push(qosOrCode(made));
    if (typeof made === "number") continue;
    isNew.push(broker.router.subscribe(made));
    accepted.push(made);
  }
  const ack: Suback = { c, broker, messageId, granted, accepted, isNew };
  // One write per accepted filter, never the session's other subscriptions (issue 13). A
  // persistent session's writes wait for the rest of the read, to go to the store as one
  // list; a SUBACK waits behind the batch's earlier ones even when it has nothing to write.
  const batch = open !== undefined && open.c === c
    ? open
    : accepted.length > 0 && session.persistent
    ? openBatch(c, broker)
    : undefined;
  if (batch === undefined) return finishAlone(c, broker, session, ack);
  for (const sub of accepted) batch.changes.push(sub);
  batch.acks.push(ack);
}

/** The subscription `s` asks for (not yet in the router), or the code refusing it in the SUBACK. */
function makeSubscription(
  c: ClientConnection,
  broker: Broker,
  session: Session,
  s: SubscribePacket["subscriptions"][number],
  subId: number | undefined,
): ActiveSubscription | number {
  const opts = broker.options;
  const parsed = parseSubscriptionFilter(s.topic);
  const problem = typeof parsed === "string" ? parsed : topicFilterProblem(parsed.filter, opts);
  if (typeof parsed === "string" || problem) return c.isV5 ? RC.TOPIC_FILTER_INVALID : 0x80;
  // A shared subscription is checked on its filter, without the $share/group/ prefix.
  if (!broker.acl.allows(c, "subscribe", parsed.filter)) {
    broker.metrics.aclDeniedSubscribe++;
    return c.isV5 ? opts.aclDenyCode : 0x80;
  }
  const options = subscriptionOptions(s.qos, s.nl ?? false, s.rap ?? false, (s.rh ?? 0) as 0 | 1 | 2);
  return new ActiveSubscription(session, s.topic, parsed.filter, parsed.group, options, subId);
}

/** The SUBACK's code for what makeSubscription made: the QoS granted, or the refusal. */
function qosOrCode(made: ActiveSubscription | number): number {
  return typeof made === "number" ? made : made.qos;
}

/** A SUBACK outside any batch: after its own commit (a persistent session's), or at once. */
function finishAlone(c: ClientConnection, broker: Broker, session: Session, ack: Suback): void {
  const commit = ack.accepted.length > 0 ? broker.registry.persistSubscriptions(session, ack.accepted) : undefined;
  if (commit) commit.then(() => sendSuback(ack), (err: unknown) => c.fault(err));
  else sendSuback(ack);
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
 * storage thread's per-list work (a third of what 20,000 SUBSCRIBEs grew the broker by was that
 * garbage). Nothing else can run between the packets of one read, so the store gets the
 * same writes in the same order as one commit per SUBSCRIBE would give it, in the same
 * transaction (a group commit takes every list handed in during a turn).
 */
interface SubscribeBatch {
  c: ClientConnection;
  broker: Broker;
  changes: ActiveSubscription[];
  /**
   * The SUBACKs, in packet order: a Suback, or for a one-filter SUBSCRIBE its packet id
   * (negative when it replaced a subscription) followed by its refusal code or the
   * subscription it made.
   */
  acks: Array<Suback | number | ActiveSubscription>;
}
let open: SubscribeBatch | undefined;

/** Open a batch for `c` (committing any other first), to be committed at the end of this read. */
function openBatch(c: ClientConnection, broker: Broker): SubscribeBatch {
  flushSubscribes();
  const batch: SubscribeBatch = { c, broker, changes: [], acks: [] };
  open = batch;
  // The end of this read: microtasks run before the next socket's data, timer or answer.
  queueMicrotask(flushSubscribes);
  return batch;
}

/** Send a batch's SUBACKs (and the retained messages that follow them). */
function sendSubacks(batch: SubscribeBatch): void {
  const acks = batch.acks;
  const c = batch.c;
  for (let i = 0; i < acks.length; i++) {
    const a = acks[i]!;
    if (typeof a !== "number") {
      sendSuback(a as Suback);
      continue;
    }
    // A one-filter SUBACK: its packet id (negative: not a new subscription), then its code
    // or its subscription.
    const then = acks[++i] as number | ActiveSubscription;
    if (c.state === "closed") return;
    const messageId = a < 0 ? -a : a;
    if (typeof then === "number") c.write(encodeSuback(messageId, then, c.version));
    else {
      c.write(encodeSuback(messageId, then.qos, c.version));
      batch.broker.sendRetained(then, a > 0); // [MQTT-3.3.1-9]
    }
  }
}

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
  const commit = batch.changes.length > 0
    ? batch.broker.registry.persistSubscriptions(session, batch.changes)
    : undefined;
  if (commit === undefined) sendSubacks(batch);
  else commit.then(() => sendSubacks(batch), (err: unknown) => batch.c.fault(err));
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
