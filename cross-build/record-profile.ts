/**
 * Record which functions Ferry runs when it starts and serves a client, for the
 * profile-guided bytecode layout of `bun build --compile --bytecode --bytecode-order`.
 *
 * Why: with `--bytecode` the executable carries its functions precompiled, so it does not
 * parse its own source at start; with an order file Bun puts the bytecode that run used
 * together at the front of each module, so a start reads (and keeps resident) fewer pages
 * of the executable. `cross-build/build.ts` builds a first executable for this machine,
 * runs it here, and builds every target with the order it wrote: functions are matched by
 * a hash of their syntax, so one order serves every target.
 *
 * The run is what an operator's broker does first: start with the defaults (on free ports,
 * in a temporary data directory), answer one admin request (`/healthz`, as a health probe
 * would; it loads the admin app), serve an MQTT 3.1.1 and an MQTT 5 client that each
 * subscribe, publish QoS 1 to themselves, ping and disconnect, then stop on SIGTERM. The
 * order file is written when the process exits.
 */
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "bun";

const TIMEOUT_MS = 30_000;
const TOPIC = "ferry/build-profile";

function utf8(text: string): number[] {
  const bytes = new TextEncoder().encode(text);
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

/** Fixed header + remaining length (all packets here are shorter than 128 bytes). */
function packet(first: number, body: number[]): Uint8Array {
  if (body.length > 127) throw new Error("profile packet too long");
  return new Uint8Array([first, body.length, ...body]);
}

/** One client's whole session, as bytes in the order sent. */
function session(version: 4 | 5): Uint8Array[] {
  const props = version === 5 ? [0] : [];
  const id = `ferry-profile-v${version}`;
  return [
    // CONNECT, clean start, keep alive 60.
    packet(0x10, [...utf8("MQTT"), version, 0x02, 0, 60, ...props, ...utf8(id)]),
    // SUBSCRIBE packet id 1, QoS 1.
    packet(0x82, [0, 1, ...props, ...utf8(TOPIC), 1]),
    // PUBLISH QoS 1, packet id 2.
    packet(0x32, [...utf8(TOPIC), 0, 2, ...props, ...new TextEncoder().encode("profile")]),
    packet(0xc0, []), // PINGREQ
  ];
}

/** Run one client's session; resolves once the PUBACK, the delivery and the PINGRESP came. */
function runClient(port: number, version: 4 | 5): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let seen = new Uint8Array(0);
    let done = false;
    // PUBACK (type 4) waits for the store's commit; the delivery (3) and PINGRESP (13) may
    // come before it.
    const awaited = new Set([3, 4, 13]);
    const finish = (socket: Socket, err?: Error) => {
      if (done) return;
      done = true;
      if (err) {
        socket.end();
        reject(err);
        return;
      }
      socket.write(packet(0xe0, [])); // DISCONNECT
      socket.end();
      resolve();
    };
    void Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(socket) {
          for (const p of session(version)) socket.write(p);
        },
        data(socket, data) {
          const all = new Uint8Array(seen.length + data.length);
          all.set(seen);
          all.set(data, seen.length);
          seen = all;
          // Walk whole packets (all short: one remaining-length byte).
          let i = 0;
          while (i + 2 <= seen.length && i + 2 + seen[i + 1]! <= seen.length) {
            const type = seen[i]! >> 4;
            if (type === 2 && seen[i + 3] !== 0) finish(socket, new Error(`CONNACK refused: ${seen[i + 3]}`));
            if (type === 3) {
              // The delivery of our own message, QoS 1: acknowledge its packet id.
              const topicLength = (seen[i + 2]! << 8) | seen[i + 3]!;
              const at = i + 4 + topicLength;
              socket.write(packet(0x40, [seen[at]!, seen[at + 1]!]));
            }
            awaited.delete(type);
            if (awaited.size === 0) finish(socket);
            i += 2 + seen[i + 1]!;
          }
          seen = seen.subarray(i);
        },
        close(socket) {
          finish(socket, new Error("connection closed before PINGRESP"));
        },
        error(socket, err) {
          finish(socket, err);
        },
      },
    }).catch(reject);
  });
}

/**
 * Run `executable` (built with `--bytecode`) as described above and return the order file
 * it wrote, under `workDir`. Throws if it does not start, serve or stop as expected.
 */
export async function recordBytecodeOrder(executable: string, workDir: string): Promise<string> {
  const orderFile = join(workDir, "ferry.order");
  rmSync(orderFile, { force: true });
  const dataDir = mkdtempSync(join(tmpdir(), "ferry-profile-"));
  const proc = Bun.spawn(
    [
      executable,
      "serve",
      "--host",
      "127.0.0.1",
      "--mqtt-port",
      "0",
      "--admin-port",
      "0",
      "--data-dir",
      dataDir,
    ],
    {
      env: { ...process.env, BUN_BYTECODE_ORDER_OUT: orderFile },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const guard = setTimeout(() => proc.kill("SIGKILL"), TIMEOUT_MS);
  const stderr = new Response(proc.stderr).text();
  try {
    const reader = proc.stdout.getReader();
    const decoder = new TextDecoder();
    let out = "";
    // main.ts prints every `listening` line at once, the admin API's last.
    while (!/listening http:\/\/\S+[^\n]*\n/.test(out)) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`the profile run exited before listening:\n${out}${await stderr}`);
      out += decoder.decode(value, { stream: true });
    }
    void (async () => {
      while (!(await reader.read()).done) { /* drain */ }
    })().catch(() => {});
    const mqttPort = Number(/listening mqtt:\/\/\S+:(\d+)/.exec(out)?.[1]);
    const admin = /listening (http:\/\/\S+)/.exec(out)?.[1];
    try {
      const health = await fetch(`${admin}/healthz`);
      await health.arrayBuffer();
      if (!health.ok) throw new Error(`GET /healthz answered ${health.status}`);
      await runClient(mqttPort, 4);
      await runClient(mqttPort, 5);
    } catch (err) {
      // No way to reach it (a network namespace whose loopback is down): the start alone
      // is still worth recording.
      console.error(`build: the profile has the start only, no clients: ${(err as Error).message}`);
    }
    proc.kill("SIGTERM");
    const code = await proc.exited;
    if (code !== 0) throw new Error(`the profile run exited with ${code}:\n${await stderr}`);
  } finally {
    clearTimeout(guard);
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    await proc.exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
  if (!existsSync(orderFile) || statSync(orderFile).size === 0) {
    throw new Error(`the profile run wrote no ${orderFile}`);
  }
  return orderFile;
}
