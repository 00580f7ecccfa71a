/**
 * Write-side backpressure on the real adapters (Bun TCP, TLS, WebSocket, secure
 * WebSocket): a client that sends but never reads is paused once the output waiting for
 * it passes `limits.max_output_bytes`, the output Ferry holds for it stays under that
 * bound (plus the reply to the packet that crossed it), and once it reads again it gets every reply, in
 * order. Without the pause, each PINGREQ's PINGRESP piles up in Ferry's memory. The same
 * bound holds back QoS 1 deliveries to a subscriber that does not read: they wait in its
 * queue rather than in the adapter's buffer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { makeCerts, type TestCerts } from "./helpers/certs.ts";
import { connect, eventually } from "./helpers/clients.ts";
import { openRawStream, type Transport } from "./helpers/raw-stream.ts";

const BOUND = 64 * 1024;
/**
 * What the output may pass the bound by: the reply to the packet that crossed it (2 bytes),
 * and on WebSocket the headers of frames Bun holds, which it counts as buffered too.
 */
const ONE_REPLY = 2 + 14;

/** MQTT 3.1.1 CONNECT, clean session, keep alive 0, client id "f". */
const CONNECT = Uint8Array.from([0x10, 13, 0, 4, 77, 81, 84, 84, 4, 2, 0, 0, 0, 1, 0x66]);

let certs: TestCerts;
let b: TestBroker;
let ports: Record<Transport, number>;

beforeAll(async () => {
  certs = makeCerts();
  b = await startBroker({
    listeners: { tls_port: 0, wss_port: 0 },
    tls: { cert: certs.serverCert, key: certs.serverKey },
    limits: { max_output_bytes: BOUND },
  });
  ports = { tcp: b.port, ws: b.wsPort, tls: b.server.tls!.port, wss: b.server.wss!.port };
});

afterAll(async () => {
  await b?.stop();
});

function pingreqs(n: number): Uint8Array {
  const out = new Uint8Array(2 * n);
  for (let i = 0; i < out.length; i += 2) out[i] = 0xc0;
  return out;
}

describe("a client that sends and does not read is paused (limits.max_output_bytes)", () => {
  for (const transport of ["tcp", "tls", "ws", "wss"] as const) {
    test(
      `${transport}: a PINGREQ flood that is never read pauses the connection; the output held stays under the bound`,
      async () => {
        const broker = b.server.broker;
        const pausesBefore = broker.metrics.pausedReading;
        const s = await openRawStream(transport, ports[transport], certs.read(certs.ca));
        try {
          s.send(CONNECT);
          await eventually(() => s.receivedBytes() >= 4, 3000, "CONNACK");
          s.pause();
          // Far more than the kernel's socket buffers take: the flood outruns them, and the
          // client's own writes stay queued once Ferry stops reading.
          const batch = pingreqs(32 * 1024);
          let sent = 0;
          let most = 0;
          const sample = setInterval(() => {
            most = Math.max(most, broker.connectionBytes.outputBytes());
          }, 1);
          try {
            // Keep writing until Ferry has paused and has stopped reading: the bytes it
            // received stay the same over several looks while the client still has bytes
            // it cannot get rid of. Without the pause Ferry reads on and this never happens.
            let last = -1;
            let still = 0;
            await eventually(
              () => {
                while (s.socket.writableLength < 1024 * 1024) {
                  s.send(batch);
                  sent += batch.byteLength / 2;
                }
                const received = broker.metrics.bytesReceived;
                still = received === last && broker.connectionBytes.pausedConnections === 1 ? still + 1 : 0;
                last = received;
                return still >= 10;
              },
              30_000,
              "Ferry to stop reading",
            );
          } finally {
            clearInterval(sample);
          }
          most = Math.max(most, broker.connectionBytes.outputBytes());
          expect(most).toBeGreaterThan(0);
          expect(most).toBeLessThanOrEqual(BOUND + ONE_REPLY);
          expect(broker.metrics.pausedReading).toBeGreaterThan(pausesBefore);
          // The memory budget counts the same output.
          broker.budget.recount();
          expect(broker.budget.output).toBe(broker.connectionBytes.outputBytes());

          // It reads again: every PINGREQ gets its PINGRESP, and Ferry stops pausing it.
          s.resume();
          await eventually(() => s.receivedBytes() >= 4 + 2 * sent, 60_000, "every PINGRESP");
          const replies = s.received().subarray(4);
          expect(replies.byteLength).toBe(2 * sent);
          expect(replies.every((byte, i) => byte === (i % 2 === 0 ? 0xd0 : 0))).toBe(true);
          await eventually(() => broker.connectionBytes.pausedConnections === 0, 3000, "resumed");
          expect(broker.connectionBytes.outputBytes()).toBe(0);
        } finally {
          s.close();
        }
      },
      90_000,
    );
  }
});

describe("deliveries to a subscriber that does not read wait in its queue, not in its output", () => {
  test(
    "QoS 1: the output held for the subscriber stays under limits.max_output_bytes plus one packet; it gets every message, in order, once it reads",
    async () => {
      // A window far larger than the bound and than what the kernel's socket buffers take, so
      // only the output bound can hold the deliveries back.
      const bound = 256 * 1024;
      const big = await startBroker({ limits: { max_output_bytes: bound }, mqtt: { max_inflight: 2000 } });
      const N = 400;
      const payload = Buffer.alloc(64 * 1024, 0x61);
      const packet = mqttPacket.generate({
        cmd: "publish",
        topic: "big",
        payload,
        qos: 1,
        messageId: 1,
        dup: false,
        retain: false,
      }).byteLength;
      const sub = await openRawStream("tcp", big.port);
      const pub = await connect(big.url, { clientId: "big-pub" });
      try {
        sub.send(
          mqttPacket.generate({ cmd: "connect", clientId: "big-sub", protocolVersion: 4, clean: true, keepalive: 0 }),
        );
        sub.send(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "big", qos: 1 }] }));
        await eventually(() => sub.receivedBytes() >= 4 + 5, 3000, "CONNACK and SUBACK");
        sub.pause();
        const broker = big.server.broker;
        const session = broker.sessions.get("big-sub")!;
        for (let i = 0; i < N; i++) {
          const p = Buffer.from(payload);
          p.writeUInt32BE(i, 0);
          pub.client.publish("big", p, { qos: 1 });
        }
        // Every message routed to the subscriber: sent (in flight) or queued.
        await eventually(
          () => session.inflight.size + session.queuedCount === N,
          30_000,
          () => `all ${N} routed (in flight ${session.inflight.size}, queued ${session.queuedCount})`,
        );
        const held = broker.connectionBytes.outputBytes();
        expect(held).toBeGreaterThan(0);
        expect(held).toBeLessThanOrEqual(bound + packet);
        // Not the window: the bound held them.
        expect(session.queuedCount).toBeGreaterThan(0);

        // It reads again: every message arrives, in order, each once.
        sub.resume();
        const parser = mqttPacket.parser({ protocolVersion: 4 });
        const seqs: number[] = [];
        parser.on("packet", (p) => {
          if (p.cmd === "publish") seqs.push((p.payload as Buffer).readUInt32BE(0));
        });
        let parsed = 0;
        await eventually(
          () => {
            const all = sub.received();
            parser.parse(all.subarray(parsed));
            parsed = all.byteLength;
            return seqs.length >= N;
          },
          30_000,
          () => `every message (got ${seqs.length})`,
        );
        expect(seqs).toEqual(Array.from({ length: N }, (_, i) => i));
      } finally {
        sub.close();
        await pub.end(true);
        await big.stop();
      }
    },
    90_000,
  );
});

describe("QoS 0 to a subscriber that does not read", () => {
  test(
    "is dropped once its output passes limits.max_output_bytes, below mqtt.max_buffered_bytes (8 MiB): it holds the bound plus one message",
    async () => {
      const broker = b.server.broker;
      expect(broker.options.maxBufferedBytes).toBeGreaterThan(8 * BOUND);
      const sub = await openRawStream("tcp", ports.tcp);
      const pub = await connect(b.url, { clientId: "q0-pub" });
      try {
        sub.send(
          mqttPacket.generate({ cmd: "connect", clientId: "q0-sub", protocolVersion: 4, clean: true, keepalive: 0 }),
        );
        sub.send(mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "q0", qos: 0 }] }));
        await eventually(() => sub.receivedBytes() >= 4 + 5, 3000, "CONNACK and SUBACK");
        sub.pause();
        const dropped = broker.metrics.droppedSlowConsumer;
        // Far more than the kernel's socket buffers and mqtt.max_buffered_bytes together.
        const chunk = Buffer.alloc(16 * 1024, 0x42);
        for (let i = 0; i < 2048; i++) {
          pub.client.publish("q0", chunk, { qos: 0 });
          if (i % 256 === 255) await new Promise<void>((r) => setImmediate(r));
        }
        // QoS 1 to a topic nobody reads: acknowledged once every earlier publish was routed.
        await pub.client.publishAsync("marker", "done", { qos: 1 });
        const conn = [...broker.clients].find((c) => c.clientId === "q0-sub")!;
        expect(conn.outputBytes()).toBeLessThanOrEqual(BOUND + chunk.byteLength + 64);
        expect(broker.metrics.droppedSlowConsumer).toBeGreaterThan(dropped);
      } finally {
        sub.close();
        await pub.end(true);
      }
    },
    60_000,
  );
});

describe("a connection Ferry closes while output for it waits is not read any more", () => {
  for (const transport of ["tcp", "tls", "ws", "wss"] as const) {
    test(
      `${transport}: a client flooding after its connection was closed for a malformed packet meets backpressure`,
      async () => {
        // A bound far above what this test makes wait, so that nothing pauses the connection
        // before the close: only the close may stop the reading.
        const big = await startBroker({
          listeners: { tls_port: 0, ws_port: 0, wss_port: 0 },
          tls: { cert: certs.serverCert, key: certs.serverKey },
          limits: { max_output_bytes: 512 * 1024 * 1024 },
        });
        const broker = big.server.broker;
        const port = { tcp: big.port, tls: big.server.tls!.port, ws: big.wsPort, wss: big.server.wss!.port }[transport];
        const s = await openRawStream(transport, port, certs.read(certs.ca));
        try {
          s.send(CONNECT);
          await eventually(() => s.receivedBytes() >= 4, 3000, "CONNACK");
          s.pause();
          const batch = pingreqs(32 * 1024);
          // At most 4 MiB per call: a socket the peer has closed takes writes without queueing them.
          const push = () => {
            for (let i = 0; i < 64 && !s.socket.destroyed && s.socket.writableLength < 1024 * 1024; i++) s.send(batch);
          };
          // PINGREQs until the kernel's buffers hold all the PINGRESPs they take and Ferry
          // holds the rest: output waits for this client.
          await eventually(
            () => {
              push();
              return broker.connectionBytes.outputBytes() > 256 * 1024;
            },
            30_000,
            "output waiting",
          );
          const errors = broker.metrics.protocolErrors;
          s.send(Uint8Array.of(0x00, 0x00)); // packet type 0 is reserved: malformed
          await eventually(
            () => {
              push();
              return broker.metrics.protocolErrors > errors;
            },
            30_000,
            "closed for the malformed packet",
          );
          // The client goes on sending for a second. Ferry must not read it: what the kernel
          // buffers take (a few MB on loopback) is all that can leave the client. Read and
          // dropped, it would be hundreds of MB.
          const from = s.socket.bytesWritten - s.socket.writableLength;
          const until = Date.now() + 1000;
          while (Date.now() < until) {
            push();
            await new Promise((r) => setTimeout(r, 5));
          }
          const taken = s.socket.bytesWritten - s.socket.writableLength - from;
          expect(taken).toBeLessThan(32 * 1024 * 1024);
        } finally {
          s.close();
          await big.stop();
        }
      },
      60_000,
    );
  }
});
