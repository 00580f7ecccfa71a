/**
 * `Connection.pause()` / `resume()` on the Bun adapters and the in-memory pair: while
 * paused the handler gets no bytes; after resume it gets what was sent meanwhile, in order.
 */
import { describe, expect, test } from "bun:test";
import net from "node:net";
import type { Connection, ConnectionHandler } from "../src/core/connection.ts";
import { listenTcp } from "../src/runtime/bun/tcp-listener.ts";
import { listenWebSocket } from "../src/runtime/bun/ws-listener.ts";
import { eventually } from "./helpers/clients.ts";
import { settle } from "./helpers/manual-clock.ts";
import { memoryConnectionPair } from "./helpers/memory-connection.ts";

/** A handler that records what arrives, and the connection it was accepted with. */
function recorder() {
  const got: number[] = [];
  let conn: Connection | undefined;
  const accept = (c: Connection): ConnectionHandler => {
    conn = c;
    return { onData: (b) => got.push(...b), onClose: () => {} };
  };
  return { got, accept, conn: () => conn };
}

const until = (cond: () => boolean, what: string) => eventually(cond, 2000, what);

describe("Connection.pause / resume", () => {
  test("Bun TCP: nothing reaches the handler while paused; resume delivers it in order", async () => {
    const r = recorder();
    const listener = listenTcp("127.0.0.1", 0, r.accept);
    const socket = net.connect(listener.port, "127.0.0.1");
    try {
      await until(() => r.conn() !== undefined, "accept");
      socket.write(Uint8Array.from([1]));
      await until(() => r.got.length === 1, "the first byte");
      r.conn()!.pause();
      socket.write(Uint8Array.from([2, 3]));
      await Bun.sleep(100); // it would have arrived by now
      expect(r.got).toEqual([1]);
      r.conn()!.resume();
      await until(() => r.got.length === 3, "the held bytes");
      expect(r.got).toEqual([1, 2, 3]);
    } finally {
      socket.destroy();
      listener.stop();
    }
  });

  test("Bun WebSocket: nothing reaches the handler while paused; resume delivers it in order", async () => {
    const r = recorder();
    const listener = listenWebSocket("127.0.0.1", 0, r.accept, 1 << 20);
    const ws = new WebSocket(`ws://127.0.0.1:${listener.port}/mqtt`, "mqtt");
    ws.binaryType = "arraybuffer";
    try {
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      await until(() => r.conn() !== undefined, "accept");
      ws.send(Uint8Array.from([1]));
      await until(() => r.got.length === 1, "the first frame");
      r.conn()!.pause();
      ws.send(Uint8Array.from([2, 3]));
      await Bun.sleep(100);
      expect(r.got).toEqual([1]);
      r.conn()!.resume();
      await until(() => r.got.length === 3, "the held frame");
      expect(r.got).toEqual([1, 2, 3]);
    } finally {
      ws.close();
      listener.stop();
    }
  });

  test("in-memory pair: the paused end holds what the other writes, and counts it as buffered", async () => {
    const { server, client } = memoryConnectionPair();
    const got: number[] = [];
    client.handler = { onData: (b) => got.push(...b), onClose: () => {} };
    client.pause();
    server.write(Uint8Array.from([7, 8]));
    await settle();
    expect(got).toEqual([]);
    expect(server.bufferedBytes()).toBe(2);
    client.resume();
    expect(got).toEqual([7, 8]);
    expect(server.bufferedBytes()).toBe(0);
  });
});
