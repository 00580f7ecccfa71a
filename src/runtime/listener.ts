import type { Connection, ConnectionHandler } from "../core/connection.ts";

/** A bound listener as the wiring sees it, whatever the runtime. */
export interface Listener {
  readonly host: string;
  readonly port: number;
  /** Stop accepting and drop the connections it still holds. */
  stop(): void;
}

/** Hands each accepted client to the broker. */
export type Accept = (conn: Connection) => ConnectionHandler;

/** What a runtime must provide to run Ferry's listeners. */
export interface ListenerFactory {
  listenTcp(host: string, port: number, accept: Accept): Listener | Promise<Listener>;
  listenWebSocket(
    host: string,
    port: number,
    accept: Accept,
    maxPacketSize: number,
  ): Listener | Promise<Listener>;
}
