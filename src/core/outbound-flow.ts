import type { DeliveryRecord, Message, Mutation, QoS, Store } from "../store/store.ts";
import type { Logger } from "./logger.ts";
import type { BrokerMetrics } from "./metrics.ts";
import type { Peer } from "./peer.ts";
import type { Router } from "./router.ts";
import type { Outbound, Session } from "./session.ts";

/**
 * The outbound QoS flow of every session: deliver (send now or queue), transmit under a
 * packet id, pump the queue as the window opens, PUBACK / PUBREC / PUBCOMP from the
 * subscriber, the re-send of what was in flight when a session resumes, and the
 * hand-over of shared-subscription messages when a member leaves. It talks to the
 * session's connection through `Peer` only.
 */
export class OutboundFlow {
  /**
   * Messages in flight when a connection resumed its session and not yet re-sent on it,
   * because the new connection's Receive Maximum is smaller than what was in flight.
   */
  #resendBacklog = new WeakMap<Peer, Outbound[]>();

  constructor(
    private readonly options: { readonly maxBufferedBytes: number },
    private readonly metrics: BrokerMetrics,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly router: Router,
  ) {}

  /** Send `o` to `s` now if its connection and window allow, otherwise queue it. */
  deliver(s: Session, o: Outbound): void {
    if (s.ended) return;
    const c = s.client;
    const live = c !== undefined && c.state === "connected";
    if (o.qos === 0) {
      // Behind queued QoS>0 messages it waits its turn, so a topic's order holds [MQTT-4.6.0-6].
      if (live && s.queuedCount === 0) {
        if (c.conn.bufferedBytes() > this.options.maxBufferedBytes) {
          this.metrics.droppedSlowConsumer++;
          return;
        }
        c.sendPublish(o, false);
      } else s.enqueue(o);
      return;
    }
    if (live && s.queuedCount === 0 && s.inflight.size < c.inflightWindow) this.#transmit(s, c, o);
    else s.enqueue(o);
  }

  #transmit(s: Session, c: Peer, o: Outbound): void {
    o.packetId = s.allocatePacketId();
    o.phase = "sent";
    s.inflight.set(o.packetId, o);
    const sent: Mutation | undefined = s.persistent
      ? { op: "delivery-sent", clientId: s.clientId, offset: o.message.offset, packetId: o.packetId }
      : undefined;
    // QoS 2: after a crash the message must be re-sent under this packet id [MQTT-4.4.0-1], or a
    // client that already has it (method B) takes the re-send for a new message; so the id is
    // durable before the client can see it.
    if (sent && o.qos === 2) this.#persistBeforeOutput(c, [sent]);
    if (!c.sendPublish(o, false)) {
      this.#complete(s, o);
      return;
    }
    if (sent && o.qos !== 2) this.#persist([sent]);
  }

  /** Commit `mutations` and hold `c`'s output until they are durable (see holdOutputUntil). */
  #persistBeforeOutput(c: Peer, mutations: Mutation[]): void {
    const commit = this.store.commit(mutations);
    commit.catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
    c.holdOutputUntil(commit);
  }

  #persist(mutations: Mutation[]): void {
    this.store.commit(mutations).catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
  }

  /** CONNACK was sent on `c` for `s`: resend what was in flight, then drain the queue [MQTT-4.4.0-1]. */
  online(s: Session, c: Peer): void {
    if (s.client !== c) return;
    const inflight = [...s.inflight.values()].sort((a, b) => a.message.offset - b.message.offset);
    // A PUBREL is not a PUBLISH and goes at once [MQTT-3.3.4-10]; re-sent PUBLISHes wait for
    // room in this connection's window, which may be smaller than the last one's [MQTT-3.3.4-9].
    for (const o of inflight) if (o.phase === "pubrel") c.sendPubrel(o.packetId);
    const resend = inflight.filter((o) => o.phase !== "pubrel");
    if (resend.length > 0) this.#resendBacklog.set(c, resend);
    this.pump(s);
  }

  /** Send queued messages while the client's window has room. */
  pump(s: Session): void {
    const c = s.client;
    if (!c || c.state !== "connected") return;
    const backlog = this.#resendBacklog.get(c);
    if (backlog) {
      // Still in flight but not yet re-sent on this connection, so not counted against its window.
      const held = backlog.filter((o) => s.inflight.get(o.packetId) === o); // acked or moved meanwhile
      while (held.length > 0 && s.inflight.size - held.length < c.inflightWindow) {
        const o = held.shift()!;
        if (!c.sendPublish(o, true)) this.#complete(s, o);
      }
      if (held.length > 0) {
        this.#resendBacklog.set(c, held);
        return;
      }
      this.#resendBacklog.delete(c);
    }
    while (s.inflight.size < c.inflightWindow) {
      const o = s.dequeue();
      if (!o) return;
      if (o.qos === 0) {
        c.sendPublish(o, false);
        continue;
      }
      this.#transmit(s, c, o);
    }
  }

  /** An outbound message is done with (acknowledged, expired or undeliverable). */
  #complete(s: Session, o: Outbound): void {
    s.inflight.delete(o.packetId);
    if (s.persistent) this.#persist([{ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset }]);
  }

  onPuback(s: Session, id: number): void {
    const o = s.inflight.get(id);
    if (!o || o.qos !== 1) return; // unknown ids are ignored (spec 4.3.2)
    this.#complete(s, o);
    this.pump(s);
  }

  onPubrec(s: Session, c: Peer, id: number, code: number): void {
    const o = s.inflight.get(id);
    if (!o || o.qos !== 2) {
      // Answer with PUBREL 0x92 so the client can finish its flow (spec 3.6.2.1).
      if (c.isV5) c.sendPubrelNotFound(id);
      return;
    }
    if (code >= 0x80) {
      // The subscriber refused it: the flow ends here (spec 4.3.3).
      this.#complete(s, o);
      this.pump(s);
      return;
    }
    o.phase = "pubrel";
    // A crash after PUBREL left but before "pubrel" was stored would re-send the PUBLISH to a
    // client that already released its id, which then delivers it twice [MQTT-4.3.3-6].
    if (s.persistent) {
      this.#persistBeforeOutput(c, [{ op: "delivery-pubrel", clientId: s.clientId, offset: o.message.offset }]);
    }
    c.sendPubrel(id);
  }

  onPubcomp(s: Session, id: number): void {
    const o = s.inflight.get(id);
    if (!o || o.phase !== "pubrel") return;
    this.#complete(s, o);
    this.pump(s);
  }

  /** A member leaves: its not-yet-acknowledged shared messages go to the others (spec 4.8.2). */
  redistributeShared(s: Session): void {
    const moved = s.takeShared();
    for (const [id, o] of s.inflight) {
      // QoS 2 in flight must complete with the same client [MQTT-4.8.2-4]; QoS 1 may move.
      if (o.shareKey !== undefined && o.qos === 1) {
        s.inflight.delete(id);
        moved.push(o);
      }
    }
    if (moved.length === 0) return;
    const mutations: Mutation[] = [];
    for (const o of moved) {
      const members = this.router.otherConnectedMembers(o.shareKey!, s);
      const to = members.length > 0 ? this.router.pickMember(o.shareKey!, members) : undefined;
      if (!to) {
        // Nobody else can take it: it stays with this session.
        if (o.phase === "queued") s.enqueue(o);
        else s.inflight.set(o.packetId, o);
        continue;
      }
      if (s.persistent) {
        mutations.push({ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset });
      }
      if (to.session.persistent) {
        mutations.push({
          op: "delivery-put",
          delivery: deliveryRecord(to.session, o.message, o.qos, o.retain, o.subscriptionIds),
        });
      }
      this.deliver(to.session, { ...o, packetId: 0, phase: "queued" });
    }
    if (mutations.length > 0) this.#persist(mutations);
  }
}

/** The stored form of a delivery queued for `s`. */
export function deliveryRecord(
  s: Session,
  m: Message,
  qos: QoS,
  retain: boolean,
  subIds: number[] | number | undefined,
): DeliveryRecord {
  const ids = typeof subIds === "number" ? [subIds] : subIds;
  return {
    clientId: s.clientId,
    offset: m.offset,
    qos,
    retain,
    ...(ids && ids.length > 0 ? { subscriptionIds: ids } : {}),
    phase: "queued" as const,
  };
}
