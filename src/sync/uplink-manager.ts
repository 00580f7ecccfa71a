/**
 * Runs the configured uplinks: registers them as log readers with the broker, gives
 * each its recovered cursor, forgets cursors of uplinks no longer configured (so they
 * stop holding the log), and publishes their status under $SYS/broker/uplink/<name>/.
 */
import type { UplinkConfig } from "../config/schema.ts";
import type { Broker } from "../core/broker.ts";
import type { Message } from "../store/store.ts";
import { type LinkDeps, type LinkStatus, UplinkLink } from "./uplink-link.ts";

export class UplinkManager {
  readonly links: UplinkLink[];

  constructor(private readonly broker: Broker, configs: UplinkConfig[], deps: Omit<LinkDeps, "broker">) {
    this.links = configs.map((c) => new UplinkLink(c, { ...deps, broker }));
  }

  /** Call after `broker.start()` and before clients are accepted. */
  async start(): Promise<void> {
    const cursors = this.broker.recoveredCursors;
    const names = new Set(this.links.map((l) => l.name));
    const stale = Object.keys(cursors).filter((n) => !names.has(n));
    if (stale.length > 0) {
      await this.broker.store.commit(stale.map((name) => ({ op: "cursor-delete" as const, name })));
      this.broker.logger.info(`uplink cursors released (no longer configured): ${stale.join(", ")}`);
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
      const start = this.broker.nextOffset - 1;
      await this.broker.store.commit(fresh.map((l) => ({ op: "cursor-put" as const, name: l.name, offset: start })));
    }
    for (const l of this.links) l.start(cursors[l.name] ?? this.broker.nextOffset - 1);
    this.broker.sysSources.push(() => this.#sysValues());
  }

  async stop(): Promise<void> {
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
        [p + "backlog/entries", s.backlogEntries],
        [p + "backlog/oldest_ms", s.oldestPendingMs],
        [p + "inflight", s.inflight],
        [p + "sent", s.sent],
        [p + "acknowledged", s.acknowledged],
        [p + "drain_rate", Math.round(s.drainRate)],
        [p + "dropped/ttl", s.droppedTtl],
        [p + "dropped/refused", s.droppedRefused],
        [p + "dropped/buffer", s.droppedBuffer],
        [p + "downlink/received", s.downlinkReceived],
        [p + "reconnects", s.reconnects],
        [p + "last_error", s.lastError ?? ""],
      );
    }
    return out;
  }
}
