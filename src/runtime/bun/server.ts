import { Broker } from "../../core/broker.ts";
import { systemClock } from "../../core/clock.ts";
import { consoleLogger, type Logger } from "../../core/logger.ts";
import { brokerOptionsFrom } from "../../config/load.ts";
import type { FerryConfig } from "../../config/schema.ts";
import { MemoryStore } from "../../store/memory-store.ts";
import type { Store } from "../../store/store.ts";
import { listenTcp, type TcpListener } from "./tcp-listener.ts";
import { listenWebSocket, type WsListener } from "./ws-listener.ts";
import { openSqliteStore } from "./open-store.ts";

export interface RunningServer {
  broker: Broker;
  mqtt: TcpListener;
  ws: WsListener | undefined;
  /** Stop accepting, disconnect clients, flush storage. */
  stop(): Promise<void>;
}

/** Wire config → store → broker → listeners, on Bun. */
export async function startServer(config: FerryConfig, version: string, logger?: Logger): Promise<RunningServer> {
  const log = logger ?? consoleLogger(config.log_level);
  const store: Store = config.storage.durability === "memory" ? new MemoryStore() : openSqliteStore(config, log);
  const broker = new Broker({ options: brokerOptionsFrom(config, version), store, clock: systemClock, logger: log });
  await broker.start();
  const accept = broker.accept.bind(broker);
  const mqtt = listenTcp(config.listeners.host, config.listeners.mqtt_port, accept);
  const ws = config.listeners.ws_port === null
    ? undefined
    : listenWebSocket(config.listeners.host, config.listeners.ws_port, accept, config.mqtt.max_packet_size);
  let stopped: Promise<void> | undefined;
  return {
    broker,
    mqtt,
    ws,
    stop: () =>
      stopped ??= (async () => {
        mqtt.stop();
        ws?.stop();
        await broker.close();
      })(),
  };
}
