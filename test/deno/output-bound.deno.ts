/**
 * Write-side backpressure on Deno's adapters, from the outside: Ferry started under Deno
 * with a small `limits.max_output_bytes`, a client that sends PINGREQs and never reads,
 * and the admin API's /metrics as the witness. Over TCP the connection is paused (the
 * read loop stops, the client's writes block) and the output Ferry holds stays under the
 * bound; Deno's WebSocket cannot stop reading, so there Ferry holds what arrives while
 * paused up to its limit and then closes the connection. A TCP connection Ferry closes while
 * output for it still waits is not read any more either. And the read side's pre-auth budget:
 * with an address's budget full, a new TCP connection is closed as it is accepted, unread
 * (the adapter's `abort`). Run with `deno task test:deno`.
 */
import { partialConnect } from "../helpers/partial-connect.ts";
import { encode } from "./raw-mqtt.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];
const BOUND = 64 * 1024;

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

interface Broker {
  port: number;
  wsPort: number;
  metric(name: string): Promise<number>;
  stop(): Promise<void>;
}

async function startBroker(dir: string, bound = BOUND, limits: Record<string, number> = {}): Promise<Broker> {
  const config = `${dir}/ferry.json`;
  await Deno.writeTextFile(
    config,
    JSON.stringify({ limits: { max_output_bytes: bound, exempt_loopback: true, ...limits } }),
  );
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "edge/main.ts", "serve", "-c", config, "--host", "127.0.0.1", "--mqtt-port", "0"]
      .concat(["--ws-port", "0", "--admin-port", "0", "--data-dir", `${dir}/data`]),
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  while (!/listening http:\/\/\S+/.test(out)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`ferry under deno exited before listening:\n${out}`);
    out += decoder.decode(value, { stream: true });
  }
  const stdoutDone = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe drained */ }
  })();
  const port = Number(/listening mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
  const wsPort = Number(/listening ws:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
  const admin = /listening (http:\/\/\S+?)[\s)]/.exec(out)![1];
  return {
    port,
    wsPort,
    async metric(name) {
      const text = await (await fetch(`${admin}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith(`${name} `));
      return Number(line?.split(" ")[1] ?? NaN);
    },
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await stdoutDone;
    },
  };
}

function pingreqs(n: number): Uint8Array {
  const out = new Uint8Array(2 * n);
  for (let i = 0; i < out.length; i += 2) out[i] = 0xc0;
  return out;
}

/** Write `bytes`, unless the kernel takes nothing for `ms` (the peer does not read): then false. */
async function writeOrBlock(conn: Deno.Conn, bytes: Uint8Array, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const blocked = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  const done = conn.write(bytes).then(() => true, () => true);
  const r = await Promise.race([done, blocked]);
  clearTimeout(timer);
  return r;
}

Deno.test("ferry under deno: a TCP client that floods PINGREQs and never reads is paused; what Ferry holds stays under the bound", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-bound-" });
  const broker = await startBroker(dir);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: broker.port });
  try {
    await conn.write(encode.connect("flood"));
    await conn.read(new Uint8Array(4)); // CONNACK; never read again
    const batch = pingreqs(32 * 1024);
    let most = 0;
    let blocked = false;
    for (let i = 0; i < 2000 && !blocked; i++) {
      blocked = !(await writeOrBlock(conn, batch, 500));
      if (i % 8 === 0) most = Math.max(most, await broker.metric("ferry_output_bytes"));
    }
    assert(blocked, "the client's writes should block once Ferry stops reading");
    await eventually(async () => (await broker.metric("ferry_connections_paused")) === 1, 5000, "paused");
    const received = await broker.metric("ferry_bytes_received_total");
    await sleep(200);
    assert((await broker.metric("ferry_bytes_received_total")) === received, "Ferry reads nothing while paused");
    most = Math.max(most, await broker.metric("ferry_output_bytes"));
    assert(most > 0 && most <= BOUND + 2, `output held ${most} bytes, bound ${BOUND}`);
    assert((await broker.metric("ferry_reading_paused_total")) >= 1, "counted");
  } finally {
    conn.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ferry under deno: a WebSocket client that floods and never reads is closed once it sent too much while paused", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-bound-ws-" });
  const broker = await startBroker(dir);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: broker.wsPort });
  try {
    await conn.write(
      new TextEncoder().encode(
        "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
      ),
    );
    const head = new Uint8Array(1024);
    const n = await conn.read(head);
    assert(n !== null && new TextDecoder().decode(head.subarray(0, n)).startsWith("HTTP/1.1 101"), "upgraded");
    // Masked binary frames (RFC 6455 section 5.3) with a zero key: the payload goes as it is.
    const frame = (payload: Uint8Array) => {
      const len = payload.byteLength;
      const header = len < 126 ? [0x82, 0x80 | len] : [0x82, 0x80 | 126, len >> 8, len & 0xff];
      const out = new Uint8Array(header.length + 4 + len);
      out.set(header);
      out.set(payload, header.length + 4);
      return out;
    };
    await conn.write(frame(encode.connect("ws-flood")));
    const batch = frame(pingreqs(30_000));
    let closed = false;
    for (let i = 0; i < 2000 && !closed; i++) {
      await writeOrBlock(conn, batch, 200);
      closed = (await broker.metric("ferry_sockets")) === 0;
    }
    assert(closed, "Ferry closes a WebSocket that keeps sending while paused (Deno cannot stop reading it)");
    assert((await broker.metric("ferry_reading_paused_total")) >= 1, "it was paused first");
    assert((await broker.metric("ferry_output_bytes")) === 0, "nothing held once it is gone");
  } finally {
    conn.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ferry under deno: a TCP client flooding after its connection was closed for a malformed packet meets backpressure", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-closed-" });
  // A bound far above what waits here: only the close may stop the reading.
  const broker = await startBroker(dir, 512 * 1024 * 1024);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: broker.port });
  try {
    await conn.write(encode.connect("flood"));
    await conn.read(new Uint8Array(4)); // CONNACK; never read again
    const batch = pingreqs(32 * 1024);
    for (let i = 0; i < 2000 && (await broker.metric("ferry_output_bytes")) <= 256 * 1024; i++) {
      assert(await writeOrBlock(conn, batch, 2000), "Ferry reads until it closes the connection");
    }
    assert((await broker.metric("ferry_output_bytes")) > 256 * 1024, "output waits for the client");
    const errors = await broker.metric("ferry_protocol_errors_total");
    assert(await writeOrBlock(conn, Uint8Array.of(0x00, 0x00), 2000), "sent"); // packet type 0 is reserved
    await eventually(async () => (await broker.metric("ferry_protocol_errors_total")) > errors, 10_000, "closed");
    // Now nothing reads the client: its writes block once the kernel's buffers are full
    // (a few MB on loopback). Read and dropped, they would go on at the socket's speed.
    let written = 0;
    let blocked = false;
    const until = Date.now() + 3000;
    while (!blocked && Date.now() < until) {
      blocked = !(await writeOrBlock(conn, batch, 300));
      if (!blocked) written += batch.byteLength;
    }
    assert(blocked, `the client's writes should block once Ferry stops reading (${written} bytes taken)`);
    assert(written < 32 * 1024 * 1024, `${written} bytes taken after the close`);
  } finally {
    conn.close();
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ferry under deno: with an address's pre-auth budget full, a new TCP connection is closed unread", async () => {
  const dir = await Deno.makeTempDir({ prefix: "ferry-deno-preauth-" });
  const broker = await startBroker(dir, BOUND, { max_preauth_bytes_per_ip: 1024 * 1024 });
  const holder = await Deno.connect({ hostname: "127.0.0.1", port: broker.port });
  const late: Deno.Conn[] = [];
  try {
    // All but 2,576 bytes of the address's budget: a CONNECT that claims 1,046,000 bytes, all sent but the last.
    await holder.write(partialConnect(1_046_000, 1_045_999));
    await eventually(async () => (await broker.metric("ferry_preauth_bytes")) >= 1_045_999, 10_000, "budget held");
    const received = await broker.metric("ferry_bytes_received_total");
    for (let i = 0; i < 3; i++) {
      const c = await Deno.connect({ hostname: "127.0.0.1", port: broker.port });
      late.push(c);
      await c.write(partialConnect(1024 * 1024, 64 * 1024)).catch(() => 0);
      // Closed by Ferry: the read ends (EOF) or fails (reset).
      const ended = await Promise.race([
        c.read(new Uint8Array(16)).then((n) => n === null, () => true),
        sleep(5000).then(() => false),
      ]);
      assert(ended, `connection ${i} should be closed at accept`);
    }
    const refused = await broker.metric('ferry_limits_refused_total{reason="preauth_bytes"}');
    assert(refused === 3, `3 refusals counted, not ${refused}`);
    assert((await broker.metric("ferry_bytes_received_total")) === received, "nothing read from them");
  } finally {
    holder.close();
    for (const c of late) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
    await broker.stop();
    await Deno.remove(dir, { recursive: true });
  }
});
