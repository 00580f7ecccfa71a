/**
 * The admin API refuses what a browser can be tricked into sending to its tokenless
 * default (127.0.0.1:8080): DNS rebinding (a foreign Host), cross-site requests (a foreign
 * Origin) and non-JSON bodies, while `curl`, the dashboard and `ssh -L` keep working. Once
 * MQTT needs passwords, the API needs a token too: Ferry makes one on first start.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, statSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createAdminApp } from "../src/admin/app.ts";
import { hostAllowed, hostName } from "../src/admin/request-guard.ts";
import { validateConfig } from "../src/config/load.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { writePasswordFile } from "./helpers/password-file.ts";

let b: TestBroker;
beforeAll(async () => {
  b = await startBroker({ admin: { port: 0 } });
});
afterAll(() => b.stop());

const appWith = (admin: Record<string, unknown> = {}, ownNames: string[] = []) =>
  createAdminApp({
    broker: b.server.broker,
    uplinks: b.server.uplinks,
    config: validateConfig({ admin }),
    ownNames,
  });

const publishJson = JSON.stringify({ topic: "guard/cmd", payload: "reboot", qos: 1, retain: true });
const retainedCmd = () => b.server.broker.retained.get("guard/cmd");

describe("admin API request guard", () => {
  test("a foreign Host (DNS rebinding) is refused with 403 before anything runs; the port is not compared", async () => {
    const app = appWith();
    const r = await app.request("http://evil.example:8080/api/v1/broker", { headers: { Host: "evil.example:8080" } });
    expect(r.status).toBe(403);
    expect((await r.json()).error.code).toBe("host_not_allowed");
    const write = await app.request("/api/v1/publish", {
      method: "POST",
      headers: { Host: "evil.example", "Content-Type": "application/json" },
      body: publishJson,
    });
    expect(write.status).toBe(403);
    expect(retainedCmd()).toBeUndefined();
    // This machine's own names, with any port (ssh -L 9000:127.0.0.1:8080 changes it).
    for (const host of ["localhost:9000", "127.0.0.1:8080", "[::1]:8080", "localhost", "LOCALHOST.:1"]) {
      expect(`${host} ${(await app.request("/api/v1/broker", { headers: { Host: host } })).status}`).toBe(
        `${host} 200`,
      );
    }
  });

  test("a text/plain or form body is refused with 415 and nothing is published", async () => {
    const app = appWith();
    for (const type of ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded"]) {
      const r = await app.request("/api/v1/publish", {
        method: "POST",
        headers: { "Content-Type": type },
        body: publishJson,
      });
      expect(`${type} ${r.status}`).toBe(`${type} 415`);
    }
    const none = await app.request("/api/v1/publish", { method: "POST", body: new Blob([publishJson]) });
    expect(none.status).toBe(415);
    expect(retainedCmd()).toBeUndefined();
    // application/json (with parameters) is what the API takes.
    const ok = await app.request("/api/v1/publish", {
      method: "POST",
      headers: { "Content-Type": "application/json; charset=utf-8" },
      body: JSON.stringify({ topic: "guard/ok", payload: "x" }),
    });
    expect(ok.status).toBe(200);
    // A POST without a body (curl -X POST) needs no content type.
    const bare = await app.request("/api/v1/uplinks/none/pause", { method: "POST" });
    expect(bare.status).toBe(404);
  });

  test("a cross-site Origin is refused; the API's own origin and listed proxy names pass", async () => {
    const app = appWith({ allowed_hosts: ["gateway.example"] });
    const send = (origin: string, host = "localhost:8080") =>
      app.request("/api/v1/publish", {
        method: "POST",
        headers: { Host: host, Origin: origin, "Content-Type": "application/json" },
        body: JSON.stringify({ topic: "guard/origin", payload: "x" }),
      });
    for (const origin of ["https://evil.example", "http://203.0.113.9", "null", "http://localhost:3000", "file://"]) {
      const r = await send(origin);
      expect(`${origin} ${r.status}`).toBe(`${origin} 403`);
    }
    expect((await send("http://localhost:8080")).status).toBe(200); // same origin (the dashboard)
    expect((await send("https://gateway.example", "127.0.0.1:8080")).status).toBe(200); // a reverse proxy in front
    expect((await send("https://gateway.example", "gateway.example")).status).toBe(200);
  });

  test("names: IP literals and localhost always, the machine's names off loopback, admin.allowed_hosts, * for any", () => {
    const opts = { allowedHosts: [] as string[], ownNames: ["gw", "gw.local"] };
    for (const h of ["localhost", "127.0.0.1", "10.0.0.7", "::1", "fe80::1", "gw", "gw.local"]) {
      expect(hostAllowed(h, opts)).toBe(true);
    }
    for (const h of ["evil.example", "127.0.0.1.nip.io", "localhost.evil.example", "gw.evil"]) {
      expect(hostAllowed(h, opts)).toBe(false);
    }
    expect(hostAllowed("anything.example", { allowedHosts: ["*"], ownNames: [] })).toBe(true);
    expect(hostAllowed("MQTT.Example.com", { allowedHosts: ["mqtt.example.com"], ownNames: [] })).toBe(true);
    expect([hostName("[::1]:8080"), hostName("Gw:80"), hostName("::1"), hostName("")]).toEqual([
      "::1",
      "gw",
      "::1",
      undefined,
    ]);
    expect(() => validateConfig({ admin: { allowed_hosts: ["gw.example:8080"] } })).toThrow(/admin\.allowed_hosts/);
  });

  test("over a real socket: a rebinding request (Host: evil.example) gets 403, Host: localhost 200", async () => {
    const port = b.server.admin!.port;
    const raw = (host: string) =>
      new Promise<string>((resolve, reject) => {
        const s = net.connect(port, "127.0.0.1", () => {
          s.write(`GET /api/v1/broker HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        });
        let out = "";
        s.on("data", (d) => (out += d.toString()));
        s.on("end", () => resolve(out.split("\r\n")[0]!));
        s.on("error", reject);
      });
    expect(await raw("evil.example:8080")).toBe("HTTP/1.1 403 Forbidden");
    expect(await raw(`localhost:${port}`)).toBe("HTTP/1.1 200 OK");
  });
});

describe("generated admin token", () => {
  test("with a password file and no admin.token, a token is made on first start (data_dir/admin-token, 0600), required, and kept", async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), "ferry-admin-token-")), "data");
    const passwordFile = await writePasswordFile({ ops: "ops-pw" });
    const start = () => startBroker({ data_dir: dataDir, auth: { password_file: passwordFile }, admin: { port: 0 } });
    const first = await start();
    let token: string;
    try {
      const base = `http://127.0.0.1:${first.server.admin!.port}`;
      const path = join(dataDir, "admin-token");
      token = readFileSync(path, "utf8").trim();
      expect(token).toMatch(/^[0-9a-f]{64}$/);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect((await fetch(`${base}/api/v1/broker`)).status).toBe(401);
      const write = await fetch(`${base}/api/v1/publish`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ topic: "cmd/all", payload: "x", retain: true }),
      });
      expect(write.status).toBe(401);
      expect((await fetch(`${base}/api/v1/broker`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(
        200,
      );
      expect((await fetch(`${base}/healthz`)).status).toBe(200);
    } finally {
      await first.stop();
    }
    const second = await start();
    try {
      const base = `http://127.0.0.1:${second.server.admin!.port}`;
      expect((await fetch(`${base}/api/v1/broker`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(
        200,
      );
    } finally {
      await second.stop();
    }
  });

  test("admin.generate_token false keeps the tokenless loopback API; without auth nothing is generated", async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), "ferry-admin-token-")), "data");
    const passwordFile = await writePasswordFile({ ops: "ops-pw" });
    for (
      const overrides of [
        { auth: { password_file: passwordFile }, admin: { port: 0, generate_token: false } },
        { admin: { port: 0 } },
      ]
    ) {
      const b2 = await startBroker({ data_dir: dataDir, ...overrides });
      try {
        expect((await fetch(`http://127.0.0.1:${b2.server.admin!.port}/api/v1/broker`)).status).toBe(200);
      } finally {
        await b2.stop();
      }
    }
    expect(() => statSync(join(dataDir, "admin-token"))).toThrow();
  });
});
