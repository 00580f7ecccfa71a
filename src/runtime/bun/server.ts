import type { Logger } from "../../core/logger.ts";
import type { FerryConfig } from "../../config/schema.ts";
import { type BuildDetails, type RunningServer, type ServerAdapters, startServerWith } from "../start-server.ts";
import { bunSqliteDriver } from "./sqlite-driver.ts";
import { spawnSqliteThread } from "./sqlite-thread-spawn.ts";
import { listenTcp } from "./tcp-listener.ts";
import { listenSecureWebSocket, listenWebSocket } from "./ws-listener.ts";
import { listenTls } from "./tls-listener.ts";
import { listenHttp } from "./http-listener.ts";
import { readFileBytes } from "./read-file.ts";
import { connectCloudSocket } from "./cloud-socket.ts";

export type { RunningServer } from "../start-server.ts";

/** Bun's adapters: `Bun.listen`, `Bun.serve` WebSocket, `bun:sqlite`. */
export const bunAdapters: ServerAdapters = {
  listenTcp,
  listenWebSocket,
  listenTls,
  listenSecureWebSocket,
  listenHttp,
  sqlite: bunSqliteDriver,
  spawnSqliteThread,
  readFile: readFileBytes,
  connectSocket: connectCloudSocket,
  collectGarbage: () => Bun.gc(true),
};

/**
 * Wire config → store → broker → listeners, on Bun. The wiring itself is shared with
 * Deno (`../start-server.ts`); add new parts of the server there.
 */
export function startServer(
  config: FerryConfig,
  version: string,
  logger?: Logger,
  build?: BuildDetails,
): Promise<RunningServer> {
  return startServerWith(bunAdapters, config, version, logger, build);
}
