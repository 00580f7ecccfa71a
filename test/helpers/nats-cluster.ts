/**
 * A real distributed MQTT broker for the uplink's failover tests: a 3-node NATS
 * cluster (Debian's nats-server) with JetStream and an MQTT listener on each node, MQTT
 * streams replicated on all three (stream_replicas 3), on free loopback ports in a temp
 * directory. NATS speaks MQTT 3.1.1 with QoS 0/1 only; MQTT 5 features are tested
 * against mosquitto. `NATS_SERVER` is undefined when nats-server is not installed.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Serving, spawnServe } from "./broker-process.ts";
import { freePort } from "./cloud-broker.ts";

export const NATS_SERVER = ["/usr/sbin/nats-server", "/usr/bin/nats-server"].find((p) => existsSync(p));

export interface NatsNode {
  name: string;
  mqttPort: number;
  url: string;
  alive: boolean;
}

export class NatsCluster {
  readonly nodes: NatsNode[] = [];
  #procs: Array<Serving | undefined> = [];
  #dir = mkdtempSync(join(tmpdir(), "ferry-nats-"));

  /** Start three nodes and wait until each has its MQTT listener up. */
  static async start(): Promise<NatsCluster> {
    const c = new NatsCluster();
    const ports = await Promise.all(Array.from({ length: 9 }, () => freePort()));
    const routes = [0, 1, 2].map((i) => `nats://127.0.0.1:${ports[3 + i]}`);
    for (let i = 0; i < 3; i++) {
      const name = `n${i + 1}`;
      const conf = join(c.#dir, `${name}.conf`);
      writeFileSync(
        conf,
        [
          `server_name: ${name}`,
          `listen: 127.0.0.1:${ports[i]}`,
          `jetstream { store_dir: "${join(c.#dir, name)}" }`,
          `cluster { name: ferry, listen: 127.0.0.1:${ports[3 + i]}, routes: [${routes.join(", ")}] }`,
          // Sessions, retained messages and QoS 1 queues on all three nodes.
          `mqtt { listen: 127.0.0.1:${ports[6 + i]}, stream_replicas: 3 }`,
          "",
        ].join("\n"),
      );
      const mqttPort = ports[6 + i]!;
      c.nodes.push({ name, mqttPort, url: `mqtt://127.0.0.1:${mqttPort}`, alive: true });
    }
    // Each node logs (to stderr) when its MQTT listener is up and when it is ready.
    const started = await Promise.allSettled(
      c.nodes.map((n, i) =>
        spawnServe([NATS_SERVER!, "-c", join(c.#dir, `${n.name}.conf`)], {
          from: "stderr",
          until: [/Listening for MQTT clients/, /Server is ready/],
        }).then((s) => (c.#procs[i] = s))
      ),
    );
    const failed = started.find((r) => r.status === "rejected");
    if (failed) {
      await c.stop();
      throw (failed as PromiseRejectedResult).reason;
    }
    return c;
  }

  /** SIGKILL one node. */
  async kill(i: number): Promise<void> {
    const p = this.#procs[i];
    if (!p) return;
    this.#procs[i] = undefined;
    this.nodes[i]!.alive = false;
    await p.kill("SIGKILL");
  }

  async stop(): Promise<void> {
    for (let i = 0; i < this.#procs.length; i++) await this.kill(i);
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
