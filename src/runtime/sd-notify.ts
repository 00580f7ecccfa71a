/**
 * The systemd service protocol (sd_notify(3)) as the server uses it, runtime-free: the
 * runtime supplies a `Notifier` that sends one datagram to $NOTIFY_SOCKET.
 *
 *   READY=1        once every listener accepts (Type=notify: `systemctl start` returns then)
 *   RELOADING=1    on SIGHUP, with MONOTONIC_USEC as systemd 253+ wants, then READY=1 again
 *   STOPPING=1     when shutting down
 *   WATCHDOG=1     every half of $WATCHDOG_USEC (WatchdogSec=), from the event loop, so a
 *                  wedged loop stops the pings and systemd restarts the service
 *   STATUS=…       a line `systemctl status` shows
 */
import type { Logger } from "../core/logger.ts";

/** Sends one notification datagram. */
export type Notifier = (state: string) => Promise<void>;

export interface ServiceNotifier {
  ready(status: string): void;
  reloading(): void;
  stopping(): void;
  /** Stop the watchdog pings. */
  close(): void;
}

export interface ServiceNotifierOptions {
  env: (name: string) => string | undefined;
  /** The runtime's notifier for $NOTIFY_SOCKET's path, or undefined when it has none. */
  notifierFor: ((socketPath: string) => Notifier) | undefined;
  pid: number;
  log: Logger;
  /** CLOCK_MONOTONIC in microseconds. */
  monotonicUsec: () => Promise<bigint>;
}

const NONE: ServiceNotifier = { ready() {}, reloading() {}, stopping() {}, close() {} };

/** A notifier for this process; without $NOTIFY_SOCKET (not under systemd) every call does nothing. */
export function serviceNotifier(o: ServiceNotifierOptions): ServiceNotifier {
  const socket = o.env("NOTIFY_SOCKET");
  if (!socket) return NONE;
  if (!o.notifierFor) {
    o.log.warn("systemd: NOTIFY_SOCKET is set but this runtime cannot send to it; use Type=simple");
    return NONE;
  }
  let notify: Notifier;
  try {
    notify = o.notifierFor(socket);
  } catch (err) {
    o.log.error(`systemd: ${(err as Error).message}`);
    return NONE;
  }
  let failed = false;
  // One at a time, in order: RELOADING=1 must reach systemd before the READY=1 that ends it.
  let queue = Promise.resolve();
  const send = (state: string | (() => Promise<string>)) => {
    queue = queue.then(async () => notify(typeof state === "string" ? state : await state())).catch((err: Error) => {
      if (failed) return;
      failed = true; // once: a broken socket would otherwise log at every watchdog ping
      o.log.error(`systemd: notifying ${socket} failed: ${err.message}`);
    });
  };
  let watchdog: ReturnType<typeof setInterval> | undefined;
  const usec = Number(o.env("WATCHDOG_USEC") ?? 0);
  const watchdogPid = o.env("WATCHDOG_PID");
  if (usec > 0 && (!watchdogPid || Number(watchdogPid) === o.pid)) {
    // Half the timeout, as sd_watchdog_enabled(3) recommends.
    watchdog = setInterval(() => send("WATCHDOG=1"), Math.max(1, Math.floor(usec / 2000)));
    (watchdog as { unref?: () => void }).unref?.();
  }
  return {
    ready: (status) => send(`READY=1\nSTATUS=${status.replace(/\n/g, " ")}`),
    reloading: () => send(async () => `RELOADING=1\nMONOTONIC_USEC=${await o.monotonicUsec()}\nSTATUS=reloading`),
    stopping: () => send("STOPPING=1\nSTATUS=shutting down"),
    close: () => clearInterval(watchdog),
  };
}
