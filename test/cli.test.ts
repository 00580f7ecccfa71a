/**
 * The command line as an operator meets it: `edge/main.ts` run as a child process by the
 * same bun that runs the tests, on port 0 and a temporary data directory.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pkg from "../package.json" with { type: "json" };
import { serveArgs, spawnServe } from "./helpers/broker-process.ts";
import { validateConfig } from "../src/config/load.ts";
import { connect } from "./helpers/clients.ts";
import { makeCerts } from "./helpers/certs.ts";

const MAIN = join(import.meta.dir, "..", "edge", "main.ts");
const tmp = mkdtempSync(join(tmpdir(), "ferry-cli-"));
const children = new Set<Subprocess>();

afterAll(() => {
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
  rmSync(tmp, { recursive: true, force: true });
});

/** Run a command to completion; a stuck one is killed, so the test fails rather than hangs. */
async function run(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.add(proc);
  const guard = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  const [stdout, stderr] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]);
  const code = await proc.exited;
  clearTimeout(guard);
  return { code, stdout, stderr };
}

interface Served {
  proc: Subprocess<"ignore", "pipe", "pipe">;
  mqttPort: number;
  wsUrl: string;
  lines: string[];
  stderr: () => string;
}

/** Start `serve` and resolve once both listening lines are printed. */
async function serve(...extra: string[]): Promise<Served> {
  const dataDir = mkdtempSync(join(tmp, "data-"));
  const { proc, out, stderr } = await spawnServe(
    [process.execPath, MAIN, ...serveArgs(dataDir, { ws: true, admin: true }), ...extra],
    { until: [/listening mqtt:\/\/\S+\n/, /listening ws:\/\/\S+\n/], timeoutMs: 15_000 },
  );
  children.add(proc);
  const lines = out.trim().split("\n");
  const mqtt = /^listening mqtt:\/\/127\.0\.0\.1:(\d+)$/m.exec(out);
  const ws = /^listening (ws:\/\/127\.0\.0\.1:\d+\/mqtt)$/m.exec(out);
  if (!mqtt || !ws) throw new Error(`unexpected output:\n${out}`);
  return { proc, mqttPort: Number(mqtt[1]), wsUrl: ws[1]!, lines, stderr };
}

function configFile(name: string, body: string): string {
  const path = join(tmp, name);
  writeFileSync(path, body);
  return path;
}

describe("ferry serve", () => {
  test("prints the addresses it listens on, with the real ports when given port 0, and clients can use them", async () => {
    const s = await serve();
    try {
      expect(s.lines).toContain(`listening mqtt://127.0.0.1:${s.mqttPort}`);
      expect(s.lines).toContain(`listening ${s.wsUrl}`);
      expect(s.mqttPort).toBeGreaterThan(0);
      const sub = await connect(`mqtt://127.0.0.1:${s.mqttPort}`);
      const pub = await connect(s.wsUrl, { protocolVersion: 5 });
      await sub.client.subscribeAsync("cli/t", { qos: 1 });
      await pub.client.publishAsync("cli/t", "through the CLI", { qos: 1 });
      const [m] = await sub.waitFor(1);
      expect(m!.payload).toBe("through the CLI");
      await Promise.all([sub.end(), pub.end()]);
    } finally {
      s.proc.kill("SIGKILL");
      await s.proc.exited;
    }
  });

  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal} shuts down cleanly: v5 clients get DISCONNECT 0x8B and the process exits 0`, async () => {
      const s = await serve();
      try {
        const c = await connect(`mqtt://127.0.0.1:${s.mqttPort}`, { protocolVersion: 5 });
        const told = new Promise<number | undefined>((resolve) =>
          c.client.on("disconnect", (p) => resolve(p.reasonCode))
        );
        s.proc.kill(signal);
        expect(await s.proc.exited).toBe(0);
        expect(await told).toBe(0x8b);
        expect(s.stderr()).toContain(`${signal}, shutting down`);
        await c.end(true);
      } finally {
        if (s.proc.exitCode === null) s.proc.kill("SIGKILL");
      }
    });
  }

  test("a busy port names the listener, the address, the port and the option that changes it", async () => {
    const busy = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const dataDir = mkdtempSync(join(tmp, "busy-"));
      const mqtt = await run(
        "serve",
        "--host",
        "127.0.0.1",
        "-p",
        String(busy.port),
        "--admin-port",
        "off",
        "-d",
        dataDir,
      );
      expect(mqtt.code).toBe(1);
      expect(mqtt.stderr).toContain(
        `cannot start: cannot listen for MQTT over TCP on 127.0.0.1:${busy.port}: address already in use`,
      );
      expect(mqtt.stderr).toContain("listeners.mqtt_port or --mqtt-port");
      const admin = await run(
        "serve",
        "--host",
        "127.0.0.1",
        "-p",
        "0",
        "--admin-port",
        String(busy.port),
        "-d",
        dataDir,
      );
      expect(admin.code).toBe(1);
      expect(admin.stderr).toContain(
        `admin API and dashboard (HTTP) on 127.0.0.1:${busy.port}: address already in use`,
      );
      expect(admin.stderr).toContain("--admin-port");
      expect(admin.stdout).not.toContain("listening");
    } finally {
      busy.stop(true);
    }
  });

  test("a config file with an unknown key makes serve exit 2 naming the key, without listening", async () => {
    const path = configFile("unknown-key.json", JSON.stringify({ mqtt: { max_pakcet_size: 4096 } }));
    const r = await run("serve", "--mqtt-port", "0", "--config", path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("max_pakcet_size");
    expect(r.stdout).not.toContain("listening");
  });

  test("a config file with a value of the wrong type makes serve exit 2 naming the key path", async () => {
    const path = configFile("wrong-type.json", JSON.stringify({ mqtt: { max_packet_size: "large" } }));
    const r = await run("serve", "--mqtt-port", "0", "--config", path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("mqtt.max_packet_size");
    expect(r.stdout).not.toContain("listening");
  });

  test("a config file that does not exist makes serve exit 2", async () => {
    const r = await run("serve", "--mqtt-port", "0", "--config", join(tmp, "nope.json"));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("nope.json");
  });
});

describe("ferry check-config", () => {
  test("prints every problem in the file and exits 2", async () => {
    const path = configFile(
      "many-problems.json",
      `{
      // comments are allowed
      "listeners": { "mqtt_port": 70000 },
      "log_level": "loud",
      "mqtt": { "receive_maximum": 0, "surprise": true },
      "extra_top_level": 1
    }`,
    );
    const r = await run("check-config", path);
    expect(r.code).toBe(2);
    for (const key of ["listeners.mqtt_port", "log_level", "mqtt.receive_maximum", "surprise", "extra_top_level"]) {
      expect(r.stderr).toContain(key);
    }
    expect(r.stdout).not.toContain("ok");
  });

  test("a file that is not JSON is reported and exits 2", async () => {
    const path = configFile("broken.json", `{ "mqtt": { `);
    const r = await run("check-config", path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("not valid JSON");
  });

  test("prints ok and exits 0 for a good file, comments included", async () => {
    const path = configFile(
      "good.json",
      `{
      /* a commented example */
      "listeners": { "host": "127.0.0.1", "mqtt_port": 1883, "ws_port": 8080 },
      "mqtt": { "max_packet_size": 65536, "topic_alias_maximum": 0 }, // trailing comment
      "acl": { "default": "allow", "rules": [{ "action": "publish", "topic": "secret/#", "permission": "deny" }] }
    }`,
    );
    const r = await run("check-config", path);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(`${path}: ok`);
    expect(r.stderr).toBe("");
  });

  test("a password, ACL or TLS file that is missing or does not parse is an error naming the key; serve refuses it too", async () => {
    const notPem = configFile("not-a-cert.pem", "hello\n");
    const badAcl = configFile("bad.acl", "topic read a/#/b\nbogus line\n");
    const path = configFile(
      "missing-files.jsonc",
      JSON.stringify(
        {
          listeners: { tls_port: 0 },
          auth: { password_file: join(tmp, "no-such-passwd") },
          acl: { acl_file: badAcl },
          tls: { cert: notPem, key: join(tmp, "no-such-key.pem") },
        },
        null,
        2,
      ),
    );
    const r = await run("check-config", path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${path}:6:22 auth.password_file: ${join(tmp, "no-such-passwd")}: no such file`);
    expect(r.stderr).toMatch(/acl\.acl_file: \S+bad\.acl: line 2: unknown keyword 'bogus'/);
    expect(r.stderr).toContain("acl.acl_file: " + badAcl + ": '#' must be alone in the last level: 'a/#/b'");
    expect(r.stderr).toContain(`tls.cert: ${notPem}: not a PEM file`);
    expect(r.stderr).toContain(`tls.key: ${join(tmp, "no-such-key.pem")}: no such file`);
    expect(r.stdout).not.toContain("ok");
    const s = await run("serve", "--mqtt-port", "0", "--admin-port", "off", "--config", path);
    expect(s.code).toBe(2);
    expect(s.stderr).toContain("auth.password_file");
    expect(s.stdout).not.toContain("listening");
  });

  test("a TLS key that is not the certificate's is refused, naming tls.key", async () => {
    const certs = makeCerts();
    const path = configFile(
      "wrong-key.json",
      JSON.stringify({ listeners: { tls_port: 0 }, tls: { cert: certs.serverCert, key: certs.clientKey } }),
    );
    const r = await run("check-config", path);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("tls.key: is not the private key of the certificate in tls.cert");
    const good = configFile(
      "right-key.json",
      JSON.stringify({ listeners: { tls_port: 0 }, tls: { cert: certs.serverCert, key: certs.serverKey } }),
    );
    expect((await run("check-config", good)).code).toBe(0);
  });

  test("a file the service user cannot read is reported as not readable (run as nobody)", () => {
    if (process.getuid?.() !== 0 || !Bun.which("runuser")) return; // needs root to switch users
    const secret = configFile("root-only-passwd", "");
    chmodSync(secret, 0o600);
    const path = configFile("unreadable.json", JSON.stringify({ auth: { password_file: secret } }));
    chmodSync(path, 0o644);
    chmodSync(tmp, 0o755);
    const proc = Bun.spawnSync(["runuser", "-u", "nobody", "--", process.execPath, MAIN, "check-config", path], {
      stdout: "pipe",
      stderr: "pipe",
      env: { ...process.env, HOME: "/tmp" },
    });
    expect(proc.exitCode).toBe(2);
    expect(proc.stderr.toString()).toContain(`auth.password_file: ${secret}: not readable by this user`);
  });

  test("an unknown placeholder or an invalid filter in the config is refused by check-config and serve", async () => {
    const path = configFile(
      "placeholders.json",
      JSON.stringify({
        acl: { rules: [{ action: "subscribe", topic: "a/#/b", permission: "allow" }] },
        uplinks: [{ name: "c", url: "mqtt://127.0.0.1:1", forward: [{ filter: "x/#", topic: "up/${nope}" }] }],
      }),
    );
    for (const cmd of [["check-config", path], ["serve", "--mqtt-port", "0", "--admin-port", "off", "-c", path]]) {
      const r = await run(...cmd);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain("acl.rules[0].topic: '#' must be alone in the last level");
      expect(r.stderr).toContain("uplinks[0].forward[0].topic: unknown placeholder '${nope}'");
    }
  });

  test("without a FILE it exits 2 and says what is missing", async () => {
    const r = await run("check-config");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("FILE");
  });
});

describe("ferry version and help", () => {
  test("version prints the package version and exits 0", async () => {
    const r = await run("version");
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`ferry ${pkg.version}`);
    expect(r.stdout).toContain(`bun ${Bun.version}`);
  });

  for (const flag of ["--version", "-V"]) {
    test(`${flag} prints the version like the version command`, async () => {
      const r = await run(flag);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(`ferry ${pkg.version} (commit `);
    });
  }

  test("--help says what SIGHUP does", async () => {
    const r = await run("--help");
    expect(r.stdout).toMatch(/SIGHUP re-reads the password file, ACL file and certificates/);
    expect(r.stdout).toContain("--version");
  });

  test("--help lists every command and exits 0", async () => {
    const r = await run("--help");
    expect(r.code).toBe(0);
    for (const cmd of ["serve", "check-config", "version"]) expect(r.stdout).toMatch(new RegExp(`^\\s+${cmd}\\b`, "m"));
    expect(r.stdout).toContain("--mqtt-port");
    expect(r.stdout).toContain("--ws-port");
  });

  test("--help states the real default host, the schema's (127.0.0.1, not 0.0.0.0)", async () => {
    const r = await run("--help");
    const line = r.stdout.split("\n").find((l) => l.includes("--host HOST"));
    expect(line).toContain(`Default ${validateConfig({}).listeners.host}`);
    expect(line).toContain("127.0.0.1");
  });

  test("an unknown command exits 2 and shows the usage", async () => {
    const r = await run("frobnicate");
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
    expect(r.stderr).toContain("Commands:");
  });
});
