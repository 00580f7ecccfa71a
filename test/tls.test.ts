/**
 * TLS and secure WebSocket listeners with certificates made by openssl for the test:
 * mqtts with the mqtt client and with mosquitto_pub --cafile, wss, TLS 1.2 as the floor,
 * mutual TLS with good, bad and missing client certificates, the certificate CN as the
 * username, and certificate reload without a restart.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import tls from "node:tls";
import mqtt from "mqtt";
import { validateConfig } from "../src/config/load.ts";
import type { Logger } from "../src/core/logger.ts";
import { type RunningServer, startServer } from "../src/runtime/bun/server.ts";
import { startBroker, type TestBroker } from "./helpers/broker.ts";
import { makeCerts, type TestCerts } from "./helpers/certs.ts";
import { connect, eventually } from "./helpers/clients.ts";
import { writePasswordFile } from "./helpers/password-file.ts";

setDefaultTimeout(20_000);

/** The reason code of the PUBACK `publishAsync` resolved with. */
const ackCode = (p: unknown) => (p as { reasonCode?: number } | undefined)?.reasonCode;

const hasMosquitto = Bun.which("mosquitto_pub") !== null && Bun.which("mosquitto_sub") !== null;

let certs: TestCerts;
let broker: TestBroker;
beforeAll(async () => {
  certs = makeCerts("device-1");
  broker = await startBroker({
    listeners: { tls_port: 0, wss_port: 0 },
    tls: { cert: certs.serverCert, key: certs.serverKey },
  });
});
afterAll(() => broker.stop());

const mqtts = (b: { server: RunningServer }) => `mqtts://127.0.0.1:${b.server.tls!.port}`;
const wss = (b: { server: RunningServer }) => `wss://127.0.0.1:${b.server.wss!.port}/mqtt`;

/** The certificate subject CN a fresh TLS connection to `port` is shown. */
function serverCn(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: "127.0.0.1", port, ca: certs.read(certs.ca), servername: "localhost" }, () => {
      const cn = s.getPeerCertificate().subject.CN;
      s.destroy();
      resolve(String(cn));
    });
    s.once("error", reject);
  });
}

/** Try a TLS handshake with extra options; resolves to "ok" or the error message. */
function handshake(port: number, opts: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: "127.0.0.1", port, ca: certs.read(certs.ca), ...opts }, () => {
      // With TLS 1.3 a refused client certificate shows up after the handshake: wait a moment.
      setTimeout(() => {
        const alive = !s.destroyed;
        s.destroy();
        resolve(alive ? "ok" : "closed");
      }, 150);
    });
    s.once("error", (err) => resolve(err.message));
    s.once("close", () => resolve("closed"));
  });
}

describe("mqtts and wss", () => {
  test("an mqtts client and a wss client exchange messages with a plain TCP client", async () => {
    const ca = certs.read(certs.ca);
    const overTls = await connect(mqtts(broker), { ca });
    const overWss = await connect(wss(broker), { ca, protocolVersion: 5 });
    const plain = await connect(broker.url);
    await overTls.client.subscribeAsync("tls/#", { qos: 1 });
    await overWss.client.subscribeAsync("tls/#", { qos: 2 });
    await plain.client.publishAsync("tls/a", "one", { qos: 1 });
    await overWss.client.publishAsync("tls/b", "two", { qos: 2 });
    expect((await overTls.waitFor(2)).map((m) => m.payload).sort()).toEqual(["one", "two"]);
    expect((await overWss.waitFor(2)).map((m) => m.payload).sort()).toEqual(["one", "two"]);
    const transports = [...broker.server.broker.clients].map((c) => c.conn.transport).sort();
    expect(transports).toEqual(["tcp", "tls", "wss"]);
    await Promise.all([overTls.end(), overWss.end(), plain.end()]);
  });

  test("a client that does not trust the server certificate cannot connect", async () => {
    const err = await new Promise<Error>((resolve) => {
      const c = mqtt.connect(mqtts(broker), { reconnectPeriod: 0, connectTimeout: 3000 });
      c.once("error", (e) => {
        c.end(true);
        resolve(e);
      });
    });
    expect(err.message).toMatch(/self.signed|unable to (get|verify)|certificate/i);
  });

  test("TLS 1.1 is refused; TLS 1.2 and 1.3 are accepted", async () => {
    const port = broker.server.tls!.port;
    expect(await handshake(port, { minVersion: "TLSv1.2", maxVersion: "TLSv1.2", servername: "localhost" })).toBe("ok");
    expect(await handshake(port, { minVersion: "TLSv1.3", servername: "localhost" })).toBe("ok");
    const old = Bun.spawn(["openssl", "s_client", "-connect", `127.0.0.1:${port}`, "-tls1_1"], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const out = (await new Response(old.stdout).text()) + (await new Response(old.stderr).text());
    await old.exited;
    expect(out).toMatch(/alert protocol version|no protocols available|wrong version|unsupported protocol/i);
    expect(out).not.toContain("BEGIN CERTIFICATE");
  });

  test.skipIf(!hasMosquitto)("mosquitto_pub --cafile publishes over TLS to a mosquitto_sub over TLS", async () => {
    const port = `${broker.server.tls!.port}`;
    const sub = Bun.spawn(
      ["mosquitto_sub", "-h", "127.0.0.1", "-p", port, "--cafile", certs.ca, "-t", "mosq/tls", "-C", "1", "-W", "10"],
      { stdout: "pipe", stderr: "pipe" },
    );
    // Wait until the subscriber is connected and subscribed.
    const core = broker.server.broker;
    await eventually(
      () => [...core.sessions.values()].some((s) => s.subscriptions.has("mosq/tls")),
      5000,
      "mosquitto_sub",
    );
    // Not spawnSync: the broker runs in this process and must keep serving meanwhile.
    const pub = Bun.spawn(
      [
        "mosquitto_pub",
        "-h",
        "127.0.0.1",
        "-p",
        port,
        "--cafile",
        certs.ca,
        "-t",
        "mosq/tls",
        "-m",
        "over tls",
        "-q",
        "1",
      ],
      { stdout: "ignore", stderr: "pipe" },
    );
    expect(await pub.exited).toBe(0);
    expect((await new Response(sub.stdout).text()).trim()).toBe("over tls");
    expect(await sub.exited).toBe(0);
  });
});

describe("mutual TLS", () => {
  let mtls: TestBroker;
  beforeAll(async () => {
    const passwordFile = await writePasswordFile({ operator: "op-pw" });
    mtls = await startBroker({
      listeners: { tls_port: 0, wss_port: 0 },
      tls: {
        cert: certs.serverCert,
        key: certs.serverKey,
        ca: certs.ca,
        require_client_cert: true,
        use_identity_as_username: true,
      },
      auth: { allow_anonymous: false, password_file: passwordFile },
      acl: { rules: [{ action: "all", topic: "devices/%u/#", permission: "allow" }] },
    });
  });
  afterAll(() => mtls.stop());
  const ca = () => certs.read(certs.ca);

  test("no client certificate, or one the CA did not sign, fails the handshake", async () => {
    const port = mtls.server.tls!.port;
    expect(await handshake(port, { servername: "localhost" })).not.toBe("ok");
    expect(
      await handshake(port, {
        servername: "localhost",
        cert: certs.read(certs.badCert),
        key: certs.read(certs.badKey),
      }),
    ).not.toBe("ok");
    expect(
      await handshake(port, {
        servername: "localhost",
        cert: certs.read(certs.clientCert),
        key: certs.read(certs.clientKey),
      }),
    ).toBe("ok");
  });

  test("wss also requires a client certificate the CA signed", async () => {
    const bad = await new Promise<string>((resolve) => {
      const c = mqtt.connect(wss(mtls), {
        ca: ca(),
        cert: certs.read(certs.badCert),
        key: certs.read(certs.badKey),
        reconnectPeriod: 0,
        connectTimeout: 3000,
      });
      c.once("connect", () => resolve("connected"));
      c.once("error", (e) => resolve(e.message));
      c.once("close", () => resolve("closed"));
    });
    expect(bad).not.toBe("connected");
    const good = await connect(wss(mtls), {
      ca: ca(),
      cert: certs.read(certs.clientCert),
      key: certs.read(certs.clientKey),
      username: "operator",
      password: "op-pw",
    });
    expect(good.client.connected).toBe(true);
    await good.end();
  });

  test("the certificate CN becomes the username: no password needed, and the ACL sees %u = CN", async () => {
    const dev = await connect(mqtts(mtls), {
      ca: ca(),
      cert: certs.read(certs.clientCert),
      key: certs.read(certs.clientKey),
      protocolVersion: 5,
      username: "someone-else", // ignored: the certificate says who this is
    });
    const granted = await dev.client.subscribeAsync("devices/device-1/#", { qos: 1 });
    expect(granted[0]!.qos).toBe(1);
    await dev.client.publishAsync("devices/device-1/temp", "20", { qos: 1 });
    expect((await dev.waitFor(1))[0]!.payload).toBe("20");
    const denied = await dev.client.publishAsync("devices/someone-else/temp", "x", { qos: 1 }).then(
      ackCode,
      (e: { code?: number }) => e.code,
    );
    expect(denied).toBe(0x87);
    const seen = [...mtls.server.broker.clients].find((c) => c.conn.transport === "tls");
    expect(seen?.username).toBe("device-1");
    await dev.end();
  });
});

describe("certificate reload", () => {
  test("reload() (SIGHUP) puts a renewed certificate in use for new connections; open ones carry on", async () => {
    const dir = certs.dir;
    const cert = join(dir, "live.crt");
    const key = join(dir, "live.key");
    copyFileSync(certs.serverCert, cert);
    copyFileSync(certs.serverKey, key);
    const logs: string[] = [];
    const logger: Logger = {
      debug() {},
      info: (m) => logs.push(m),
      warn: (m) => logs.push(m),
      error: (m) => logs.push(m),
    };
    const server = await startServer(
      validateConfig({
        listeners: { host: "127.0.0.1", mqtt_port: 0, tls_port: 0, wss_port: 0 },
        tls: { cert, key, reload_check_seconds: 0 },
        storage: { durability: "memory" },
        mqtt: { sys_interval: 0 },
        admin: { port: null },
      }),
      "test",
      logger,
    );
    try {
      const port = server.tls!.port;
      const wssPort = server.wss!.port;
      expect(await serverCn(port)).toBe("127.0.0.1");
      const early = await connect(`mqtts://127.0.0.1:${port}`, { ca: certs.read(certs.ca) });
      await early.client.subscribeAsync("reload/#");

      copyFileSync(certs.renewedCert, cert);
      copyFileSync(certs.renewedKey, key);
      await server.reload();
      expect(await serverCn(port)).toBe("ferry-renewed");
      expect(await serverCn(wssPort)).toBe("ferry-renewed");
      expect(server.tls!.port).toBe(port);

      // The connection made before the reload still works.
      const late = await connect(`mqtts://127.0.0.1:${port}`, { ca: certs.read(certs.ca) });
      await late.client.publishAsync("reload/x", "after", { qos: 1 });
      expect((await early.waitFor(1))[0]!.payload).toBe("after");

      // A key that does not match its certificate is refused; the renewed pair stays in use.
      copyFileSync(certs.serverKey, key);
      await server.reload();
      expect(logs.some((l) => l.includes("tls: reload failed"))).toBe(true);
      expect(await serverCn(port)).toBe("ferry-renewed");
      // Nothing from the key file reaches the log.
      const keyText = certs.read(certs.serverKey);
      const keyBody = keyText.split("\n").filter((l) => l && !l.startsWith("-----"));
      for (const line of keyBody) expect(logs.join("\n")).not.toContain(line);
      await Promise.all([early.end(), late.end()]);
    } finally {
      await server.stop();
    }
  });

  test("a changed certificate file is picked up without SIGHUP within tls.reload_check_seconds", async () => {
    const dir = certs.dir;
    const cert = join(dir, "watched.crt");
    const key = join(dir, "watched.key");
    copyFileSync(certs.serverCert, cert);
    copyFileSync(certs.serverKey, key);
    const b = await startBroker({
      listeners: { tls_port: 0, ws_port: null },
      tls: { cert, key, reload_check_seconds: 1 },
    });
    try {
      expect(await serverCn(b.server.tls!.port)).toBe("127.0.0.1");
      // Key first, then certificate: the check in between sees a mismatched pair and keeps the old one.
      writeFileSync(key, certs.read(certs.renewedKey));
      writeFileSync(cert, certs.read(certs.renewedCert));
      // A TLS handshake per check: every 100 ms.
      let cn = "";
      await eventually(
        async () => (cn = await serverCn(b.server.tls!.port)) === "ferry-renewed",
        5000,
        () => `still serving ${cn}`,
        100,
      );
      expect(cn).toBe("ferry-renewed");
    } finally {
      await b.stop();
    }
  });
});

describe("cipher suites", () => {
  // A plain-RSA key exchange needs an RSA certificate, so these tests use one.
  let rsaCert: string;
  let rsaKey: string;
  beforeAll(() => {
    rsaCert = join(certs.dir, "rsa.crt");
    rsaKey = join(certs.dir, "rsa.key");
    const r = Bun.spawnSync([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      rsaKey,
      "-out",
      rsaCert,
      "-days",
      "2",
      "-subj",
      "/CN=127.0.0.1",
    ], { stdout: "ignore", stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(r.stderr.toString());
  });

  /** The suite `openssl s_client` agrees on offering only `cipher` (TLS 1.2, or 1.3), or "(NONE)". */
  async function negotiated(port: number, cipher: string | "tls1_3"): Promise<string> {
    const args = cipher === "tls1_3" ? ["-tls1_3"] : ["-tls1_2", "-cipher", cipher];
    const p = Bun.spawn(["openssl", "s_client", "-connect", `127.0.0.1:${port}`, ...args], {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const out = (await new Response(p.stdout).text()) + (await new Response(p.stderr).text());
    await p.exited;
    return /Cipher is (\S+)/.exec(out)?.[1] ?? "(NONE)";
  }

  const refusedByDefault = ["AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES256-SHA"];
  const acceptedByDefault = [
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-CHACHA20-POLY1305",
  ];

  test("by default TLS 1.2 offers only forward-secret AEAD suites: plain RSA and CBC-SHA1 are refused (mqtts and wss)", async () => {
    const b = await startBroker({ listeners: { tls_port: 0, wss_port: 0 }, tls: { cert: rsaCert, key: rsaKey } });
    try {
      for (const port of [b.server.tls!.port, b.server.wss!.port]) {
        for (const c of refusedByDefault) expect(`${c}: ${await negotiated(port, c)}`).toBe(`${c}: (NONE)`);
        for (const c of acceptedByDefault) expect(`${c}: ${await negotiated(port, c)}`).toBe(`${c}: ${c}`);
        expect(await negotiated(port, "tls1_3")).toMatch(/^TLS_(AES_128_GCM|AES_256_GCM|CHACHA20)/);
      }
    } finally {
      await b.stop();
    }
  });

  test("tls.ciphers replaces the list (here: one legacy suite allowed for an old device)", async () => {
    const b = await startBroker({
      listeners: { tls_port: 0 },
      tls: { cert: rsaCert, key: rsaKey, ciphers: "ECDHE-RSA-AES128-GCM-SHA256:AES128-SHA" },
    });
    try {
      const port = b.server.tls!.port;
      expect(await negotiated(port, "AES128-SHA")).toBe("AES128-SHA");
      expect(await negotiated(port, "ECDHE-RSA-AES128-GCM-SHA256")).toBe("ECDHE-RSA-AES128-GCM-SHA256");
      expect(await negotiated(port, "ECDHE-RSA-CHACHA20-POLY1305")).toBe("(NONE)");
    } finally {
      await b.stop();
    }
  });

  test("a cipher list BoringSSL knows nothing of stops the start, naming tls.ciphers", async () => {
    await expect(
      startBroker({ listeners: { tls_port: 0 }, tls: { cert: rsaCert, key: rsaKey, ciphers: "NO-SUCH-SUITE" } }),
    ).rejects.toThrow(/tls\.ciphers/);
    expect(() => validateConfig({ tls: { ciphers: "AES128 SHA; rm" } })).toThrow(/tls\.ciphers/);
  });
});

describe("configuration", () => {
  test("tls_port without a certificate, and client certificate options without a CA, are config errors", () => {
    expect(() => validateConfig({ listeners: { tls_port: 8883 } })).toThrow(
      /tls\.cert: required[\s\S]*tls\.key: required/,
    );
    expect(() => validateConfig({ tls: { require_client_cert: true } })).toThrow(/tls\.ca: required/);
  });
});
