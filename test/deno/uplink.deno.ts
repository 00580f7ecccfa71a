/**
 * The uplink under Deno, from source: an edge Ferry whose uplink (mqtt://, Ferry's own
 * client over the Deno adapter's connect port, src/runtime/deno/cloud-socket.ts) forwards
 * to a cloud that is a second Ferry under Deno. Messages published at the edge while the
 * cloud is up arrive in order on the mapped topic. Run with `deno task test:deno`.
 */
import { decodePublish, encode, RawClient } from "./raw-mqtt.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const PERMISSIONS = ["--allow-net", "--allow-read", "--allow-write", "--allow-env"];

function assertEquals<T>(actual: T, expected: T, what: string): void {
  if (actual !== expected) throw new Error(`${what}: expected ${String(expected)}, got ${String(actual)}`);
}

interface Serving {
  port: number;
  stderr: () => string;
  stop(): Promise<number>;
}

/** `edge/main.ts serve` under Deno with `config`; resolves once it prints where it listens. */
async function serve(dir: string, config: Record<string, unknown>): Promise<Serving> {
  await Deno.writeTextFile(`${dir}/ferry.json`, JSON.stringify(config));
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      ...PERMISSIONS,
      "edge/main.ts",
      "serve",
      "--config",
      `${dir}/ferry.json`,
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--admin-port",
      "off",
      "--data-dir",
      `${dir}/data`,
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
    while (!/listening mqtt:\/\/\S+\n/.test(out)) {
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
  return {
    port: Number(/listening mqtt:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]),
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

Deno.test("uplink under deno: messages published at the edge reach the cloud on the mapped topic, in order", async () => {
  const cloudDir = await Deno.makeTempDir({ prefix: "ferry-deno-cloud-" });
  const edgeDir = await Deno.makeTempDir({ prefix: "ferry-deno-edge-" });
  const cloud = await serve(cloudDir, {});
  let edge: Serving | undefined;
  try {
    const sub = await RawClient.connect(cloud.port, "cloud-sub");
    await sub.send(encode.subscribe(1, "site/#", 1));
    assertEquals((await sub.next()).type, 9, "SUBACK type");
    edge = await serve(edgeDir, {
      edge_id: "deno-edge",
      uplinks: [{
        name: "cloud",
        url: `mqtt://127.0.0.1:${cloud.port}`,
        forward: [{ filter: "sensors/#", topic: "site/${edge_id}/${topic}", qos: 1 }],
      }],
    });
    const pub = await RawClient.connect(edge.port, "edge-pub");
    for (let i = 1; i <= 5; i++) {
      await pub.send(encode.publish("sensors/t", `m${i}`, { qos: 1, packetId: i }));
      assertEquals((await pub.next()).type, 4, "PUBACK type");
    }
    // The uplink connects in the background; what is logged before it is up waits in the log.
    const got: string[] = [];
    for (let i = 1; i <= 5; i++) {
      const m = decodePublish(await sub.next(10_000));
      assertEquals(m.topic, "site/deno-edge/sensors/t", "mapped topic");
      got.push(m.payload);
      await sub.send(encode.puback(m.packetId!));
    }
    assertEquals(got.join(" "), "m1 m2 m3 m4 m5", "payloads in order");
    await Promise.all([pub.close(), sub.close()]);
  } finally {
    if (edge) assertEquals(await edge.stop(), 0, `edge exit code (log:\n${edge.stderr()})`);
    assertEquals(await cloud.stop(), 0, "cloud exit code");
    await Deno.remove(cloudDir, { recursive: true });
    await Deno.remove(edgeDir, { recursive: true });
  }
});

Deno.test("uplink under deno: the socket port's holdReads delivers what arrived during the hold in one read, and reading goes on after it", async () => {
  const { connectCloudSocket } = await import("../../src/runtime/deno/cloud-socket.ts");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepting = listener.accept();
  const reads: string[] = [];
  let closed = false;
  const socket = await connectCloudSocket({ host: "127.0.0.1", port }, {
    onData: (b) => void reads.push(new TextDecoder().decode(b)),
    onDrain() {},
    onClose: () => void (closed = true),
  })!;
  const peer = await accepting;
  peer.setNoDelay(true);
  const segment = (text: string) => peer.write(new TextEncoder().encode(text));
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const until = async (cond: () => boolean, what: string) => {
    for (let i = 0; i < 500 && !cond(); i++) await sleep(10);
    if (!cond()) throw new Error(`timed out waiting for ${what}; reads ${JSON.stringify(reads)}`);
  };
  try {
    await segment("a");
    await until(() => reads.length === 1, "the first read");
    socket.holdReads(1000);
    socket.holdReads(5); // no-op: the first hold stands
    for (const text of ["b", "c", "d"]) {
      await segment(text);
      await sleep(50); // time enough for a read, were there no hold
    }
    // A read already waiting when the hold began takes the first segment ("b"); the loop
    // then reads nothing until the hold ends, and takes "cd" at once.
    await until(() => reads.join("") === "abcd", "the held read");
    assertEquals(
      reads.length <= 3,
      true,
      `at most one read past the first and the held one (${JSON.stringify(reads)})`,
    );
    const before = reads.length;
    await segment("e");
    await until(() => reads.length === before + 1, "a read after the hold");
    assertEquals(reads.at(-1), "e", "the read after the hold");
  } finally {
    socket.close();
    peer.close();
    listener.close();
  }
  await until(() => closed, "the close");
});
