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
