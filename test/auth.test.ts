/**
 * Password authentication over real sockets: the password file, the CONNACK codes for each
 * refusal, `ferry passwd` driven through the CLI, Mosquitto compatibility of the file
 * format, reload, and that no secret reaches a log.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { chmodSync, mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import type { IConnackPacket, IConnectPacket } from "mqtt-packet";
import { Authenticator } from "../src/auth/authenticator.ts";
import { PasswordFile } from "../src/auth/password-file.ts";
import { hashPassword, MIN_ITERATIONS, parseHash, verifyPassword } from "../src/auth/password-hash.ts";
import { resolveAllowAnonymous } from "../src/config/security-options.ts";
import { validateConfig } from "../src/config/load.ts";
import type { Logger } from "../src/core/logger.ts";
import { startServer } from "../src/runtime/bun/server.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { spawnBroker } from "./helpers/broker-process.ts";
import { connect } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";
import { RawClient } from "./helpers/raw-client.ts";

setDefaultTimeout(20_000);

const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const hasMosquitto = Bun.which("mosquitto") !== null && Bun.which("mosquitto_passwd") !== null;
const enc = new TextEncoder();

async function rawConnect(port: number, version: 4 | 5, c: Partial<IConnectPacket> = {}): Promise<IConnackPacket> {
  const raw = await RawClient.open(port, version);
  raw.send({
    cmd: "connect",
    protocolId: "MQTT",
    protocolVersion: version,
    clientId: "",
    clean: true,
    keepalive: 60,
    ...c,
  }, version);
  const ack = await raw.next("connack");
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
    expect(code(await rawConnect(broker.port, 5, { username: "alice", password: Buffer.from("alice-pw") }))).toBe(0);
    expect(code(await rawConnect(broker.port, 4, { username: "bob", password: Buffer.from("bob-pw") }))).toBe(0);
  });

  test("a wrong password is refused: v5 0x86 Bad User Name or Password, 3.1.1 return code 4", async () => {
    const before = broker.server.broker.metrics.authBadCredentials;
    expect(code(await rawConnect(broker.port, 5, { username: "alice", password: Buffer.from("wrong") }))).toBe(0x86);
    expect(code(await rawConnect(broker.port, 4, { username: "alice", password: Buffer.from("wrong") }))).toBe(4);
    expect(broker.server.broker.metrics.authBadCredentials - before).toBe(2);
  });

  test("an unknown user is refused exactly like a wrong password: 0x86 / 4", async () => {
    expect(code(await rawConnect(broker.port, 5, { username: "mallory", password: Buffer.from("alice-pw") }))).toBe(
      0x86,
    );
    expect(code(await rawConnect(broker.port, 4, { username: "mallory", password: Buffer.from("x") }))).toBe(4);
  });

  test("a username without a password is refused: 0x86 / 4", async () => {
    expect(code(await rawConnect(broker.port, 5, { username: "alice" }))).toBe(0x86);
    expect(code(await rawConnect(broker.port, 4, { username: "bob" }))).toBe(4);
  });

  test("an anonymous client is refused: v5 0x87 Not authorized, 3.1.1 return code 5", async () => {
    const before = broker.server.broker.metrics.authNotAuthorized;
    expect(code(await rawConnect(broker.port, 5))).toBe(0x87);
    expect(code(await rawConnect(broker.port, 4))).toBe(5);
    expect(broker.server.broker.metrics.authNotAuthorized - before).toBe(2);
  });

  test("a refused client does not take over the session of the client id it names [MQTT-3.1.4-3 happens after auth]", async () => {
    const owner = await connect(broker.url, { clientId: "owned", username: "alice", password: "alice-pw" });
    let kicked = false;
    owner.client.on("close", () => (kicked = true));
    expect(
      code(await rawConnect(broker.port, 5, { clientId: "owned", username: "alice", password: Buffer.from("nope") })),
    ).toBe(0x86);
    await Bun.sleep(100);
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

  test("password checks run off the event loop: timers keep firing during a burst of logins", async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    const logins = Array.from(
      { length: 6 },
      (_, i) =>
        rawConnect(broker.port, 5, {
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

  test("an explicit setting wins either way", () => {
    expect(resolve("0.0.0.0", true)).toBe(true);
    expect(resolve("127.0.0.1", false)).toBe(false);
  });

  test("a loopback broker without a password file lets anonymous clients and unchecked usernames in", async () => {
    const b = await startBroker();
    expect(code(await rawConnect(b.port, 5))).toBe(0);
    expect(code(await rawConnect(b.port, 4, { username: "anyone" }))).toBe(0);
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
      expect(code(await rawConnect(b.port, 5, { username: "mosq-user", password: Buffer.from("mosq-pw") }))).toBe(0);
      expect(code(await rawConnect(b.port, 5, { username: "mosq-user", password: Buffer.from("x") }))).toBe(0x86);
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
    writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous false\npassword_file ${path}\n`);
    const mosq = Bun.spawn(["mosquitto", "-c", conf], { stdout: "ignore", stderr: "pipe" });
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
      // Wait until it listens.
      for (let i = 0; i < 50 && (await pub("ferry-pw")) !== 0; i++) await Bun.sleep(100);
      expect(await pub("ferry-pw")).toBe(0);
      expect(await pub("wrong")).not.toBe(0);
    } finally {
      mosq.kill();
      await mosq.exited;
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

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe("ferry passwd", () => {
  test("creates, adds, changes and deletes users; a broker started on the file follows along", async () => {
    const path = join(dir, "cli.pw");
    expect((await passwd(["-c", "--stdin", path, "carol"], "carol-1\n")).exitCode).toBe(0);
    expect((await passwd(["--stdin", path, "dave"], "dave-1\n")).exitCode).toBe(0);
    expect((await passwd(["--stdin", path, "carol"], "carol-2\n")).exitCode).toBe(0); // change
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const text = readFileSync(path, "utf8");
    expect(text).toMatch(/^carol:\$7\$210000\$[^$]+\$[^$\n]+\ndave:\$7\$210000\$/);
    expect(text).not.toContain("carol-2");

    const data = join(dir, "cli-data");
    const proc = await spawnBroker({
      dataDir: data,
      config: { auth: { password_file: path, allow_anonymous: false }, log_level: "debug" },
    });
    try {
      expect(code(await rawConnect(proc.port, 5, { username: "carol", password: Buffer.from("carol-2") }))).toBe(0);
      expect(code(await rawConnect(proc.port, 5, { username: "carol", password: Buffer.from("carol-1") }))).toBe(0x86);
      expect(code(await rawConnect(proc.port, 4, { username: "dave", password: Buffer.from("dave-1") }))).toBe(0);

      // Delete dave, then SIGHUP: the running broker refuses him from then on.
      expect((await passwd(["-D", path, "dave"], "")).exitCode).toBe(0);
      expect(readFileSync(path, "utf8")).not.toContain("dave:");
      proc.proc.kill("SIGHUP");
      const deadline = Date.now() + 5000;
      let c: number | undefined = 0;
      while (
        Date.now() < deadline &&
        (c = code(await rawConnect(proc.port, 4, { username: "dave", password: Buffer.from("dave-1") }))) === 0
      ) {
        await Bun.sleep(50);
      }
      expect(c).toBe(4);
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
      expect(code(await rawConnect(port, 5, { username: "gina", password: Buffer.from("old") }))).toBe(0);
      const newLine = `gina:${await hashPassword("new", MIN_ITERATIONS)}\n`;
      writeFileSync(path, newLine);
      await server.reload();
      expect(code(await rawConnect(port, 5, { username: "gina", password: Buffer.from("new") }))).toBe(0);
      expect(code(await rawConnect(port, 5, { username: "gina", password: Buffer.from("old") }))).toBe(0x86);

      writeFileSync(path, "gina:not-a-hash\n");
      await server.reload();
      expect(logs.some((l) => l.includes("reload failed") && l.includes("line 1"))).toBe(true);
      expect(code(await rawConnect(port, 5, { username: "gina", password: Buffer.from("new") }))).toBe(0);

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
