/**
 * A raw MQTT 3.1.1 client over `Deno.connect`, just enough for the Deno smoke suite:
 * exact bytes out, whole packets in. Nothing from `src/` is used, so the suite tests the
 * broker from the outside.
 */
export interface Packet {
  type: number;
  flags: number;
  body: Uint8Array;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function str(s: string): number[] {
  const b = encoder.encode(s);
  return [b.length >> 8, b.length & 0xff, ...b];
}

function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return out;
}

function packet(first: number, body: number[]): Uint8Array {
  return new Uint8Array([first, ...varint(body.length), ...body]);
}

export const encode = {
  connect: (clientId: string, cleanSession = true) =>
    packet(0x10, [...str("MQTT"), 4, cleanSession ? 0x02 : 0x00, 0, 60, ...str(clientId)]),
  subscribe: (packetId: number, filter: string, qos: number) =>
    packet(0x82, [packetId >> 8, packetId & 0xff, ...str(filter), qos]),
  publish: (
    topic: string,
    payload: string,
    opts: { qos: 0 | 1; retain?: boolean; packetId?: number },
  ) => {
    const id = opts.qos > 0 ? [(opts.packetId ?? 1) >> 8, (opts.packetId ?? 1) & 0xff] : [];
    return packet(0x30 | (opts.qos << 1) | (opts.retain ? 1 : 0), [
      ...str(topic),
      ...id,
      ...encoder.encode(payload),
    ]);
  },
  puback: (packetId: number) => packet(0x40, [packetId >> 8, packetId & 0xff]),
  disconnect: () => new Uint8Array([0xe0, 0]),
};

export interface ReceivedPublish {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  packetId: number | undefined;
}

export function decodePublish(p: Packet): ReceivedPublish {
  const topicLength = (p.body[0]! << 8) | p.body[1]!;
  const topic = decoder.decode(p.body.subarray(2, 2 + topicLength));
  const qos = (p.flags >> 1) & 3;
  let offset = 2 + topicLength;
  let packetId: number | undefined;
  if (qos > 0) {
    packetId = (p.body[offset]! << 8) | p.body[offset + 1]!;
    offset += 2;
  }
  return {
    topic,
    payload: decoder.decode(p.body.subarray(offset)),
    qos,
    retain: (p.flags & 1) === 1,
    packetId,
  };
}

export class RawClient {
  #buffer = new Uint8Array(0);
  #readBuffer = new Uint8Array(16 * 1024);

  private constructor(private readonly conn: Deno.TcpConn) {}

  static async connect(port: number, clientId: string, cleanSession = true): Promise<RawClient> {
    const client = new RawClient(await Deno.connect({ hostname: "127.0.0.1", port }));
    await client.send(encode.connect(clientId, cleanSession));
    const connack = await client.next();
    if (connack.type !== 2 || connack.body[1] !== 0) {
      throw new Error(`CONNACK expected, got type ${connack.type} body ${[...connack.body]}`);
    }
    return client;
  }

  async send(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  /** The next whole packet, or an error after `ms`. */
  async next(ms = 5000): Promise<Packet> {
    const deadline = Date.now() + ms;
    for (;;) {
      const parsed = this.#parse();
      if (parsed) return parsed;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error("timed out waiting for a packet");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const n = await Promise.race([
        this.conn.read(this.#readBuffer),
        new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), left))),
      ]).finally(() => clearTimeout(timer));
      if (n === "timeout") throw new Error("timed out waiting for a packet");
      if (n === null) throw new Error("connection closed by the broker");
      const merged = new Uint8Array(this.#buffer.length + n);
      merged.set(this.#buffer);
      merged.set(this.#readBuffer.subarray(0, n), this.#buffer.length);
      this.#buffer = merged;
    }
  }

  #parse(): Packet | undefined {
    const b = this.#buffer;
    if (b.length < 2) return undefined;
    let length = 0;
    let multiplier = 1;
    let i = 1;
    for (;;) {
      if (i >= b.length) return undefined;
      const byte = b[i++]!;
      length += (byte & 0x7f) * multiplier;
      multiplier *= 128;
      if ((byte & 0x80) === 0) break;
    }
    if (b.length < i + length) return undefined;
    const p = { type: b[0]! >> 4, flags: b[0]! & 0x0f, body: b.slice(i, i + length) };
    this.#buffer = b.slice(i + length);
    return p;
  }

  async close(): Promise<void> {
    try {
      await this.send(encode.disconnect());
    } catch {
      // already gone
    }
    this.conn.close();
  }
}
