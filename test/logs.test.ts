/**
 * What Ferry logs, read from a real `ferry serve` child: the startup lines, client connects
 * and disconnects in Mosquitto's words, log injection through client ids and usernames,
 * JSON lines, and syslog priority prefixes when stderr is the journal.
 */
import { afterAll, describe, expect, jest, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { type BrokerProcess, spawnBroker } from "./helpers/broker-process.ts";
import { connect, eventually } from "./helpers/clients.ts";
import { createLogger } from "../src/runtime/log-output.ts";
import { connectedLine, logField } from "../src/core/client-log.ts";
import { watchStorage } from "../src/runtime/storage-watch.ts";

const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const tmp = mkdtempSync(join(tmpdir(), "ferry-logs-"));
const running: BrokerProcess[] = [];
afterAll(async () => {
  for (const b of running) await b.kill();
  rmSync(tmp, { recursive: true, force: true });
});

async function broker(config: Record<string, unknown> = {}): Promise<BrokerProcess> {
  const b = await spawnBroker({
    dataDir: mkdtempSync(join(tmp, "data-")),
    config: { mqtt: { sys_interval: 0 }, ...config },
  });
  running.push(b);
  return b;
}

describe("ferry serve logs", () => {
  test("a startup line with the version, then the config file it loaded", async () => {
    const b = await broker();
    const lines = b.stderr().split("\n");
    expect(lines[0]).toMatch(
      new RegExp(`^\\S+ info ferry version ${pkg.version} \\(commit \\S+; bun [^;]+; [^)]+\\) starting$`),
    );
    expect(lines[1]).toMatch(/^\S+ info Config loaded from \S+\.config\.json\.$/);
  });

  test("connects and disconnects are logged as Mosquitto does, with the reason", async () => {
    const b = await broker();
    const c = await connect(`mqtt://127.0.0.1:${b.port}`, {
      protocolVersion: 5,
      clientId: "sensor-1",
      username: "alice",
      keepalive: 60,
      clean: true,
    });
    await eventually(() => b.stderr().includes("New client connected"), 5000, "connect line");
    expect(b.stderr()).toMatch(
      /info New client connected from 127\.0\.0\.1:\d+ as sensor-1 \(p5, c1, k60, u'alice'\)\.\n/,
    );
    await c.end();
    await eventually(() => b.stderr().includes("Client sensor-1 ["), 5000, "disconnect line");
    expect(b.stderr()).toMatch(/info Client sensor-1 \[127\.0\.0\.1:\d+\] disconnected: client sent DISCONNECT\.\n/);

    const v3 = await connect(`mqtt://127.0.0.1:${b.port}`, {
      protocolVersion: 4,
      clientId: "legacy",
      clean: false,
      keepalive: 5,
    });
    await eventually(() => b.stderr().includes("as legacy"), 5000, "3.1.1 connect line");
    expect(b.stderr()).toMatch(/as legacy \(p2, c0, k5\)\.\n/);
    v3.client.stream.destroy(); // no DISCONNECT: the socket just goes
    await eventually(() => b.stderr().includes("Client legacy ["), 5000, "3.1.1 disconnect line");
    expect(b.stderr()).toMatch(/Client legacy \[127\.0\.0\.1:\d+\] disconnected: closed its connection\.\n/);
    await v3.end(true);
  });

  test("a client id or username with a newline cannot forge a log line, and a huge one is cut short", async () => {
    const b = await broker();
    const forged = "x\n2026-01-01T00:00:00.000Z error forged line";
    const c = await connect(`mqtt://127.0.0.1:${b.port}`, {
      protocolVersion: 5,
      clientId: forged,
      username: `u${"A".repeat(60_000)}\r\nnext`,
    });
    await eventually(() => b.stderr().includes("New client connected"), 5000, "connect line");
    await c.end();
    await eventually(() => b.stderr().includes("disconnected:"), 5000, "disconnect line");
    const log = b.stderr();
    for (const line of log.split("\n")) {
      expect(line).not.toMatch(/^2026-01-01T00:00:00\.000Z error forged/);
      expect(line.length).toBeLessThan(1000);
    }
    expect(log).toContain("as x\\n2026-01-01T00:00:00.000Z error forged line (p5, c1, k60, u'uAAA");
    expect(log).toMatch(/\.\.\.\(\+59\d\d\d chars\)'\)\./);
  });

  test("a refused CONNECT with a 64 KB username logs it cut short", async () => {
    const b = await broker({ auth: { allow_anonymous: false } });
    const c = connect(`mqtt://127.0.0.1:${b.port}`, {
      protocolVersion: 5,
      clientId: "intruder\nforged",
      username: "B".repeat(65_000),
      password: "x",
      reconnectPeriod: 0,
    });
    await c.catch(() => {});
    await eventually(() => b.stderr().includes("refused "), 5000, "refusal line");
    const line = b.stderr().split("\n").find((l) => l.includes("refused "))!;
    expect(line).toContain("refused intruder\\nforged from 127.0.0.1:");
    expect(line).toContain(`(user '${"B".repeat(128)}...(+64872 chars)')`);
    expect(line.length).toBeLessThan(600);
  });

  test("log.format json writes one object per line", async () => {
    const b = await broker({ log: { format: "json" } });
    const first = JSON.parse(b.stderr().split("\n")[0]!);
    expect(first.level).toBe("info");
    expect(first.msg).toStartWith(`ferry version ${pkg.version}`);
    expect(Number.isNaN(Date.parse(first.time))).toBe(false);
  });

  test("under the journal (JOURNAL_STREAM names stderr) lines carry syslog priorities and no timestamp", async () => {
    // stderr is a file here; JOURNAL_STREAM names its device and inode, as systemd does for its stream.
    const errPath = join(tmp, "journal.err");
    const fd = openSync(errPath, "w");
    const st = statSync(errPath);
    const config = join(tmp, "journal.json");
    writeFileSync(config, JSON.stringify({ mqtt: { sys_interval: 0 }, admin: { port: null } }));
    const proc = Bun.spawn(
      [
        process.execPath,
        MAIN,
        "serve",
        "--host",
        "127.0.0.1",
        "-p",
        "0",
        "-d",
        mkdtempSync(join(tmp, "j-")),
        "-c",
        config,
      ],
      { stdin: "ignore", stdout: "pipe", stderr: fd, env: { ...process.env, JOURNAL_STREAM: `${st.dev}:${st.ino}` } },
    );
    closeSync(fd);
    try {
      const reader = proc.stdout.getReader();
      let out = "";
      while (!out.includes("listening mqtt://")) {
        const r = await reader.read();
        if (r.done) throw new Error(`exited: ${readFileSync(errPath, "utf8")}`);
        out += new TextDecoder().decode(r.value);
      }
      const port = Number(/listening mqtt:\/\/[^:]+:(\d+)/.exec(out)![1]);
      // A wrong password file is a warning-level event; here: a refused CONNECT is info, a ban a warning.
      const c = await connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clientId: "j1" });
      await c.end();
      await eventually(() => readFileSync(errPath, "utf8").includes("Client j1"), 5000, "disconnect line");
    } finally {
      proc.kill("SIGTERM");
      await proc.exited;
    }
    const lines = readFileSync(errPath, "utf8").trimEnd().split("\n");
    expect(lines[0]).toMatch(/^<6>info ferry version \S+ \(commit/);
    for (const line of lines) expect(line).toMatch(/^<[3467]>(debug|info|warn|error) /);
    expect(lines.some((l) => /^<6>info New client connected from 127\.0\.0\.1:\d+ as j1 /.test(l))).toBe(true);
  });
});

describe("log output", () => {
  test("levels map to syslog priorities; text lines get a timestamp only outside the journal", () => {
    const out: string[] = [];
    const at = () => new Date("2026-12-01T10:00:00.000Z");
    const journal = createLogger({ level: "debug", format: "text", journal: true, write: (l) => out.push(l), now: at });
    journal.error("e");
    journal.warn("w");
    journal.info("i");
    journal.debug("d");
    expect(out).toEqual(["<3>error e", "<4>warn w", "<6>info i", "<7>debug d"]);
    out.length = 0;
    const text = createLogger({ level: "warn", format: "text", journal: false, write: (l) => out.push(l), now: at });
    text.info("hidden");
    text.warn("a\nb");
    expect(out).toEqual(["2026-12-01T10:00:00.000Z warn a\\nb"]);
  });

  test("logField escapes control characters and caps the length", () => {
    expect(logField("a\u001b[31mred\u2028")).toBe("a\\x1b[31mred\\u2028");
    expect(logField("x".repeat(200))).toBe(`${"x".repeat(128)}...(+72 chars)`);
    expect(connectedLine({
      clientId: "c",
      username: undefined,
      version: 3,
      cleanStart: false,
      keepAlive: 0,
      conn: { remoteAddress: "[::1]:5" },
      closeReason: undefined,
    })).toBe("New client connected from [::1]:5 as c (p1, c0, k0).");
  });

  test("a full store is logged once when it fills and once when it has room again", () => {
    const out: string[] = [];
    const log = createLogger({ level: "debug", format: "text", journal: true, write: (l) => out.push(l) });
    let full = false;
    let refused = 0;
    // Bun's fake timers run the watch's checks (every 5 ms) as time is advanced, without sleeping.
    jest.useFakeTimers();
    try {
      const stop = watchStorage(
        { full: () => full, refused: () => refused, size: () => ({ messages: 10, bytes: 4096 }) },
        log,
        { everyMs: 5, maxBytes: 4096 },
      );
      jest.advanceTimersByTime(20);
      full = true;
      refused = 3;
      jest.advanceTimersByTime(30);
      refused = 250;
      jest.advanceTimersByTime(30);
      full = false;
      jest.advanceTimersByTime(30);
      // Full and free again between two checks: the refusals say it was full; logged all the same.
      refused = 260;
      jest.advanceTimersByTime(30);
      stop();
    } finally {
      jest.useRealTimers();
    }
    expect(out).toHaveLength(4);
    expect(out[2]).toStartWith("<3>error storage full:");
    expect(out[3]).toMatch(/room again after \d+ s; accepting publishes \(10 refused while it was full\)$/);
    expect(out[0]).toStartWith(
      "<3>error storage full: 10 messages, 4096 bytes (storage.max_bytes 4096); QoS 1/2 publishes are refused",
    );
    expect(out[1]).toMatch(
      /^<4>warn storage has room again after \d+ s; accepting publishes \(250 refused while it was full\)$/,
    );
  });
});
