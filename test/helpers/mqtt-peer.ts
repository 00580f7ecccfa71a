/**
 * An event-driven MQTT peer over a bare TCP socket: every packet Ferry sends is handed
 * to `onPacket` as it arrives. For tests that keep their own protocol state (packet
 * ids, what was acknowledged, what must be re-sent) across broker restarts, which the
 * `mqtt` client hides and RawClient's pull model makes awkward.
 */
import mqttPacket, { type IConnackPacket, type IConnectPacket, type Packet } from "mqtt-packet";
import net from "node:net";

export class MqttPeer {
  /** Packets that arrived before a handler was set (e.g. in the same segment as CONNACK). */
  #held: Packet[] | undefined = [];
  #handler: (packet: Packet) => void = (p) => this.#held?.push(p);

  get onPacket(): (packet: Packet) => void {
    return this.#handler;
  }

  /** Setting a handler first hands it whatever was held back. */
  set onPacket(handler: (packet: Packet) => void) {
    this.#handler = handler;
    const held = this.#held;
    this.#held = undefined;
    for (const p of held ?? []) handler(p);
  }
  /** Resolves when the socket is closed, by either side. */
  readonly closed: Promise<void>;
  isClosed = false;
  readonly #socket: net.Socket;

  private constructor(socket: net.Socket, readonly version: 4 | 5) {
    this.#socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: version });
    parser.on("packet", (p: Packet) => this.#handler(p));
    parser.on("error", () => socket.destroy());
    socket.on("data", (d: Buffer) => parser.parse(d));
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.on("close", () => {
        this.isClosed = true;
        resolve();
      })
    );
  }

  /** Connect and wait for CONNACK (whatever its code). */
  static async connect(
    port: number,
    version: 4 | 5,
    connect: Partial<IConnectPacket>,
  ): Promise<{ peer: MqttPeer; connack: IConnackPacket }> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(s));
      s.once("error", reject);
    });
    socket.setNoDelay(true);
    const peer = new MqttPeer(socket, version);
    const connack = await new Promise<IConnackPacket>((resolve, reject) => {
      let first = true;
      peer.#handler = (p) => {
        if (!first) return void peer.#held?.push(p);
        first = false;
        if (p.cmd === "connack") resolve(p);
        else reject(new Error(`${p.cmd} before CONNACK`));
      };
      void peer.closed.then(() => reject(new Error("closed before CONNACK")));
      peer.send(
        {
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion: version,
          clean: true,
          keepalive: 0,
          clientId: "",
          ...connect,
        } as IConnectPacket,
      );
    });
    // Whatever followed the CONNACK waits for the caller's handler.
    peer.#handler = (p) => peer.#held?.push(p);
    return { peer, connack };
  }

  send(packet: Packet): void {
    if (this.isClosed) return;
    this.#socket.write(mqttPacket.generate(packet, { protocolVersion: this.version }));
  }

  /** Wait for the next packet matching `pred`, handing every other packet to `onPacket`. */
  next<P extends Packet>(pred: (p: Packet) => p is P, ms = 5000): Promise<P> {
    const previous = this.onPacket;
    return new Promise<P>((resolve, reject) => {
      let settled = false;
      const done = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.onPacket = previous;
        fn();
      };
      const timer = setTimeout(() => done(() => reject(new Error(`no matching packet within ${ms} ms`))), ms);
      void this.closed.then(() => done(() => reject(new Error("connection closed while waiting"))));
      this.onPacket = (p) => (pred(p) ? done(() => resolve(p)) : previous(p));
    });
  }

  /** Send DISCONNECT and close. */
  async disconnect(): Promise<void> {
    this.send({ cmd: "disconnect" });
    this.#socket.end();
    await this.closed;
  }

  destroy(): void {
    this.#socket.destroy();
  }
}
