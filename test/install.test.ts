/**
 * The appliance files in edge/: install.sh run into a temporary root (no systemd, no
 * user created there), the systemd unit's hardening, and the example config, which must
 * be what the schema generates and must pass check-config.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, parseConfig } from "../src/config/load.ts";
import { EXAMPLE_PATH, renderExampleConfig } from "../edge/example-config.ts";

const EDGE = join(import.meta.dir, "..", "edge");
const MAIN = join(EDGE, "main.ts");
const tmp = mkdtempSync(join(tmpdir(), "ferry-install-"));

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A stand-in for the built executable: the CLI from source, so no build is needed. */
function stubBinary(): string {
  const path = join(tmp, "ferry-stub");
  writeFileSync(path, `#!/bin/sh\nexec "${process.execPath}" "${MAIN}" "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

function install(...args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync(["sh", join(EDGE, "install.sh"), ...args], {
    stdout: "pipe",
    stderr: "pipe",
  });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe("edge/install.sh into a temporary root", () => {
  const root = join(tmp, "root");
  const binary = stubBinary();
  const files = {
    binary: join(root, "usr/local/bin/ferry"),
    config: join(root, "etc/ferry/ferry.jsonc"),
    example: join(root, "etc/ferry/ferry.example.jsonc"),
    unit: join(root, "etc/systemd/system/ferry.service"),
    data: join(root, "var/lib/ferry"),
  };

  test("--dry-run changes nothing", () => {
    const r = install("--root", root, "--binary", binary, "--dry-run");
    expect(r.code).toBe(0);
    expect(r.out).toContain("would run: cp");
    expect(existsSync(root)).toBe(false);
  });

  test("installs the binary, config, example, unit and data directory, and checks the config", () => {
    const r = install("--root", root, "--binary", binary);
    expect(r.code).toBe(0);
    expect(mode(files.binary)).toBe(0o755);
    expect(readFileSync(files.binary, "utf8")).toBe(readFileSync(binary, "utf8"));
    expect(mode(files.config)).toBe(0o640);
    expect(readFileSync(files.config, "utf8")).toBe(readFileSync(EXAMPLE_PATH, "utf8"));
    expect(readFileSync(files.unit, "utf8")).toBe(
      readFileSync(join(EDGE, "ferry.service"), "utf8"),
    );
    expect(mode(files.data)).toBe(0o750);
    expect(r.out).toContain("ferry.jsonc: ok"); // check-config ran with the installed binary
    expect(r.out).toContain("not creating the user");
  });

  test("a second run is idempotent: nothing changes and an edited config is kept", () => {
    writeFileSync(files.config, `{ "mqtt": { "max_inflight": 8 } } // edited\n`);
    writeFileSync(join(files.data, "ferry.db"), "pretend data");
    const r = install("--root", root, "--binary", binary);
    expect(r.code).toBe(0);
    expect(r.out).toContain("is up to date");
    expect(r.out).toContain("keeping");
    expect(readFileSync(files.config, "utf8")).toContain("edited");
    expect(readFileSync(join(files.data, "ferry.db"), "utf8")).toBe("pretend data");
  });

  test("refuses to go on when the kept config does not validate, naming the key", () => {
    writeFileSync(files.config, `{ "mqtt": { "max_inflight": 0 } }`);
    const r = install("--root", root, "--binary", binary);
    expect(r.code).toBe(2);
    expect(r.out).toContain("mqtt.max_inflight");
    writeFileSync(files.config, "{}");
  });

  test("--uninstall removes the binary and the unit and keeps config and data", () => {
    const r = install("--root", root, "--uninstall");
    expect(r.code).toBe(0);
    expect(existsSync(files.binary)).toBe(false);
    expect(existsSync(files.unit)).toBe(false);
    expect(existsSync(files.config)).toBe(true);
    expect(readFileSync(join(files.data, "ferry.db"), "utf8")).toBe("pretend data");
    expect(install("--root", root, "--uninstall").code).toBe(0); // again: still fine
  });

  test("--uninstall --purge removes config and data too", () => {
    const r = install("--root", root, "--uninstall", "--purge");
    expect(r.code).toBe(0);
    expect(existsSync(join(root, "etc/ferry"))).toBe(false);
    expect(existsSync(files.data)).toBe(false);
  });

  test("bad arguments exit 2", () => {
    expect(install("--frobnicate").code).toBe(2);
    expect(install("--purge", "--root", root).code).toBe(2);
  });
});

describe("edge/ferry.service", () => {
  const unit = readFileSync(join(EDGE, "ferry.service"), "utf8");
  const directives = new Map<string, string[]>();
  for (const line of unit.split("\n")) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(line.trim());
    if (m) directives.set(m[1]!, [...(directives.get(m[1]!) ?? []), m[2]!]);
  }
  const one = (key: string) => directives.get(key)?.at(-1);

  test("runs the installed binary as the dedicated user, restarting always except on a bad config", () => {
    expect(one("ExecStart")).toBe("/usr/local/bin/ferry serve --config /etc/ferry/ferry.jsonc");
    expect(one("User")).toBe("ferry");
    expect(one("Restart")).toBe("always");
    expect(one("RestartPreventExitStatus")).toBe("2");
    expect(Number(one("LimitNOFILE"))).toBeGreaterThanOrEqual(16384);
  });

  test("is Type=notify with a watchdog, and reloads with SIGHUP instead of restarting", () => {
    expect(one("Type")).toBe("notify");
    expect(one("NotifyAccess")).toBe("main"); // Ferry itself sends, not a helper process
    expect(one("ExecReload")).toBe("/bin/kill -HUP $MAINPID");
    expect(Number(one("WatchdogSec"))).toBeGreaterThan(0);
    // The notify socket is AF_UNIX: the address-family sandbox must leave it.
    expect(one("RestrictAddressFamilies")).toContain("AF_UNIX");
  });

  test("is sandboxed: read-only system, writable data directory only, no new privileges", () => {
    expect(one("ProtectSystem")).toBe("strict");
    expect(one("ReadWritePaths")).toBe("/var/lib/ferry");
    expect(one("NoNewPrivileges")).toBe("true");
    expect(one("ProtectHome")).toBe("true");
    // The JIT needs W+X pages: this one would stop Ferry from starting.
    expect(directives.has("MemoryDenyWriteExecute")).toBe(false);
  });

  test("passes systemd-analyze verify (when systemd is installed)", () => {
    if (!Bun.which("systemd-analyze")) return;
    // verify wants the ExecStart binary to exist; point a copy of the unit at the stub.
    const copy = join(tmp, "ferry.service");
    writeFileSync(copy, unit.replace("/usr/local/bin/ferry", stubBinary()));
    const r = Bun.spawnSync(["systemd-analyze", "verify", copy], {
      stdout: "pipe",
      stderr: "pipe",
    });
    const complaints = r.stderr.toString().split("\n").filter((l) => l.includes("ferry.service"));
    expect(complaints).toEqual([]);
  });
});

describe("edge/ferry.example.jsonc", () => {
  test("is what the schema generates (`npm run docs` regenerates it after a schema change)", () => {
    expect(readFileSync(EXAMPLE_PATH, "utf8")).toBe(renderExampleConfig());
  });

  test("passes check-config, in a root that has the files it names (as install.sh creates them)", () => {
    const root = mkdtempSync(join(tmp, "example-root-"));
    mkdirSync(join(root, "etc", "ferry"), { recursive: true });
    writeFileSync(join(root, "etc", "ferry", "passwd"), "");
    const r = Bun.spawnSync([process.execPath, MAIN, "check-config", "--root", root, EXAMPLE_PATH], {
      stdout: "pipe",
      stderr: "pipe",
    });
    expect(r.stderr.toString()).toBe("");
    expect(r.exitCode).toBe(0);
  });

  test("names every key of the schema, and its sample list entries are valid when uncommented", () => {
    let parsed;
    try {
      parsed = parseConfig(renderExampleConfig({ samples: true }), "samples");
    } catch (err) {
      throw new Error(err instanceof ConfigError ? err.problems.join("\n") : String(err));
    }
    expect(parsed.acl.rules.length).toBe(1);
    expect(parsed.uplinks.length).toBe(1);
    const text = readFileSync(EXAMPLE_PATH, "utf8");
    for (const key of ["host", "mqtt_port", "data_dir", "max_packet_size", "durability", "rules"]) {
      expect(text).toContain(`"${key}":`);
    }
  });
});
