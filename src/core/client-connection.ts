import { encode, encodeAck, encodeDisconnect, PacketReader } from "../mqtt/codec.ts";
import { CONNACK_OPTIONAL_PROPERTIES, encodeWithin, REASON_PROPERTIES } from "../mqtt/encode-within.ts";
import type { DisconnectPacket, Packet, ProtocolVersion } from "../mqtt/packets.ts";
import { MqttError, RC, v5ToV3Connack } from "../mqtt/reason-codes.ts";
import type { AccessSubject, Refusal } from "./auth-ports.ts";
import type { Broker } from "./broker.ts";
import { runConnect } from "./connect-pipeline.ts";
import { flushSubscribes, handleSubscribe, handleUnsubscribe } from "./subscribe-handler.ts";
import type { ByteHolder } from "./connection-bytes.ts";
import type { Connection, ConnectionHandler } from "./connection.ts";
import { InboundFlow } from "./inbound-flow.ts";
import { encodeOutbound } from "./outbound-encoder.ts";
import { closeReason, logField } from "./client-log.ts";
import type { Peer, PeerState } from "./peer.ts";
import type { Outbound, Session } from "./session.ts";
import { TopicAliases } from "./topic-aliases.ts";
import type { Will } from "./will.ts";

/** PINGRESP in every protocol version (spec 3.13): adapters only read what they are given. */
const PINGRESP: Uint8Array = Uint8Array.of(0xd0, 0x00);

/**
 * PUBLISH payloads stay views of the bytes read until InboundFlow keeps them (it copies
 * small ones then): a QoS 0 message nobody can take is dropped without a copy.
 */
const READER_OPTIONS = { copyPayloads: false } as const;

/**
 * A v5 client's deliveries in flight in all, QoS 2 ones past PUBREC included, as a multiple
 * of its window of PUBLISHes (inflightLimit). Each QoS 2 delivery to a persistent session
 * spends a commit between PUBREC and PUBREL; with only the window for both phases, a drain
 * moved the whole window in lockstep and waited for that commit every round (issue 19).
 */
const RELEASING_FACTOR = 4;

/** Bytes beyond one maximum-size packet that a client may send before its CONNACK. */
const EARLY_BYTES_SLACK = 64 * 1024;

/** ClientConnection's boolean fields, as bits of its #bits. */
const CLEAN_START = 1;
const COUNTED = 2;
const INPUT_HELD = 4;
const CONN_PAUSED = 8;
const REQUEST_PROBLEM_INFO = 16;
const MEMORY_HELD = 32;
const THROTTLED = 64;
const WILL_COUNTED = 128;
const PACED = 256;

/**
 * The protocol state machine for one network connection: decodes packets and dispatches
 * them, SUBSCRIBE / UNSUBSCRIBE / DISCONNECT, and everything written to the client (the
 * output gate, outbound PUBLISH and acks). CONNECT runs in `connect-pipeline.ts`, PUBLISH
 * and PUBREL from the client in `inbound-flow.ts`; session state that outlives the
 * connection lives in `Session`, routing and storage behind `Broker`.
 */
export class ClientConnection implements ConnectionHandler, Peer, AccessSubject, ByteHolder {
  state: PeerState = "awaiting-connect";
  version: ProtocolVersion = 4;
  clientId = "";
  username: string | undefined;
  session: Session | undefined;
  /** Its Will while the connection holds it; replacing or dropping it gives back its count (see countWill). */
  get will(): Will | undefined {
    return this.#will;
  }
  set will(w: Will | undefined) {
    if (w !== this.#will && (this.#bits & WILL_COUNTED) !== 0) {
      this.#setBit(WILL_COUNTED, false);
      this.broker.budget.release(this.#will!.message);
    }
    this.#will = w;
  }
  #will: Will | undefined;
  keepAlive = 0;
  lastActivity: number;
  readonly connectedAt: number;
  /** Clean Start (v5) / Clean Session (3.1.1) as the CONNECT asked, for the connect log line. */
  get cleanStart(): boolean {
    return (this.#bits & CLEAN_START) !== 0;
  }
  set cleanStart(on: boolean) {
    this.#setBit(CLEAN_START, on);
  }
  /** Why the connection ended, for the disconnect log line (src/core/client-log.ts). */
  closeReason: string | undefined;
  /** Counted in the broker's connected total (set by Broker.noteConnected). */
  get counted(): boolean {
    return (this.#bits & COUNTED) !== 0;
  }
  set counted(on: boolean) {
    this.#setBit(COUNTED, on);
  }
  /** Set at accept when a per-address limit refuses this connection (AuthPort.admit). */
  refusal: number | undefined;
  /** Reading from the socket is paused by the inbound flow (too many acks owed; see InboundFlow). */
  get inputHeld(): boolean {
    return (this.#bits & INPUT_HELD) !== 0;
  }
  set inputHeld(on: boolean) {
    this.#setBit(INPUT_HELD, on);
  }
  /** Reading from the socket is paused by the memory budget (see throttle). */
  get memoryHeld(): boolean {
    return (this.#bits & MEMORY_HELD) !== 0;
  }
  set memoryHeld(on: boolean) {
    this.#setBit(MEMORY_HELD, on);
  }
  /**
   * When reading from it was paused because its output was over `maxOutputBytes` (0: not
   * paused), and when its output last made progress meanwhile (see #checkOutput, onDrain).
   */
  pausedAt = 0;
  progressAt = 0;
  /** When the first byte of the incomplete packet held for it arrived (0: none held). */
  partialSince = 0;
  /**
   * The flags above, the v5 client's Request Problem Information, whether the adapter
   * was told to stop reading (CONN_PAUSED, for any reason above; see #syncReading) and
   * whether the memory budget slows it now (THROTTLED, see throttle), as bits of one
   * number: fewer slots put an idle connection in a smaller cell.
   */
  #bits = CLEAN_START | REQUEST_PROBLEM_INFO;
  /**
   * Its output as the memory budget counts it now (see countOutput; its unread input's count
   * is kept on its reader, see #countInput).
   */
  #outCounted = 0;

  /** Client's Receive Maximum: how many QoS>0 messages we may have in flight to it. */
  clientReceiveMaximum = 65535;
  /** Client's Maximum Packet Size; larger outgoing packets are dropped [MQTT-3.1.2-24]. */
  clientMaxPacketSize = Number.POSITIVE_INFINITY;
  clientTopicAliasMaximum = 0;
  get requestProblemInfo(): boolean {
    return (this.#bits & REQUEST_PROBLEM_INFO) !== 0;
  }
  set requestProblemInfo(on: boolean) {
    this.#setBit(REQUEST_PROBLEM_INFO, on);
  }
  #aliases: TopicAliases | undefined;

  #reader: PacketReader;
  /** Made on the first PUBLISH or PUBREL: many connections only subscribe, or idle. */
  #inbound: InboundFlow | undefined;
  /** What it holds before CONNACK (see PreConnack); made only when there is something. */
  #pre: PreConnack | undefined;
  /** Output held back until a store commit settles (see holdOutputUntil). */
  #hold: OutputHold | undefined;

  constructor(readonly conn: Connection, private readonly broker: Broker) {
    this.#reader = new PacketReader(broker.options.maxPacketSize, READER_OPTIONS);
    this.lastActivity = broker.clock.now();
    this.connectedAt = this.lastActivity;
  }

  #setBit(bit: number, on: boolean): void {
    this.#bits = on ? this.#bits | bit : this.#bits & ~bit;
  }

  /** Topic aliases both ways (v5), made when first used. */
  get aliases(): TopicAliases {
    return this.#aliases ??= new TopicAliases();
  }

  get #flow(): InboundFlow {
    return this.#inbound ??= new InboundFlow(this, this.broker);
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

  /**
   * A v5 client says in its Receive Maximum how many QoS>0 deliveries it takes at once,
   * and those past PUBREC count there until PUBCOMP [MQTT-3.3.4-9]. Ferry holds no body for
   * them, so they need not take room from the PUBLISHes: in all, up to RELEASING_FACTOR
   * times the window, never past the client's word. A 3.1.1 client cannot say how many it
   * takes, so it gets the window in all, as every broker's "max inflight" counts them.
   */
  get inflightLimit(): number {
    const window = this.inflightWindow;
    return this.isV5 ? Math.min(this.clientReceiveMaximum, RELEASING_FACTOR * window) : window;
  }

  get remoteAddress(): string {
    return this.conn.remoteAddress;
  }

  get remoteIp(): string | undefined {
    return this.conn.remoteIp;
  }

  /** The key of the per-address counts (the pre-auth budget): the IP, as the adapter gives it. */
  get addressKey(): string {
    return this.conn.remoteIp ?? this.conn.remoteAddress;
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
    const now = this.broker.clock.now();
    this.lastActivity = now;
    const received = this.broker.metrics.bytesReceived += bytes.byteLength;
    this.broker.residentWatch.onRead(received);
    this.#reader.feed(bytes);
    this.#readPackets(now);
  }

  /**
   * Handle the packets read, one at a time, until the bytes end or the connection is
   * paused: then the rest waits, unread, in the reader (as bytes, not decoded packets or
   * replies) until onDrain resumes it. So the output of a client that sends but does not
   * read passes the bound by the reply to one packet at most.
   */
  #readPackets(now: number): void {
    const reader = this.#reader;
    let handled = false;
    for (;;) {
      if (this.pausedAt !== 0 || this.inputHeld || this.memoryHeld) {
        reader.stop();
        break;
      }
      let packet: Packet | undefined;
      try {
        packet = reader.next();
        if (packet === undefined) break;
        handled = true;
        this.#handle(packet);
      } catch (err) {
        this.fault(err);
        return;
      }
      if (this.closed) return;
    }
    // The packet deadline (limits.packet_timeout) runs from the first byte of the packet now incomplete.
    if (reader.bufferedBytes === 0) this.partialSince = 0;
    else if (handled || this.partialSince === 0) this.partialSince = now;
    if (this.state !== "connected" && !this.#countPreAuth()) return;
    this.#countInput();
  }

  /**
   * Pause or resume reading for the inbound flow. While paused the client's packets wait in
   * the socket, so keep alive does not count the time against it (housekeeping.ts).
   */
  holdInput(on: boolean): void {
    if (on === this.inputHeld || this.state === "closed") return;
    this.inputHeld = on;
    if (on) {
      this.#syncReading();
      return;
    }
    const now = this.broker.clock.now();
    this.lastActivity = now;
    // The incomplete packet could not progress while unread: its deadline starts again.
    if (this.partialSince !== 0) this.partialSince = now;
    // Called from inside the inbound flow's steps: what was read and left unhandled is
    // taken up on a fresh stack, not re-entering the flow that released it.
    if (this.#syncReading()) queueMicrotask(() => this.#resumeReading());
  }

  /**
   * Tell the adapter to stop or go on reading: paused while either reason holds (output
   * over its bound, or the inbound flow's owed acks), resumed only once neither does, so one
   * side's resume never undoes the other's pause. True when reading is (now) on.
   */
  #syncReading(): boolean {
    const paused = this.pausedAt !== 0 || this.inputHeld || this.memoryHeld || (this.#bits & PACED) !== 0;
    if (paused !== ((this.#bits & CONN_PAUSED) !== 0) && this.state !== "closed") {
      this.#setBit(CONN_PAUSED, paused);
      if (paused) this.conn.pause();
      else this.conn.resume();
    }
    return !paused;
  }

  /** Reading was resumed: handle what was read before the pause first. */
  #resumeReading(): void {
    if (this.state === "closed" || this.pausedAt !== 0 || this.inputHeld || this.memoryHeld) return;
    if ((this.#bits & PACED) !== 0) return;
    this.#readPackets(this.broker.clock.now());
  }

  onClose(): void {
    if (this.state === "closed") return;
    this.state = "closed";
    this.closeReason ??= "closed its connection";
    this.broker.clientClosed(this, true);
  }

  // ---- what it holds: output bound (pause / resume), pre-auth budget -------------------

  /** Output waiting for this client: in the adapter, and held for a commit. */
  outputBytes(): number {
    return this.conn.bufferedBytes() + (this.#hold?.bytes ?? 0);
  }

  /** Bytes of the incomplete packet held for it. */
  partialBytes(): number {
    return this.#reader.bufferedBytes;
  }

  /** Tell the memory budget what its output is now (see MemoryBudget.output). */
  countOutput(): void {
    if (this.state === "closed") return;
    const out = this.outputBytes();
    const delta = out - this.#outCounted;
    if (delta === 0) return;
    this.#outCounted = out;
    this.broker.budget.addOutput(delta);
  }

  /** The CONNECT set a Will: its message counts in the memory budget while the connection holds it. */
  countWill(): void {
    const m = this.#will?.message;
    if (m === undefined || (this.#bits & WILL_COUNTED) !== 0 || this.state === "closed") return;
    this.#setBit(WILL_COUNTED, true);
    this.broker.budget.hold(m);
  }

  /** Tell the memory budget what it holds of what it read: unread bytes, packets held before CONNACK. */
  #countInput(): void {
    if (this.state === "closed") return;
    const held = this.#reader.bufferedBytes + (this.#pre?.earlyBytes ?? 0);
    const delta = held - this.#reader.counted;
    if (delta === 0) return;
    this.#reader.counted = held;
    this.broker.budget.addInput(delta);
  }

  /**
   * The memory budget is past its full level and this client published: slow it until the
   * total is below the high level again (MemoryBudget.whenBelowHigh). Its acks wait
   * (InboundFlow), and its socket is no longer read — unless messages are in flight to it:
   * their acknowledgements, which free memory, come on the same socket, so such a client is
   * slowed by its held acks alone (its window of unacknowledged publishes).
   */
  throttle(): void {
    if (this.state === "closed") return;
    const budget = this.broker.budget;
    if ((this.#bits & THROTTLED) === 0) {
      this.#setBit(THROTTLED, true);
      budget.throttled++;
      this.broker.metrics.throttledPublishers++;
      budget.whenBelowHigh(() => this.#unthrottle());
    }
    if (!this.memoryHeld && (this.session === undefined || this.session.inflight.size === 0)) {
      this.memoryHeld = true;
      this.#syncReading();
    }
  }

  /**
   * Stop reading from its socket for `ms` (InboundFlow paces a client whose messages nobody
   * takes). Unlike the other pauses, the packets already read are still handled: stopping
   * in the middle of a read would copy its rest (up to 512 KiB on Bun) to keep it, the very
   * turnover pacing is for. Keep alive does not count the time against it.
   */
  pace(ms: number): void {
    if (this.state === "closed" || (this.#bits & PACED) !== 0) return;
    this.#setBit(PACED, true);
    this.broker.metrics.pacedPublishers++;
    this.#syncReading();
    this.broker.clock.setTimeout(() => {
      this.#setBit(PACED, false);
      if (this.state === "closed") return;
      const now = this.broker.clock.now();
      this.lastActivity = now;
      if (this.partialSince !== 0) this.partialSince = now;
      if (this.#syncReading()) this.#resumeReading();
    }, ms);
  }

  #unthrottle(): void {
    if ((this.#bits & THROTTLED) === 0) return;
    this.#setBit(THROTTLED, false);
    this.broker.budget.throttled--;
    if (!this.memoryHeld) return;
    this.memoryHeld = false;
    if (this.state === "closed") return;
    const now = this.broker.clock.now();
    // As for the inbound flow's pause (holdInput): the time unread does not count against it.
    this.lastActivity = now;
    if (this.partialSince !== 0) this.partialSince = now;
    if (this.#syncReading()) queueMicrotask(() => this.#resumeReading());
  }

  /**
   * Output went over the bound (see write): Ferry stops reading from the client until it
   * has read enough of it (onDrain), so one that sends but does not read (PINGREQs, QoS 1
   * publishes whose acks pile up) meets TCP backpressure instead of growing Ferry's
   * memory. Packets already read but not yet handled wait in the reader (#readPackets);
   * acknowledgements still waiting for their commit are what the output can pass the
   * bound by, besides the reply to the packet that crossed it.
   */
  #pause(): void {
    const now = this.broker.clock.now();
    this.pausedAt = now;
    this.progressAt = now;
    this.broker.metrics.pausedReading++;
    this.broker.connectionBytes.pausedConnections++;
    this.#syncReading();
  }

  /** The adapter wrote some of what waited (it calls this only while paused). */
  onDrain(): void {
    if (this.pausedAt === 0 || this.state === "closed") return;
    this.countOutput();
    const now = this.broker.clock.now();
    this.progressAt = now;
    // The client is reading, and its packets wait unread because Ferry is not reading:
    // as good a sign of life as a packet, for keep alive.
    this.lastActivity = now;
    if (this.outputBytes() > this.broker.options.maxOutputBytes / 2) return;
    this.#unpause();
    // The incomplete packet could not progress while unread: its deadline starts again.
    if (this.partialSince !== 0) this.partialSince = now;
    // What was read before the pause and not handled yet comes first (unless the inbound
    // flow still holds reading: its release picks up what waits, see holdInput)...
    if (this.#syncReading()) this.#readPackets(now);
    // ...then deliveries the output bound held back (OutboundFlow.pump stops above it).
    if (this.state === "connected" && this.session !== undefined) this.broker.outbound.pump(this.session);
  }

  #unpause(): void {
    if (this.pausedAt === 0) return;
    this.pausedAt = 0;
    this.broker.connectionBytes.pausedConnections--;
  }

  /**
   * Before CONNACK: count what this connection holds (an incomplete packet, packets sent
   * behind CONNECT) against the pre-auth budget, per address and overall. Over it, the
   * connection is closed; false then.
   */
  #countPreAuth(): boolean {
    const pre = this.#pre;
    const held = this.#reader.bufferedBytes + (pre?.earlyBytes ?? 0);
    const delta = held - (pre?.counted ?? 0);
    if (delta === 0) return true;
    (this.#pre ??= new PreConnack()).counted = held;
    const ip = this.addressKey;
    if (this.broker.connectionBytes.addPreAuth(ip, delta)) return true;
    this.broker.metrics.refusedPreAuthBytes++;
    this.broker.logger.debug(
      `closing ${logField(this.conn.remoteAddress)} before CONNACK: more than the pre-auth byte budget held ` +
        `(${this.broker.connectionBytes.preAuthBytesOf(ip)} bytes from this address, ` +
        `${this.broker.connectionBytes.preAuthBytes} in all)`,
    );
    this.closeReason = "pre-auth byte budget exceeded";
    // Still inside its CONNECT: there is nothing to answer, and what else it sent is not read.
    if (this.state === "awaiting-connect") this.shutdown(true, true);
    else this.disconnect(RC.QUOTA_EXCEEDED);
    return false;
  }

  /**
   * At accept, the pre-auth budget of its address (or the total) has no room left
   * (connection-bytes.ts, PREAUTH_ROOM): closed before anything is read from it.
   */
  refusePreAuth(): void {
    this.broker.metrics.refusedPreAuthBytes++;
    this.broker.logger.debug(
      `refusing ${logField(this.conn.remoteAddress)}: the pre-auth byte budget is full ` +
        `(${this.broker.connectionBytes.preAuthBytesOf(this.addressKey)} bytes from ` +
        `this address, ${this.broker.connectionBytes.preAuthBytes} in all)`,
    );
    this.closeReason = "pre-auth byte budget full";
    this.shutdown(true, true);
  }

  /** Give back what this connection counted, when it closes. */
  releaseAccounts(): void {
    this.#releasePreAuth();
    this.#unpause();
    const budget = this.broker.budget;
    budget.addOutput(-this.#outCounted);
    budget.addInput(-this.#reader.counted);
    this.#outCounted = 0;
    this.#reader.counted = 0;
    if ((this.#bits & WILL_COUNTED) !== 0) {
      // A delayed Will waits in the WillHandler from here on, uncounted (at most one per session).
      this.#setBit(WILL_COUNTED, false);
      budget.release(this.#will!.message);
    }
    if ((this.#bits & THROTTLED) !== 0) {
      this.#setBit(THROTTLED, false);
      budget.throttled--;
    }
  }

  #releasePreAuth(): void {
    const pre = this.#pre;
    if (pre === undefined || pre.counted === 0) return;
    this.broker.connectionBytes.addPreAuth(this.addressKey, -pre.counted);
    pre.counted = 0;
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
      const pre = this.#pre ??= new PreConnack();
      pre.earlyBytes += (packet.length ?? 0) + 2;
      if (pre.earlyBytes > this.broker.options.maxPacketSize + EARLY_BYTES_SLACK) {
        throw new MqttError(RC.QUOTA_EXCEEDED, "too much data before CONNACK");
      }
      pre.early.push(packet);
      return;
    }
    if (this.state !== "connected") return;
    // SUBSCRIBEs handled just before this packet commit first (see flushSubscribes).
    if (packet.cmd !== "subscribe") flushSubscribes();
    switch (packet.cmd) {
      case "publish":
        return this.#flow.onPublish(packet);
      case "puback":
        return this.broker.outbound.onPuback(this.session!, packet.messageId ?? 0);
      case "pubrec":
        return this.broker.outbound.onPubrec(this.session!, this, packet.messageId ?? 0, packet.reasonCode ?? 0);
      case "pubrel":
        return this.#flow.onPubrel(packet.messageId ?? 0);
      case "pubcomp":
        return this.broker.outbound.onPubcomp(this.session!, packet.messageId ?? 0);
      case "subscribe":
        return handleSubscribe(this, this.broker, packet);
      case "unsubscribe":
        return handleUnsubscribe(this, this.broker, packet);
      case "pingreq":
        // One shared, never-written buffer: a flood of PINGREQs costs no allocation per reply.
        this.write(PINGRESP);
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
    // Past CONNACK: what this connection held is no longer pre-auth.
    this.#releasePreAuth();
    const early = this.#pre?.early;
    this.#pre = undefined;
    this.#countInput();
    if (early === undefined) return;
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

  /**
   * Stop this connection now; `abnormal` decides whether the Will is published. `abort`
   * closes the socket at once, dropping its output and unread input (Connection.abort).
   */
  shutdown(abnormal: boolean, abort = false): void {
    if (this.state === "closed") return;
    this.state = "closed";
    // Held output (a final DISCONNECT among it) goes out first; see holdOutputUntil.
    if (abort && this.conn.abort) this.conn.abort();
    else if (this.#hold) this.#hold.closeAfter = true;
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
    const hold = this.#hold;
    if (hold) {
      hold.chunks.push(bytes);
      hold.bytes += bytes.byteLength;
    } else this.conn.write(bytes);
    if (this.state === "closed") return;
    // The memory budget's count, and limits.max_output_bytes: checked on the way out,
    // whatever the output is (replies, deliveries, acks after a commit).
    const out = this.outputBytes();
    if (out !== this.#outCounted) {
      this.broker.budget.addOutput(out - this.#outCounted);
      this.#outCounted = out;
    }
    if (this.pausedAt === 0 && out > this.broker.options.maxOutputBytes) this.#pause();
  }

  /**
   * Hold everything written to this client until `commit` settles, then send it in
   * order. For packets the client must not see before the store knows about them: a
   * QoS 2 PUBLISH to a persistent session whose delivery record was written outside a
   * publish's commit (a retained copy on SUBSCRIBE, a shared message handed over) and
   * may not be durable yet. Holding all output, not just that packet, keeps every packet
   * to the client in order; it is rare (PUBRELs wait on their own, see OutboundFlow).
   */
  holdOutputUntil(commit: Promise<void>): void {
    const hold = this.#hold ??= new OutputHold();
    hold.gate = commit;
    const release = () => {
      if (hold.gate !== commit) return; // a later gate releases everything
      this.#hold = undefined;
      for (const bytes of hold.chunks) this.conn.write(bytes);
      if (hold.closeAfter) this.conn.close();
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

/** A connection's state before CONNACK that most connections never need. */
class PreConnack {
  /** Packets sent right behind CONNECT, held until its session is open (spec 3.1.4), and their size. */
  early: Packet[] = [];
  earlyBytes = 0;
  /** Bytes counted against the pre-auth budget (ConnectionBytes.addPreAuth). */
  counted = 0;
}

/** Output held back until `gate` (a store commit) settles; see ClientConnection.holdOutputUntil. */
class OutputHold {
  chunks: Uint8Array[] = [];
  bytes = 0;
  gate: Promise<void> | undefined;
  /** The connection was shut meanwhile: close once the held output is written. */
  closeAfter = false;
}
