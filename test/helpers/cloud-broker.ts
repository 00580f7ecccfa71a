/**
 * A real MQTT broker playing "the cloud" for uplink tests: Debian's mosquitto when it
 * is installed, otherwise a second Ferry (in-process, memory storage), so the suite
 * still runs on a fresh machine.
 */
import { chmodSync, existsSync, mkdtempSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startBroker, type TestBroker } from "./broker.ts";

export const MOSQUITTO = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"].find((p) => existsSync(p));

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

async function waitForPort(port: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.destroy();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (ok) return;
    if (Date.now() > end) throw new Error(`nothing listening on ${port}`);
    await Bun.sleep(25);
  }
}

/** Create (not start) a cloud broker on a fixed free port, so it can be started later. */
export async function createCloud(opts: CloudOptions = {}): Promise<CloudBroker> {
  const port = await freePort();
  if (MOSQUITTO) return new MosquittoCloud(port, opts);
  return new FerryCloud(port);
}

class MosquittoCloud implements CloudBroker {
  readonly kind = "mosquitto" as const;
  readonly url: string;
  #proc: ReturnType<typeof Bun.spawn> | undefined;
  #conf: string;

  constructor(readonly port: number, opts: CloudOptions) {
    const dir = mkdtempSync(join(tmpdir(), "ferry-cloud-"));
    // Started as root, mosquitto drops to its own user: it must be able to write its persistence file here.
    chmodSync(dir, 0o777);
    this.#conf = join(dir, "mosquitto.conf");
    const tls = (opts.listenerLines?.length ?? 0) > 0;
    this.url = `${tls ? "mqtts" : "mqtt"}://127.0.0.1:${port}`;
    writeFileSync(
      this.#conf,
      [
        `listener ${port} 127.0.0.1`,
        ...(opts.listenerLines ?? []),
        "allow_anonymous true",
        // Mosquitto drops beyond max_queued_messages (default 1000): raised so the cloud is not the bottleneck.
        "max_queued_messages 1000000",
        "max_inflight_messages 0",
        `persistence ${opts.persistent ? "true" : "false"}`,
        `persistence_location ${dir}/`,
        "log_dest none",
        "",
      ].join("\n"),
    );
  }

  async start(): Promise<void> {
    this.#proc = Bun.spawn([MOSQUITTO!, "-c", this.#conf], { stdout: "ignore", stderr: "ignore" });
    await waitForPort(this.port);
  }

  async stop(): Promise<void> {
    const p = this.#proc;
    if (!p) return;
    this.#proc = undefined;
    p.kill("SIGTERM");
    await p.exited;
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

  constructor(readonly port: number) {
    this.url = `mqtt://127.0.0.1:${port}`;
  }

  async start(): Promise<void> {
    // SQLite storage, so persistent cloud sessions survive a restart as with mosquitto's persistence.
    this.#broker = await startBroker({
      listeners: { mqtt_port: this.port, ws_port: null },
      data_dir: this.#dir,
      storage: { durability: "commit" },
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
