/**
 * What one connection can make Ferry hold, and for how long, on the manual clock of the
 * in-process tier: a client that does not read is paused and, if it stays stuck, closed
 * (`limits.send_timeout`, and keep alive still applies); a packet that trickles in is cut
 * off (`limits.packet_timeout`); partial packets before CONNACK count against a budget
 * per address and overall (`limits.max_preauth_bytes[_per_ip]`). The adapters' side of
 * pausing is test/output-bound.test.ts, over real sockets.
 */
import { describe, expect, test } from "bun:test";
import mqttPacket from "mqtt-packet";
import net from "node:net";
import { startBroker } from "./helpers/broker.ts";
import { eventually } from "./helpers/clients.ts";
import { inProcessBroker } from "./helpers/in-process-broker.ts";
import { settle } from "./helpers/manual-clock.ts";
import { partialConnect } from "./helpers/partial-connect.ts";

function pingreqs(n: number): Uint8Array {
  const out = new Uint8Array(2 * n);
  for (let i = 0; i < out.length; i += 2) out[i] = 0xc0;
  return out;
}

describe("a client that does not read", () => {
  test("is paused once its output is over limits.max_output_bytes, and read again once it reads", async () => {
    const b = await inProcessBroker({ limits: { max_output_bytes: 4096 } });
    try {
      const raw = await b.connected(5, { keepalive: 0 });
      raw.pause();
      raw.sendBytes(pingreqs(4096)); // 8 KiB of PINGRESP for it
      await settle();
      expect(b.broker.connectionBytes.pausedConnections).toBe(1);
      expect(b.broker.metrics.pausedReading).toBe(1);
      // The bound and the reply to the packet that crossed it; the rest of the read waits unread.
      expect(b.broker.connectionBytes.outputBytes()).toBe(4096 + 2);
      raw.sendBytes(pingreqs(10));
      await settle();
      expect(b.broker.connectionBytes.outputBytes()).toBe(4096 + 2);
      expect(b.broker.connectionBytes.partialBytes()).toBeGreaterThan(0);
      raw.resume();
      await settle();
      expect(raw.packets.filter((p) => p.cmd === "pingresp")).toHaveLength(4106);
      expect(b.broker.connectionBytes.pausedConnections).toBe(0);
      expect(b.broker.connectionBytes.outputBytes()).toBe(0);
      raw.close();
    } finally {
      await b.stop();
    }
  });

  test("QoS 1 publishes whose PUBACKs are never read pause it too", async () => {
    const b = await inProcessBroker({ limits: { max_output_bytes: 4096 } });
    try {
      const raw = await b.connected(4, { keepalive: 0 });
      raw.pause();
      const publishes = Buffer.concat(
        Array.from({ length: 500 }, (_, i) =>
          mqttPacket.generate({
            cmd: "publish",
            topic: "t",
            payload: Buffer.from("x"),
            qos: 1,
            messageId: i + 1,
            dup: false,
            retain: false,
          })),
      );
      for (let round = 0; round < 20 && b.broker.connectionBytes.pausedConnections === 0; round++) {
        raw.sendBytes(publishes);
        await settle();
      }
      expect(b.broker.connectionBytes.pausedConnections).toBe(1);
      // At most the bound and the acks of one read (500 PUBACKs).
      expect(b.broker.connectionBytes.outputBytes()).toBeLessThanOrEqual(4096 + 500 * 4);
      raw.close();
    } finally {
      await b.stop();
    }
  });

  test("stuck for limits.send_timeout, it is closed and counted; one that reads in between is not", async () => {
    const b = await inProcessBroker({ limits: { max_output_bytes: 4096, send_timeout: 30 } });
    try {
      const stuck = await b.connected(5, { keepalive: 0, clientId: "stuck" });
      const slow = await b.connected(5, { keepalive: 0, clientId: "slow" });
      for (const c of [stuck, slow]) {
        c.pause();
        c.sendBytes(pingreqs(4096));
      }
      await settle();
      expect(b.broker.connectionBytes.pausedConnections).toBe(2);
      await b.advance(20_000);
      // The slow one reads what waits (and is read again), then stops reading once more.
      slow.resume();
      await settle();
      slow.pause();
      slow.sendBytes(pingreqs(4096));
      await b.advance(11_000);
      expect(stuck.closed).toBe(true);
      expect(slow.closed).toBe(false);
      expect(b.broker.metrics.disconnectedNotReading).toBe(1);
      expect(b.broker.connectionBytes.pausedConnections).toBe(1);
      await b.advance(30_000);
      expect(slow.closed).toBe(true);
      expect(b.broker.metrics.disconnectedNotReading).toBe(2);
      expect(b.broker.connectionBytes.pausedConnections).toBe(0);
    } finally {
      await b.stop();
    }
  });

  test("keep alive still applies while paused: a client that reads nothing is closed after 1.5 times it", async () => {
    const b = await inProcessBroker({ limits: { max_output_bytes: 4096, send_timeout: 0 } });
    try {
      const raw = await b.connected(5, { keepalive: 10 });
      raw.pause();
      raw.sendBytes(pingreqs(4096));
      await settle();
      expect(b.broker.connectionBytes.pausedConnections).toBe(1);
      await b.advance(14_000);
      expect(raw.closed).toBe(false);
      await b.advance(2_000);
      expect(raw.closed).toBe(true);
      expect(b.broker.metrics.keepaliveTimeouts).toBe(1);
    } finally {
      await b.stop();
    }
  });
});

describe("limits.packet_timeout", () => {
  test("a packet trickling in is cut off once it has taken longer than the deadline; packets that complete in time are not", async () => {
    const b = await inProcessBroker({ limits: { packet_timeout: 20 } });
    try {
      const publish = mqttPacket.generate({
        cmd: "publish",
        topic: "t",
        payload: Buffer.alloc(1000),
        qos: 0,
        dup: false,
        retain: false,
      });
      const trickle = await b.connected(4, { keepalive: 0, clientId: "trickle" });
      const steady = await b.connected(4, { keepalive: 0, clientId: "steady" });
      trickle.sendBytes(publish.subarray(0, 10));
      steady.sendBytes(publish.subarray(0, 500));
      await b.advance(15_000);
      // A byte now and then keeps keep alive happy, not the packet deadline.
      trickle.sendBytes(publish.subarray(10, 20));
      // The steady one completes its packet and starts the next.
      steady.sendBytes(Buffer.concat([publish.subarray(500), publish.subarray(0, 500)]));
      await b.advance(6_000);
      expect(trickle.closed).toBe(true);
      expect(steady.closed).toBe(false);
      expect(b.broker.metrics.disconnectedPacketTimeout).toBe(1);
      await b.advance(10_000);
      steady.sendBytes(publish.subarray(500));
      await b.advance(30_000);
      expect(steady.closed).toBe(false);
      expect(b.broker.connectionBytes.partialBytes()).toBe(0);
      steady.close();
    } finally {
      await b.stop();
    }
  });
});

describe("pre-auth byte budget", () => {
  test("partial CONNECTs count per address and overall; the connection that goes over is closed and counted", async () => {
    const b = await inProcessBroker({
      limits: { max_preauth_bytes_per_ip: 100_000, max_preauth_bytes: 250_000 },
    });
    try {
      const part = partialConnect(500_000, 40_000);
      const a = [1, 2, 3].map((i) => b.open(4, `10.0.0.1:${1000 + i}`));
      for (const c of a) c.sendBytes(part);
      await settle();
      expect(a.map((c) => c.closed)).toEqual([false, false, true]);
      expect(b.broker.metrics.refusedPreAuthBytes).toBe(1);
      expect(b.broker.connectionBytes.preAuthBytesOf("10.0.0.1")).toBe(80_000);
      // Other addresses, each under its own budget, until the total is reached.
      const others = [2, 3].map((i) => b.open(4, `10.0.0.${i}:1000`));
      for (const c of others) c.sendBytes(partialConnect(500_000, 90_000));
      await settle();
      expect(others.map((c) => c.closed)).toEqual([false, true]);
      expect(b.broker.metrics.refusedPreAuthBytes).toBe(2);
      expect(b.broker.connectionBytes.preAuthBytes).toBe(170_000);
      // Closing gives the bytes back, and a CONNECT that completes is no longer counted.
      a[0]!.close();
      await settle();
      expect(b.broker.connectionBytes.preAuthBytesOf("10.0.0.1")).toBe(40_000);
      const whole = mqttPacket.generate({
        cmd: "connect",
        protocolId: "MQTT",
        protocolVersion: 4,
        clean: true,
        keepalive: 0,
        clientId: "y".repeat(60_000), // a string holds at most 65,535 bytes
      });
      const late = b.open(4, "10.0.0.1:2000");
      late.sendBytes(whole.subarray(0, 50_000));
      await settle();
      expect(late.closed).toBe(false);
      expect(b.broker.connectionBytes.preAuthBytesOf("10.0.0.1")).toBe(90_000);
      late.sendBytes(whole.subarray(50_000));
      await late.next("connack");
      expect(b.broker.connectionBytes.preAuthBytesOf("10.0.0.1")).toBe(40_000);
      for (const c of [...a, ...others, late]) c.close();
      await settle();
      expect(b.broker.connectionBytes.preAuthBytes).toBe(0);
    } finally {
      await b.stop();
    }
  });

  test("a connection that finds no room left in its address's budget, or the total, is refused at accept", async () => {
    const b = await inProcessBroker({
      limits: { max_preauth_bytes_per_ip: 100_000, max_preauth_bytes: 198_000 },
    });
    try {
      // Two connections leave 4,000 bytes of the address's budget: less than PREAUTH_ROOM (4,096).
      const holders = [1, 2].map((i) => b.open(4, `10.0.0.1:${1000 + i}`));
      for (const c of holders) c.sendBytes(partialConnect(500_000, 48_000));
      await settle();
      expect(holders.map((c) => c.closed)).toEqual([false, false]);
      const received = b.broker.metrics.bytesReceived;
      const refused = b.open(4, "10.0.0.1:2000");
      await settle();
      expect(refused.closed).toBe(true);
      expect(b.broker.metrics.refusedPreAuthBytes).toBe(1);
      refused.sendBytes(partialConnect(500_000, 1000)); // nothing listens any more
      await settle();
      expect(b.broker.metrics.bytesReceived).toBe(received);
      // Another address has its own budget while the total has room...
      const other = b.open(4, "10.0.0.2:1000");
      other.sendBytes(partialConnect(500_000, 98_000));
      await settle();
      expect(other.closed).toBe(false);
      // ...and none once the total has less than PREAUTH_ROOM left (194,000 of 198,000 held).
      const third = b.open(4, "10.0.0.3:1000");
      await settle();
      expect(third.closed).toBe(true);
      expect(b.broker.metrics.refusedPreAuthBytes).toBe(2);
      // Room again once a holder goes: a CONNECT that completes gets its CONNACK.
      holders[0]!.close();
      await settle();
      const late = b.open(4, "10.0.0.1:3000");
      late.sendBytes(
        mqttPacket.generate({
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion: 4,
          clean: true,
          keepalive: 0,
          clientId: "late",
        }),
      );
      await late.next("connack");
      for (const c of [holders[1]!, other, late]) c.close();
      await settle();
      expect(b.broker.connectionBytes.preAuthBytes).toBe(0);
    } finally {
      await b.stop();
    }
  });

  test("over real sockets: a socket refused at accept for a full budget is not read", async () => {
    const b = await startBroker({ limits: { max_preauth_bytes_per_ip: 1024 * 1024 } });
    const sockets: net.Socket[] = [];
    const open = (bytes: Uint8Array) => {
      const s = net.connect(b.port, "127.0.0.1");
      s.on("error", () => {});
      sockets.push(s);
      s.write(bytes);
      return s;
    };
    try {
      const broker = b.server.broker;
      // One socket holds all but 2,576 bytes of the address's budget: a CONNECT that claims
      // 1,046,000 bytes, all sent but the last (the reader's buffer, which is what counts,
      // grows by doubling but never past the packet's length).
      open(partialConnect(1_046_000, 1_045_999));
      await eventually(
        () => broker.connectionBytes.preAuthBytes >= 1_045_999,
        5000,
        () => `budget held: ${broker.connectionBytes.preAuthBytes}`,
      );
      const received = broker.metrics.bytesReceived;
      const late = Array.from({ length: 20 }, () => open(partialConnect(1024 * 1024, 400_000)));
      await eventually(() => late.every((s) => s.closed), 5000, "refused sockets closed");
      expect(broker.metrics.refusedPreAuthBytes).toBe(20);
      expect(broker.metrics.bytesReceived).toBe(received);
      expect(sockets[0]!.closed).toBe(false);
    } finally {
      for (const s of sockets) s.destroy();
      await b.stop();
    }
  }, 15_000);

  test("over WebSocket: a connection refused at accept for a full budget is closed, and not read", async () => {
    const b = await startBroker({ limits: { max_preauth_bytes_per_ip: 1024 * 1024 } });
    const open = async () => {
      const ws = new WebSocket(b.wsUrl, "mqtt");
      ws.binaryType = "arraybuffer";
      const closed = new Promise<void>((resolve) => ws.addEventListener("close", () => resolve()));
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      return { ws, closed };
    };
    const sockets: WebSocket[] = [];
    try {
      const broker = b.server.broker;
      const holder = await open();
      sockets.push(holder.ws);
      holder.ws.send(partialConnect(1_046_000, 1_045_999));
      await eventually(() => broker.connectionBytes.preAuthBytes >= 1_045_999, 5000, "budget held");
      const received = broker.metrics.bytesReceived;
      const late = await open().catch(() => undefined); // closed as it opens: either way it must end
      if (late !== undefined) {
        sockets.push(late.ws);
        late.ws.send(partialConnect(1024 * 1024, 100_000));
        await late.closed;
      }
      await eventually(() => broker.metrics.refusedPreAuthBytes === 1, 5000, "the refusal counted");
      expect(broker.metrics.bytesReceived).toBe(received);
      expect(holder.ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      for (const ws of sockets) ws.close();
      await b.stop();
    }
  });

  test("over real sockets: sockets sending partial 1 MiB CONNECTs are closed once the address holds the budget", async () => {
    const b = await startBroker({ limits: { max_preauth_bytes_per_ip: 1024 * 1024 } });
    const sockets: net.Socket[] = [];
    try {
      const part = partialConnect(1024 * 1024, 400_000);
      for (let i = 0; i < 4; i++) {
        const s = net.connect(b.port, "127.0.0.1");
        s.on("error", () => {});
        sockets.push(s);
        s.write(part);
      }
      const broker = b.server.broker;
      await eventually(() => broker.metrics.refusedPreAuthBytes >= 2, 5000, "two refusals");
      await eventually(() => sockets.filter((s) => s.closed).length === 2, 5000, "two closed");
      expect(broker.connectionBytes.preAuthBytes).toBeLessThanOrEqual(1024 * 1024);
    } finally {
      for (const s of sockets) s.destroy();
      await b.stop();
    }
  });
});
