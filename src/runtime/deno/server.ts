import type { Logger } from "../../core/logger.ts";
import type { FerryConfig } from "../../config/schema.ts";
import { type BuildDetails, type RunningServer, type ServerAdapters, startServerWith } from "../start-server.ts";
import { nodeSqliteDriver } from "./sqlite-driver.ts";
import { spawnSqliteThread } from "./sqlite-thread-spawn.ts";
import { listenTcp } from "./tcp-listener.ts";
import { listenWebSocket } from "./ws-listener.ts";
import { listenTls } from "./tls-listener.ts";
import { listenHttp } from "./http-listener.ts";
import { deno } from "./deno-api.ts";
import { connectCloudSocket } from "./cloud-socket.ts";

export type { RunningServer } from "../start-server.ts";

/** V8's collector, there only when Deno runs with `--v8-flags=--expose-gc`; without it the garbage bound is off. */
const v8Gc = (globalThis as { gc?: () => void }).gc;

/** Deno's adapters: `Deno.listen`, `Deno.serve` + `Deno.upgradeWebSocket`, `node:sqlite` on a storage thread. */
export const denoAdapters: ServerAdapters = {
  listenTcp,
  listenWebSocket,
  listenTls,
  listenHttp,
  sqlite: nodeSqliteDriver,
  spawnSqliteThread,
  readFile: (path) => deno.readFile(path),
  connectSocket: connectCloudSocket,
  ...(v8Gc === undefined ? {} : { collectGarbage: () => v8Gc() }),
};

/** Wire config → store → broker → listeners, on Deno (the wiring is shared with Bun). */
export function startServer(
  config: FerryConfig,
  version: string,
  logger?: Logger,
  build?: BuildDetails,
): Promise<RunningServer> {
  return startServerWith(denoAdapters, config, version, logger, build);
}
