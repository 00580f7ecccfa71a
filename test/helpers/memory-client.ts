/**
 * A raw MQTT peer over an in-memory connection (see memory-connection.ts): the same
 * interface as `RawClient` (helpers/raw-client.ts), without a socket.
 */
import mqttPacket, { type Packet } from "mqtt-packet";
import type { MemoryConnection } from "./memory-connection.ts";

export class MemoryClient {
  packets: Packet[] = [];
  closed = false;
  #parser;
  #waiters: Array<() => void> = [];

  constructor(readonly conn: MemoryConnection, version: 3 | 4 | 5) {
    this.#parser = mqttPacket.parser({ protocolVersion: version });
    this.#parser.on("packet", (p: Packet) => {
      this.packets.push(p);
      this.#wake();
    });
    this.#parser.on("error", () => {});
    conn.handler = {
      onData: (bytes) => this.#parser.parse(Buffer.from(bytes)),
      onClose: () => {
        this.closed = true;
        this.#wake();
      },
    };
  }

  send(packet: Packet, version: 3 | 4 | 5 = 5): void {
    this.conn.write(mqttPacket.generate(packet, { protocolVersion: version }));
  }

  sendBytes(bytes: Uint8Array | number[]): void {
    this.conn.write(Uint8Array.from(bytes));
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

  /** Resolves when the broker has closed the connection. */
  async waitClosed(ms = 3000): Promise<void> {
    const end = Date.now() + ms;
    while (!this.closed) {
      const left = end - Date.now();
      if (left <= 0) throw new Error("connection still open");
      await this.#wait(left);
    }
  }

  /** Stop reading (bytes wait in the connection), as a client busy sending does. */
  pause(): void {
    this.conn.pause();
  }

  resume(): void {
    this.conn.resume();
  }

  close(): void {
    this.conn.close();
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
