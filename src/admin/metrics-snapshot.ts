/**
 * The whole metrics snapshot: the kernel's (src/core/metrics-snapshot.ts), the uplinks',
 * the process's and the build's. /metrics, GET /api/v1/broker and GET /api/v1/metrics
 * render it; $SYS renders its kernel part (and the uplinks add theirs).
 */
import { type BrokerSnapshot, brokerSnapshot } from "../core/metrics-snapshot.ts";
import type { Broker } from "../core/broker.ts";
import type { LinkStatus } from "../sync/uplink-link.ts";
import type { RecentLog } from "./recent-log.ts";

/** The process as Prometheus' `process_*` metrics see it; fields a runtime cannot read are absent. */
export interface ProcessStats {
  residentBytes?: number;
  /** User + system CPU time. */
  cpuSeconds?: number;
  openFds?: number;
  maxFds?: number;
  /** Unix time the process started, in seconds. */
  startTimeSeconds?: number;
  /** JavaScript heap in use (Mosquitto's heap/current). */
  heapBytes?: number;
}

export interface BuildInfo {
  version: string;
  commit: string;
  runtime: string;
}

export interface MetricsSnapshot {
  build: BuildInfo;
  broker: BrokerSnapshot;
  uplinks: LinkStatus[];
  process: ProcessStats;
  log: { warn: number; error: number } | undefined;
}

export interface SnapshotSources {
  broker: Broker;
  uplinks: () => LinkStatus[];
  recent?: RecentLog | undefined;
  process?: (() => ProcessStats) | undefined;
  build?: Partial<BuildInfo> | undefined;
}

export function takeSnapshot(s: SnapshotSources): MetricsSnapshot {
  return {
    build: {
      version: s.build?.version ?? s.broker.options.version,
      commit: s.build?.commit ?? "unknown",
      runtime: s.build?.runtime ?? "unknown",
    },
    broker: brokerSnapshot(s.broker),
    uplinks: s.uplinks(),
    process: s.process?.() ?? {},
    log: s.recent ? { ...s.recent.counts } : undefined,
  };
}
