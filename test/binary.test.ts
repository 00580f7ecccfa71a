/**
 * The single executables `npm run build` writes to dist/, run as an operator runs them:
 * linux-x64 natively, linux-arm64 under qemu-user (`qemu-aarch64-static -cpu cortex-a53
 * -L /usr/aarch64-linux-gnu`). Each one serves on a free port with a temporary data
 * directory, carries a QoS 1 message from a subscriber to a publisher, stops on SIGTERM,
 * and finds its retained message again after a restart on the same directory.
 *
 * Skipped, with the reason in the test name, when a binary is not built or qemu is
 * missing; `.ci/run` builds them and installs qemu, so CI runs everything.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { serveArgs, spawnServe } from "./helpers/broker-process.ts";
import { connect } from "./helpers/clients.ts";

const DIST = join(import.meta.dir, "..", "dist");
const EXAMPLE = join(import.meta.dir, "..", "edge", "ferry.example.jsonc");
const QEMU = "qemu-aarch64-static";
const ARM64_SYSROOT = "/usr/aarch64-linux-gnu";
/**
 * The oldest core a 64-bit Raspberry Pi has (Pi 3, Zero 2 W): plain ARMv8.0, so an
 * executable that needs newer instructions fails here, not on the device. qemu's default
 * CPU ("max") would run anything.
 */
const ARM64_CPU = "cortex-a53";
const tmp = mkdtempSync(join(tmpdir(), "ferry-binary-"));
const children = new Set<Subprocess>();

afterAll(() => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
});

interface Variant {
  name: string;
  file: string;
  /** The command prefix that runs it on this machine. */
  launcher: string[];
  /** Why it cannot run here, if it cannot. */
  skip: string | undefined;
  /** Emulated binaries start slowly. */
  timeoutMs: number;
}

function variant(name: string): Variant {
  const file = join(DIST, `ferry-${name}`);
  const native = `${process.platform}-${process.arch}` === name;
  let skip: string | undefined = existsSync(file) ? undefined : `dist/ferry-${name} not built; run npm run build`;
  let launcher: string[] = [];
  if (!native && skip === undefined) {
    if (name !== "linux-arm64") skip = `cannot run ${name} on ${process.platform}-${process.arch}`;
    else if (!Bun.which(QEMU)) skip = `${QEMU} not installed (apt-get install qemu-user-static)`;
    else if (!existsSync(join(ARM64_SYSROOT, "lib", "ld-linux-aarch64.so.1"))) {
      skip = `${ARM64_SYSROOT} missing (apt-get install libc6-arm64-cross)`;
    } else launcher = [QEMU, "-cpu", ARM64_CPU, "-L", ARM64_SYSROOT];
  }
  return { name, file, launcher, skip, timeoutMs: native ? 30_000 : 120_000 };
}

async function runToEnd(
  v: Variant,
  ...args: string[]
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([...v.launcher, v.file, ...args], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(proc);
  const guard = setTimeout(() => proc.kill("SIGKILL"), v.timeoutMs / 2);
  const [stdout, stderr] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  const code = await proc.exited;
  clearTimeout(guard);
  return { code, stdout, stderr };
}

interface Serving {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  mqttUrl: string;
  wsUrl: string;
  stderr: () => string;
}

async function serve(v: Variant, dataDir: string): Promise<Serving> {
  const { proc, out, stderr } = await spawnServe(
    [...v.launcher, v.file, ...serveArgs(dataDir, { ws: true, admin: true })],
    { until: [/listening mqtt:\/\/\S+\n/, /listening ws:\/\/\S+\n/], timeoutMs: v.timeoutMs / 2 },
  );
  children.add(proc);
  const mqtt = /^listening (mqtt:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
  const ws = /^listening (ws:\/\/127\.0\.0\.1:\d+\/mqtt)$/m.exec(out);
  if (!mqtt || !ws) throw new Error(`unexpected output from ${v.name}:\n${out}`);
  return { proc, mqttUrl: mqtt[1]!, wsUrl: ws[1]!, stderr };
}

async function stop(s: Serving): Promise<number> {
  s.proc.kill("SIGTERM");
  const guard = setTimeout(() => s.proc.kill("SIGKILL"), 20_000);
  const code = await s.proc.exited;
  clearTimeout(guard);
  return code;
}

for (const name of ["linux-x64", "linux-arm64"]) {
  const v = variant(name);
  const title = v.skip
    ? `dist/ferry-${name} (skipped: ${v.skip})`
    : `dist/ferry-${name}${v.launcher.length ? ` under qemu (${ARM64_CPU})` : ""}`;
  if (v.skip) console.warn(`binary.test.ts: skipping ferry-${name}: ${v.skip}`);

  describe(title, () => {
    test.skipIf(v.skip !== undefined)(
      "version prints the package version, the git commit it was built from and the runtime",
      async () => {
        const r = await runToEnd(v, "version");
        expect(r.code).toBe(0);
        expect(r.stdout).toContain(`ferry ${pkg.version}`);
        expect(r.stdout).toMatch(/commit [0-9a-f]{7,}/);
        expect(r.stdout).toContain(`bun ${Bun.version}`);
        expect(r.stdout).toContain(name);
      },
      v.timeoutMs,
    );

    test.skipIf(v.skip !== undefined)(
      "check-config accepts edge/ferry.example.jsonc and rejects a bad file with exit 2 naming the key",
      async () => {
        // The example names /etc/ferry/passwd, which install.sh creates: look for it in a root that has it.
        const root = mkdtempSync(join(tmp, `root-${name}-`));
        mkdirSync(join(root, "etc", "ferry"), { recursive: true });
        writeFileSync(join(root, "etc", "ferry", "passwd"), "");
        const ok = await runToEnd(v, "check-config", "--root", root, EXAMPLE);
        expect(ok.stderr).toBe("");
        expect(ok.code).toBe(0);
        const bad = join(tmp, `bad-${name}.json`);
        writeFileSync(bad, `{ "mqtt": { "max_inflight": 0 } }`);
        const r = await runToEnd(v, "check-config", bad);
        expect(r.code).toBe(2);
        expect(r.stderr).toContain("mqtt.max_inflight");
      },
      v.timeoutMs,
    );

    test.skipIf(v.skip !== undefined)(
      "serves QoS 1 over TCP and WebSocket, stops on SIGTERM, and keeps the retained message across a restart",
      async () => {
        const dataDir = mkdtempSync(join(tmp, `data-${name}-`));
        let s = await serve(v, dataDir);
        try {
          const sub = await connect(s.mqttUrl, { protocolVersion: 5, clientId: `sub-${name}` });
          await sub.client.subscribeAsync(`smoke/${name}`, { qos: 1 });
          const pub = await connect(s.wsUrl, { clientId: `pub-${name}` });
          await pub.client.publishAsync(`smoke/${name}`, `hello from ${name}`, {
            qos: 1,
            retain: true,
          });
          const [m] = await sub.waitFor(1, 20_000);
          expect(m!.payload).toBe(`hello from ${name}`);
          expect(m!.packet.qos).toBe(1);
          await Promise.all([sub.end(), pub.end()]);
        } finally {
          expect(await stop(s)).toBe(0);
        }
        expect(s.stderr()).toContain("SIGTERM, shutting down");

        s = await serve(v, dataDir);
        try {
          const late = await connect(s.mqttUrl, { clientId: `late-${name}` });
          await late.client.subscribeAsync(`smoke/${name}`, { qos: 1 });
          const [m] = await late.waitFor(1, 20_000);
          expect(m!.payload).toBe(`hello from ${name}`);
          expect(m!.packet.retain).toBe(true);
          await late.end();
        } finally {
          expect(await stop(s)).toBe(0);
        }
      },
      v.timeoutMs * 2,
    );

    // The store's fsyncs run on Bun's thread pool, so that the event loop never waits for the
    // disk, and there is no storage thread unless `storage.writer_thread` asks for one. The
    // pool's threads (about 0.8 MB) start with the first commit, so an idle broker has none:
    // src/runtime/bun/read-file.ts reads the start-up files without it, and the clock mark
    // is saved only when it changes (src/sync/clock-marks.ts). Native only (not defined
    // under qemu, whose threads are its own).
    if (v.launcher.length > 0) return;
    test.skipIf(v.skip !== undefined)(
      "the store fsyncs on Bun's thread pool once there is a commit, and there is no storage thread by default",
      async () => {
        const dataDir = mkdtempSync(join(tmp, `threads-${name}-`));
        const s = await serve(v, dataDir);
        const threads = () =>
          readdirSync(`/proc/${s.proc.pid}/task`).map((t) => {
            try {
              return readFileSync(`/proc/${s.proc.pid}/task/${t}/comm`, "utf8").trim();
            } catch {
              return ""; // the thread ended meanwhile
            }
          });
        try {
          expect(threads().filter((n) => n.startsWith("Bun Pool"))).toEqual([]);
          const pub = await connect(s.mqttUrl, { clientId: `threads-pub-${name}` });
          await pub.client.publishAsync("threads/t", "durable", { qos: 1 });
          await pub.end();
          const names = threads();
          expect(names.filter((n) => n.startsWith("Bun Pool")).length).toBeGreaterThan(0);
          expect(names).not.toContain("Worker");
        } finally {
          expect(await stop(s)).toBe(0);
        }
      },
      v.timeoutMs,
    );
  });
}
