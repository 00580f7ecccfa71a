/**
 * A real MQTT broker playing "the cloud" for uplink tests: Debian's mosquitto when it
 * is installed, otherwise a second Ferry (in-process, SQLite storage), so the suite
 * still runs on a fresh machine. FERRY_TEST_CLOUD=ferry picks the second Ferry even
 * when mosquitto is there (to check that the suite passes both ways).
 */
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { startBroker, type TestBroker } from "./broker.ts";
import { type Serving, spawnServe } from "./broker-process.ts";

/** Debian's mosquitto binary, if installed. */
export const MOSQUITTO_BIN = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].find((p) => existsSync(p));
export const MOSQUITTO = process.env.FERRY_TEST_CLOUD === "ferry" ? undefined : MOSQUITTO_BIN;

/**
 * mosquitto.conf lines for `spawnMosquitto`: the log on stdout, where "… running" says it
 * listens (no port polling).
 */
export const MOSQUITTO_LOG = ["log_dest stdout", "log_type error", "log_type warning", "log_type information"];

/**
 * Start mosquitto on `conf` (which has the MOSQUITTO_LOG lines) and resolve once it
 * listens. stdbuf makes its stdout line-buffered, so the line arrives as it is written.
 */
export function spawnMosquitto(conf: string): Promise<Serving> {
  if (!MOSQUITTO_BIN) throw new Error("mosquitto is not installed");
  return spawnServe(["stdbuf", "-oL", MOSQUITTO_BIN, "-c", conf], {
    until: [/mosquitto version \S+ running/],
    timeoutMs: 5000,
  });
}

export interface CloudBroker {
  readonly kind: "mosquitto" | "ferry";
  readonly port: number;
  readonly url: string;
  start(): Promise<void>;
  /** Graceful stop (mosquitto saves its persistence file). */
  stop(): Promise<void>;
  restart(): Promise<void>;
}

export interface CloudOptions {
  /** mosquitto `persistence true` so its sessions survive a restart. */
  persistent?: boolean;
  /** Extra mosquitto.conf lines for the listener (TLS). Mosquitto only. */
  listenerLines?: string[];
  /** Listen on this port instead of a free one picked now. */
  port?: number;
  /** Topic filters clients may not publish to: a v5 publisher gets PUBACK 0x87. */
  denyPublish?: string[];
  /** Receive Maximum the cloud sends v5 clients in CONNACK (mosquitto max_inflight_messages, Ferry mqtt.receive_maximum). */
  receiveMaximum?: number;
  /** Listen for MQTT over TLS (mqtts://) with these PEM files; `ca` and `requireClientCert` for mutual TLS. */
  tls?: { cert: string; key: string; ca?: string; requireClientCert?: boolean };
}

/** A free TCP port on 127.0.0.1 (bind 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
    srv.once("error", reject);
  });
}

/** Make `file` and the directories above it readable by other users (mosquitto's own). */
function allowRead(file: string): void {
  chmodSync(file, 0o644);
  for (let dir = dirname(file); dir.startsWith(`${tmpdir()}/`); dir = dirname(dir)) chmodSync(dir, 0o755);
}

/** Create (not start) a cloud broker on a fixed free port, so it can be started later. */
export async function createCloud(opts: CloudOptions = {}): Promise<CloudBroker> {
  const port = opts.port ?? await freePort();
  if (MOSQUITTO) return new MosquittoCloud(port, opts);
  return new FerryCloud(port, opts);
}

class MosquittoCloud implements CloudBroker {
  readonly kind = "mosquitto" as const;
  readonly url: string;
  #proc: Serving | undefined;
  #conf: string;

  constructor(readonly port: number, opts: CloudOptions) {
    const dir = mkdtempSync(join(tmpdir(), "ferry-cloud-"));
    // Started as root, mosquitto drops to its own user: it must be able to write its persistence file here.
    chmodSync(dir, 0o777);
    this.#conf = join(dir, "mosquitto.conf");
    const tlsLines: string[] = [];
    if (opts.tls) {
      // mosquitto drops to its own user after start: it must be able to read the files.
      for (const f of [opts.tls.cert, opts.tls.key, opts.tls.ca]) if (f) allowRead(f);
      tlsLines.push(`certfile ${opts.tls.cert}`, `keyfile ${opts.tls.key}`);
      if (opts.tls.ca) tlsLines.push(`cafile ${opts.tls.ca}`);
      if (opts.tls.requireClientCert) tlsLines.push("require_certificate true");
    }
    const tls = tlsLines.length > 0 || (opts.listenerLines?.length ?? 0) > 0;
    this.url = `${tls ? "mqtts" : "mqtt"}://127.0.0.1:${port}`;
    const acl: string[] = [];
    if (opts.denyPublish) {
      // Lines before any `user` line apply to anonymous clients; a deny match wins.
      writeFileSync(
        join(dir, "acl"),
        ["topic readwrite #", ...opts.denyPublish.map((t) => `topic deny ${t}`), ""].join("\n"),
      );
      acl.push(`acl_file ${join(dir, "acl")}`);
    }
    writeFileSync(
      this.#conf,
      [
        `listener ${port} 127.0.0.1`,
        ...tlsLines,
        ...(opts.listenerLines ?? []),
        "allow_anonymous true",
        ...acl,
        // Mosquitto drops beyond max_queued_messages (default 1000): raised so the cloud is not the bottleneck.
        "max_queued_messages 1000000",
        `max_inflight_messages ${opts.receiveMaximum ?? 0}`,
        `persistence ${opts.persistent ? "true" : "false"}`,
        `persistence_location ${dir}/`,
        ...MOSQUITTO_LOG,
        "",
      ].join("\n"),
    );
  }

  async start(): Promise<void> {
    this.#proc = await spawnMosquitto(this.#conf);
  }

  async stop(): Promise<void> {
    const p = this.#proc;
    if (!p) return;
    this.#proc = undefined;
    await p.kill("SIGTERM");
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}

class FerryCloud implements CloudBroker {
  readonly kind = "ferry" as const;
  readonly url: string;
  #broker: TestBroker | undefined;
  #dir = mkdtempSync(join(tmpdir(), "ferry-cloud-"));

  constructor(readonly port: number, readonly opts: CloudOptions) {
    this.url = `${opts.tls ? "mqtts" : "mqtt"}://127.0.0.1:${port}`;
  }

  async start(): Promise<void> {
    // SQLite storage, so persistent cloud sessions survive a restart as with mosquitto's persistence.
    const tls = this.opts.tls;
    this.#broker = await startBroker({
      listeners: tls ? { mqtt_port: 0, ws_port: null, tls_port: this.port } : { mqtt_port: this.port, ws_port: null },
      ...(tls
        ? {
          tls: {
            cert: tls.cert,
            key: tls.key,
            ca: tls.ca ?? null,
            require_client_cert: tls.requireClientCert ?? false,
          },
        }
        : {}),
      data_dir: this.#dir,
      storage: { durability: "commit" },
      ...(this.opts.receiveMaximum ? { mqtt: { receive_maximum: this.opts.receiveMaximum } } : {}),
      ...(this.opts.denyPublish
        ? {
          acl: {
            default: "allow",
            rules: this.opts.denyPublish.map((topic) => ({ action: "publish", topic, permission: "deny" })),
          },
        }
        : {}),
    });
  }

  async stop(): Promise<void> {
    await this.#broker?.stop();
    this.#broker = undefined;
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }
}
