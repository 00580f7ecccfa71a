/**
 * The uplink's connections out (src/sync/socket-port.ts) with `Bun.connect`: the same
 * write path as accepted connections (BunSocketConnection: pending writes joined into one
 * send, what the OS does not take kept until Bun's drain), flushed at the end of the task
 * (flushedAfterTask), TLS verified by BoringSSL.
 */
import type { Socket } from "bun";
import type { CloudSocket, CloudSocketHandler, SocketOptions } from "../../sync/socket-port.ts";
import { BunSocketConnection } from "./tcp-listener.ts";
import { readHold } from "../read-hold.ts";

/** What a socket carries: its connection once open, and the first error seen. */
interface Slot {
  conn: BunSocketConnection | undefined;
  error: Error | undefined;
}

/** Node's wording for a failed connect (`connect ECONNREFUSED 127.0.0.1:1883`), which logs and tests know. */
function connectFailure(err: Error, o: SocketOptions): Error {
  const code = (err as Error & { code?: unknown }).code;
  if (typeof code !== "string" || code === "") return err;
  return Object.assign(new Error(`connect ${code} ${o.host}:${o.port}`), { code });
}

/**
 * `conn`, written at the end of the current task (after its microtasks) rather than at
 * the end of the event-loop turn where accepted connections flush: the uplink's PUBLISHes
 * answer PUBACKs just read, and waiting for the turn's end delays the next round trip.
 */
function flushedAfterTask(conn: BunSocketConnection): CloudSocket {
  let queued = false;
  const flush = () => {
    queued = false;
    conn.flush();
  };
  return {
    write(bytes) {
      conn.write(bytes);
      if (!queued) {
        queued = true;
        queueMicrotask(flush);
      }
    },
    bufferedBytes: () => conn.bufferedBytes(),
    // Bun stops polling the socket for reads; writes and drains go on.
    holdReads: readHold(conn),
    close: () => conn.close(),
  };
}

export function connectCloudSocket(o: SocketOptions, h: CloudSocketHandler): Promise<CloudSocket> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const ready = (socket: Socket<Slot>) => {
      const conn = new BunSocketConnection(socket as Socket<unknown>, o.host);
      socket.data.conn = conn;
      settled = true;
      resolve(flushedAfterTask(conn));
    };
    const tls = o.tls;
    Bun.connect<Slot>({
      hostname: o.host,
      port: o.port,
      data: { conn: undefined, error: undefined },
      ...(tls
        ? {
          tls: {
            ...(tls.ca ? { ca: Buffer.from(tls.ca) } : {}),
            ...(tls.cert ? { cert: Buffer.from(tls.cert) } : {}),
            ...(tls.key ? { key: Buffer.from(tls.key) } : {}),
            rejectUnauthorized: tls.rejectUnauthorized,
            serverName: tls.serverName,
          },
        }
        : {}),
      socket: {
        open(socket) {
          socket.setNoDelay?.(true);
          if (!tls) ready(socket);
        },
        handshake(socket, success, authorizationError) {
          if (success) ready(socket);
          // Not trusted: Bun closes the socket; `close` rejects with this.
          else socket.data.error ??= authorizationError ?? new Error("TLS handshake failed");
        },
        data(socket, data) {
          if (socket.data.conn) h.onData(data);
        },
        drain(socket) {
          const conn = socket.data.conn;
          if (!conn) return;
          conn.flush();
          h.onDrain();
        },
        error(socket, error) {
          socket.data.error ??= error;
        },
        close(socket, error) {
          const slot = socket.data;
          slot.conn?.markClosed();
          const err = slot.error ?? error;
          if (!settled) {
            settled = true;
            reject(err ?? new Error("connection closed"));
          } else h.onClose(err);
        },
        connectError(_socket, error) {
          if (settled) return;
          settled = true;
          reject(connectFailure(error, o));
        },
      },
    }).catch((err: unknown) => {
      // connectError has already rejected; anything else (bad options) rejects here.
      if (settled) return;
      settled = true;
      reject(err instanceof Error ? err : new Error(String(err)));
    });
  });
}
