/**
 * Start a real Ferry on a free loopback port for a test, with its defaults except
 * what the test overrides. Everything runs over real sockets.
 */
import { validateConfig } from "../../src/config/load.ts";
import type { FerryConfig } from "../../src/config/schema.ts";
import { type Logger, silentLogger } from "../../src/core/logger.ts";
import { type RunningServer, startServer } from "../../src/runtime/bun/server.ts";

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export interface TestBroker {
  server: RunningServer;
  port: number;
  wsPort: number;
  url: string;
  wsUrl: string;
  stop(): Promise<void>;
}

/** A test's config: loopback, free ports, memory storage, no $SYS, no admin API, plus `overrides`. */
export function testConfig(overrides: DeepPartial<FerryConfig> = {}): FerryConfig {
  const base = {
    listeners: { host: "127.0.0.1", mqtt_port: 0, ws_port: 0 },
    storage: { durability: "memory" },
    log_level: "silent",
    mqtt: { sys_interval: 0 },
    admin: { port: null }, // tests that use the admin API ask for it (port 0)
    // Every test client comes from 127.0.0.1: per-address limits would count them all as
    // one. Tests of the limits (and of this default) turn it back off.
    limits: { exempt_loopback: true },
  };
  return validateConfig(merge(base, overrides));
}

export async function startBroker(
  overrides: DeepPartial<FerryConfig> = {},
  logger: Logger = silentLogger,
): Promise<TestBroker> {
  const config = testConfig(overrides);
  const server = await startServer(config, "test", logger);
  const port = server.mqtt.port;
  const wsPort = server.ws?.port ?? 0;
  return {
    server,
    port,
    wsPort,
    url: `mqtt://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${wsPort}/mqtt`,
    stop: () => server.stop(),
  };
}

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const cur = out[k];
    out[k] = v && typeof v === "object" && !Array.isArray(v) && cur && typeof cur === "object"
      ? merge(cur as Record<string, unknown>, v as Record<string, unknown>)
      : v;
  }
  return out;
}
