import type { PublishPacket } from "../mqtt/packets.ts";
import { MqttError, RC } from "../mqtt/reason-codes.ts";
import { topicNameProblem } from "../mqtt/topic.ts";
import { type Message, type Mutation, type QoS, StoreFullError } from "../store/store.ts";
import type { Broker, Routed } from "./broker.ts";
import type { ClientConnection } from "./client-connection.ts";
import { pickMessageProperties, toBytes } from "./message-properties.ts";
import { LIVE, qos0Refusals } from "./qos0-shed.ts";
import { MessageEncodings } from "./outbound-encoder.ts";
import type { Outbound, Session } from "./session.ts";
import { unpinnedBytes } from "../mqtt/unpinned-bytes.ts";

/**
 * A payload as a message keeps it: the reader leaves it a view of the bytes read
 * (ClientConnection's READER_OPTIONS), so a small one is copied out of them here, where it
 * is known to be kept, and a large one stays the view (see unpinnedBytes).
 */
function keptBytes(payload: string | Buffer): Uint8Array {
  return typeof payload === "string" ? toBytes(payload) : unpinnedBytes(payload, payload.buffer.byteLength);
}

/** Routing's scratch arrays for deliverNow (a fresh pair if one is ever re-entered). */
const liveSessions: Session[] = [];
const liveOutbounds: Outbound[] = [];

/**
 * Route `m` (QoS 0, no RETAIN, logged by nobody, every subscriber connected with nothing
 * queued: qos0-shed.ts's LIVE) and hand it to each subscriber now, as Broker.publish and
 * deliverLive would, without the arrays and record they make for what may wait or be stored.
 */
function deliverNow(broker: Broker, m: Message): void {
  for (const hook of broker.publishHooks) hook(m);
  const sessions = liveSessions.length === 0 ? liveSessions : [];
  const outbounds = liveOutbounds.length === 0 ? liveOutbounds : [];
  try {
    broker.router.route(m, sessions, outbounds);
    if (sessions.length === 1) broker.outbound.deliver(sessions[0]!, outbounds[0]!);
    else if (sessions.length > 1) {
      const cache = new MessageEncodings();
      for (let i = 0; i < sessions.length; i++) {
        outbounds[i]!.cache = cache;
        broker.outbound.deliver(sessions[i]!, outbounds[i]!);
      }
    }
  } finally {
    sessions.length = 0;
    outbounds.length = 0;
  }
}

/** Bytes per second of messages nobody takes that one client may send before it is paced (see InboundFlow.#wasted). */
export const WASTE_RATE = 1024 * 1024;
/** What it may send at once before the rate applies. */
export const WASTE_BURST = 256 * 1024;

/**
 * One step of a client's ordered publish flow: what to do once the commit it waits for
 * (if any) has settled and every earlier step has run. Steps form a linked queue; see
 * InboundFlow.#enqueue.
 */
class OrderedStep {
  /** The commit has not settled yet. */
  waiting = false;
  /** The commit failed, with `error`. */
  failed = false;
  error: unknown = undefined;
  next: OrderedStep | undefined = undefined;
  /** "publish": its delivery waits for this step (it was not delivered live). */
  held = false;
  /** "publish": waits for room in full online queues it went to (PublisherFlow). */
  roomPending = false;
  /** "publish": waits for the memory budget to fall below its high level (ClientConnection.throttle). */
  budgetPending = false;

  constructor(
    /** "publish": deliver `routed`, then acknowledge; "ack": PUBACK/PUBREC `id` with `code`; "pubcomp": PUBCOMP with `code`. */
    readonly kind: "publish" | "ack" | "pubcomp",
    /** Runs even if the connection closed meanwhile (a stored message must reach its subscribers). */
    readonly evenIfClosed: boolean,
    readonly qos: QoS,
    readonly id: number,
    readonly code: number,
    readonly routed: Routed | undefined,
  ) {}
}

/**
 * A connection's inbound QoS flow: PUBLISH and PUBREL from the client, checked, routed and
 * handed to the store at once (so a window of publishes shares group commits), then
 * delivered and acknowledged strictly in arrival order as the commits settle
 * [MQTT-4.6.0-6]; Receive Maximum for what the client has unacknowledged.
 */
export class InboundFlow {
  /** Incoming QoS>0 publishes not yet fully acknowledged, for Receive Maximum. */
  #incomingInflight = 0;
  /** The topic of this client's last accepted PUBLISH, known to pass topicNameProblem. */
  #lastValidTopic = "";
  /** Keeps this client's publishes in order while some wait for a storage commit: oldest first. */
  #stepsHead: OrderedStep | undefined;
  #stepsTail: OrderedStep | undefined;
  #runningSteps = false;
  /** Publish steps whose delivery waits for their commit (see onPublish). */
  #heldDeliveries = 0;
  /** QoS>0 publishes whose PUBACK/PUBREC has not been sent yet (see #owedChanged). */
  #owed = 0;
  /** Bytes of messages nobody took that this client may still send before it is paced, and when that was so (see #wasted). */
  #wasteCredit = WASTE_BURST;
  #wasteAt = 0;

  constructor(private readonly c: ClientConnection, private readonly broker: Broker) {}

  onPublish(p: PublishPacket): void {
    const c = this.c;
    const broker = this.broker;
    if (!broker.auth.takePublish(c)) {
      // limits.max_publish_rate: disconnect with a reason rather than throttle reads, which
      // every adapter would have to support; a v3 client just sees the close.
      c.disconnect(RC.MESSAGE_RATE_TOO_HIGH, "message rate too high");
      return;
    }
    const opts = broker.options;
    const props = p.properties;
    let topic = p.topic;
    const qos = p.qos;
    const id = p.messageId ?? 0;

    if (c.isV5 && props) {
      if (props.subscriptionIdentifier !== undefined) {
        throw new MqttError(RC.PROTOCOL_ERROR, "PUBLISH from a client carries a Subscription Identifier"); // [MQTT-3.3.4-6]
      }
      const alias = props.topicAlias;
      if (alias !== undefined) topic = c.aliases.resolveIncoming(alias, topic, opts.topicAliasMaximum);
    }
    // An empty topic is only valid with a known alias (handled above); otherwise a Protocol Error (spec 3.3.2.3.4).
    if (topic.length === 0) throw new MqttError(RC.PROTOCOL_ERROR, "empty topic without a topic alias");
    // A client usually publishes to the same topic again and again; the verdict depends on
    // the topic and the broker's fixed limits only, so the last valid topic is not re-checked.
    if (topic !== this.#lastValidTopic) {
      const problem = topicNameProblem(topic, opts);
      if (problem) throw new MqttError(RC.TOPIC_NAME_INVALID, problem);
      this.#lastValidTopic = topic;
    }
    if (p.retain && !opts.retainAvailable) throw new MqttError(RC.RETAIN_NOT_SUPPORTED, "retain not available");

    broker.metrics.messagesReceived[qos]++;

    if (qos > 0) {
      if (qos === 2 && c.session!.qos2Incoming.has(id)) {
        // A re-sent QoS 2 PUBLISH we already own: acknowledge again, do not route twice [MQTT-4.3.3-10].
        this.#enqueue(new OrderedStep("ack", false, 2, id, RC.SUCCESS, undefined), undefined);
        return;
      }
      // [MQTT-3.3.4-7] more unacknowledged QoS>0 publishes than our Receive Maximum: DISCONNECT 0x93.
      // Only v5 clients were told the limit; a 3.1.1 client that sends a large window is within
      // its protocol, and closing it would only make it reconnect and re-send the same window.
      if (c.isV5 && this.#incomingInflight >= opts.receiveMaximum) {
        throw new MqttError(RC.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded");
      }
      this.#incomingInflight++;
    }

    if (!broker.acl.allows(c, "publish", topic)) {
      broker.metrics.aclDeniedPublish++;
      broker.logger.debug(`publish by ${c.clientId} to ${topic} denied`);
      // v5: reason 0x87; 3.1.1 has no negative ack, so acknowledge and drop (as Mosquitto does).
      if (qos > 0) this.#enqueue(new OrderedStep("ack", false, qos, id, opts.aclDenyCode, undefined), undefined);
      return;
    }

    // The memory budget at its limit: refused before it is routed, so nothing of it stays
    // (memory-budget.ts). As when storage is full: v5 learns why, 3.1.1 keeps the message
    // for its next connection.
    const budget = broker.budget;
    if (budget.overLimit) {
      if (qos === 0) {
        broker.metrics.droppedMemory++;
        return;
      }
      broker.metrics.refusedMemoryPublishes++;
      if (c.isV5) {
        this.#enqueue(new OrderedStep("ack", false, qos, id, RC.QUOTA_EXCEEDED, undefined), undefined);
        return;
      }
      this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
      c.disconnect(RC.QUOTA_EXCEEDED, "memory budget full");
      return;
    }

    // The time its bytes arrived (set in onData): one clock reading per read, not per message.
    const now = c.lastActivity;
    let live = false;
    if (qos === 0 && !p.retain && this.#stepsHead === undefined) {
      // Nothing of this client waits to be delivered before it, so its fate is decided now,
      // as delivery would decide it: dropped before it becomes a message if nobody can take it.
      const refused = qos0Refusals(broker, c.clientId, topic);
      live = refused === LIVE;
      if (refused >= 0) {
        broker.metrics.droppedSlowConsumer += refused;
        if (broker.publishHooks.length > 0) {
          const seen: Message = {
            offset: 0,
            topic,
            payload: toBytes(p.payload),
            qos,
            retain: false,
            receivedAt: now,
            origin: c.clientId,
          };
          for (const hook of broker.publishHooks) hook(seen);
        }
        if (refused > 0) this.#wasted((p.length ?? 0) + 2, now);
        return;
      }
    }
    const message: Message = {
      offset: 0,
      topic,
      // Delivered now and kept by nobody (LIVE): the view of the bytes read will do.
      payload: live ? toBytes(p.payload) : keptBytes(p.payload),
      qos,
      retain: p.retain,
      receivedAt: now,
      origin: c.clientId,
    };
    if (props) {
      const mp = pickMessageProperties(props);
      if (mp) message.properties = mp;
      if (props.messageExpiryInterval !== undefined) message.expiresAt = now + props.messageExpiryInterval * 1000;
    }

    let extra: Mutation | undefined;
    if (qos === 2) {
      // Owned from now on: a re-send arriving before the commit is recognised as a duplicate.
      c.session!.qos2Incoming.add(id);
      extra = { op: "qos2-in-put", clientId: c.clientId, packetId: id };
    }
    if (live) {
      // Nothing to write, wait for or keep, and nothing of this client before it: routed and
      // delivered now, without a step in the flow or the Routed record (Broker.publish and
      // deliverLive do the same for what they are given, plus what this message cannot need).
      if (budget.overFull) c.throttle();
      deliverNow(broker, message);
      return;
    }
    // Routed and handed to the store now, in arrival order, so that a client's window of
    // publishes shares group commits; only delivery and the ack wait for earlier publishes.
    const routed = broker.publish(message, extra);
    // Its body counts against the memory budget until its step has run.
    budget.hold(message);
    const step = new OrderedStep("publish", true, qos, id, 0, routed);
    if (routed.waitFor !== undefined) {
      // An online subscriber's queue is full: the message is queued for it all the same, and
      // this acknowledgement (with the ones behind it) waits until the queue has room.
      step.roomPending = true;
      broker.publisherFlow.hold(routed.waitFor, () => {
        step.roomPending = false;
        this.#runSteps();
      });
    }
    if (budget.overFull) {
      // Past the memory budget's full level: this publisher is slowed, its ack held until the
      // total is below the high level again (ClientConnection.throttle).
      if (qos > 0) {
        step.budgetPending = true;
        budget.whenBelowHigh(() => {
          step.budgetPending = false;
          this.#runSteps();
        });
      }
      c.throttle();
    }
    // QoS 0/1 reach connected subscribers now, unless an earlier message of this client is
    // still held back (a QoS 2 one: its duplicate detection must be durable first), so that
    // the client's messages keep their order [MQTT-4.6.0-6]. The ack still waits below.
    if (qos < 2 && this.#heldDeliveries === 0 && broker.liveBeforeCommit) broker.deliverLive(routed);
    else {
      step.held = true;
      this.#heldDeliveries++;
    }
    // Runs even if the connection closes meanwhile: a stored message must reach its subscribers.
    this.#enqueue(step, routed.commit);
  }

  /**
   * A publish of `bytes` was dropped because every subscriber it was for is a slow consumer.
   * Such a flood is garbage turned over as fast as the client can send it (a subscriber that
   * never reads took 1.5-2.7 M messages/s of it, and the collector lagged behind by tens of
   * MB); dropping costs little now, but reading it still does. So a client's messages that
   * nobody takes are paced, a token bucket of WASTE_RATE bytes per second with WASTE_BURST
   * to start: past it, its socket is not read for as long as the overdraft takes to earn back
   * (ClientConnection.pace; what was read already is still handled). Messages that reach anyone never count, and neither does QoS 0
   * to a topic with no subscriber at all (sensors nobody listens to yet are not a flood).
   */
  #wasted(bytes: number, now: number): void {
    const earned = ((now - this.#wasteAt) * WASTE_RATE) / 1000;
    this.#wasteAt = now;
    const credit = Math.min(WASTE_BURST, this.#wasteCredit + earned) - bytes;
    this.#wasteCredit = credit;
    // Paused until half the burst is earned back, not just the overdraft: a pause per message
    // would pause and resume the socket a thousand times a second.
    if (credit < 0) this.c.pace(Math.ceil(((WASTE_BURST / 2 - credit) * 1000) / WASTE_RATE));
  }

  onPubrel(id: number): void {
    const c = this.c;
    const session = c.session!;
    // The id was taken when its PUBLISH arrived, so whether it is held is known now.
    const held = session.qos2Incoming.delete(id);
    if (!held) {
      // PUBREL for an id we do not hold: 0x92, still completes the flow (spec 3.7.2.1).
      this.#enqueue(new OrderedStep("pubcomp", false, 2, id, RC.PACKET_IDENTIFIER_NOT_FOUND, undefined), undefined);
      return;
    }
    // Release the id durably before PUBCOMP, or a crash could make a reused id look like a
    // duplicate. Committed now, in arrival order, so a window of PUBRELs shares group commits.
    const commit = this.broker.persist([{ op: "qos2-in-delete", clientId: c.clientId, packetId: id }], true);
    this.#enqueue(new OrderedStep("pubcomp", false, 2, id, RC.SUCCESS, undefined), commit);
  }

  /**
   * Queue `step` to run after `commit` (if any) has settled and every earlier step of this
   * client has run, so that a client's messages are delivered and acknowledged in the order
   * sent [MQTT-4.6.0-6]. A step with nothing to wait for behind an empty queue runs now.
   * A linked queue with one settle callback per commit, rather than a promise chain, which
   * cost several promises and closures per message.
   */
  #enqueue(step: OrderedStep, commit: Promise<void> | undefined): void {
    if (commit) {
      step.waiting = true;
      commit.then(
        () => {
          step.waiting = false;
          this.#runSteps();
        },
        (err: unknown) => {
          step.waiting = false;
          step.failed = true;
          step.error = err;
          this.#runSteps();
        },
      );
    }
    if (this.#stepsTail) this.#stepsTail.next = step;
    else this.#stepsHead = step;
    this.#stepsTail = step;
    if (step.kind !== "pubcomp" && step.qos > 0) {
      this.#owed++;
      this.#owedChanged();
    }
    if (!step.waiting && !step.roomPending && !step.budgetPending) this.#runSteps();
  }

  /**
   * A client that keeps sending QoS>0 publishes while `receiveMaximum` of them still wait for
   * their PUBACK/PUBREC (a commit, or room in a subscriber's queue) is no longer read until
   * half of those are acknowledged. A v5 client is told the limit and disconnected past it
   * (onPublish); a 3.1.1 client cannot be told, and without this one that ignores held acks
   * would fill memory. Only acks Ferry owes count, not PUBRELs it waits for: those arrive on
   * the same socket, so waiting for them while not reading would never end.
   */
  #owedChanged(): void {
    const max = this.broker.options.receiveMaximum;
    if (!this.c.inputHeld) {
      if (this.#owed >= max) this.c.holdInput(true);
    } else if (this.#owed <= max >> 1) this.c.holdInput(false);
  }

  /** Run the steps at the head of the queue whose commits have settled, in order. */
  #runSteps(): void {
    if (this.#runningSteps) return; // the outer loop picks up whatever a step made ready
    this.#runningSteps = true;
    try {
      for (
        let step = this.#stepsHead;
        step !== undefined && !step.waiting && !step.roomPending && !step.budgetPending;
        step = this.#stepsHead
      ) {
        this.#stepsHead = step.next;
        if (this.#stepsHead === undefined) this.#stepsTail = undefined;
        step.next = undefined;
        if (step.kind !== "pubcomp" && step.qos > 0) {
          this.#owed--;
          if (this.c.inputHeld) this.#owedChanged();
        }
        if (this.c.state === "closed" && !step.evenIfClosed) continue;
        try {
          this.#runStep(step);
        } catch (err) {
          // One failing step must not stall the ones behind it.
          this.broker.logger.error(`client ${this.c.clientId}: ${step.kind} step failed: ${String(err)}`);
        }
      }
    } finally {
      this.#runningSteps = false;
    }
  }

  #runStep(step: OrderedStep): void {
    const { qos, id } = step;
    switch (step.kind) {
      case "publish": {
        if (step.held) this.#heldDeliveries--;
        this.broker.budget.release(step.routed!.message);
        if (step.failed) {
          if (qos === 2) this.c.session?.qos2Incoming.delete(id);
          this.#publishFailed(qos, id, step.error);
          return;
        }
        const routed = step.routed!;
        this.broker.deliver(routed);
        if (qos > 0) this.#ackPublish(qos, id, routed.matched ? RC.SUCCESS : RC.NO_MATCHING_SUBSCRIBERS);
        return;
      }
      case "ack":
        this.#ackPublish(qos, id, step.code);
        return;
      case "pubcomp":
        if (step.failed) {
          this.c.fault(step.error);
          return;
        }
        // A released id ends its flow; one we did not hold was never counted.
        if (step.code === RC.SUCCESS) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
        if (this.c.state !== "closed") this.c.write(this.c.encodeAck("pubcomp", id, step.code));
        return;
    }
  }

  #publishFailed(qos: QoS, id: number, err: unknown): void {
    const c = this.c;
    if (err instanceof StoreFullError) {
      this.broker.metrics.refusedStorageFull++;
      // A QoS 0 message (one that carried RETAIN: others write nothing) has no acknowledgement to
      // refuse it with, and at most once allows dropping it; the client stays connected.
      if (qos === 0) return;
      if (c.isV5) {
        // 0x97 Quota exceeded (spec 3.4.2.1): the client keeps the message and may retry later.
        this.#ackPublish(qos, id, RC.QUOTA_EXCEEDED, "storage full");
        return;
      }
      // 3.1.1 has no negative acknowledgement: withhold the ack and close, so the client re-sends
      // the message on its next connection.
      this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
      c.disconnect(RC.QUOTA_EXCEEDED, "storage full");
      return;
    }
    this.broker.logger.error(`storing a message from ${c.clientId} failed: ${String(err)}`);
    if (qos > 0) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    c.disconnect(RC.IMPLEMENTATION_SPECIFIC_ERROR, "storage error");
  }

  #ackPublish(qos: QoS, id: number, code: number, reason?: string): void {
    if (this.c.state === "closed") return;
    if (qos === 1) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    else if (code >= 0x80) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    const cmd = qos === 1 ? "puback" : "pubrec";
    this.c.write(this.c.encodeAck(cmd, id, code, reason));
  }
}
