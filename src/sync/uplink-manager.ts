/**
 * Runs the configured uplinks: registers them as log readers with the broker, gives
 * each its recovered cursor, forgets cursors of uplinks no longer configured (so they
 * stop holding the log), watches whether the clock is synchronised, and publishes their
 * status under $SYS/broker/uplink/<name>/.
 */
import type { UplinkConfig } from "../config/schema.ts";
import type { Broker } from "../core/broker.ts";
import type { Message } from "../store/store.ts";
import { ClockMarks } from "./clock-marks.ts";
import { probeClock } from "./clock-probe.ts";
import type { ClockState } from "./cloud-properties.ts";
import { brokerLogPort, brokerPublishPort, type LogPort } from "./log-port.ts";
import { type LinkDeps, type LinkStatus, UplinkLink } from "./uplink-link.ts";

/** The counter holding this log's id (part of the dedup key). */
const LOG_ID = "log/id";
/** How often the clock's synchronisation is checked. */
const CLOCK_PROBE_MS = 10_000;

export interface ManagerDeps {
  edgeId: string;
  connect: LinkDeps["connect"];
  readFile: LinkDeps["readFile"];
  /** Whether the clock is synchronised now; default: clock-probe.ts with readFile. */
  clockProbe?: () => Promise<ClockState>;
}

export class UplinkManager {
  readonly links: UplinkLink[];
  #log: LogPort;
  #marks: ClockMarks;
  #logId: string;
  #probeTimer: unknown;
  #probe: () => Promise<ClockState>;

  constructor(private readonly broker: Broker, configs: UplinkConfig[], deps: ManagerDeps) {
    this.#log = brokerLogPort(broker);
    this.#marks = new ClockMarks({});
    this.#logId = "";
    this.#probe = deps.clockProbe ?? (() => probeClock(this.#log.clock.now(), deps.readFile));
    const local = brokerPublishPort(broker);
    this.links = configs.map((c) =>
      new UplinkLink(c, {
        log: this.#log,
        local,
        edgeId: deps.edgeId,
        logId: () => this.#logId,
        clockAt: (offset) => this.#marks.at(offset),
        connect: deps.connect,
        readFile: deps.readFile,
        // What a local client may send is also what the cloud may: downlink messages go to them.
        maxPacketSize: broker.options.maxPacketSize,
      })
    );
  }

  /** Call after `broker.start()` and before clients are accepted. */
  async start(): Promise<void> {
    const saved = this.#log.savedCounters();
    this.#marks = new ClockMarks(saved);
    if (this.links.length > 0) await this.#startLogId(saved[LOG_ID]);
    await this.#checkClock();
    const cursors = this.#log.savedCursors();
    const names = new Set(this.links.map((l) => l.name));
    const stale = Object.keys(cursors).filter((n) => !names.has(n));
    if (stale.length > 0) {
      await this.#log.deleteCursors(stale);
      this.#log.logger.info(`uplink cursors released (no longer configured): ${stale.join(", ")}`);
    }
    const links = this.links;
    this.broker.addLogReader({
      wants: (topic) => links.some((l) => l.wants(topic)),
      onLogged: (m: Message) => {
        for (const l of links) l.onLogged(m);
      },
    });
    const fresh = this.links.filter((l) => cursors[l.name] === undefined);
    if (fresh.length > 0) {
      // A new uplink forwards what arrives from now on, not the whole history.
      const start = this.#log.nextOffset() - 1;
      await Promise.all(fresh.map((l) => this.#log.saveCursor(l.name, start)));
    }
    for (const l of this.links) l.start(cursors[l.name] ?? this.#log.nextOffset() - 1);
    if (this.links.length > 0) this.#scheduleClockCheck();
    this.broker.sysSources.push(() => this.#sysValues());
  }

  /** A log id is made once per log: it is saved with the log, so it lasts as long as the offsets do. */
  async #startLogId(saved: number | undefined): Promise<void> {
    let id = saved;
    if (id === undefined) {
      id = 1 + Math.floor(Math.random() * 0xffff_ffff);
      await this.#log.saveCounters({ [LOG_ID]: id });
    }
    this.#logId = id.toString(36);
  }

  async #checkClock(): Promise<void> {
    let state: ClockState;
    try {
      state = await this.#probe();
    } catch {
      state = "unknown";
    }
    const changed = this.#marks.observe(state, this.#log.nextOffset());
    if (!changed) return;
    this.#log.logger.info(`uplink: the clock is ${state === "unknown" ? "of unknown synchronisation" : state}`);
    await this.#log.saveCounters(changed).catch(() => {});
  }

  #scheduleClockCheck(): void {
    this.#probeTimer = this.#log.clock.setTimeout(() => {
      void this.#checkClock().finally(() => {
        if (this.#probeTimer !== undefined) this.#scheduleClockCheck();
      });
    }, CLOCK_PROBE_MS);
  }

  async stop(): Promise<void> {
    this.#log.clock.clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    await Promise.all(this.links.map((l) => l.stop()));
  }

  /** Reconnect every link, re-reading certificate and password files. */
  reload(): void {
    for (const l of this.links) l.reload();
  }

  status(): LinkStatus[] {
    return this.links.map((l) => l.status());
  }

  #sysValues(): Array<[string, string | number]> {
    const out: Array<[string, string | number]> = [];
    for (const s of this.status()) {
      const p = `uplink/${s.name}/`;
      out.push(
        [p + "state", s.state],
        [p + "url", s.url],
        [p + "backlog/entries", s.backlogEntries],
        [p + "backlog/oldest_ms", s.oldestPendingMs],
        [p + "inflight", s.inflight],
        [p + "window", s.window],
        [p + "sent", s.sent],
        [p + "acknowledged", s.acknowledged],
        [p + "drain_rate", Math.round(s.drainRate)],
        [p + "dropped/ttl", s.droppedTtl],
        [p + "dropped/refused", s.droppedRefused],
        [p + "dropped/buffer", s.droppedBuffer],
        [p + "dropped/invalid", s.droppedInvalid],
        [p + "quota_backoffs", s.quotaBackoffs],
        [p + "downlink/received", s.downlinkReceived],
        [p + "downlink/refused", s.downlinkRefused],
        [p + "reconnects", s.reconnects],
        [p + "connect_attempts", s.connectAttempts],
        [p + "last_error", s.lastError ?? ""],
      );
    }
    return out;
  }
}
