/**
 * A broker built from a config object exactly as the server builds it (the same
 * `buildBroker` wiring: store, auth and ACL ports, password and ACL files), but on a
 * manual clock and without listeners: clients connect over in-memory connections. For
 * kernel timing tests (keep alive, Will delay, expiry, bans) that advance time instead
 * of sleeping. Adapters, interop and crash tests stay on real sockets.
 */
import type { IConnackPacket, IConnectPacket } from "mqtt-packet";
import type { FerryConfig } from "../../src/config/schema.ts";
import type { Broker } from "../../src/core/broker.ts";
import { silentLogger } from "../../src/core/logger.ts";
import { bunAdapters } from "../../src/runtime/bun/server.ts";
import { buildBroker } from "../../src/runtime/start-server.ts";
import { type DeepPartial, testConfig } from "./broker.ts";
import { ManualClock, settle } from "./manual-clock.ts";
import { MemoryClient } from "./memory-client.ts";
import { memoryConnectionPair } from "./memory-connection.ts";
import { connectPacket } from "./raw-client.ts";

export interface InProcessBroker {
  broker: Broker;
  clock: ManualClock;
  config: FerryConfig;
  /** A raw client on a new in-memory connection from `address` ("ip:port"). */
  open(version?: 3 | 4 | 5, address?: string): MemoryClient;
  /** Open, send CONNECT (protocol `version`, fields from `connect`) and wait for the CONNACK. */
  attempt(
    version: 4 | 5,
    connect?: Partial<IConnectPacket>,
    address?: string,
  ): Promise<{ raw: MemoryClient; ack: IConnackPacket }>;
  /** As `attempt`, but throws unless the CONNACK accepts. */
  connected(version: 4 | 5, connect?: Partial<IConnectPacket>, address?: string): Promise<MemoryClient>;
  /** A v5 client subscribed to `topic` (SUBACK received); its PUBLISHes collect in `packets`. */
  subscriber(topic: string, qos?: 0 | 1 | 2): Promise<MemoryClient>;
  /** Advance the manual clock by `ms` (timers fire on the way) and let the broker settle. */
  advance(ms: number): Promise<void>;
  stop(): Promise<void>;
}

let nextPort = 40000;

export async function inProcessBroker(overrides: DeepPartial<FerryConfig> = {}): Promise<InProcessBroker> {
  const config = testConfig(overrides);
  const clock = new ManualClock();
  const { broker } = await buildBroker(bunAdapters, config, "test", silentLogger, clock);
  await broker.start();
  const open = (version: 3 | 4 | 5 = 4, address = `127.0.0.1:${nextPort++}`) => {
    const { server, client } = memoryConnectionPair(address);
    const raw = new MemoryClient(client, version);
    server.handler = broker.accept(server);
    return raw;
  };
  const attempt = async (version: 4 | 5, connect: Partial<IConnectPacket> = {}, address?: string) => {
    const raw = open(version, address);
    raw.send(connectPacket(version, connect), version);
    return { raw, ack: await raw.next("connack") };
  };
  return {
    broker,
    clock,
    config,
    open,
    attempt,
    connected: async (version, connect = {}, address) => {
      const { raw, ack } = await attempt(version, connect, address);
      const code = ack.reasonCode ?? ack.returnCode ?? 0;
      if (code !== 0) throw new Error(`connack ${code}`);
      return raw;
    },
    subscriber: async (topic, qos = 1) => {
      const { raw } = await attempt(5, {});
      raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos }] });
      await raw.next("suback");
      return raw;
    },
    advance: (ms) => clock.advance(ms),
    stop: async () => {
      await broker.close();
      await settle();
    },
  };
}
