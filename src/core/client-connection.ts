import { encode, encodeAck, PacketReader } from "../mqtt/codec.ts";
import type {
  ConnectPacket,
  DisconnectPacket,
  Packet,
  ProtocolVersion,
  PublishPacket,
  SubscribePacket,
  UnsubscribePacket,
} from "../mqtt/packets.ts";
import { MqttError, RC, v5ToV3Connack } from "../mqtt/reason-codes.ts";
import { StoreFullError } from "../store/store.ts";
import type { Message, MessageProperties, Mutation, QoS } from "../store/store.ts";
import type { Broker, Routed } from "./broker.ts";
import type { Connection, ConnectionHandler } from "./connection.ts";
import type { Outbound, Session } from "./session.ts";
import { parseSubscriptionFilter, topicFilterProblem, topicNameProblem } from "./topic.ts";
import { encodeOutbound } from "./outbound-encoder.ts";
import { closeReason, logField } from "./client-log.ts";

type State = "awaiting-connect" | "connecting" | "connected" | "closed";

/** Bytes beyond one maximum-size packet that a client may send before its CONNACK. */
const EARLY_BYTES_SLACK = 64 * 1024;

/**
 * One step of a client's ordered publish flow: what to do once the commit it waits for
 * (if any) has settled and every earlier step has run. Steps form a linked queue; see
 * ClientConnection.#enqueue.
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

/** The Will Message of a connection (spec 3.1.3.2), published on abnormal disconnect. */
export interface Will {
  message: Message;
  /** Will Delay Interval in seconds. */
  delay: number;
}

/**
 * The protocol state machine for one network connection: decodes packets, enforces
 * the per-connection rules and limits, and turns protocol faults into reason codes.
 * Session state that outlives the connection lives in `Session`; routing and
 * storage in `Broker`.
 */
export class ClientConnection implements ConnectionHandler {
  state: State = "awaiting-connect";
  version: ProtocolVersion = 4;
  clientId = "";
  username: string | undefined;
  session: Session | undefined;
  will: Will | undefined;
  keepAlive = 0;
  /** Clean Start (v5) / Clean Session (3.1.1) as the CONNECT asked, for the connect log line. */
  cleanStart = true;
  /** Why the connection ended, for the disconnect log line (src/core/client-log.ts). */
  closeReason: string | undefined;
  lastActivity: number;
  readonly connectedAt: number;
  /** Counted in the broker's connected total (set by Broker.noteConnected). */
  counted = false;
  /** Set at accept when a per-address limit refuses this connection (src/auth/security.ts). */
  refusal: number | undefined;

  /** Client's Receive Maximum: how many QoS>0 messages we may have in flight to it. */
  clientReceiveMaximum = 65535;
  /** Client's Maximum Packet Size; larger outgoing packets are dropped [MQTT-3.1.2-24]. */
  clientMaxPacketSize = Number.POSITIVE_INFINITY;
  clientTopicAliasMaximum = 0;
  requestProblemInfo = true;

  #reader: PacketReader;
  /** Incoming QoS>0 publishes not yet fully acknowledged, for Receive Maximum. */
  #incomingInflight = 0;
  /** The topic of this client's last accepted PUBLISH, known to pass topicNameProblem. */
  #lastValidTopic = "";
  /** Topic aliases the client set (client → broker). */
  #inAliases = new Map<number, string>();
  /** Topic aliases Ferry assigned (broker → client). */
  #outAliases = new Map<string, number>();
  /** Keeps this client's publishes in order while some wait for a storage commit: oldest first. */
  #stepsHead: OrderedStep | undefined;
  #stepsTail: OrderedStep | undefined;
  #runningSteps = false;
  /** Publish steps whose delivery waits for their commit (see #publish). */
  #heldDeliveries = 0;
  /** Packets sent right behind CONNECT, held until its session is open (spec 3.1.4). */
  #early: Packet[] = [];
  #earlyBytes = 0;
  /** Output held back until `#outputGate` (a store commit) settles; see holdOutputUntil. */
  #heldOutput: Uint8Array[] | undefined;
  #outputGate: Promise<void> | undefined;
  #closeOnRelease = false;

  constructor(readonly conn: Connection, private readonly broker: Broker) {
    this.#reader = new PacketReader(broker.options.maxPacketSize);
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

  // ---- input ------------------------------------------------------------------

  onData(bytes: Uint8Array): void {
    if (this.state === "closed") return;
    this.lastActivity = this.broker.clock.now();
    this.broker.metrics.bytesReceived += bytes.byteLength;
    let packets: Packet[];
    try {
      packets = this.#reader.push(bytes);
    } catch (err) {
      this.#fault(err);
      return;
    }
    for (const packet of packets) {
      if (this.closed) return;
      try {
        this.#handle(packet);
      } catch (err) {
        this.#fault(err);
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

  #fault(err: unknown): void {
    if (err instanceof MqttError) {
      this.broker.metrics.protocolErrors++;
      this.broker.logger.debug(`client ${logField(this.clientId || this.conn.remoteAddress)}: ${err.message}`);
      if (this.state === "awaiting-connect" && /protocol version|protocolId/i.test(err.message)) {
        // [MQTT-3.1.2-2] answer an unsupported protocol level with CONNACK 0x01 / 0x84, then close.
        this.#write(encode({ cmd: "connack", returnCode: 1, sessionPresent: false }, 4));
        this.#shutdown(true);
        return;
      }
      this.disconnect(err.reasonCode, err.message);
      return;
    }
    this.broker.logger.error(`client ${logField(this.clientId)}: internal error: ${String(err)}`);
    this.disconnect(RC.IMPLEMENTATION_SPECIFIC_ERROR, "internal error");
  }

  #handle(packet: Packet): void {
    if (this.state === "awaiting-connect") {
      // [MQTT-3.1.0-1] the first packet must be CONNECT.
      if (packet.cmd !== "connect") throw new MqttError(RC.PROTOCOL_ERROR, "first packet was not CONNECT");
      this.#onConnect(packet);
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
        return this.#onPublish(packet);
      case "puback":
        return this.broker.onPuback(this, packet.messageId ?? 0);
      case "pubrec":
        return this.broker.onPubrec(this, packet.messageId ?? 0, packet.reasonCode ?? 0);
      case "pubrel":
        return this.#onPubrel(packet.messageId ?? 0);
      case "pubcomp":
        return this.broker.onPubcomp(this, packet.messageId ?? 0);
      case "subscribe":
        return this.#onSubscribe(packet);
      case "unsubscribe":
        return this.#onUnsubscribe(packet);
      case "pingreq":
        this.#write(encode({ cmd: "pingresp" }, this.version));
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

  // ---- CONNECT ----------------------------------------------------------------

  #onConnect(p: ConnectPacket): void {
    this.version = (p.protocolVersion ?? 4) as ProtocolVersion;
    if (this.refusal !== undefined) {
      // Over a per-address limit (Security.admit): the CONNECT learns why, then the close.
      this.#sendConnack(this.refusal, false, {});
      this.#shutdown(true);
      return;
    }
    const opts = this.broker.options;
    const props = p.properties ?? {};
    const fail = (code: number, why: string) => {
      this.broker.metrics.connectionsRefused++;
      this.broker.logger.info(
        `refused ${logField(p.clientId || "(no id)")} from ${logField(this.conn.remoteAddress)}: ${why}`,
      );
      this.#sendConnack(code, false, {});
      this.#shutdown(true);
    };

    if (this.isV5) {
      if (props.receiveMaximum === 0) throw new MqttError(RC.PROTOCOL_ERROR, "Receive Maximum of 0"); // spec 3.1.2.11.3
      if (props.maximumPacketSize === 0) throw new MqttError(RC.PROTOCOL_ERROR, "Maximum Packet Size of 0");
      if (props.authenticationMethod !== undefined) {
        // Ferry implements no enhanced authentication method (spec 4.12).
        return fail(RC.BAD_AUTHENTICATION_METHOD, "unsupported authentication method");
      }
      this.clientReceiveMaximum = props.receiveMaximum ?? 65535;
      this.clientMaxPacketSize = props.maximumPacketSize ?? Number.POSITIVE_INFINITY;
      this.clientTopicAliasMaximum = props.topicAliasMaximum ?? 0;
      this.requestProblemInfo = props.requestProblemInformation ?? true;
    }

    let clientId = p.clientId ?? "";
    let assigned = false;
    const clean = p.clean ?? true;
    this.cleanStart = clean;
    if (clientId.length === 0) {
      // [MQTT-3.1.3-8] 3.1.1: an empty id with CleanSession=0 is rejected.
      if (!this.isV5 && !clean) return fail(RC.CLIENT_IDENTIFIER_NOT_VALID, "empty client id without clean session");
      clientId = this.broker.assignClientId(); // [MQTT-3.1.3-6]
      assigned = true;
    }
    if (clientId.includes("\u0000") || clientId.includes("\uFFFD")) {
      return fail(RC.CLIENT_IDENTIFIER_NOT_VALID, "client id is not valid UTF-8");
    }
    this.clientId = clientId;
    this.username = p.username;

    // A client taking over its own session replaces a connection, so it does not need a free slot.
    const replacing = this.broker.sessions.get(clientId)?.client !== undefined;
    if (!replacing && this.broker.connectedCount >= opts.maxConnections) {
      return fail(RC.QUOTA_EXCEEDED, "too many connections");
    }

    if (p.will) {
      const problem = topicNameProblem(p.will.topic, opts);
      if (problem) return fail(RC.TOPIC_NAME_INVALID, `will topic: ${problem}`);
      if (p.will.retain && !opts.retainAvailable) return fail(RC.RETAIN_NOT_SUPPORTED, "retain not available");
      const wp = p.will.properties ?? {};
      const now = this.broker.clock.now();
      const msg: Message = {
        offset: 0,
        topic: p.will.topic,
        payload: toBytes(p.will.payload),
        qos: (p.will.qos ?? 0) as QoS,
        retain: p.will.retain ?? false,
        receivedAt: now,
        origin: clientId,
      };
      const mp = pickMessageProperties(wp);
      if (mp) msg.properties = mp;
      if (wp.messageExpiryInterval !== undefined) msg.expiresAt = now + wp.messageExpiryInterval * 1000;
      this.will = { message: msg, delay: wp.willDelayInterval ?? 0 };
    }

    // Keep alive: a v5 client gets Ferry's limit as Server Keep Alive when it asks for more
    // (or none), and must then use it [MQTT-3.2.2-21].
    this.keepAlive = p.keepalive ?? 0;
    let serverKeepAlive: number | undefined;
    const maxKa = opts.serverKeepAlive;
    if (this.isV5 && maxKa !== undefined && (this.keepAlive === 0 || this.keepAlive > maxKa)) {
      serverKeepAlive = maxKa;
      this.keepAlive = maxKa;
    }

    let expiry: number;
    if (this.isV5) expiry = Math.min(props.sessionExpiryInterval ?? 0, opts.maxSessionExpiry);
    // 3.1.1 has no expiry of its own: a persistent session lasts max_session_expiry (by
    // default forever), like Mosquitto's persistent_client_expiration.
    else expiry = clean ? 0 : opts.maxSessionExpiry;

    this.state = "connecting";
    // Authenticate before the session is touched, so a refused client cannot take over a
    // session. Asynchronous (password hashes are slow by design): packets that arrive
    // meanwhile wait in #early as they do during session setup.
    this.broker.security.checkConnect(this, {
      username: p.username,
      password: p.password === undefined ? undefined : toBytes(p.password),
      certificate: this.conn.clientCertificate?.(),
    }).then((auth) => {
      if (this.state === "closed") return undefined;
      if (!auth.ok) {
        fail(auth.code, p.username === undefined ? auth.reason : `${auth.reason} (user '${logField(p.username)}')`);
        return undefined;
      }
      this.username = auth.username; // a certificate's CN may stand in for the username sent
      return this.broker.openSession(this, clean, expiry);
    }).then(
      (opened) => {
        // Refused above, or gone while the session was being set up.
        if (opened === undefined || this.state === "closed") return;
        const { session, present } = opened;
        this.session = session;
        this.state = "connected";
        this.broker.noteConnected(this);
        const connackProps: Record<string, unknown> = {};
        if (this.isV5) {
          if (assigned) connackProps.assignedClientIdentifier = clientId;
          if (expiry !== (props.sessionExpiryInterval ?? 0)) connackProps.sessionExpiryInterval = expiry;
          connackProps.receiveMaximum = opts.receiveMaximum;
          connackProps.maximumPacketSize = opts.maxPacketSize;
          connackProps.topicAliasMaximum = opts.topicAliasMaximum;
          if (serverKeepAlive !== undefined) connackProps.serverKeepAlive = serverKeepAlive;
          if (!opts.retainAvailable) connackProps.retainAvailable = false;
          connackProps.wildcardSubscriptionAvailable = true;
          connackProps.subscriptionIdentifiersAvailable = true;
          connackProps.sharedSubscriptionAvailable = true;
        }
        // [MQTT-3.2.2-2] Session Present reflects a resumed session; always 0 with clean start.
        this.#sendConnack(RC.SUCCESS, present, connackProps);
        this.broker.sessionOnline(this, session);
        this.#handleEarly();
      },
      (err: unknown) => {
        if (this.state === "closed") return;
        this.broker.logger.error(`session setup for ${logField(clientId)} failed: ${String(err)}`);
        fail(err instanceof StoreFullError ? RC.QUOTA_EXCEEDED : RC.SERVER_UNAVAILABLE, "storage error");
      },
    );
  }

  /** Process the packets that arrived while the session was being opened, in order. */
  #handleEarly(): void {
    const early = this.#early;
    this.#early = [];
    for (const packet of early) {
      if (this.closed) return;
      try {
        this.#handle(packet);
      } catch (err) {
        this.#fault(err);
        return;
      }
    }
  }

  #sendConnack(code: number, sessionPresent: boolean, properties: Record<string, unknown>): void {
    if (this.isV5) {
      const packet = { cmd: "connack", reasonCode: code, sessionPresent } as Packet & { properties?: unknown };
      if (Object.keys(properties).length > 0) packet.properties = properties;
      this.#write(encode(packet, 5));
    } else {
      this.#write(encode({ cmd: "connack", returnCode: v5ToV3Connack(code), sessionPresent }, this.version));
    }
  }

  // ---- PUBLISH in ---------------------------------------------------------------

  #onPublish(p: PublishPacket): void {
    if (!this.broker.security.takePublish(this)) {
      // limits.max_publish_rate: disconnect with a reason rather than throttle reads, which
      // every adapter would have to support; a v3 client just sees the close.
      this.disconnect(RC.MESSAGE_RATE_TOO_HIGH, "message rate too high");
      return;
    }
    const opts = this.broker.options;
    const props = p.properties;
    let topic = p.topic;
    const qos = p.qos;
    const id = p.messageId ?? 0;

    if (this.isV5 && props) {
      if (props.subscriptionIdentifier !== undefined) {
        throw new MqttError(RC.PROTOCOL_ERROR, "PUBLISH from a client carries a Subscription Identifier"); // [MQTT-3.3.4-6]
      }
      const alias = props.topicAlias;
      if (alias !== undefined) {
        // [MQTT-3.3.2-9] alias must be 1..Topic Alias Maximum we announced.
        if (alias === 0 || alias > opts.topicAliasMaximum) {
          throw new MqttError(RC.TOPIC_ALIAS_INVALID, `topic alias ${alias} out of range`);
        }
        if (topic.length === 0) {
          const known = this.#inAliases.get(alias);
          if (known === undefined) throw new MqttError(RC.PROTOCOL_ERROR, `unknown topic alias ${alias}`);
          topic = known;
        } else {
          this.#inAliases.set(alias, topic); // a non-empty topic (re)binds the alias (spec 3.3.2.3.4)
        }
      }
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

    this.broker.metrics.messagesReceived[qos]++;

    if (qos > 0) {
      if (qos === 2 && this.session!.qos2Incoming.has(id)) {
        // A re-sent QoS 2 PUBLISH we already own: acknowledge again, do not route twice [MQTT-4.3.3-10].
        this.#enqueue(new OrderedStep("ack", false, 2, id, RC.SUCCESS, undefined), undefined);
        return;
      }
      // [MQTT-3.3.4-7] more unacknowledged QoS>0 publishes than our Receive Maximum: DISCONNECT 0x93.
      // Only v5 clients were told the limit; a 3.1.1 client that sends a large window is within
      // its protocol, and closing it would only make it reconnect and re-send the same window.
      if (this.isV5 && this.#incomingInflight >= opts.receiveMaximum) {
        throw new MqttError(RC.RECEIVE_MAXIMUM_EXCEEDED, "receive maximum exceeded");
      }
      this.#incomingInflight++;
    }

    // The time its bytes arrived (set in onData): one clock reading per read, not per message.
    const now = this.lastActivity;
    const message: Message = {
      offset: 0,
      topic,
      payload: toBytes(p.payload),
      qos,
      retain: p.retain,
      receivedAt: now,
      origin: this.clientId,
    };
    if (props) {
      const mp = pickMessageProperties(props);
      if (mp) message.properties = mp;
      if (props.messageExpiryInterval !== undefined) message.expiresAt = now + props.messageExpiryInterval * 1000;
    }

    if (!this.broker.acl.allows(this, "publish", topic)) {
      this.broker.metrics.aclDeniedPublish++;
      this.broker.logger.debug(`publish by ${logField(this.clientId)} to ${logField(topic)} denied`);
      // v5: reason 0x87; 3.1.1 has no negative ack, so acknowledge and drop (as Mosquitto does).
      if (qos > 0) this.#enqueue(new OrderedStep("ack", false, qos, id, opts.aclDenyCode, undefined), undefined);
      return;
    }

    let extra: Mutation | undefined;
    if (qos === 2) {
      // Owned from now on: a re-send arriving before the commit is recognised as a duplicate.
      this.session!.qos2Incoming.add(id);
      extra = { op: "qos2-in-put", clientId: this.clientId, packetId: id };
    }
    // Routed and handed to the store now, in arrival order, so that a client's window of
    // publishes shares group commits; only delivery and the ack wait for earlier publishes.
    const routed = this.broker.publish(message, extra);
    const step = new OrderedStep("publish", true, qos, id, 0, routed);
    // QoS 0/1 reach connected subscribers now, unless an earlier message of this client is
    // still held back (a QoS 2 one: its duplicate detection must be durable first), so that
    // the client's messages keep their order [MQTT-4.6.0-6]. The ack still waits below.
    if (qos < 2 && this.#heldDeliveries === 0 && this.broker.liveBeforeCommit) this.broker.deliverLive(routed);
    else {
      step.held = true;
      this.#heldDeliveries++;
    }
    // Runs even if the connection closes meanwhile: a stored message must reach its subscribers.
    this.#enqueue(step, routed.commit);
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
    if (!step.waiting) this.#runSteps();
  }

  /** Run the steps at the head of the queue whose commits have settled, in order. */
  #runSteps(): void {
    if (this.#runningSteps) return; // the outer loop picks up whatever a step made ready
    this.#runningSteps = true;
    try {
      for (let step = this.#stepsHead; step !== undefined && !step.waiting; step = this.#stepsHead) {
        this.#stepsHead = step.next;
        if (this.#stepsHead === undefined) this.#stepsTail = undefined;
        step.next = undefined;
        if (this.state === "closed" && !step.evenIfClosed) continue;
        try {
          this.#runStep(step);
        } catch (err) {
          // One failing step must not stall the ones behind it.
          this.broker.logger.error(`client ${logField(this.clientId)}: ${step.kind} step failed: ${String(err)}`);
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
        if (step.failed) {
          if (qos === 2) this.session?.qos2Incoming.delete(id);
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
          this.#fault(step.error);
          return;
        }
        // A released id ends its flow; one we did not hold was never counted.
        if (step.code === RC.SUCCESS) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
        if (this.state !== "closed") this.#write(this.#encodeAck("pubcomp", id, step.code));
        return;
    }
  }

  #publishFailed(qos: QoS, id: number, err: unknown): void {
    if (err instanceof StoreFullError) {
      this.broker.metrics.refusedStorageFull++;
      // A QoS 0 message (one that carried RETAIN: others write nothing) has no acknowledgement to
      // refuse it with, and at most once allows dropping it; the client stays connected.
      if (qos === 0) return;
      if (this.isV5) {
        // 0x97 Quota exceeded (spec 3.4.2.1): the client keeps the message and may retry later.
        this.#ackPublish(qos, id, RC.QUOTA_EXCEEDED, "storage full");
        return;
      }
      // 3.1.1 has no negative acknowledgement: withhold the ack and close, so the client re-sends
      // the message on its next connection.
      this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
      this.disconnect(RC.QUOTA_EXCEEDED, "storage full");
      return;
    }
    this.broker.logger.error(`storing a message from ${logField(this.clientId)} failed: ${String(err)}`);
    if (qos > 0) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    this.disconnect(RC.IMPLEMENTATION_SPECIFIC_ERROR, "storage error");
  }

  #ackPublish(qos: QoS, id: number, code: number, reason?: string): void {
    if (this.state === "closed") return;
    if (qos === 1) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    else if (code >= 0x80) this.#incomingInflight = Math.max(0, this.#incomingInflight - 1);
    const cmd = qos === 1 ? "puback" : "pubrec";
    this.#write(this.#encodeAck(cmd, id, code, reason));
  }

  /** An acknowledgement's bytes; without a reason string, with no packet object in between (one per publish). */
  #encodeAck(cmd: "puback" | "pubrec" | "pubcomp" | "pubrel", id: number, code: number, reason?: string): Uint8Array {
    if (reason && this.isV5 && this.requestProblemInfo) {
      return encode(this.#ackPacket(cmd, id, code, reason), this.version);
    }
    return encodeAck(cmd, id, code, this.version);
  }

  #ackPacket(cmd: "puback" | "pubrec" | "pubcomp" | "pubrel", id: number, code: number, reason?: string): Packet {
    const packet: Record<string, unknown> = { cmd, messageId: id };
    if (this.isV5) {
      packet.reasonCode = code;
      if (reason && this.requestProblemInfo) packet.properties = { reasonString: reason };
    }
    return packet as unknown as Packet;
  }

  #onPubrel(id: number): void {
    const session = this.session!;
    // The id was taken when its PUBLISH arrived, so whether it is held is known now.
    const held = session.qos2Incoming.delete(id);
    if (!held) {
      // PUBREL for an id we do not hold: 0x92, still completes the flow (spec 3.7.2.1).
      this.#enqueue(new OrderedStep("pubcomp", false, 2, id, RC.PACKET_IDENTIFIER_NOT_FOUND, undefined), undefined);
      return;
    }
    // Release the id durably before PUBCOMP, or a crash could make a reused id look like a
    // duplicate. Committed now, in arrival order, so a window of PUBRELs shares group commits.
    const commit = this.broker.persist([{ op: "qos2-in-delete", clientId: this.clientId, packetId: id }], true);
    this.#enqueue(new OrderedStep("pubcomp", false, 2, id, RC.SUCCESS, undefined), commit);
  }

  // ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------------

  #onSubscribe(p: SubscribePacket): void {
    const opts = this.broker.options;
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
      if (!this.broker.acl.allows(this, "subscribe", parsed.filter)) {
        this.broker.metrics.aclDeniedSubscribe++;
        granted.push(this.isV5 ? opts.aclDenyCode : 0x80);
        continue;
      }
      const isNew = this.broker.subscribe(this.session!, {
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
      this.#write(encode({ cmd: "suback", messageId: p.messageId ?? 0, granted }, this.version));
      // Retained messages follow the SUBACK [MQTT-3.3.1-9].
      for (const { index, isNew } of accepted) {
        const s = p.subscriptions[index]!;
        this.broker.sendRetained(session, s.topic, isNew);
      }
    };
    const commit = accepted.length > 0 ? this.broker.persistSession(session) : undefined;
    if (commit) commit.then(finish, (err: unknown) => this.#fault(err));
    else finish();
  }

  #onUnsubscribe(p: UnsubscribePacket): void {
    if (p.unsubscriptions.length === 0) {
      throw new MqttError(RC.PROTOCOL_ERROR, "UNSUBSCRIBE without a topic filter"); // [MQTT-3.10.3-2]
    }
    const codes = p.unsubscriptions.map((filter) =>
      this.broker.unsubscribe(this.session!, filter) ? RC.SUCCESS : RC.NO_SUBSCRIPTION_EXISTED
    );
    const finish = () => {
      if (this.state === "closed") return;
      const packet: Record<string, unknown> = { cmd: "unsuback", messageId: p.messageId ?? 0 };
      if (this.isV5) packet.granted = codes;
      this.#write(encode(packet as unknown as Packet, this.version));
    };
    const commit = this.broker.persistSession(this.session!);
    if (commit) commit.then(finish, (err: unknown) => this.#fault(err));
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
    this.#shutdown(code === RC.DISCONNECT_WITH_WILL);
  }

  /** Close because of a fault or broker decision: v5 peers get a DISCONNECT with the reason. */
  disconnect(code: number, reason?: string): void {
    if (this.state === "closed") return;
    this.closeReason ??= closeReason(reason ?? "disconnected by the server", code);
    if (this.isV5 && this.state === "connected") {
      const packet: Record<string, unknown> = { cmd: "disconnect", reasonCode: code };
      if (reason) packet.properties = { reasonString: reason };
      this.#write(encode(packet as unknown as Packet, 5));
    } else if (this.isV5 && this.state !== "connected" && code >= 0x80) {
      // Before CONNACK the reason goes in a CONNACK (spec 4.13.1).
      this.#sendConnack(code, false, {});
    }
    this.#shutdown(true);
  }

  /** Stop this connection now; `abnormal` decides whether the Will is published. */
  #shutdown(abnormal: boolean): void {
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

  #write(bytes: Uint8Array): void {
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
    this.#write(bytes);
    return true;
  }

  /** Outbound topic alias for `topic`, assigning one while slots remain. */
  outboundAlias(topic: string): { alias: number; known: boolean } | undefined {
    if (this.clientTopicAliasMaximum === 0) return undefined;
    const known = this.#outAliases.get(topic);
    if (known !== undefined) return { alias: known, known: true };
    if (this.#outAliases.size >= this.clientTopicAliasMaximum) return undefined;
    const alias = this.#outAliases.size + 1;
    this.#outAliases.set(topic, alias);
    return { alias, known: false };
  }

  sendPubrelNotFound(packetId: number): void {
    this.#write(this.#encodeAck("pubrel", packetId, RC.PACKET_IDENTIFIER_NOT_FOUND));
  }

  sendPubrel(packetId: number): void {
    this.#write(this.#encodeAck("pubrel", packetId, RC.SUCCESS));
  }

  writeRaw(bytes: Uint8Array): void {
    this.#write(bytes);
  }
}

function toBytes(payload: string | Uint8Array): Uint8Array {
  return typeof payload === "string" ? new TextEncoder().encode(payload) : payload;
}

/** The properties forwarded unaltered [MQTT-3.3.2-4] [MQTT-3.3.2-15..17] [MQTT-3.3.2-20]. */
function pickMessageProperties(p: {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Uint8Array;
  userProperties?: Record<string, string | string[]>;
}): MessageProperties | undefined {
  let out: MessageProperties | undefined;
  if (p.payloadFormatIndicator !== undefined) (out ??= {}).payloadFormatIndicator = p.payloadFormatIndicator;
  if (p.contentType !== undefined) (out ??= {}).contentType = p.contentType;
  if (p.responseTopic !== undefined) (out ??= {}).responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) (out ??= {}).correlationData = p.correlationData;
  if (p.userProperties !== undefined) (out ??= {}).userProperties = p.userProperties;
  return out;
}
