/**
 * The long fuzz run: `npm run fuzz` (FUZZ_CASES=200000 by default, FUZZ_SEED to repeat a
 * run). The generator of test/fuzz.test.ts, over TCP and WebSocket at once, against a
 * broker with the security features on — a password file (checked at a low cost so that
 * the run is about parsing, not hashing), ACL rules with %u/%c, and every abuse limit set
 * high enough that it is exercised without refusing most connections.
 *
 * Passes when the process did not crash, no fuzz input reached an internal error, every
 * connection was released, a fresh client still gets service, and the heap returns to
 * within FUZZ_MAX_HEAP_GROWTH_MB (default 64) of where it started once the sessions the
 * fuzz created are ended. Prints iterations, refusals and memory; exits 1 on failure.
 */
import mqttPacket from "mqtt-packet";
import net from "node:net";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hashPassword } from "../src/auth/password-hash.ts";
import { validateConfig } from "../src/config/load.ts";
import type { Logger } from "../src/core/logger.ts";
import { startServer } from "../src/runtime/bun/server.ts";
import { encode, mutate, prng, type Rng, sendOverTcp } from "../test/helpers/fuzz-packets.ts";

const TARGET = Number(process.env.FUZZ_CASES) || 200_000;
const SEED = Number(process.env.FUZZ_SEED) || (Math.random() * 2 ** 32) >>> 0;
const WORKERS = Number(process.env.FUZZ_WORKERS) || 24;
const MAX_GROWTH_MB = Number(process.env.FUZZ_MAX_HEAP_GROWTH_MB) || 64;
const DEADLINE = Date.now() + (Number(process.env.FUZZ_MINUTES) || 60) * 60_000;

console.log(`fuzz: ${TARGET} cases, seed ${SEED} (repeat with FUZZ_SEED=${SEED}), ${WORKERS} workers`);

const dir = mkdtempSync(join(tmpdir(), "ferry-fuzz-"));
const passwordFile = join(dir, "passwords");
// The generator's CONNECTs use username "u" and password "p".
writeFileSync(passwordFile, `u:${await hashPassword("p", 1000)}\nother:${await hashPassword("x", 1000)}\n`);

const internalErrors: string[] = [];
const logger: Logger = { debug() {}, info() {}, warn() {}, error: (m) => void internalErrors.push(m) };
const server = await startServer(
  validateConfig({
    listeners: { host: "127.0.0.1", mqtt_port: 0, ws_port: 0 },
    storage: { durability: "memory" },
    log_level: "silent",
    admin: { port: null },
    mqtt: { sys_interval: 0, max_packet_size: 16 * 1024, max_queued_bytes: 1024 * 1024 },
    auth: { allow_anonymous: true, password_file: passwordFile, reload_check_seconds: 0 },
    acl: {
      default: "allow",
      rules: [
        { action: "publish", topic: "a/b/c", permission: "deny" },
        { action: "all", topic: "%u/%c/#", permission: "allow" },
        { action: "subscribe", topic: "$SYS/#", permission: "deny", username: "u" },
        { action: "subscribe", topic: "fz/+", permission: "deny", client_id: "fz-b" },
      ],
    },
    limits: {
      exempt_loopback: false,
      connection_rate_per_ip: 100_000,
      max_connections_per_ip: 100_000,
      max_publish_rate: 2000,
      flapping: { max_connects: 5000, window_seconds: 1, ban_seconds: 1 },
      auth_failures: { max: 5000, window_seconds: 1, ban_seconds: 1 },
    },
  }),
  "fuzz",
  logger,
);
const core = server.broker;
const tcpPort = server.mqtt.port;
const wsUrl = `ws://127.0.0.1:${server.ws!.port}/mqtt`;

function viaWebSocket(all: Uint8Array, r: Rng): Promise<void> {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl, ["mqtt"]);
    ws.binaryType = "arraybuffer";
    let quiet: ReturnType<typeof setTimeout> | undefined;
    const done = () => {
      clearTimeout(quiet);
      clearTimeout(cap);
      try {
        ws.close();
      } catch {
        // already closed
      }
      resolve();
    };
    const cap = setTimeout(done, 1000);
    const settle = () => {
      clearTimeout(quiet);
      quiet = setTimeout(done, 25);
    };
    ws.onerror = done;
    ws.onclose = done;
    ws.onmessage = settle;
    ws.onopen = () => {
      // Frames split anywhere: MQTT packets need not align with WebSocket frames.
      for (let at = 0; at < all.length;) {
        const n = r.chance(0.5) ? all.length - at : 1 + r.int(64);
        ws.send(all.slice(at, at + n));
        at += n;
      }
      settle();
    };
  });
}

function endSession(clientId: string): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(tcpPort, "127.0.0.1");
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    parser.on("packet", (p) => {
      if (p.cmd === "connack") s.end(mqttPacket.generate({ cmd: "disconnect", reasonCode: 0 }, { protocolVersion: 5 }));
    });
    s.on("data", (d: Buffer) => parser.parse(d));
    s.on("error", () => resolve());
    s.on("close", () => resolve());
    s.write(
      mqttPacket.generate(
        {
          cmd: "connect",
          protocolId: "MQTT",
          protocolVersion: 5,
          clientId,
          clean: true,
          keepalive: 0,
          username: "u",
          password: Buffer.from("p"),
        },
        { protocolVersion: 5 },
      ),
    );
  });
}

Bun.gc(true);
const heapStart = process.memoryUsage().heapUsed;
const rssStart = process.memoryUsage().rss;
const r = prng(SEED);
let cases = 0;
let connections = 0;
let wsConnections = 0;
let nextReport = 20_000;
const started = Date.now();
const worker = async (): Promise<void> => {
  while (cases < TARGET && Date.now() < DEADLINE) {
    const version = r.pick([3, 4, 5] as const);
    const parts: Uint8Array[] = [];
    if (r.chance(0.65)) parts.push(encode(r, version, true));
    for (let i = 0, n = 1 + r.int(10); i < n; i++) {
      const dice = r.next();
      if (dice < 0.35) parts.push(encode(r, version));
      else if (dice < 0.8) parts.push(mutate(r, encode(r, version)));
      else parts.push(r.bytes(1 + r.int(r.chance(0.1) ? 2000 : 40)));
      cases++;
    }
    const all = new Uint8Array(Buffer.concat(parts));
    connections++;
    if (r.chance(0.3)) {
      wsConnections++;
      await viaWebSocket(all, r);
    } else await sendOverTcp(tcpPort, all, r);
    if (cases >= nextReport) {
      nextReport += 20_000;
      const mem = process.memoryUsage();
      console.log(
        `  ${cases} cases, ${connections} connections, ${((Date.now() - started) / 1000).toFixed(0)} s, heap ${
          (mem.heapUsed / 2 ** 20).toFixed(0)
        } MB, rss ${(mem.rss / 2 ** 20).toFixed(0)} MB`,
      );
    }
  }
};
await Promise.all(Array.from({ length: WORKERS }, worker));
const elapsed = (Date.now() - started) / 1000;

const problems: string[] = [];
const settleUntil = Date.now() + 10_000;
while (core.clients.size > 0 && Date.now() < settleUntil) await Bun.sleep(50);
if (core.clients.size > 0) problems.push(`${core.clients.size} connections still held after the run`);
if (internalErrors.length > 0) {
  problems.push(`internal errors:\n  ${[...new Set(internalErrors)].slice(0, 20).join("\n  ")}`);
}

// A fresh client still gets full service.
const check = await new Promise<string>((resolve) => {
  const s = net.connect(tcpPort, "127.0.0.1");
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  const timer = setTimeout(() => resolve("no answer"), 5000);
  parser.on("packet", (p) => {
    if (p.cmd === "connack") {
      s.write(
        mqttPacket.generate({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "u/after/#", qos: 1 }] }, {
          protocolVersion: 5,
        }),
      );
    } else if (p.cmd === "suback") {
      s.write(
        mqttPacket.generate({
          cmd: "publish",
          topic: "u/after/x",
          payload: "alive",
          qos: 1,
          messageId: 2,
          retain: false,
          dup: false,
        }, { protocolVersion: 5 }),
      );
    } else if (p.cmd === "publish") {
      clearTimeout(timer);
      s.destroy();
      resolve(String(p.payload));
    }
  });
  s.on("data", (d: Buffer) => parser.parse(d));
  s.write(
    mqttPacket.generate({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clientId: "after",
      clean: true,
      keepalive: 0,
      username: "u",
      password: Buffer.from("p"),
    }, { protocolVersion: 5 }),
  );
});
if (check !== "alive") problems.push(`a fresh client got no service after the run: ${check}`);

const ids = [...core.sessions.keys()];
for (let i = 0; i < ids.length; i += 32) await Promise.all(ids.slice(i, i + 32).map(endSession));
Bun.gc(true);
await Bun.sleep(100);
Bun.gc(true);
const grown = (process.memoryUsage().heapUsed - heapStart) / 2 ** 20;
const rss = process.memoryUsage().rss / 2 ** 20;
if (grown > MAX_GROWTH_MB) problems.push(`heap grew by ${grown.toFixed(1)} MB (bound ${MAX_GROWTH_MB} MB)`);

const m = core.metrics;
console.log(
  `fuzz: ${cases} cases on ${connections} connections (${wsConnections} WebSocket) in ${elapsed.toFixed(0)} s`,
);
console.log(
  `fuzz: ${m.protocolErrors} protocol errors, ${m.connectionsRefused} refused CONNECTs (${m.authBadCredentials} bad credentials, ${m.authNotAuthorized} not authorized, ${m.refusedBanned} banned), ` +
    `ACL denied ${m.aclDeniedPublish} publishes / ${m.aclDeniedSubscribe} subscriptions / ${m.aclDeniedDelivery} deliveries, ${m.disconnectedMessageRate} rate disconnects`,
);
console.log(
  `fuzz: ${ids.length} sessions ended; heap ${grown >= 0 ? "+" : ""}${grown.toFixed(1)} MB since the start, rss ${
    rss.toFixed(0)
  } MB (was ${(rssStart / 2 ** 20).toFixed(0)} MB)`,
);
await server.stop();
if (problems.length > 0) {
  console.error(`fuzz: FAILED (seed ${SEED})\n- ${problems.join("\n- ")}`);
  process.exit(1);
}
console.log("fuzz: ok");
process.exit(0);
