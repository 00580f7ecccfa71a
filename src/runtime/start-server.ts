import { hostname } from "node:os";
import { Broker } from "../core/broker.ts";
import { type Clock, systemClock } from "../core/clock.ts";
import { consoleLogger, type Logger } from "../core/logger.ts";
import { BrokerMetrics } from "../core/metrics.ts";
import { brokerOptionsFrom } from "../config/load.ts";
import { type FerryConfig, isLoopbackHost } from "../config/schema.ts";
import type { SqliteDriver } from "../store/sqlite/driver.ts";
import type { StoreThread } from "../store/sqlite/threaded-store.ts";
import type { Listener, ListenerFactory } from "./listener.ts";
import { openStoreWith } from "./open-store.ts";
import { cloudConnector } from "../sync/cloud-connector.ts";
import type { ConnectSocket } from "../sync/socket-port.ts";
import { UplinkManager } from "../sync/uplink-manager.ts";
import { RecentLog } from "../admin/recent-log.ts";
import { listenAdmin, type ListenHttp } from "../admin/serve.ts";
import { SecurityWiring } from "./security-wiring.ts";
import { accessFromConfig } from "./access-from-config.ts";
import { adminToken } from "./admin-token.ts";
import { listenOrExplain } from "./listen-error.ts";
import { watchStorage } from "./storage-watch.ts";
import { processStats, residentBytes } from "./process-stats.ts";

export interface RunningServer {
  broker: Broker;
  mqtt: Listener;
  ws: Listener | undefined;
  uplinks: UplinkManager;
  /** The admin API (`admin.port`), or undefined when disabled. */
  admin: Listener | undefined;
  /** MQTT over TLS (`listeners.tls_port`) and secure WebSocket (`listeners.wss_port`), when configured. */
  tls: Listener | undefined;
  wss: Listener | undefined;
  /** Re-read the password file, ACL file and certificates, and reconnect uplinks (SIGHUP); a bad file keeps the old one. */
  reload(): Promise<void>;
  /** Stop accepting, disconnect clients, flush storage. */
  stop(): Promise<void>;
}

/** Which build runs, for ferry_build_info. */
export interface BuildDetails {
  commit: string;
  runtime: string;
}

/** The runtime-specific pieces the wiring needs: listeners and a SQLite driver. */
export interface ServerAdapters extends ListenerFactory {
  readonly sqlite: SqliteDriver;
  /** Starts a thread that serves the SQLite store (`storage.writer_thread`); in-thread without it. */
  readonly spawnSqliteThread?: () => StoreThread;
  /** Read a whole file (uplink certificates and password files). */
  readFile(path: string): Promise<Uint8Array>;
  /** Serve HTTP with a fetch handler (the admin API). */
  listenHttp: ListenHttp;
  /** TCP/TLS connections out, for the uplink's own MQTT client; without it uplinks use MQTT.js. */
  connectSocket?: ConnectSocket;
  /** A full, synchronous garbage collection (the memory budget's garbage bound); without it, none is asked for. */
  collectGarbage?: () => void;
}

/** This machine's names as a browser on the network may address it: hostname and its mDNS name. */
function machineNames(): string[] {
  const name = hostname().toLowerCase().replace(/\.local$/, "");
  return name === "" ? [] : [name, `${name}.local`];
}

/**
 * Config → store, auth and ACL ports, broker, with the password and ACL files read (a bad
 * one throws). Not started and not listening: `startServerWith` does that, and kernel
 * tests use this with a manual clock.
 */
export async function buildBroker(
  adapters: ServerAdapters,
  config: FerryConfig,
  version: string,
  log: Logger,
  clock: Clock,
): Promise<{ broker: Broker; security: SecurityWiring }> {
  const store = openStoreWith(adapters, config, log);
  const metrics = new BrokerMetrics(clock.now());
  const access = accessFromConfig(config, clock, log, metrics);
  const broker = new Broker({
    options: brokerOptionsFrom(config, version),
    store,
    clock,
    logger: log,
    metrics,
    auth: access.security,
    acl: access.acl,
    residentBytes,
    collectGarbage: adapters.collectGarbage,
  });
  // Password and ACL files before anything listens: a bad one stops the start.
  const security = await SecurityWiring.load(adapters, config, access, log);
  return { broker, security };
}

/**
 * Wire config → store → broker → listeners. The same for every runtime: `runtime/bun`
 * and `runtime/deno` only pass their adapters.
 */
export async function startServerWith(
  adapters: ServerAdapters,
  config: FerryConfig,
  version: string,
  logger?: Logger,
  build?: BuildDetails,
): Promise<RunningServer> {
  // Warnings and errors are also kept in a small ring for the admin API and dashboard.
  const recent = new RecentLog();
  const log = recent.wrap(logger ?? consoleLogger(config.log_level));
  const { broker, security } = await buildBroker(adapters, config, version, log, systemClock);
  // Mosquitto's heap/current and heap/maximum, from the same process figures /metrics shows.
  let heapMax = 0;
  broker.sysSources.push(() => {
    const heap = processStats().heapBytes;
    if (heap === undefined) return [];
    heapMax = Math.max(heapMax, heap);
    return [["heap/current", heap], ["heap/maximum", heapMax]];
  });
  await broker.start();
  const uplinks = new UplinkManager(broker, config.uplinks, {
    edgeId: config.edge_id,
    connect: cloudConnector(adapters.connectSocket),
    readFile: adapters.readFile,
  });
  await uplinks.start();
  const accept = broker.accept.bind(broker);
  let mqtt: Listener;
  let ws: Listener | undefined;
  let admin: Listener | undefined;
  let stopping = false;
  try {
    const host = config.listeners.host;
    const hostOption = "listeners.host or --host";
    mqtt = await listenOrExplain(
      {
        what: "MQTT over TCP",
        host,
        port: config.listeners.mqtt_port,
        portOption: "listeners.mqtt_port or --mqtt-port",
        hostOption,
      },
      () => adapters.listenTcp(host, config.listeners.mqtt_port, accept),
    );
    try {
      const wsPort = config.listeners.ws_port;
      ws = wsPort === null ? undefined : await listenOrExplain(
        { what: "MQTT over WebSocket", host, port: wsPort, portOption: "listeners.ws_port or --ws-port", hostOption },
        () => adapters.listenWebSocket(host, wsPort, accept, config.mqtt.max_packet_size),
      );
      await security.listen(accept);
      const at = (l: Listener | undefined) => (l ? `${l.host}:${l.port}` : null);
      const token = adminToken(config, log);
      const adminSpec = {
        what: "the admin API and dashboard (HTTP)",
        host: config.admin.host,
        port: config.admin.port ?? 0,
        portOption: 'admin.port or --admin-port ("off" disables it)',
        hostOption: "admin.host",
      };
      admin = await listenAdmin((h, p, f) => listenOrExplain(adminSpec, () => adapters.listenHttp(h, p, f)), {
        broker,
        uplinks,
        config: token === config.admin.token ? config : { ...config, admin: { ...config.admin, token } },
        recent,
        ownNames: isLoopbackHost(config.admin.host) ? [] : machineNames(),
        process: processStats,
        build: { version, ...build },
        ready: () => ({ store_open: !stopping, listeners_up: !stopping }),
        listeners: () => ({
          mqtt: at(mqtt),
          ws: at(ws),
          tls: at(security.tls),
          wss: at(security.wss),
          admin: at(admin),
        }),
      });
    } catch (err) {
      mqtt.stop();
      ws?.stop();
      security.stop();
      throw err;
    }
  } catch (err) {
    // A port in use must not leave the store open (and its file locked) behind.
    await uplinks.stop();
    await broker.close();
    throw err;
  }
  security.watch();
  const stopStorageWatch = watchStorage(
    {
      full: () => broker.store.stats().full === true,
      refused: () => broker.metrics.refusedStorageFull,
      size: () => broker.store.stats(),
    },
    log,
    { maxBytes: config.storage.max_bytes },
  );
  let stopped: Promise<void> | undefined;
  return {
    broker,
    mqtt,
    ws,
    uplinks,
    admin,
    tls: security.tls,
    wss: security.wss,
    // SIGHUP: re-read password, ACL and certificate files, and reconnect uplinks so they
    // pick up renewed cloud certificates and password files too.
    reload: async () => {
      await security.reload();
      uplinks.reload();
    },
    stop: () =>
      stopped ??= (async () => {
        stopping = true; // /readyz answers 503 from here on
        stopStorageWatch();
        // Uplinks first, so their last cursor positions are written while the store is open.
        await uplinks.stop();
        // Then the broker, before the listeners: it writes v5 clients their DISCONNECT 0x8B and closes each
        // socket. Stopping the listeners first would cut every socket before that is sent
        // (they close active connections); clients arriving meanwhile are refused by the
        // closing broker.
        await broker.close();
        // The adapters write a turn's output at its end, the DISCONNECTs too: give them that
        // turn before the listeners cut every socket. (Closing the store on the storage thread
        // took a round trip, which hid this; the store on the event loop closes at once.)
        await new Promise((resolve) => setTimeout(resolve, 10));
        mqtt.stop();
        ws?.stop();
        security.stop();
        admin?.stop();
      })(),
  };
}
