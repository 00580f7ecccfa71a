/**
 * Ferry's own MQTT client for the uplink, on Ferry's codec, for mqtt:// and mqtts:// (the
 * MQTT.js client of cloud-client.ts stays for ws:// and wss://, and for a runtime without
 * a socket port; cloud-connector.ts chooses).
 *
 * Why (issue 14): draining a backlog, much of the uplink's CPU went to MQTT.js's own
 * machinery: its PUBACK parsing (mqtt-packet's streaming parser with a debug call per
 * field), a deep copy of every PUBLISH, Node stream machinery per write. Here a PUBLISH is
 * encoded once by the fast path (src/mqtt/fast-path.ts) and queued on the socket, whose
 * adapter writes a task's packets in one send and keeps what the OS does not take until it
 * drains; acknowledgements are read by the fast path too (src/mqtt/server-packet-reader.ts).
 * The send window of the link bounds what is in flight, so what waits at the socket is
 * bounded too; a QoS 0 PUBLISH is reported written only once the socket is not backed up.
 *
 * One connection attempt per call, no reconnect and no store: the link decides when to
 * reconnect and re-sends from its durable cursor.
 */
import type { Clock } from "../core/clock.ts";
import { systemClock } from "../core/clock.ts";
import { encode, encodeAck, encodeDisconnect, publishPacketIdOffset } from "../mqtt/codec.ts";
import type { ConnackPacket, DisconnectPacket, Packet, PublishPacket } from "../mqtt/packets.ts";
import { MqttError, RC } from "../mqtt/reason-codes.ts";
import { reasonName } from "../mqtt/reason-names.ts";
import { ServerPacketReader } from "../mqtt/server-packet-reader.ts";
import type {
  CloseDetail,
  CloudClient,
  CloudConnectOptions,
  CloudHandlers,
  CloudIncoming,
  CloudPublish,
} from "./cloud-client.ts";
import type { CloudSocket, ConnectSocket, SocketOptions } from "./socket-port.ts";
import { describeError } from "./tls-error-hints.ts";

/** A QoS 0 PUBLISH counts as written while the socket holds less than this unsent. */
const SOCKET_HIGH_WATER = 256 * 1024;

/** MQTT 3.1.1 CONNACK return codes (spec 3.2.2.3), as MQTT.js words them. */
const V4_REFUSALS = [
  "",
  "Unacceptable protocol version",
  "Identifier rejected",
  "Server unavailable",
  "Bad username or password",
  "Not authorized",
];

/** An error carrying an MQTT 5 reason code, as the link reads it (`code`). */
function reasonError(what: string, code: number): Error & { code: number } {
  return Object.assign(new Error(`${what}: ${reasonName(code)} (0x${code.toString(16)})`), { code });
}

export interface SocketClientDeps {
  connectSocket: ConnectSocket;
  /** Keep alive and connect timeout (tests pass a manual clock). */
  clock?: Clock;
}

/** The socket options for `url` (mqtt:// or mqtts://), or undefined for any other scheme. */
export function socketOptionsFor(o: CloudConnectOptions): SocketOptions | undefined {
  let url: URL;
  try {
    url = new URL(o.url);
  } catch {
    return undefined;
  }
  const tls = url.protocol === "mqtts:";
  if (!tls && url.protocol !== "mqtt:") return undefined;
  const host = url.hostname.replace(/^\[(.*)\]$/, "$1"); // IPv6 literals come bracketed
  const port = url.port === "" ? (tls ? 8883 : 1883) : Number(url.port);
  return {
    host,
    port,
    tls: tls
      ? { ca: o.ca, cert: o.cert, key: o.key, rejectUnauthorized: o.rejectUnauthorized, serverName: host }
      : undefined,
  };
}

/**
 * Connect once over the socket port: resolves on CONNACK 0, rejects with the reason (and
 * the CONNACK's reason code and Server Reference) otherwise. Undefined when the port
 * cannot make this connection.
 */
export function connectOverSocket(
  o: CloudConnectOptions,
  h: CloudHandlers,
  deps: SocketClientDeps,
): Promise<CloudClient> | undefined {
  const so = socketOptionsFor(o);
  if (so === undefined) return undefined;
  const session = new SocketSession(o, h, deps.clock ?? systemClock);
  const opened = deps.connectSocket(so, session);
  if (opened === undefined) return undefined;
  return session.start(opened);
}

/** An unacknowledged QoS 1/2 PUBLISH of ours. */
interface Outgoing {
  done: (err?: Error) => void;
  qos: 1 | 2;
}

/** One connection: the CloudClient the link uses, and the socket's handler. */
class SocketSession implements CloudClient {
  receiveMaximum = 65_535;
  /** The cloud's Maximum Packet Size (MQTT 5 CONNACK); unbounded when it sent none. */
  #maxPacketSize = Number.POSITIVE_INFINITY;
  readonly #version: 4 | 5;
  #socket: CloudSocket | undefined;
  #reader: ServerPacketReader;
  #connected = false;
  #closed = false;
  #resolve!: (c: CloudClient) => void;
  #reject!: (e: Error) => void;
  /** The CONNACK's reason code and Server Reference, when it refused. */
  #refusal: CloseDetail | undefined;

  /** Our QoS 1/2 PUBLISHes awaiting PUBACK, PUBREC or PUBCOMP, by Packet Identifier. */
  #outgoing = new Map<number, Outgoing>();
  #nextId = 1;
  /** QoS 0 PUBLISHes written while the socket was backed up: reported done when it drains. */
  #written: Array<(err?: Error) => void> = [];
  #writtenScheduled = false;
  /** SUBSCRIBEs awaiting SUBACK. */
  #subscribing = new Map<number, { resolve(codes: number[]): void; reject(e: Error): void }>();
  /**
   * QoS 2 PUBLISHes from the cloud by Packet Identifier: false until the link acknowledges
   * (PUBREC not sent yet), true while awaiting PUBREL.
   */
  #incoming2 = new Map<number, boolean>();

  #keepAliveMs: number;
  #timer: unknown;
  #pingOutstanding = false;

  constructor(
    private readonly o: CloudConnectOptions,
    private readonly h: CloudHandlers,
    private readonly clock: Clock,
  ) {
    this.#version = o.protocolVersion;
    this.#reader = o.maxPacketSize !== undefined
      ? new ServerPacketReader(this.#version, o.maxPacketSize)
      : new ServerPacketReader(this.#version);
    this.#keepAliveMs = o.keepalive * 1000;
  }

  start(opened: Promise<CloudSocket>): Promise<CloudClient> {
    const result = new Promise<CloudClient>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#timer = this.clock.setTimeout(
      () => this.#fail("connect timeout: no CONNACK from the cloud"),
      this.o.connectTimeoutMs,
    );
    opened.then(
      (socket) => {
        if (this.#closed) return socket.close();
        this.#socket = socket;
        socket.write(this.#connectPacket());
      },
      (err: unknown) => this.#fail(describeError(err instanceof Error ? err : new Error(String(err)))),
    );
    return result;
  }

  #connectPacket(): Uint8Array {
    const o = this.o;
    const packet: Record<string, unknown> = {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: o.protocolVersion,
      clean: o.cleanStart,
      clientId: o.clientId,
      keepalive: o.keepalive,
    };
    if (o.username !== undefined) packet.username = o.username;
    if (o.password !== undefined) packet.password = Buffer.from(o.password);
    if (o.protocolVersion === 5) {
      packet.properties = o.maxPacketSize !== undefined
        ? { sessionExpiryInterval: o.sessionExpiry, maximumPacketSize: o.maxPacketSize }
        : { sessionExpiryInterval: o.sessionExpiry };
    }
    return encode(packet as unknown as Packet, this.#version);
  }

  // ---- the socket's handler -------------------------------------------------------------

  onData(bytes: Uint8Array): void {
    if (this.#closed) return;
    let packets: Packet[];
    try {
      packets = this.#reader.push(bytes);
    } catch (err) {
      // A malformed packet: tell a v5 cloud why (spec 4.13.1), and give up on the connection.
      const code = err instanceof MqttError ? err.reasonCode : RC.MALFORMED_PACKET;
      if (this.#version === 5 && this.#connected) this.#socket?.write(encodeDisconnect(code));
      this.#fail(`the cloud sent a bad packet: ${err instanceof Error ? err.message : String(err)}`);
      return;
    }
    for (const p of packets) {
      if (this.#closed) return;
      try {
        this.#handle(p);
      } catch (err) {
        this.#fail(`handling ${p.cmd} from the cloud failed: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
    }
  }

  onDrain(): void {
    if (this.#written.length > 0) this.#releaseWritten();
  }

  onClose(error?: Error): void {
    if (this.#closed) return;
    this.#fail(error ? describeError(error) : "connection closed");
  }

  // ---- packets from the cloud -----------------------------------------------------------

  #handle(p: Packet): void {
    if (!this.#connected) {
      if (p.cmd !== "connack") throw new MqttError(RC.PROTOCOL_ERROR, `${p.cmd.toUpperCase()} before CONNACK`);
      this.#onConnack(p);
      return;
    }
    switch (p.cmd) {
      case "puback":
      case "pubcomp":
        return this.#settle(p.messageId!, p.cmd === "puback" ? 1 : 2, p.reasonCode ?? 0, p.cmd);
      case "pubrec":
        return this.#onPubrec(p.messageId!, p.reasonCode ?? 0);
      case "publish":
        return this.#onPublish(p);
      case "pubrel":
        return this.#onPubrel(p.messageId!);
      case "suback": {
        const id = p.messageId ?? 0;
        const waiting = this.#subscribing.get(id);
        this.#subscribing.delete(id);
        // mqtt-packet gives a v5 SUBACK's reason codes as numbers too.
        waiting?.resolve(p.granted.map((g) => (typeof g === "number" ? g : (g as { qos: number }).qos)));
        return;
      }
      case "pingresp":
        this.#pingOutstanding = false;
        return;
      case "disconnect":
        return this.#onDisconnect(p);
      case "connack":
        throw new MqttError(RC.PROTOCOL_ERROR, "a second CONNACK");
      default:
        // UNSUBACK (never asked for), AUTH (no enhanced authentication was asked for).
        throw new MqttError(RC.PROTOCOL_ERROR, `unexpected ${p.cmd.toUpperCase()}`);
    }
  }

  #onConnack(p: ConnackPacket): void {
    const v5 = this.#version === 5;
    const code = (v5 ? p.reasonCode : p.returnCode) ?? 0;
    if (code !== 0) {
      if (v5) {
        this.#refusal = { reasonCode: code };
        const ref = p.properties?.serverReference;
        if (typeof ref === "string" && ref !== "") this.#refusal.serverReference = ref;
      }
      const words = v5 ? reasonName(code) : (V4_REFUSALS[code] ?? `return code ${code}`);
      this.#fail(`Connection refused: ${words}`);
      return;
    }
    const props = p.properties;
    // [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 PUBLISHes than the cloud's Receive Maximum.
    if (typeof props?.receiveMaximum === "number" && props.receiveMaximum >= 1) {
      this.receiveMaximum = props.receiveMaximum;
    }
    if (typeof props?.maximumPacketSize === "number" && props.maximumPacketSize > 0) {
      this.#maxPacketSize = props.maximumPacketSize;
    }
    // [MQTT-3.2.2-21] the Server Keep Alive replaces the client's.
    if (typeof props?.serverKeepAlive === "number") this.#keepAliveMs = props.serverKeepAlive * 1000;
    this.#connected = true;
    this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#armKeepAlive();
    this.#resolve(this);
  }

  /** A PUBACK (QoS 1) or PUBCOMP (QoS 2) ends our PUBLISH; a reason code >= 0x80 refuses it. */
  #settle(id: number, qos: 1 | 2, code: number, what: string): void {
    const out = this.#outgoing.get(id);
    // An acknowledgement of nothing we sent (a late duplicate): nothing to do.
    if (out === undefined || out.qos !== qos) return;
    this.#outgoing.delete(id);
    out.done(code >= 0x80 ? reasonError(`${what} error`, code) : undefined);
  }

  #onPubrec(id: number, code: number): void {
    const out = this.#outgoing.get(id);
    if (out === undefined || out.qos !== 2) {
      // A PUBREC for an id we do not hold (from before a cut): release it, so the cloud forgets it.
      if (code < 0x80) {
        this.#socket?.write(
          encodeAck("pubrel", id, this.#version === 5 ? RC.PACKET_IDENTIFIER_NOT_FOUND : 0, this.#version),
        );
      }
      return;
    }
    if (code >= 0x80) {
      // Refused: the exchange ends here (spec 4.3.3), the id is free.
      this.#outgoing.delete(id);
      out.done(reasonError("PUBREC error", code));
      return;
    }
    this.#socket?.write(encodeAck("pubrel", id, 0, this.#version));
  }

  #onPublish(p: PublishPacket): void {
    const qos = p.qos;
    const id = p.messageId ?? 0;
    if (p.topic === "") {
      // Ferry sends no Topic Alias Maximum, so the cloud may not use aliases [MQTT-3.1.2-27].
      throw new MqttError(RC.TOPIC_ALIAS_INVALID, "PUBLISH without a topic (Ferry allows no topic aliases)");
    }
    if (qos === 2) {
      const state = this.#incoming2.get(id);
      if (state !== undefined) {
        // The same message again (DUP): delivered once; PUBREC again if it was sent.
        if (state) this.#socket?.write(encodeAck("pubrec", id, 0, this.#version));
        return;
      }
      this.#incoming2.set(id, false);
    }
    let acked = qos === 0;
    const incoming: CloudIncoming = {
      topic: p.topic,
      payload: p.payload as Uint8Array,
      qos,
      retain: p.retain,
      properties: p.properties as Record<string, unknown> | undefined,
      ack: (code) => {
        if (acked || this.#closed) return;
        acked = true;
        if (qos === 1) {
          this.#socket?.write(encodeAck("puback", id, code, this.#version));
          return;
        }
        this.#socket?.write(encodeAck("pubrec", id, code, this.#version));
        // A refusal ends the exchange; otherwise the cloud's PUBREL comes next.
        if (code >= 0x80 && this.#version === 5) this.#incoming2.delete(id);
        else this.#incoming2.set(id, true);
      },
    };
    this.h.onMessage(incoming);
  }

  #onPubrel(id: number): void {
    const state = this.#incoming2.get(id);
    if (state === false) return; // not acknowledged yet: the cloud re-sends PUBREL after a reconnect
    this.#incoming2.delete(id);
    const code = state === undefined && this.#version === 5 ? RC.PACKET_IDENTIFIER_NOT_FOUND : 0;
    this.#socket?.write(encodeAck("pubcomp", id, code, this.#version));
  }

  #onDisconnect(p: DisconnectPacket): void {
    const code = p.reasonCode ?? 0;
    const detail: CloseDetail = { reasonCode: code };
    const ref = p.properties?.serverReference;
    if (typeof ref === "string" && ref !== "") detail.serverReference = ref;
    this.#fail(`cloud sent DISCONNECT 0x${code.toString(16)}`, detail);
  }

  // ---- keep alive -----------------------------------------------------------------------

  /**
   * A PINGREQ every keep-alive interval (spec 3.1.2.10) (on a busy link too: two bytes,
   * and no timer moved per packet), and the connection is given up when the PINGRESP has
   * not come by the next one.
   */
  #armKeepAlive(): void {
    if (this.#keepAliveMs <= 0) return;
    this.#timer = this.clock.setTimeout(() => {
      this.#timer = undefined;
      if (this.#closed) return;
      if (this.#pingOutstanding) {
        this.#fail(`keep alive: no PINGRESP from the cloud within ${this.#keepAliveMs / 1000}s`);
        return;
      }
      this.#pingOutstanding = true;
      this.#socket?.write(PINGREQ);
      this.#armKeepAlive();
    }, this.#keepAliveMs);
  }

  // ---- CloudClient ----------------------------------------------------------------------

  publish(p: CloudPublish, done: (err?: Error) => void): void {
    const packet = {
      cmd: "publish",
      topic: p.topic,
      payload: p.payload,
      qos: p.qos,
      retain: p.retain,
      dup: p.dup,
      messageId: 0,
      properties: this.#version === 5 ? p.properties : undefined,
    } as unknown as PublishPacket;
    this.publishEncoded(encode(packet, this.#version), p.qos, done);
  }

  publishEncoded(bytes: Uint8Array, qos: 0 | 1 | 2, done: (err?: Error) => void): void {
    const socket = this.#socket;
    if (this.#closed || socket === undefined) {
      done(new Error("connection closed"));
      return;
    }
    if (bytes.byteLength > this.#maxPacketSize) {
      // [MQTT-3.2.2-15] never sent: the cloud would drop the connection at every attempt.
      done(
        reasonError(
          `not sent: ${bytes.byteLength} bytes exceed the cloud's Maximum Packet Size ${this.#maxPacketSize}`,
          RC.PACKET_TOO_LARGE,
        ),
      );
      return;
    }
    if (qos !== 0) {
      const id = this.#takeId();
      // The Packet Identifier after the Topic Name (spec 3.3.2.2), written as 0 by the encoder.
      const at = publishPacketIdOffset(bytes);
      bytes[at] = id >> 8;
      bytes[at + 1] = id & 0xff;
      this.#outgoing.set(id, { done, qos });
    }
    socket.write(bytes);
    if (qos === 0) {
      this.#written.push(done);
      if (socket.bufferedBytes() < SOCKET_HIGH_WATER && !this.#writtenScheduled) {
        this.#writtenScheduled = true;
        queueMicrotask(() => this.#releaseWritten());
      }
    }
  }

  holdReads(ms: number): void {
    if (!this.#closed) this.#socket?.holdReads(ms);
  }

  /** Report QoS 0 PUBLISHes written, unless the socket is backed up (then at its drain). */
  #releaseWritten(): void {
    this.#writtenScheduled = false;
    if (this.#closed || (this.#socket?.bufferedBytes() ?? 0) >= SOCKET_HIGH_WATER) return;
    const list = this.#written;
    this.#written = [];
    for (const done of list) done();
  }

  /** The next Packet Identifier not in use (spec 2.2.1), 1 to 65,535. */
  #takeId(): number {
    for (;;) {
      const id = this.#nextId;
      this.#nextId = id === 65_535 ? 1 : id + 1;
      if (!this.#outgoing.has(id) && !this.#subscribing.has(id)) return id;
    }
  }

  subscribe(subs: Array<{ filter: string; qos: 0 | 1 | 2 }>): Promise<number[]> {
    const socket = this.#socket;
    if (this.#closed || socket === undefined) return Promise.reject(new Error("connection closed"));
    const id = this.#takeId();
    const v5 = this.#version === 5;
    const packet = {
      cmd: "subscribe",
      messageId: id,
      // No Local stops the cloud echoing Ferry's own forwarded messages back down (MQTT 5).
      subscriptions: subs.map((
        s,
      ) => (v5 ? { topic: s.filter, qos: s.qos, nl: true } : { topic: s.filter, qos: s.qos })),
    } as unknown as Packet;
    return new Promise((resolve, reject) => {
      this.#subscribing.set(id, { resolve, reject });
      socket.write(encode(packet, this.#version));
    });
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimer();
    // A clean end: the cloud discards no Will (none is set) and logs no error.
    if (this.#connected) this.#socket?.write(this.#version === 5 ? encodeDisconnect(0) : DISCONNECT_V4);
    this.#socket?.close();
    this.#abandon(new Error("connection closed"));
  }

  // ---- the end --------------------------------------------------------------------------

  /** The connection is over: before CONNACK the connect rejects, after it the link hears why. */
  #fail(reason: string, detail?: CloseDetail): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stopTimer();
    this.#socket?.close();
    this.#abandon(new Error(reason));
    if (this.#connected) this.h.onClose(reason, detail);
    else this.#reject(Object.assign(new Error(reason), this.#refusal ?? {}));
  }

  #stopTimer(): void {
    this.clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /**
   * Whatever was unacknowledged stays unacknowledged: the link ignores callbacks of a
   * connection it gave up and re-sends from its cursor, so only pending SUBSCRIBEs hear.
   */
  #abandon(err: Error): void {
    this.#outgoing.clear();
    this.#written = [];
    for (const s of this.#subscribing.values()) s.reject(err);
    this.#subscribing.clear();
    this.#incoming2.clear();
  }
}

const PINGREQ = Uint8Array.of(0xc0, 0x00);
const DISCONNECT_V4 = Uint8Array.of(0xe0, 0x00);
