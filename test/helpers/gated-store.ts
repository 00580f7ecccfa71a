/**
 * A store whose commits become durable only when a test says so, for the in-process
 * tier: it wraps a MemoryStore (the "disk"), queues every commit in order, and applies a
 * prefix of the queue on `flush`. `crash()` forgets what was never flushed, as kill -9
 * forgets an unsynced transaction, and hands back a new store on the same disk for the
 * next broker. With `brokerOn` a test runs a broker on it over in-memory connections and
 * a manual clock, so it can check what a client sees before and after each commit.
 */
import type { IConnectPacket } from "mqtt-packet";
import type { Broker } from "../../src/core/broker.ts";
import { Broker as BrokerClass } from "../../src/core/broker.ts";
import { silentLogger } from "../../src/core/logger.ts";
import { brokerOptionsFrom } from "../../src/config/load.ts";
import type { FerryConfig } from "../../src/config/schema.ts";
import { MemoryStore } from "../../src/store/memory-store.ts";
import type { Message, Mutation, Recovered, Store, StoreStats } from "../../src/store/store.ts";
import { type DeepPartial, testConfig } from "./broker.ts";
import { ManualClock, settle } from "./manual-clock.ts";
import { MemoryClient } from "./memory-client.ts";
import { memoryConnectionPair } from "./memory-connection.ts";

interface Pending {
  mutations: readonly Mutation[];
  resolve: () => void;
}

export class GatedStore implements Store {
  readonly kind = "gated";
  /** While true, commits wait for `flush`; while false they apply at once (behind any that wait). */
  gated = false;
  /** Every list committed, in order, as handed in. */
  readonly committed: Mutation[][] = [];
  /** Every list that became durable, in order. */
  readonly durable: Mutation[][] = [];
  #pending: Pending[] = [];
  #dead = false;

  constructor(readonly disk = new MemoryStore()) {}

  open(): Promise<Recovered> {
    return this.disk.open();
  }

  commit(mutations: readonly Mutation[]): Promise<void> {
    if (this.#dead) return new Promise<void>(() => {}); // the process is gone: never settles
    this.committed.push([...mutations]);
    if (!this.gated && this.#pending.length === 0) {
      this.durable.push([...mutations]);
      return this.disk.commit(mutations);
    }
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#pending.push({ mutations, resolve });
    return promise;
  }

  /** Commits waiting to become durable. */
  get pending(): number {
    return this.#pending.length;
  }

  /** The ops of every mutation that became durable, oldest first. */
  durableOps(): string[] {
    return this.durable.flatMap((list) => list.map((m) => m.op));
  }

  /** The mutations of the commits still waiting, oldest first. */
  pendingMutations(): Mutation[] {
    return this.#pending.flatMap((p) => [...p.mutations]);
  }

  /** Make the oldest `n` waiting commits (default: all) durable, in order. */
  flush(n = this.#pending.length): void {
    for (const p of this.#pending.splice(0, n)) {
      this.durable.push([...p.mutations]);
      void this.disk.commit(p.mutations);
      p.resolve();
    }
  }

  /** kill -9: what was not flushed is lost; returns a store on the same disk for the next start. */
  crash(): GatedStore {
    this.#dead = true;
    this.#pending = [];
    return new GatedStore(this.disk);
  }

  readLog(from: number, limit: number): Promise<Message[]> {
    return this.disk.readLog(from, limit);
  }

  /** Reads see the disk only: what was flushed (the tests read recovered, durable bodies). */
  readMessages(offsets: readonly number[]): Promise<Message[]> {
    return this.disk.readMessages(offsets);
  }

  readRetained(topics: readonly string[]): Promise<Message[]> {
    return this.disk.readRetained(topics);
  }

  get offloadsBodies(): boolean {
    return this.disk.offloadsBodies;
  }

  stats(): StoreStats {
    return this.disk.stats();
  }

  close(): Promise<void> {
    return Promise.resolve();
  }
}

export interface GatedBroker {
  broker: Broker;
  store: GatedStore;
  clock: ManualClock;
  /** A raw client on a new in-memory connection. */
  open(version?: 4 | 5): MemoryClient;
  /** Open and CONNECT (clean start off unless `connect` says otherwise); resolves with CONNACK's Session Present. */
  connect(raw: MemoryClient, clientId: string, version: 4 | 5, connect?: Partial<IConnectPacket>): Promise<boolean>;
}

/** A started broker on `store` (commit-mode semantics: acks wait for commits). */
export async function brokerOn(
  store: GatedStore,
  overrides: DeepPartial<FerryConfig> = {},
): Promise<GatedBroker> {
  const clock = new ManualClock();
  const config = testConfig({ ...overrides, storage: { durability: "commit", ...overrides.storage } });
  const broker = new BrokerClass({
    options: brokerOptionsFrom(config, "test"),
    store,
    clock,
    logger: silentLogger,
  });
  await broker.start();
  const open = (version: 4 | 5 = 5) => {
    const { server, client } = memoryConnectionPair();
    const raw = new MemoryClient(client, version);
    server.handler = broker.accept(server);
    return raw;
  };
  const connect = async (raw: MemoryClient, clientId: string, version: 4 | 5, extra: Partial<IConnectPacket> = {}) => {
    const packet: IConnectPacket = {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: version,
      clientId,
      clean: false,
      keepalive: 0,
      ...(version === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}),
      ...extra,
    };
    raw.send(packet, version);
    const ack = await raw.next("connack");
    const code = ack.reasonCode ?? ack.returnCode ?? 0;
    if (code !== 0) throw new Error(`connack ${code}`);
    await settle();
    return ack.sessionPresent;
  };
  return { broker, store, clock, open, connect };
}
