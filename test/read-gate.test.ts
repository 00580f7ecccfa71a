/**
 * A connection stops reading for two independent reasons: its output is over
 * `limits.max_output_bytes` (client-connection.ts, write-side backpressure) and the
 * inbound flow owes it too many acks (publisher flow control). Each reason's release
 * must not resume reading while the other still holds it. In-process, on a stub
 * Connection whose buffered output the test sets.
 */
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import type { ClientConnection } from "../src/core/client-connection.ts";
import type { Connection, ConnectionHandler } from "../src/core/connection.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import { settle } from "./helpers/manual-clock.ts";

class StubConnection implements Connection {
  readonly remoteAddress = "127.0.0.1:50000";
  readonly remoteIp = "127.0.0.1";
  readonly transport = "memory";
  buffered = 0;
  paused = false;
  pauses = 0;
  written: Uint8Array[] = [];
  handler: ConnectionHandler | undefined;
  write(bytes: Uint8Array): void {
    this.written.push(bytes);
  }
  bufferedBytes(): number {
    return this.buffered;
  }
  pause(): void {
    this.paused = true;
    this.pauses++;
  }
  resume(): void {
    this.paused = false;
  }
  close(): void {}
}

const bytes = (p: mqttPacket.Packet) => new Uint8Array(mqttPacket.generate(p, { protocolVersion: 4 }));

async function connectedStub() {
  const b = await inProcessBroker({ limits: { max_output_bytes: 4096 } });
  const conn = new StubConnection();
  conn.handler = b.broker.accept(conn);
  conn.handler.onData(bytes({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clientId: "gate", clean: true }));
  await settle();
  const client = [...b.broker.clients][0] as ClientConnection;
  expect(client.state).toBe("connected");
  return { b, conn, client };
}

describe("reading is paused while either reason holds", () => {
  test("output over its bound, then the inbound flow's hold: draining the output does not resume reading", async () => {
    const { b, conn, client } = await connectedStub();
    try {
      conn.buffered = 10_000; // over max_output_bytes: the next reply pauses reading
      conn.handler!.onData(bytes({ cmd: "pingreq" }));
      expect(client.pausedAt).not.toBe(0);
      expect(conn.paused).toBe(true);
      client.holdInput(true);
      conn.buffered = 0;
      conn.handler!.onDrain?.();
      expect(client.pausedAt).toBe(0); // the output reason is gone ...
      expect(conn.paused).toBe(true); // ... but the inbound flow still holds reading
      client.holdInput(false);
      expect(conn.paused).toBe(false);
    } finally {
      await b.stop();
    }
  });

  test("the inbound flow's hold, then output over its bound: releasing the hold does not resume reading", async () => {
    const { b, conn, client } = await connectedStub();
    try {
      client.holdInput(true);
      expect(conn.paused).toBe(true);
      conn.buffered = 10_000;
      // A reply written while held (e.g. an ack released by a commit) crosses the bound.
      client.write(new Uint8Array([0xd0, 0x00]));
      expect(client.pausedAt).not.toBe(0);
      client.holdInput(false);
      expect(conn.paused).toBe(true);
      conn.buffered = 0;
      conn.handler!.onDrain?.();
      expect(conn.paused).toBe(false);
    } finally {
      await b.stop();
    }
  });

  test("packets read before a hold wait unhandled and are handled, in order, once reading resumes", async () => {
    const { b, conn, client } = await connectedStub();
    try {
      client.holdInput(true);
      const before = conn.written.length;
      // Two PINGREQs in one read while held: neither is answered yet.
      const two = new Uint8Array([0xc0, 0x00, 0xc0, 0x00]);
      conn.handler!.onData(two);
      expect(conn.written.length).toBe(before);
      client.holdInput(false);
      await settle();
      expect(conn.written.length).toBe(before + 2);
    } finally {
      await b.stop();
    }
  });
});
