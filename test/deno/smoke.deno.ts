/**
 * Ferry under Deno, from source: `edge/main.ts` started the way `deno task start` starts
 * it (same permissions), driven over real sockets. Run with `deno task test:deno`; bun
 * does not pick this file up (it is not named *.test.ts).
 */
import { decodePublish, encode, RawClient } from "./raw-mqtt.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function assertEquals<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${String(expected)}, got ${String(actual)}`);
  }
}

interface Broker {
  port: number;
  wsPort: number;
  child: Deno.ChildProcess;
  stderr: () => string;
  /** SIGTERM, then the exit code. */
  stop(): Promise<number>;
}

async function startBroker(dataDir: string): Promise<Broker> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      "edge/main.ts",
      "serve",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--ws-port",
      "0",
      "--admin-port",
      "0",
      "--data-dir",
      dataDir,
    ],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let err = "";
  const stderrDone = (async () => {
    const d = new TextDecoder();
    for await (const chunk of child.stderr) err += d.decode(chunk, { stream: true });
  })();
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let out = "";
  const guard = setTimeout(() => child.kill("SIGKILL"), 30_000);
  try {
    while (!(/listening mqtt:\/\/\S+\n/.test(out) && /listening ws:\/\/\S+\n/.test(out))) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`ferry under deno exited before listening:\n${out}\n${err}`);
      out += decoder.decode(value, { stream: true });
    }
  } finally {
    clearTimeout(guard);
  }
  const stdoutDone = (async () => {
    while (!(await reader.read()).done) { /* keep the pipe drained */ }
  })();
  const mqtt = /listening mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(out);
  const ws = /listening ws:\/\/127\.0\.0\.1:(\d+)\/mqtt/.exec(out);
  assert(mqtt && ws, `unexpected output: ${out}`);
  return {
    port: Number(mqtt[1]),
    wsPort: Number(ws[1]),
    child,
    stderr: () => err,
    async stop() {
      child.kill("SIGTERM");
      const kill = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const status = await child.status;
      clearTimeout(kill);
      await Promise.all([stderrDone, stdoutDone]);
      return status.code;
    },
  };
}

Deno.test("ferry under deno: a QoS 1 publish reaches a subscriber over TCP, and the retained message survives a restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ferry-deno-" });
  try {
    let broker = await startBroker(dataDir);
    try {
      const sub = await RawClient.connect(broker.port, "deno-sub");
      await sub.send(encode.subscribe(1, "deno/smoke/+", 1));
      const suback = await sub.next();
      assertEquals(suback.type, 9, "SUBACK type");
      assertEquals(suback.body[2], 1, "granted QoS");

      const pub = await RawClient.connect(broker.port, "deno-pub");
      await pub.send(
        encode.publish("deno/smoke/a", "hello from deno", { qos: 1, retain: true, packetId: 7 }),
      );
      const puback = await pub.next();
      assertEquals(puback.type, 4, "PUBACK type");
      assertEquals((puback.body[0]! << 8) | puback.body[1]!, 7, "PUBACK packet id");

      const delivered = await sub.next();
      assertEquals(delivered.type, 3, "PUBLISH type");
      const m = decodePublish(delivered);
      assertEquals(m.topic, "deno/smoke/a", "topic");
      assertEquals(m.payload, "hello from deno", "payload");
      assertEquals(m.qos, 1, "QoS");
      await sub.send(encode.puback(m.packetId!));
      await Promise.all([sub.close(), pub.close()]);
    } finally {
      const code = await broker.stop();
      assertEquals(code, 0, `exit code after SIGTERM (log:\n${broker.stderr()})`);
      assert(broker.stderr().includes("SIGTERM, shutting down"), "logs the shutdown");
    }

    broker = await startBroker(dataDir);
    try {
      const late = await RawClient.connect(broker.port, "deno-late");
      await late.send(encode.subscribe(1, "deno/smoke/#", 1));
      assertEquals((await late.next()).type, 9, "SUBACK type");
      const retained = decodePublish(await late.next());
      assertEquals(retained.topic, "deno/smoke/a", "retained topic");
      assertEquals(retained.payload, "hello from deno", "retained payload (from node:sqlite)");
      assert(retained.retain, "RETAIN flag set on a retained message");
      await late.send(encode.puback(retained.packetId!));
      await late.close();
    } finally {
      assertEquals(await broker.stop(), 0, "exit code after SIGTERM");
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("ferry under deno: MQTT over WebSocket on /mqtt answers CONNECT with CONNACK", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "ferry-deno-ws-" });
  const broker = await startBroker(dataDir);
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${broker.wsPort}/mqtt`, "mqtt");
    ws.binaryType = "arraybuffer";
    const connack = await new Promise<Uint8Array>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no CONNACK over WebSocket")), 5000);
      ws.onopen = () => ws.send(encode.connect("deno-ws"));
      ws.onmessage = (e) => {
        clearTimeout(timer);
        resolve(new Uint8Array(e.data as ArrayBuffer));
      };
      ws.onerror = (e) => {
        clearTimeout(timer);
        reject(new Error(`websocket error: ${(e as ErrorEvent).message}`));
      };
    });
    assertEquals(ws.protocol, "mqtt", "negotiated subprotocol");
    assertEquals([...connack].join(","), "32,2,0,0", "CONNACK bytes");
    const closed = new Promise((resolve) => (ws.onclose = resolve));
    ws.close();
    await closed;
  } finally {
    assertEquals(await broker.stop(), 0, "exit code after SIGTERM");
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("ferry under deno: version names the deno runtime; check-config exits 2 naming the key", async () => {
  const version = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...PERMISSIONS, "edge/main.ts", "version"],
    cwd: ROOT,
  }).output();
  assertEquals(version.code, 0, "version exit code");
  const text = new TextDecoder().decode(version.stdout);
  assert(text.includes(`deno ${Deno.version.deno}`), `version output names deno: ${text}`);

  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, `{ "mqtt": { "receive_maximum": 0 } }`);
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...PERMISSIONS, "edge/main.ts", "check-config", file],
      cwd: ROOT,
    }).output();
    assertEquals(check.code, 2, "check-config exit code");
    assert(
      new TextDecoder().decode(check.stderr).includes("mqtt.receive_maximum"),
      "names the key",
    );
  } finally {
    await Deno.remove(file);
  }
});
