import type { DeliveryRecord, Message, Mutation, QoS } from "../store/store.ts";
import type { Logger } from "./logger.ts";
import type { BrokerMetrics } from "./metrics.ts";
import type { Peer } from "./peer.ts";
import type { PublisherFlow } from "./publisher-flow.ts";
import type { WriteBehind } from "./write-behind.ts";
import type { Router } from "./router.ts";
import { type Outbound, packetIdFor, type Session } from "./session.ts";

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
  /** Output above which QoS 0 messages to a client are dropped (see deliver). */
  readonly #qos0Bound: number;
  /** "pubrel" phases of this turn's PUBRECs, not yet handed to the store (#commitReleases). */
  #releases: { marks: Mutation[]; sessions: Session[]; outbounds: Outbound[] } | undefined;

  constructor(
    private readonly options: { readonly maxBufferedBytes: number; readonly maxOutputBytes: number },
    private readonly metrics: BrokerMetrics,
    private readonly store: WriteBehind,
    private readonly logger: Logger,
    private readonly router: Router,
    private readonly publishers: PublisherFlow,
  ) {
    this.#qos0Bound = Math.min(options.maxBufferedBytes, options.maxOutputBytes);
  }

  /** Send `o` to `s` now if its connection and window allow, otherwise queue it. */
  deliver(s: Session, o: Outbound): void {
    if (s.ended) return;
    const c = s.client;
    const live = c !== undefined && c.state === "connected";
    if (o.qos === 0) {
      // Behind queued QoS>0 messages it waits its turn, so a topic's order holds [MQTT-4.6.0-6].
      if (live && s.queuedCount === 0) {
        // A client that does not keep up loses QoS 0 messages (at most once) rather than have
        // them pile up: past `mqtt.max_buffered_bytes` of output, or the output bound if lower
        // (a flood at a subscriber that never read kept 8 MiB of encodings and their garbage).
        if (c.outputBytes() > this.#qos0Bound) {
          this.metrics.droppedSlowConsumer++;
          return;
        }
        c.sendPublish(o, false);
      } else s.enqueue(o);
      return;
    }
    if (live && s.queuedCount === 0 && this.#hasRoom(s, c, 0) && !this.#outputFull(c)) {
      const id = s.takePacketId(o);
      if (id !== 0) {
        this.#transmit(s, c, o, id);
        return;
      }
      // Its packet id is still taken (see Session.takePacketId): it waits at the head of the queue.
    }
    s.enqueue(o);
  }

  /**
   * Send `o` under packet id `id` (from Session.takePacketId). To a persistent session the
   * PUBLISH leaves at once, also at QoS 2: its id follows from its offset, which is durable,
   * so a re-send after a crash carries the same id whether or not the "sent" mark written
   * here made it to the disk (see takePacketId for why that is enough).
   */
  #transmit(s: Session, c: Peer, o: Outbound, id: number): void {
    o.packetId = id;
    o.phase = "sent";
    s.inflight.set(id, o);
    if (!s.persistent) {
      if (!c.sendPublish(o, false)) this.#complete(s, o);
      return;
    }
    const sent: Mutation = { op: "delivery-sent", clientId: s.clientId, offset: o.message.offset, packetId: id };
    if (this.#recordMayBeMissing(o)) {
      this.#persistBeforeOutput(c, [sent]);
      if (!c.sendPublish(o, false)) this.#complete(s, o);
      return;
    }
    if (!c.sendPublish(o, false)) {
      this.#complete(s, o);
      return;
    }
    // Only for DUP on a re-send after a restart; nothing waits for it.
    o.sentMark = sent;
    this.#persistLater([sent]);
  }

  /**
   * Whether `o` is a QoS 2 delivery whose record was written outside a publish's commit
   * (a retained message on SUBSCRIBE, a shared message handed over) and may not be durable
   * yet. Its PUBLISH then waits: otherwise a crash could forget the delivery, or hand its
   * offset to another message that the receiver, still holding the id, would swallow.
   * Output is held behind a new commit rather than the record's own, so holds stay in
   * commit order (commits settle in the order they were made).
   */
  #recordMayBeMissing(o: Outbound): boolean {
    return o.qos === 2 && o.recordCommit !== undefined;
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

  /** Bookkeeping nothing waits for: it shares the next commit (WriteBehind). */
  #persistLater(mutations: Mutation[]): void {
    this.store.later(mutations).catch((err: unknown) => this.logger.error(`store commit failed: ${String(err)}`));
  }

  /** CONNACK was sent on `c` for `s`: resend what was in flight, then drain the queue [MQTT-4.4.0-1]. */
  online(s: Session, c: Peer): void {
    if (s.client !== c) return;
    const inflight = [...s.inflight.values()].sort((a, b) => a.message.offset - b.message.offset);
    // A PUBREL is not a PUBLISH and goes at once [MQTT-3.3.4-10]; re-sent PUBLISHes wait for
    // room in this connection's window, which may be smaller than the last one's [MQTT-3.3.4-9].
    // One whose "pubrel" phase is not durable yet follows when it is (#releaseSettled).
    for (const o of inflight) if (o.phase === "pubrel" && o.releasePending !== true) c.sendPubrel(o.packetId);
    const resend = inflight.filter((o) => o.phase !== "pubrel");
    if (resend.length > 0) this.#resendBacklog.set(c, resend);
    this.pump(s);
  }

  /**
   * Whether `c`'s output is over `limits.max_output_bytes`: deliveries then wait in the
   * queue (as for a full window) instead of piling up in the adapter's buffer, and the
   * connection's drain pumps them (ClientConnection.onDrain). What is held for a client that
   * does not read is then its queue, under the queue bounds and publisher flow control,
   * plus at most one packet over the output bound.
   */
  #outputFull(c: Peer): boolean {
    return c.outputBytes() > this.options.maxOutputBytes;
  }

  /**
   * Whether another PUBLISH may go to `c`: fewer than its window await PUBACK/PUBREC, and
   * its deliveries in flight in all (QoS 2 ones past PUBREC included) are under its limit
   * [MQTT-3.3.4-9] (see ClientConnection.inflightLimit). `unsent`: entries of the table
   * not re-sent on this connection yet, which take no room until they are.
   */
  #hasRoom(s: Session, c: Peer, unsent: number): boolean {
    const inflight = s.inflight;
    const total = inflight.size - unsent;
    return total < c.inflightLimit && total - inflight.releasing < c.inflightWindow;
  }

  /** Send queued messages while the client's window has room and its output is under its bound. */
  pump(s: Session): void {
    const c = s.client;
    if (!c || c.state !== "connected") return;
    const backlog = this.#resendBacklog.get(c);
    if (backlog) {
      // Still in flight but not yet re-sent on this connection, so not counted against its window.
      const held = backlog.filter((o) => s.inflight.get(o.packetId) === o); // acked or moved meanwhile
      while (held.length > 0 && this.#hasRoom(s, c, held.length) && !this.#outputFull(c)) {
        const o = held.shift()!;
        if (this.#recordMayBeMissing(o)) {
          const sent: Mutation = {
            op: "delivery-sent",
            clientId: s.clientId,
            offset: o.message.offset,
            packetId: o.packetId,
          };
          this.#persistBeforeOutput(c, [sent]);
        }
        if (!c.sendPublish(o, true)) this.#complete(s, o);
      }
      if (held.length > 0) {
        this.#resendBacklog.set(c, held);
        return;
      }
      this.#resendBacklog.delete(c);
    }
    const before = s.queuedCount;
    while (this.#hasRoom(s, c, 0) && !this.#outputFull(c)) {
      const o = s.peek();
      if (!o) break;
      if (o.qos === 0) {
        s.dequeue();
        c.sendPublish(o, false);
        continue;
      }
      const id = s.takePacketId(o);
      // Its id is still taken: the queue waits (in order) until a completion frees it.
      if (id === 0) break;
      s.dequeue();
      this.#transmit(s, c, o, id);
    }
    if (s.queuedCount < before) {
      s.progress++;
      this.publishers.shrank(s);
    }
  }

  /** An outbound message is done with (acknowledged, expired or undeliverable). */
  #complete(s: Session, o: Outbound): void {
    const id = o.packetId;
    s.inflight.delete(id);
    s.progress++;
    if (!s.persistent) return;
    this.#dropSentMark(o);
    // The id is free for another message only once this completion is durable (Session.takePacketId).
    s.idSettling(id);
    this.store.later([{ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset }]).then(
      () => this.#idSettled(s, id),
      (err: unknown) => {
        // Not durable: after a restart the message may be sent again (as an acknowledgement
        // that could not be written; see the README, Durability). The id is not kept from
        // reuse forever, which would stall the session's queue behind it.
        this.logger.error(`store commit failed: ${String(err)}`);
        this.#idSettled(s, id);
      },
    );
  }

  /** A completion under `id` is durable: a queued message waiting for that id may go. */
  #idSettled(s: Session, id: number): void {
    s.idSettled(id);
    const head = s.peek();
    if (head !== undefined && head.qos > 0 && packetIdFor(head.message.offset) === id) this.pump(s);
  }

  /**
   * `o`'s row gets a newer write now (its deletion, or its "pubrel" phase with the packet
   * id), so its "sent" mark need not be written if it still waits.
   */
  #dropSentMark(o: Outbound): void {
    const mark = o.sentMark;
    if (mark === undefined) return;
    o.sentMark = undefined;
    this.store.supersede(mark);
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
    s.inflight.released(o);
    if (!s.persistent) {
      c.sendPubrel(id);
      this.pump(s);
      return;
    }
    // A crash after PUBREL left but before "pubrel" was stored would re-send the PUBLISH to a
    // client that already released its id, which then delivers it twice [MQTT-4.3.3-6]. So the
    // PUBREL waits for that commit, and only the PUBREL: PUBLISHes and acks keep flowing, and
    // PUBRELs leave in the order their PUBRECs came [MQTT-4.6.0-4] (pendingReleases).
    o.releasePending = true;
    s.pendingReleases.push(o);
    this.#dropSentMark(o);
    const mark: Mutation = { op: "delivery-pubrel", clientId: s.clientId, offset: o.message.offset, packetId: id };
    if (this.#releases === undefined) {
      this.#releases = { marks: [], sessions: [], outbounds: [] };
      queueMicrotask(this.#commitReleases);
    }
    this.#releases.marks.push(mark);
    this.#releases.sessions.push(s);
    this.#releases.outbounds.push(o);
    // Past PUBREC it may no longer hold room in the window of PUBLISHes (#hasRoom).
    this.pump(s);
  }

  /**
   * The "pubrel" phases of the PUBRECs read in one turn go to the store once the turn's
   * packets are handled, so that every PUBREC of the turn has superseded its message's "sent"
   * mark before WriteBehind writes what waits (a commit per PUBREC, made at once, wrote the
   * marks of the PUBRECs behind it in the same read; issue 19). Still a list each: the
   * commit window counts lists as the acknowledgements waiting for a commit.
   */
  readonly #commitReleases = (): void => {
    const batch = this.#releases;
    this.#releases = undefined;
    if (batch === undefined) return;
    for (let i = 0; i < batch.marks.length; i++) {
      const s = batch.sessions[i]!;
      const o = batch.outbounds[i]!;
      this.store.commit([batch.marks[i]!]).then(
        () => this.#releaseSettled(s, o),
        (err: unknown) => {
          // As before this change: logged, and the flow goes on rather than stall.
          this.logger.error(`store commit failed: ${String(err)}`);
          this.#releaseSettled(s, o);
        },
      );
    }
  };

  /**
   * `o`'s "pubrel" phase is durable: send the PUBRELs at the head of the session's list
   * whose phase is, in PUBREC order, to whatever connection the session has now (one that
   * reconnected meanwhile gets them here rather than in `online`).
   */
  #releaseSettled(s: Session, o: Outbound): void {
    o.releasePending = false;
    const list = s.pendingReleases;
    while (list.length > 0 && list[0]!.releasePending !== true) {
      const r = list.shift()!;
      const c = s.client;
      // Completed, moved or the session ended meanwhile: nothing to send.
      if (s.inflight.get(r.packetId) !== r || r.phase !== "pubrel") continue;
      if (c !== undefined && c.state === "connected") c.sendPubrel(r.packetId);
    }
  }

  onPubcomp(s: Session, id: number): void {
    const o = s.inflight.get(id);
    if (!o || o.phase !== "pubrel") return;
    this.#complete(s, o);
    this.pump(s);
  }

  /**
   * `s` lost its connection: publishers waiting for room in its queue go on (it is offline
   * now, and offline bounds apply), and its not-yet-acknowledged shared messages go to the
   * other members of their groups (spec 4.8.2).
   */
  redistributeShared(s: Session): void {
    this.publishers.offline(s);
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
    const handed: Array<{ to: Session; o: Outbound }> = [];
    /** Ids of in-flight messages that left this session (Session.takePacketId). */
    const freed: number[] = [];
    for (const o of moved) {
      const members = this.router.otherConnectedMembers(o.shareKey!, s);
      const to = members.length > 0 ? this.router.pickMember(o.shareKey!, members) : undefined;
      if (!to) {
        // Nobody else can take it: it stays with this session.
        if (o.phase === "queued") s.enqueue(o);
        else s.inflight.set(o.packetId, o);
        continue;
      }
      if (o.phase !== "queued") freed.push(o.packetId);
      if (s.persistent) {
        mutations.push({ op: "delivery-delete-offset", clientId: s.clientId, offset: o.message.offset });
      }
      if (to.session.persistent) {
        mutations.push({
          op: "delivery-put",
          delivery: deliveryRecord(to.session, o.message, o.qos, o.retain, o.subscriptionIds),
        });
      }
      handed.push({
        to: to.session,
        o: {
          ...o,
          packetId: 0,
          phase: "queued",
          recordCommit: undefined,
          releasePending: undefined,
          sentMark: undefined,
        },
      });
    }
    // Written before the messages are handed on, so a QoS 2 one can wait for its new record.
    const commit = mutations.length > 0 ? this.store.commit(mutations) : undefined;
    if (commit !== undefined) {
      if (s.persistent) { for (const id of freed) s.idSettling(id); }
      for (const h of handed) if (h.to.persistent) h.o.recordCommit = commit;
      const settled = () => {
        for (const id of freed) this.#idSettled(s, id);
        for (const h of handed) if (h.o.recordCommit === commit) h.o.recordCommit = undefined;
      };
      commit.then(settled, (err: unknown) => {
        this.logger.error(`store commit failed: ${String(err)}`);
        settled();
      });
    }
    for (const h of handed) this.deliver(h.to, h.o);
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
