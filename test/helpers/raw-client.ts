/**
 * A bare TCP MQTT peer for tests that must send exactly the bytes they mean: protocol
 * violations, malformed packets, and flows the `mqtt` client hides.
 */
import mqttPacket, { type Packet } from "mqtt-packet";
import net from "node:net";

export class RawClient {
  packets: Packet[] = [];
  /** Every byte received, in order, for tests that check the exact reply. */
  received: Buffer[] = [];
  closed = false;
  #socket: net.Socket;
  #parser;
  #waiters: Array<() => void> = [];

  private constructor(socket: net.Socket, version: 3 | 4 | 5) {
    this.#socket = socket;
    this.#parser = mqttPacket.parser({ protocolVersion: version });
    this.#parser.on("packet", (p: Packet) => {
      this.packets.push(p);
      this.#wake();
    });
    this.#parser.on("error", () => {});
    socket.on("data", (d: Buffer) => {
      this.received.push(d);
      this.#parser.parse(d);
    });
    socket.on("close", () => {
      this.closed = true;
      this.#wake();
    });
    socket.on("error", () => {});
  }

  static open(port: number, version: 3 | 4 | 5 = 4): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(port, "127.0.0.1", () => resolve(new RawClient(s, version)));
      s.once("error", reject);
    });
  }

  /** Open and complete a CONNECT/CONNACK exchange. */
  static async connected(
    port: number,
    version: 4 | 5,
    connect: Partial<mqttPacket.IConnectPacket> = {},
  ): Promise<RawClient> {
    const c = await RawClient.open(port, version);
    c.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: version,
      clientId: "",
      clean: true,
      keepalive: 60,
      ...connect,
    });
    const ack = await c.next("connack");
    if ((ack.reasonCode ?? ack.returnCode ?? 0) !== 0) throw new Error(`connack ${ack.reasonCode ?? ack.returnCode}`);
    return c;
  }

  send(packet: Packet, version: 3 | 4 | 5 = 5): void {
    this.#socket.write(mqttPacket.generate(packet, { protocolVersion: version }));
  }

  /** The bytes received so far, as lower-case hex. */
  receivedHex(): string {
    return Buffer.concat(this.received).toString("hex");
  }

  sendBytes(bytes: Uint8Array | number[]): void {
    this.#socket.write(Uint8Array.from(bytes));
  }

  /** Wait for the next packet of this type (already received ones count, in order). */
  async next<C extends Packet["cmd"]>(cmd: C, ms = 3000): Promise<Extract<Packet, { cmd: C }>> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.packets.findIndex((p) => p.cmd === cmd);
      if (i >= 0) return this.packets.splice(i, 1)[0] as Extract<Packet, { cmd: C }>;
      if (this.closed) throw new Error(`connection closed while waiting for ${cmd}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ${cmd} within ${ms} ms (got ${this.packets.map((p) => p.cmd).join(",")})`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Resolves when the broker has closed the connection. */
  async waitClosed(ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > end) throw new Error("connection still open");
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }

  /** Stop reading from the socket (bytes stay in the kernel), as a client busy sending does. */
  pause(): void {
    this.#socket.pause();
  }

  resume(): void {
    this.#socket.resume();
  }

  close(): void {
    this.#socket.destroy();
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

/** Open a connection, send CONNECT (protocol `version`, fields from `connect`), and return the CONNACK whatever its code. */
export async function rawConnect(
  port: number,
  version: 4 | 5,
  connect: Partial<mqttPacket.IConnectPacket> = {},
): Promise<{ raw: RawClient; ack: mqttPacket.IConnackPacket }> {
  const raw = await RawClient.open(port, version);
  raw.send({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: version,
    clientId: "",
    clean: true,
    keepalive: 60,
    ...connect,
  }, version);
  return { raw, ack: await raw.next("connack") };
}
