/**
 * A byte stream to a running Ferry over TCP, TLS, WebSocket or secure WebSocket, for tests
 * that must control reading: `pause()` stops reading, as a client that does not read
 * does (the socket's receive buffer fills and the sender meets TCP backpressure). The
 * WebSocket handshake and framing are done by hand (client frames masked, RFC 6455
 * section 5.3), so that nothing reads behind the test's back.
 */
import net from "node:net";
import tls from "node:tls";

export type Transport = "tcp" | "tls" | "ws" | "wss";

export interface RawStream {
  /** The socket under it (net.Socket or tls.TLSSocket). */
  socket: net.Socket;
  /** Send MQTT bytes (in one WebSocket frame on ws/wss). */
  send(bytes: Uint8Array): void;
  /** MQTT bytes received so far (WebSocket framing removed). */
  receivedBytes(): number;
  /** All MQTT bytes received so far, in order. */
  received(): Buffer;
  pause(): void;
  resume(): void;
  close(): void;
}

export async function openRawStream(
  transport: Transport,
  port: number,
  ca?: string,
): Promise<RawStream> {
  const secure = transport === "tls" || transport === "wss";
  const socket: net.Socket = await new Promise((resolve, reject) => {
    const s = secure
      ? tls.connect({ host: "127.0.0.1", port, ca, servername: "localhost" }, () => resolve(s))
      : net.connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
  socket.on("error", () => {});
  const chunks: Buffer[] = [];
  let total = 0;
  const ws = transport === "ws" || transport === "wss";
  if (!ws) {
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      total += d.byteLength;
    });
    return stream(socket, (b) => socket.write(b), () => total, () => Buffer.concat(chunks));
  }
  // The upgrade, then frames: a FIN binary frame per send, payload unmasked on the way back.
  socket.write(
    "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
  );
  let pending = Buffer.alloc(0);
  let upgraded = false;
  await new Promise<void>((resolve, reject) => {
    socket.on("data", (d: Buffer) => {
      pending = Buffer.concat([pending, d]);
      if (!upgraded) {
        const end = pending.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = pending.subarray(0, end).toString();
        if (!head.startsWith("HTTP/1.1 101")) {
          reject(new Error(`no upgrade: ${head}`));
          return;
        }
        upgraded = true;
        pending = pending.subarray(end + 4);
        resolve();
      }
      for (;;) {
        if (pending.byteLength < 2) return;
        let len = pending[1]! & 0x7f;
        let at = 2;
        if (len === 126) {
          if (pending.byteLength < 4) return;
          len = pending.readUInt16BE(2);
          at = 4;
        } else if (len === 127) {
          if (pending.byteLength < 10) return;
          len = Number(pending.readBigUInt64BE(2));
          at = 10;
        }
        if (pending.byteLength < at + len) return;
        const opcode = pending[0]! & 0x0f;
        if (opcode === 2 || opcode === 0) {
          chunks.push(pending.subarray(at, at + len));
          total += len;
        }
        pending = pending.subarray(at + len);
      }
    });
  });
  const frame = (payload: Uint8Array): Buffer => {
    const n = payload.byteLength;
    const head = n < 126
      ? Buffer.from([0x82, 0x80 | n])
      : n < 65536
      ? Buffer.from([0x82, 0x80 | 126, n >> 8, n & 0xff])
      : Buffer.concat([Buffer.from([0x82, 0x80 | 127]), bigLength(n)]);
    // A zero masking key: the payload goes as it is (the server unmasks with XOR 0).
    return Buffer.concat([head, Buffer.alloc(4), payload]);
  };
  return stream(socket, (b) => socket.write(frame(b)), () => total, () => Buffer.concat(chunks));
}

function bigLength(n: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(BigInt(n));
  return b;
}

function stream(
  socket: net.Socket,
  send: (b: Uint8Array) => void,
  receivedBytes: () => number,
  received: () => Buffer,
): RawStream {
  return {
    socket,
    send,
    receivedBytes,
    received,
    pause: () => socket.pause(),
    resume: () => socket.resume(),
    close: () => socket.destroy(),
  };
}
