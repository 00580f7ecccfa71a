/**
 * What RawClient (a TCP socket) and MemoryClient (an in-memory connection) share: the
 * packets the broker sent, parsed and kept in arrival order, and waits on them that wake
 * on the packet or the close itself, not on a poll. A subclass supplies the transport.
 */
import mqttPacket, { type Packet } from "mqtt-packet";

export abstract class PacketPeer {
  packets: Packet[] = [];
  /** Every byte received, in order, for tests that check the exact reply. */
  received: Uint8Array[] = [];
  closed = false;
  #parser;
  #waiters: Array<() => void> = [];

  protected constructor(version: 3 | 4 | 5) {
    this.#parser = mqttPacket.parser({ protocolVersion: version });
    this.#parser.on("packet", (p: Packet) => {
      this.packets.push(p);
      this.#wake();
    });
    this.#parser.on("error", () => {});
  }

  /** Write bytes to the broker. */
  protected abstract write(bytes: Uint8Array): void;
  /** Close the connection from this side. */
  abstract close(): void;
  /** Stop reading (bytes wait in the transport), as a client busy sending does. */
  abstract pause(): void;
  abstract resume(): void;

  /** The transport calls this with each chunk of bytes from the broker. */
  protected onBytes(bytes: Uint8Array): void {
    this.received.push(bytes);
    this.#parser.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }

  /** The transport calls this once the connection is closed. */
  protected onClosed(): void {
    this.closed = true;
    this.#wake();
  }

  send(packet: Packet, version: 3 | 4 | 5 = 5): void {
    this.write(mqttPacket.generate(packet, { protocolVersion: version }));
  }

  sendBytes(bytes: Uint8Array | number[]): void {
    this.write(Uint8Array.from(bytes));
  }

  /** The bytes received so far, as lower-case hex. */
  receivedHex(): string {
    return Buffer.concat(this.received).toString("hex");
  }

  /** The PUBLISH packets received and not yet taken by `next`. */
  publishes(): Packet[] {
    return this.packets.filter((p) => p.cmd === "publish");
  }

  /** Wait for the next packet of this type (already received ones count, in order); `ms` is real time. */
  async next<C extends Packet["cmd"]>(cmd: C, ms = 3000): Promise<Extract<Packet, { cmd: C }>> {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.packets.findIndex((p) => p.cmd === cmd);
      if (i >= 0) return this.packets.splice(i, 1)[0] as Extract<Packet, { cmd: C }>;
      if (this.closed) throw new Error(`connection closed while waiting for ${cmd}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`no ${cmd} within ${ms} ms (got ${this.packets.map((p) => p.cmd).join(",")})`);
      await this.#wait(left);
    }
  }

  /** Resolves when the connection is closed (by the broker, unless this side closed it). */
  async waitClosed(ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (!this.closed) {
      const left = end - Date.now();
      if (left <= 0) throw new Error("connection still open");
      await this.#wait(left);
    }
  }

  /**
   * A PINGREQ → PINGRESP round trip. The broker reads a connection's packets in order and
   * writes to it in order, so once the PINGRESP is here, so is every packet the broker
   * sent this client before it read the PINGREQ: a test that must show that nothing (else)
   * arrives waits on this rather than sleeping.
   */
  async roundTrip(ms = 3000): Promise<void> {
    this.send({ cmd: "pingreq" });
    await this.next("pingresp", ms);
  }

  #wait(ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.#waiters.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}
