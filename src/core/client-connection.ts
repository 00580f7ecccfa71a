import { encode, encodeAck, encodeDisconnect, PacketReader } from "../mqtt/codec.ts";
import { CONNACK_OPTIONAL_PROPERTIES, encodeWithin, REASON_PROPERTIES } from "../mqtt/encode-within.ts";
import type { DisconnectPacket, Packet, ProtocolVersion, SubscribePacket, UnsubscribePacket } from "../mqtt/packets.ts";
import { MqttError, RC, v5ToV3Connack } from "../mqtt/reason-codes.ts";
import { parseSubscriptionFilter, topicFilterProblem } from "../mqtt/topic.ts";
import type { AccessSubject, Refusal } from "./auth-ports.ts";
import type { Broker } from "./broker.ts";
import { runConnect } from "./connect-pipeline.ts";
import type { Connection, ConnectionHandler } from "./connection.ts";
import { InboundFlow } from "./inbound-flow.ts";
import { encodeOutbound } from "./outbound-encoder.ts";
import { closeReason, logField } from "./client-log.ts";
import type { Peer, PeerState } from "./peer.ts";
import type { Outbound, Session } from "./session.ts";
import { TopicAliases } from "./topic-aliases.ts";
import type { Will } from "./will.ts";

/** Bytes beyond one maximum-size packet that a client may send before its CONNACK. */
const EARLY_BYTES_SLACK = 64 * 1024;

/**
 * The protocol state machine for one network connection: decodes packets and dispatches
 * them, SUBSCRIBE / UNSUBSCRIBE / DISCONNECT, and everything written to the client (the
 * output gate, outbound PUBLISH and acks). CONNECT runs in `connect-pipeline.ts`, PUBLISH
 * and PUBREL from the client in `inbound-flow.ts`; session state that outlives the
 * connection lives in `Session`, routing and storage behind `Broker`.
 */
export class ClientConnection implements ConnectionHandler, Peer, AccessSubject {
  state: PeerState = "awaiting-connect";
  version: ProtocolVersion = 4;
  clientId = "";
  username: string | undefined;
  session: Session | undefined;
  will: Will | undefined;
  keepAlive = 0;
  lastActivity: number;
  readonly connectedAt: number;
  /** Clean Start (v5) / Clean Session (3.1.1) as the CONNECT asked, for the connect log line. */
  cleanStart = true;
  /** Why the connection ended, for the disconnect log line (src/core/client-log.ts). */
  closeReason: string | undefined;
  /** Counted in the broker's connected total (set by Broker.noteConnected). */
  counted = false;
  /** Set at accept when a per-address limit refuses this connection (AuthPort.admit). */
  refusal: number | undefined;

  /** Client's Receive Maximum: how many QoS>0 messages we may have in flight to it. */
  clientReceiveMaximum = 65535;
  /** Client's Maximum Packet Size; larger outgoing packets are dropped [MQTT-3.1.2-24]. */
  clientMaxPacketSize = Number.POSITIVE_INFINITY;
  clientTopicAliasMaximum = 0;
  requestProblemInfo = true;
  readonly aliases = new TopicAliases();

  #reader: PacketReader;
  #inbound: InboundFlow;
  /** Packets sent right behind CONNECT, held until its session is open (spec 3.1.4). */
  #early: Packet[] = [];
  #earlyBytes = 0;
  /** Output held back until `#outputGate` (a store commit) settles; see holdOutputUntil. */
  #heldOutput: Uint8Array[] | undefined;
  #outputGate: Promise<void> | undefined;
  #closeOnRelease = false;

  constructor(readonly conn: Connection, private readonly broker: Broker) {
    this.#reader = new PacketReader(broker.options.maxPacketSize);
    this.#inbound = new InboundFlow(this, broker);
    this.lastActivity = broker.clock.now();
    this.connectedAt = this.lastActivity;
  }

  /** A getter, so control-flow narrowing does not assume the state is unchanged across calls. */
  get closed(): boolean {
    return this.state === "closed";
  }

  get isV5(): boolean {
    return this.version === 5;
  }

  get inflightWindow(): number {
    return Math.min(this.clientReceiveMaximum, this.broker.options.maxInflight);
  }

  get remoteAddress(): string {
    return this.conn.remoteAddress;
  }

  get remoteIp(): string | undefined {
    return this.conn.remoteIp;
  }

  /** The auth port's verdict at accept: close now, or let a CONNECT within the grace period learn why. */
  refuse(r: Refusal): void {
    if (r.graceMs <= 0) {
      this.disconnect(r.code);
      return;
    }
    this.refusal = r.code;
    this.broker.clock.setTimeout(() => {
      if (this.state === "awaiting-connect") this.disconnect(r.code);
    }, r.graceMs);
  }

  // ---- input ------------------------------------------------------------------

  onData(bytes: Uint8Array): void {
    if (this.state === "closed") return;
    this.lastActivity = this.broker.clock.now();
    this.broker.metrics.bytesReceived += bytes.byteLength;
    let packets: Packet[];
    try {
      packets = this.#reader.push(bytes);
    } catch (err) {
      this.fault(err);
      return;
    }
    for (const packet of packets) {
      if (this.closed) return;
      try {
        this.#handle(packet);
      } catch (err) {
        this.fault(err);
        return;
      }
    }
  }

  onClose(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeReason ??= "closed its connection";
    this.broker.clientClosed(this, true);
  }

  /** A packet could not be handled: protocol faults become reason codes, anything else 0x83. */
  fault(err: unknown): void {
    if (err instanceof MqttError) {
      this.broker.metrics.protocolErrors++;
      this.broker.logger.debug(`client ${logField(this.clientId || this.conn.remoteAddress)}: ${err.message}`);
      this.closeReason ??= closeReason(err.message, err.reasonCode);
      if (this.state === "awaiting-connect" && err.reasonCode === RC.UNSUPPORTED_PROTOCOL_VERSION) {
        // [MQTT-3.1.2-2] answer an unsupported protocol level with CONNACK 0x01 / 0x84, then close.
        this.write(encode({ cmd: "connack", returnCode: 1, sessionPresent: false }, 4));
        this.shutdown(true);
        return;
      }
      // A refused v5 CONNECT learns why in a CONNACK (spec 4.13.1); 3.1.1 is just closed.
      if (this.state === "awaiting-connect" && err.protocolVersion === 5) this.version = 5;
      // The bare code (E0 01 81): the client sent the packet; why it failed is in the log above.
      this.disconnect(err.reasonCode);
      return;
    }
    this.broker.logger.error(`client ${logField(this.clientId)}: internal error: ${String(err)}`);
    this.disconnect(RC.IMPLEMENTATION_SPECIFIC_ERROR, "internal error");
  }

  #handle(packet: Packet): void {
    if (this.state === "awaiting-connect") {
      // [MQTT-3.1.0-1] the first packet must be CONNECT.
      if (packet.cmd !== "connect") throw new MqttError(RC.PROTOCOL_ERROR, "first packet was not CONNECT");
      runConnect(this, this.broker, packet);
      return;
    }
    if (packet.cmd === "connect") throw new MqttError(RC.PROTOCOL_ERROR, "second CONNECT"); // [MQTT-3.1.0-2]
    if (this.state === "connecting") {
      // Clients need not wait for CONNACK (spec 3.1.4): hold what follows CONNECT until the
      // session is open; a refused CONNECT drops it unprocessed [MQTT-3.1.4-6]. Bounded, so
      // a flood during a slow session setup cannot pile up in memory.
      this.#earlyBytes += (packet.length ?? 0) + 2;
      if (this.#earlyBytes > this.broker.options.maxPacketSize + EARLY_BYTES_SLACK) {
        throw new MqttError(RC.QUOTA_EXCEEDED, "too much data before CONNACK");
      }
      this.#early.push(packet);
      return;
    }
    if (this.state !== "connected") return;
    switch (packet.cmd) {
      case "publish":
        return this.#inbound.onPublish(packet);
      case "puback":
        return this.broker.outbound.onPuback(this.session!, packet.messageId ?? 0);
      case "pubrec":
        return this.broker.outbound.onPubrec(this.session!, this, packet.messageId ?? 0, packet.reasonCode ?? 0);
      case "pubrel":
        return this.#inbound.onPubrel(packet.messageId ?? 0);
      case "pubcomp":
        return this.broker.outbound.onPubcomp(this.session!, packet.messageId ?? 0);
      case "subscribe":
        return this.#onSubscribe(packet);
      case "unsubscribe":
        return this.#onUnsubscribe(packet);
      case "pingreq":
        this.write(encode({ cmd: "pingresp" }, this.version));
        return;
      case "disconnect":
        return this.#onDisconnect(packet);
      case "auth":
        // No enhanced authentication method was agreed in CONNECT, so AUTH is a protocol error [MQTT-4.12.0-1].
        throw new MqttError(RC.PROTOCOL_ERROR, "AUTH without an authentication method");
      default:
        // A server never receives CONNACK, SUBACK, UNSUBACK or PINGRESP.
        throw new MqttError(RC.PROTOCOL_ERROR, `unexpected ${packet.cmd} from a client`);
    }
  }

  /** Process the packets that arrived while the session was being opened, in order. */
  handleEarly(): void {
    const early = this.#early;
    this.#early = [];
    for (const packet of early) {
      if (this.closed) return;
      try {
        this.#handle(packet);
      } catch (err) {
        this.fault(err);
        return;
      }
    }
  }

  /** Send CONNACK; false when it cannot fit the client's Maximum Packet Size [MQTT-3.1.2-24]. */
  sendConnack(code: number, sessionPresent: boolean, properties: Record<string, unknown>): boolean {
    if (this.isV5) {
      const packet = { cmd: "connack", reasonCode: code, sessionPresent } as Packet & { properties?: unknown };
      if (Object.keys(properties).length > 0) packet.properties = properties;
      const bytes = encodeWithin(packet, 5, this.clientMaxPacketSize, CONNACK_OPTIONAL_PROPERTIES);
      if (bytes === undefined) return false;
      this.write(bytes);
    } else {
      this.write(encode({ cmd: "connack", returnCode: v5ToV3Connack(code), sessionPresent }, this.version));
    }
    return true;
  }

  // ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------

  #onSubscribe(p: SubscribePacket): void {
    const broker = this.broker;
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
    const granted: number[] = [];
    const accepted: Array<{ index: number; isNew: boolean }> = [];
    for (let i = 0; i < p.subscriptions.length; i++) {
      const s = p.subscriptions[i]!;
      const parsed = parseSubscriptionFilter(s.topic);
      const problem = typeof parsed === "string" ? parsed : topicFilterProblem(parsed.filter, opts);
      if (typeof parsed === "string" || problem) {
        granted.push(this.isV5 ? RC.TOPIC_FILTER_INVALID : 0x80);
        continue;
      }
      // A shared subscription is checked on its filter, without the $share/group/ prefix.
      if (!broker.acl.allows(this, "subscribe", parsed.filter)) {
        broker.metrics.aclDeniedSubscribe++;
        granted.push(this.isV5 ? opts.aclDenyCode : 0x80);
        continue;
      }
      const isNew = broker.router.subscribe(this.session!, {
        filter: s.topic,
        plainFilter: parsed.filter,
        group: parsed.group,
        qos: s.qos,
        noLocal: s.nl ?? false,
        retainAsPublished: s.rap ?? false,
        retainHandling: (s.rh ?? 0) as 0 | 1 | 2,
        ...(subId !== undefined ? { subscriptionId: subId } : {}),
      });
      granted.push(s.qos);
      accepted.push({ index: i, isNew });
    }
    const session = this.session!;
    const finish = () => {
      if (this.state === "closed") return;
      this.write(encode({ cmd: "suback", messageId: p.messageId ?? 0, granted }, this.version));
      // Retained messages follow the SUBACK [MQTT-3.3.1-9].
      for (const { index, isNew } of accepted) {
        const s = p.subscriptions[index]!;
        broker.sendRetained(session, s.topic, isNew);
      }
    };
    // One write per accepted filter, never the session's other subscriptions (issue 13).
    const changed = accepted.map(({ index }) => p.subscriptions[index]!.topic);
    const commit = accepted.length > 0 ? broker.registry.persistSubscriptions(session, changed) : undefined;
    if (commit) commit.then(finish, (err: unknown) => this.fault(err));
    else finish();
  }

  #onUnsubscribe(p: UnsubscribePacket): void {
    if (p.unsubscriptions.length === 0) {
      throw new MqttError(RC.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter"); // [MQTT-3.10.3-2]
    }
    const codes = p.unsubscriptions.map((filter) =>
      this.broker.router.unsubscribe(this.session!, filter) ? RC.SUCCESS : RC.NO_SUBSCRIPTION_EXISTED
    );
    const finish = () => {
      if (this.state === "closed") return;
      const packet: Record<string, unknown> = { cmd: "unsuback", messageId: p.messageId ?? 0 };
      if (this.isV5) packet.granted = codes;
      this.write(encode(packet as unknown as Packet, this.version));
    };
    const commit = this.broker.registry.persistSubscriptions(this.session!, p.unsubscriptions);
    if (commit) commit.then(finish, (err: unknown) => this.fault(err));
    else finish();
  }

  // ---- DISCONNECT -------------------------------------------------------------------

  #onDisconnect(p: DisconnectPacket): void {
    const code = p.reasonCode ?? 0;
    const newExpiry = p.properties?.sessionExpiryInterval;
    if (newExpiry !== undefined && this.session) {
      // A session that was to end with the connection cannot be revived here (spec 3.14.2.2.2).
      if (this.session.expiryInterval === 0 && newExpiry !== 0) {
        throw new MqttError(RC.PROTOCOL_ERROR, "Session Expiry Interval changed from 0 on DISCONNECT");
      }
      this.session.expiryInterval = Math.min(newExpiry, this.broker.options.maxSessionExpiry);
    }
    this.closeReason = closeReason("client sent DISCONNECT", code === 0 ? undefined : code);
    // [MQTT-3.14.4-3] a normal DISCONNECT discards the Will; 0x04 asks for it to be sent.
    if (code !== RC.DISCONNECT_WITH_WILL) this.will = undefined;
    // `abnormal` is what makes the broker publish the Will, so 0x04 must pass true.
    this.shutdown(code === RC.DISCONNECT_WITH_WILL);
  }

  /** Close because of a fault or broker decision: v5 peers get a DISCONNECT with the reason. */
  disconnect(code: number, reason?: string): void {
    if (this.state === "closed") return;
    this.closeReason ??= closeReason(reason ?? "disconnected by the server", code);
    if (this.isV5 && this.state === "connected") {
      // The Reason String only where it fits the client's Maximum Packet Size [MQTT-3.14.2-3].
      const packet = { cmd: "disconnect", reasonCode: code, properties: { reasonString: reason } } as Packet;
      const full = reason ? encodeWithin(packet, 5, this.clientMaxPacketSize, []) : undefined;
      const bytes = full ?? encodeDisconnect(code);
      if (bytes.byteLength <= this.clientMaxPacketSize) this.write(bytes);
    } else if (this.isV5 && this.state !== "connected" && code >= 0x80) {
      // Before CONNACK the reason goes in a CONNACK (spec 4.13.1).
      this.sendConnack(code, false, {});
    }
    this.shutdown(true);
  }

  /** Stop this connection now; `abnormal` decides whether the Will is published. */
  shutdown(abnormal: boolean): void {
    if (this.state === "closed") return;
    this.state = "closed";
    // Held output (a final DISCONNECT among it) goes out first; see holdOutputUntil.
    if (this.#heldOutput) this.#closeOnRelease = true;
    else this.conn.close();
    this.broker.clientClosed(this, abnormal);
  }

  /** Session taken over by a new connection with the same client id [MQTT-3.1.4-3]. */
  takeover(): void {
    this.disconnect(RC.SESSION_TAKEN_OVER, "session taken over");
  }

  // ---- output ---------------------------------------------------------------------

  /** Write bytes to the client (held while the output gate is closed; see holdOutputUntil). */
  write(bytes: Uint8Array): void {
    this.broker.metrics.bytesSent += bytes.byteLength;
    if (this.#heldOutput) this.#heldOutput.push(bytes);
    else this.conn.write(bytes);
  }

  /**
   * Hold everything written to this client until `commit` settles, then send it in
   * order. For packets the client must not see before the store knows about them: a
   * QoS 2 PUBLISH before its packet id is durable, or a PUBREL before the "pubrel"
   * phase is — otherwise a crash in between makes Ferry re-send a PUBLISH the client
   * already released, and it is delivered twice [MQTT-4.3.3-6]. Holding all output,
   * not just those packets, keeps every packet to the client in order.
   */
  holdOutputUntil(commit: Promise<void>): void {
    this.#heldOutput ??= [];
    this.#outputGate = commit;
    const release = () => {
      if (this.#outputGate !== commit) return; // a later gate releases everything
      const held = this.#heldOutput ?? [];
      this.#heldOutput = undefined;
      this.#outputGate = undefined;
      for (const bytes of held) this.conn.write(bytes);
      if (this.#closeOnRelease) this.conn.close();
    };
    // A failed commit is logged by whoever committed; the client still gets its packets.
    commit.then(release, release);
  }

  /**
   * Send an application message. Returns false when it was dropped instead (too large
   * for the client, or expired).
   */
  sendPublish(o: Outbound, dup: boolean): boolean {
    const m = o.message;
    // The clock is read only for messages that can expire: once per delivery added up
    // to several percent of a fan-out.
    let now = 0;
    if (m.expiresAt !== undefined) {
      now = this.broker.clock.now();
      if (m.expiresAt <= now) {
        this.broker.metrics.droppedExpired++;
        return false;
      }
    }
    if (!this.broker.acl.allowsRead(this, m.topic)) {
      // Granted a wide filter but not this topic (see Acl): not sent, and done with.
      this.broker.metrics.aclDeniedDelivery++;
      return false;
    }
    const bytes = encodeOutbound(this, o, dup, now, o.cache);
    // Sent (or dropped below): this delivery no longer holds the message's encodings alive.
    o.cache = undefined;
    if (bytes.byteLength > this.clientMaxPacketSize) {
      // [MQTT-3.1.2-24] never send a packet larger than the client accepts; it counts as delivered.
      this.broker.metrics.droppedTooLarge++;
      return false;
    }
    this.broker.metrics.messagesSent[o.qos]++;
    this.write(bytes);
    return true;
  }

  /** Outbound topic alias for `topic`, assigning one while slots remain (see outbound-encoder.ts). */
  outboundAlias(topic: string): { alias: number; known: boolean } | undefined {
    // Checked here too: most clients allow no aliases, and this runs for every v5 delivery.
    if (this.clientTopicAliasMaximum === 0) return undefined;
    return this.aliases.outgoing(topic, this.clientTopicAliasMaximum);
  }

  /** An acknowledgement's bytes; without a reason string, with no packet object in between (one per publish). */
  encodeAck(cmd: "puback" | "pubrec" | "pubcomp" | "pubrel", id: number, code: number, reason?: string): Uint8Array {
    if (reason && this.isV5 && this.requestProblemInfo) {
      const packet: Record<string, unknown> = { cmd, messageId: id, reasonCode: code };
      packet.properties = { reasonString: reason };
      // Without its Reason String if that would exceed the client's Maximum Packet Size [MQTT-3.4.2-2].
      const bytes = encodeWithin(packet as unknown as Packet, 5, this.clientMaxPacketSize, REASON_PROPERTIES);
      if (bytes) return bytes;
    }
    return encodeAck(cmd, id, code, this.version);
  }

  sendPubrelNotFound(packetId: number): void {
    this.write(this.encodeAck("pubrel", packetId, RC.PACKET_IDENTIFIER_NOT_FOUND));
  }

  sendPubrel(packetId: number): void {
    this.write(this.encodeAck("pubrel", packetId, RC.SUCCESS));
  }
}
