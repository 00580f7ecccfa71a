/**
 * Password authentication over real sockets: the password file, the CONNACK codes for each
 * refusal, `ferry passwd` driven through the CLI, Mosquitto compatibility of the file
 * format, reload, and that no secret reaches a log.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdtempSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IConnackPacket, IConnectPacket } from "mqtt-packet";
import { Authenticator, dummyFor } from "../src/auth/authenticator.ts";
import { PasswordFile } from "../src/auth/password-file.ts";
import {
  hashPassword,
  MIN_ITERATIONS,
  parseHash,
  type PasswordHash,
  verifyPassword,
} from "../src/auth/password-hash.ts";
import { resolveAllowAnonymous } from "../src/config/security-options.ts";
import { validateConfig } from "../src/config/load.ts";
import type { Logger } from "../src/core/logger.ts";
import { startServer } from "../src/runtime/bun/server.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { spawnBroker } from "./helpers/broker-process.ts";
import { freePort, MOSQUITTO_LOG, spawnMosquitto } from "./helpers/cloud-broker.ts";
import { barrier, connect, eventually } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { RawClient, rawConnect } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const hasMosquitto = Bun.which("mosquitto") !== null && Bun.which("mosquitto_passwd") !== null;
const enc = new TextEncoder();

/** The CONNACK a raw client gets; the connection is closed after it (by the broker first when refused). */
async function connackFor(port: number, version: 4 | 5, c: Partial<IConnectPacket> = {}): Promise<IConnackPacket> {
  const { raw, ack } = await rawConnect(port, version, c);
  if ((ack.reasonCode ?? ack.returnCode) !== 0) await raw.waitClosed();
  raw.close();
  return ack;
}
const code = (ack: IConnackPacket) => ack.reasonCode ?? ack.returnCode;

let broker: TestBroker;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "ferry-auth-"));
  const passwordFile = await writePasswordFile({ alice: "alice-pw", bob: "bob-pw" }, dir);
  broker = await startBroker({ auth: { allow_anonymous: false, password_file: passwordFile } });
});
afterAll(() => broker.stop());

describe("password file authentication", () => {
  test("the right password connects, in v5 and 3.1.1", async () => {
    expect(code(await connackFor(broker.port, 5, { username: "alice", password: Buffer.from("alice-pw") }))).toBe(0);
    expect(code(await connackFor(broker.port, 4, { username: "bob", password: Buffer.from("bob-pw") }))).toBe(0);
  });

  test("a wrong password is refused: v5 0x86 Bad User Name or Password, 3.1.1 return code 4", async () => {
    const before = broker.server.broker.metrics.authBadCredentials;
    expect(code(await connackFor(broker.port, 5, { username: "alice", password: Buffer.from("wrong") }))).toBe(0x86);
    expect(code(await connackFor(broker.port, 4, { username: "alice", password: Buffer.from("wrong") }))).toBe(4);
    expect(broker.server.broker.metrics.authBadCredentials - before).toBe(2);
  });

  test("an unknown user is refused exactly like a wrong password: 0x86 / 4", async () => {
    expect(code(await connackFor(broker.port, 5, { username: "mallory", password: Buffer.from("alice-pw") }))).toBe(
      0x86,
    );
    expect(code(await connackFor(broker.port, 4, { username: "mallory", password: Buffer.from("x") }))).toBe(4);
  });

  test("a username without a password is refused: 0x86 / 4", async () => {
    expect(code(await connackFor(broker.port, 5, { username: "alice" }))).toBe(0x86);
    expect(code(await connackFor(broker.port, 4, { username: "bob" }))).toBe(4);
  });

  test("an anonymous client is refused: v5 0x87 Not authorized, 3.1.1 return code 5", async () => {
    const before = broker.server.broker.metrics.authNotAuthorized;
    expect(code(await connackFor(broker.port, 5))).toBe(0x87);
    expect(code(await connackFor(broker.port, 4))).toBe(5);
    expect(broker.server.broker.metrics.authNotAuthorized - before).toBe(2);
  });

  test("a refused client does not take over the session of the client id it names [MQTT-3.1.4-3 happens after auth]", async () => {
    const owner = await connect(broker.url, { clientId: "owned", username: "alice", password: "alice-pw" });
    let kicked = false;
    owner.client.on("close", () => (kicked = true));
    expect(
      code(await connackFor(broker.port, 5, { clientId: "owned", username: "alice", password: Buffer.from("nope") })),
    ).toBe(0x86);
    await barrier(owner); // a taken-over connection would not answer
    expect(kicked).toBe(false);
    expect(owner.client.connected).toBe(true);
    await owner.end();
  });

  test("packets pipelined behind a CONNECT wait for the password check and are processed after CONNACK", async () => {
    const sub = await connect(broker.url, { username: "bob", password: "bob-pw" });
    await sub.client.subscribeAsync("auth/pipelined");
    const raw = await RawClient.open(broker.port, 5);
    raw.send({
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clientId: "pipe",
      clean: true,
      keepalive: 60,
      username: "alice",
      password: Buffer.from("alice-pw"),
    });
    raw.send({
      cmd: "publish",
      topic: "auth/pipelined",
      payload: "after the hash",
      qos: 1,
      messageId: 7,
      retain: false,
      dup: false,
    });
    expect((await raw.next("connack")).reasonCode).toBe(0);
    expect((await raw.next("puback")).messageId).toBe(7);
    expect((await sub.waitFor(1))[0]!.payload).toBe("after the hash");
    raw.close();
    await sub.end();
  });

  test("an unknown user costs a password hash too (no timing shortcut for user existence)", async () => {
    const users = new Map([["alice", parseHash(await hashPassword("alice-pw", MIN_ITERATIONS))]]);
    const auth = new Authenticator({ allowAnonymous: false, useIdentityAsUsername: false });
    auth.setUsers(users);
    const time = async (username: string) => {
      const t = performance.now();
      const r = await auth.authenticate({ username, password: enc.encode("guess"), certificate: undefined });
      expect(r.ok).toBe(false);
      return performance.now() - t;
    };
    await time("alice"); // warm up
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 3; i++) {
      known.push(await time("alice"));
      unknown.push(await time("nobody"));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[1]!;
    // The dummy hash uses at least the file's highest cost, so the unknown user is never much quicker.
    expect(median(unknown)).toBeGreaterThan(median(known) * 0.5);
  });

  test("an unknown user costs what a known one does with a mosquitto_passwd file (101 iterations), not a fixed 210,000", async () => {
    const users = new Map<string, PasswordHash>();
    for (const name of ["ann", "ben", "cat"]) users.set(name, parseHash(await hashPassword(`${name}-pw`, 101)));
    const auth = new Authenticator({ allowAnonymous: false, useIdentityAsUsername: false });
    auth.setUsers(users);
    expect(auth.dummy).toMatchObject({ kind: "pbkdf2-sha512", iterations: 101 });
    const time = async (username: string) => {
      const t = performance.now();
      const r = await auth.authenticate({ username, password: enc.encode("guess"), certificate: undefined });
      expect(r.ok).toBe(false);
      return performance.now() - t;
    };
    await time("ann");
    await time("nobody"); // warm up both paths
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 7; i++) {
      known.push(await time("ben"));
      unknown.push(await time(`nobody-${i}`));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[3]!;
    // Before: unknown ~100 ms against ~0.6 ms known, so one try told whether a user exists.
    expect(median(unknown)).toBeLessThan(median(known) * 3 + 2);
  });

  test("the dummy hash takes the parameters most users in the file have", () => {
    const line = (iterations: number) => parseHash(`$7$${iterations}$${btoa("123456789012")}$${btoa("x".repeat(64))}`);
    expect(dummyFor(undefined)).toMatchObject({ kind: "pbkdf2-sha512", iterations: 210_000 });
    expect(dummyFor(new Map([["a", line(101)], ["b", line(101)], ["c", line(500_000)]])))
      .toMatchObject({ kind: "pbkdf2-sha512", iterations: 101 });
    expect(dummyFor(new Map([["a", line(101)], ["c", line(500_000)]]))).toMatchObject({ iterations: 500_000 });
    const six = parseHash(`$6$${btoa("salt-salt")}$${btoa("y".repeat(64))}`);
    expect(dummyFor(new Map([["a", six], ["b", six], ["c", line(101)]]))).toMatchObject({ kind: "sha512" });
  });

  test("password checks run off the event loop: timers keep firing during a burst of logins", async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const logins = Array.from(
      { length: 6 },
      (_, i) =>
        connackFor(broker.port, 5, {
          clientId: `burst-${i}`,
          username: "alice",
          password: Buffer.from(i % 2 ? "alice-pw" : "bad"),
        }),
    );
    const started = performance.now();
    await Promise.all(logins);
    const elapsed = performance.now() - started;
    clearInterval(timer);
    // A blocked loop would fire almost no ticks while six PBKDF2 runs take place.
    expect(ticks).toBeGreaterThan(elapsed / 10 / 3);
  });
});

describe("auth.allow_anonymous default", () => {
  const resolve = (host: string, allow?: boolean) =>
    resolveAllowAnonymous(
      validateConfig({ listeners: { host }, ...(allow === undefined ? {} : { auth: { allow_anonymous: allow } }) }),
    );

  test("is true when the listeners bind to a loopback address", () => {
    expect(resolve("127.0.0.1")).toBe(true);
    expect(resolve("::1")).toBe(true);
    expect(resolve("localhost")).toBe(true);
  });

  test("is false when they bind to any other address", () => {
    expect(resolve("0.0.0.0")).toBe(false);
    expect(resolve("192.168.1.10")).toBe(false);
  });

  test("the defaults (127.0.0.1, local-only like Mosquitto 2) allow anonymous clients", () => {
    expect(resolveAllowAnonymous(validateConfig({}))).toBe(true);
  });

  test("is false on loopback too once a password file or certificate identities are configured (as Mosquitto 2)", () => {
    const cfg = (c: Record<string, unknown>) =>
      resolveAllowAnonymous(validateConfig({ listeners: { host: "127.0.0.1" }, ...c }));
    expect(cfg({ auth: { password_file: "/etc/ferry/passwd" } })).toBe(false);
    expect(cfg({ tls: { ca: "ca.pem", use_identity_as_username: true } })).toBe(false);
    expect(cfg({ auth: { password_file: "/etc/ferry/passwd", allow_anonymous: true } })).toBe(true);
  });

  test("a loopback broker with a password file refuses anonymous clients unless allowed (a local proxy must not open it)", async () => {
    const path = await writePasswordFile({ uma: "uma-pw" }, dir);
    const b = await startBroker({ auth: { password_file: path } });
    try {
      expect(code(await connackFor(b.port, 5))).toBe(0x87);
      expect(code(await connackFor(b.port, 4))).toBe(5);
      expect(code(await connackFor(b.port, 5, { username: "uma", password: Buffer.from("uma-pw") }))).toBe(0);
    } finally {
      await b.stop();
    }
  });

  test("an explicit setting wins either way", () => {
    expect(resolve("0.0.0.0", true)).toBe(true);
    expect(resolve("127.0.0.1", false)).toBe(false);
  });

  test("a loopback broker without a password file lets anonymous clients and unchecked usernames in", async () => {
    const b = await startBroker();
    expect(code(await connackFor(b.port, 5))).toBe(0);
    expect(code(await connackFor(b.port, 4, { username: "anyone" }))).toBe(0);
    await b.stop();
  });
});

describe("password hashes", () => {
  test("the format is Mosquitto's $7$ PBKDF2-SHA512 with the cost in the line, and verification is exact", async () => {
    const line = await hashPassword("pw", MIN_ITERATIONS);
    expect(line).toMatch(/^\$7\$100000\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}$/);
    const h = parseHash(line);
    expect(await verifyPassword(enc.encode("pw"), h)).toBe(true);
    expect(await verifyPassword(enc.encode("pw "), h)).toBe(false);
    // A fresh salt every time.
    expect(await hashPassword("pw", MIN_ITERATIONS)).not.toBe(line);
  });

  test("a bad line is reported by number, never with its hash", () => {
    const { problems } = PasswordFile.parse("alice:$7$100$AAAA$short\n# comment\n\nbob\n");
    expect(problems).toEqual([expect.stringMatching(/^line 1: /), expect.stringMatching(/^line 4: /)]);
    expect(problems.join()).not.toContain("short");
  });

  test.skipIf(!hasMosquitto)("a file made by mosquitto_passwd works in Ferry", async () => {
    const path = join(dir, "mosquitto.pw");
    const r = Bun.spawnSync(["mosquitto_passwd", "-c", "-b", path, "mosq-user", "mosq-pw"]);
    expect(r.exitCode).toBe(0);
    const b = await startBroker({ auth: { allow_anonymous: false, password_file: path } });
    try {
      expect(code(await connackFor(b.port, 5, { username: "mosq-user", password: Buffer.from("mosq-pw") }))).toBe(0);
      expect(code(await connackFor(b.port, 5, { username: "mosq-user", password: Buffer.from("x") }))).toBe(0x86);
    } finally {
      await b.stop();
    }
  });

  test.skipIf(!hasMosquitto)("a file made by ferry passwd works in Mosquitto 2", async () => {
    // Mosquitto started as root reads its files as the mosquitto user.
    const mdir = mkdtempSync(join(tmpdir(), "ferry-mosq-"));
    chmodSync(mdir, 0o755);
    const path = join(mdir, "for-mosquitto.pw");
    expect((await passwd(["-c", "--stdin", path, "ferry-user"], "ferry-pw\n")).exitCode).toBe(0);
    chmodSync(path, 0o644);
    const port = await freePort();
    const conf = join(mdir, "mosquitto.conf");
    writeFileSync(
      conf,
      [`listener ${port} 127.0.0.1`, "allow_anonymous false", `password_file ${path}`, ...MOSQUITTO_LOG, ""].join("\n"),
    );
    const mosq = await spawnMosquitto(conf);
    try {
      const pub = (pw: string) =>
        Bun.spawn([
          "mosquitto_pub",
          "-h",
          "127.0.0.1",
          "-p",
          `${port}`,
          "-u",
          "ferry-user",
          "-P",
          pw,
          "-t",
          "t",
          "-m",
          "m",
        ], {
          stdout: "ignore",
          stderr: "ignore",
        }).exited;
      expect(await pub("ferry-pw")).toBe(0);
      expect(await pub("wrong")).not.toBe(0);
    } finally {
      await mosq.kill("SIGTERM");
    }
  });
});

/** Run `ferry passwd ARGS` through the real CLI with `stdin` as its input. */
async function passwd(args: string[], stdin: string): Promise<{ exitCode: number; stderr: string; stdout: string }> {
  const proc = Bun.spawn([process.execPath, MAIN, "passwd", ...args], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  proc.stdin.write(stdin);
  await proc.stdin.end();
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  return { exitCode: await proc.exited, stdout, stderr };
}

describe("ferry passwd", () => {
  test("creates, adds, changes and deletes users; a broker started on the file follows along", async () => {
    const path = join(dir, "cli.pw");
    expect((await passwd(["-c", "--stdin", path, "carol"], "carol-1\n")).exitCode).toBe(0);
    expect((await passwd(["--stdin", path, "dave"], "dave-1\n")).exitCode).toBe(0);
    expect((await passwd(["--stdin", path, "carol"], "carol-2\n")).exitCode).toBe(0); // change
    expect(statSync(path).mode & 0o777).toBe(0o640); // a new file: owner writes, the broker's group reads
    const text = readFileSync(path, "utf8");
    expect(text).toMatch(/^carol:\$7\$210000\$[^$]+\$[^$\n]+\ndave:\$7\$210000\$/);
    expect(text).not.toContain("carol-2");

    const data = join(dir, "cli-data");
    const proc = await spawnBroker({
      dataDir: data,
      config: { auth: { password_file: path, allow_anonymous: false }, log_level: "debug" },
    });
    try {
      expect(code(await connackFor(proc.port, 5, { username: "carol", password: Buffer.from("carol-2") }))).toBe(0);
      expect(code(await connackFor(proc.port, 5, { username: "carol", password: Buffer.from("carol-1") }))).toBe(0x86);
      expect(code(await connackFor(proc.port, 4, { username: "dave", password: Buffer.from("dave-1") }))).toBe(0);

      // Delete dave, then SIGHUP: the running broker refuses him from then on.
      expect((await passwd(["-D", path, "dave"], "")).exitCode).toBe(0);
      expect(readFileSync(path, "utf8")).not.toContain("dave:");
      proc.proc.kill("SIGHUP");
      await eventually(() => proc.stderr().includes("auth: reloaded 1 users"), 5000, "the reload");
      expect(code(await connackFor(proc.port, 4, { username: "dave", password: Buffer.from("dave-1") }))).toBe(4);
      // No password, and no hash, in the broker's log, even at debug level.
      const log = proc.stderr();
      expect(log).toContain("reloaded 1 users");
      for (
        const secret of [
          "carol-1",
          "carol-2",
          "dave-1",
          ...text.split("\n").filter(Boolean).map((l) => l.split(":")[1]!),
        ]
      ) {
        expect(log).not.toContain(secret);
      }
    } finally {
      await proc.kill("SIGTERM");
    }
  });

  test("a new file is created 0640 whatever the umask", async () => {
    const path = join(dir, "new-0640.pw");
    const before = process.umask(0o077); // the child inherits it
    try {
      expect((await passwd(["-c", "--stdin", path, "nina"], "nina-1\n")).exitCode).toBe(0);
    } finally {
      process.umask(before);
    }
    expect(statSync(path).mode & 0o7777).toBe(0o640);
  });

  test("rewriting a file keeps its owner, group and mode (sudo ferry passwd must not lock the broker out)", async () => {
    const path = join(dir, "owned.pw");
    expect((await passwd(["-c", "--stdin", path, "olga"], "olga-1\n")).exitCode).toBe(0);
    const root = process.getuid?.() === 0;
    // As install.sh leaves it: root:ferry 0640. Here: nobody:nogroup when the test runs as root.
    if (root) chownSync(path, 65534, 65534);
    chmodSync(path, 0o620);
    const before = statSync(path);
    expect((await passwd(["--stdin", path, "paul"], "paul-1\n")).exitCode).toBe(0); // add
    expect((await passwd(["--stdin", path, "olga"], "olga-2\n")).exitCode).toBe(0); // change
    expect((await passwd(["-D", path, "paul"], "")).exitCode).toBe(0); // delete
    expect((await passwd(["-c", "--stdin", path, "olga"], "olga-3\n")).exitCode).toBe(0); // re-create
    const after = statSync(path);
    expect(after.mode & 0o7777).toBe(0o620);
    expect([after.uid, after.gid]).toEqual([before.uid, before.gid]);
    if (root) expect([after.uid, after.gid]).toEqual([65534, 65534]);
    expect(readFileSync(path, "utf8")).toMatch(/^olga:\$7\$/);
  });

  test("through a symlink the file it points to is rewritten and the link stays", async () => {
    const real = join(dir, "real.pw");
    const link = join(dir, "link.pw");
    expect((await passwd(["-c", "--stdin", real, "quinn"], "q-1\n")).exitCode).toBe(0);
    symlinkSync(real, link);
    expect((await passwd(["--stdin", link, "rosa"], "r-1\n")).exitCode).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(readFileSync(real, "utf8")).toContain("rosa:");
  });

  test("a world-readable file is warned about, by ferry passwd and by the broker that loads it", async () => {
    const path = join(dir, "world.pw");
    expect((await passwd(["-c", "--stdin", path, "sam"], "s-1\n")).stderr).not.toContain("readable by every user");
    chmodSync(path, 0o644);
    const r = await passwd(["--stdin", path, "tess"], "t-1\n");
    expect(r.exitCode).toBe(0);
    expect(r.stderr).toContain(`${path} is readable by every user (mode 0644)`);
    const logs: string[] = [];
    const logger: Logger = { debug() {}, info() {}, warn: (m) => logs.push(m), error: (m) => logs.push(m) };
    const server = await startServer(
      validateConfig({
        listeners: { host: "127.0.0.1", mqtt_port: 0 },
        storage: { durability: "memory" },
        auth: { password_file: path, reload_check_seconds: 0 },
        admin: { port: null },
      }),
      "test",
      logger,
    );
    await server.stop();
    expect(logs.some((l) => l.includes(`${path} is readable by every user (mode 0644)`))).toBe(true);
  });

  test("refuses what it cannot do: no terminal without --stdin, a missing file without -c, unknown users, bad names", async () => {
    const path = join(dir, "refusals.pw");
    expect((await passwd(["--stdin", path, "erin"], "x\n")).stderr).toContain("no such file");
    expect((await passwd(["-c", "--stdin", path, "erin"], "\n")).stderr).toContain("empty password");
    expect((await passwd(["-c", "--stdin", path, "er:in"], "x\n")).exitCode).toBe(2);
    expect((await passwd(["-c", "--stdin", "--iterations", "1000", path, "erin"], "x\n")).exitCode).toBe(2);
    expect((await passwd(["-c", "--stdin", path, "erin"], "x\n")).exitCode).toBe(0);
    const noTty = await passwd([path, "erin"], "x\n");
    expect(noTty.exitCode).toBe(1);
    expect(noTty.stderr).toContain("--stdin");
    expect((await passwd(["-D", path, "frank"], "")).stderr).toContain("not in");
  });
});

describe("reload and secrets", () => {
  test("an uplink URL with credentials in it is a config error (URLs are logged and shown by the admin API)", () => {
    expect(() => validateConfig({ uplinks: [{ name: "cloud", url: "mqtts://edge:hunter2@cloud.example:8883" }] }))
      .toThrow(
        /uplinks\[0\]\.url: no user:password@/,
      );
  });

  test("a changed password file is picked up by reload(); a broken one keeps the previous users", async () => {
    const path = await writePasswordFile({ gina: "old" });
    const logs: string[] = [];
    const logger: Logger = {
      debug: (m) => logs.push(m),
      info: (m) => logs.push(m),
      warn: (m) => logs.push(m),
      error: (m) => logs.push(m),
    };
    const config = validateConfig({
      listeners: { host: "127.0.0.1", mqtt_port: 0 },
      storage: { durability: "memory" },
      mqtt: { sys_interval: 0 },
      auth: { password_file: path, allow_anonymous: false, reload_check_seconds: 0 },
      admin: { port: null },
    });
    const server = await startServer(config, "test", logger);
    const port = server.mqtt.port;
    try {
      expect(code(await connackFor(port, 5, { username: "gina", password: Buffer.from("old") }))).toBe(0);
      const newLine = `gina:${await hashPassword("new", MIN_ITERATIONS)}\n`;
      writeFileSync(path, newLine);
      await server.reload();
      expect(code(await connackFor(port, 5, { username: "gina", password: Buffer.from("new") }))).toBe(0);
      expect(code(await connackFor(port, 5, { username: "gina", password: Buffer.from("old") }))).toBe(0x86);

      writeFileSync(path, "gina:not-a-hash\n");
      await server.reload();
      expect(logs.some((l) => l.includes("reload failed") && l.includes("line 1"))).toBe(true);
      expect(code(await connackFor(port, 5, { username: "gina", password: Buffer.from("new") }))).toBe(0);

      const joined = logs.join("\n");
      expect(joined).toContain("refused");
      for (const secret of ["old", "new", newLine.split(":")[1]!.trim(), "not-a-hash"]) {
        expect(joined.split(/\s+/)).not.toContain(secret);
        if (secret.length > 8) expect(joined).not.toContain(secret);
      }
    } finally {
      await server.stop();
    }
  });
});
