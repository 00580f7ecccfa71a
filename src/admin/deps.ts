/** What the admin app is built from, and the resolved form its routes share. */
import type { FerryConfig } from "../config/schema.ts";
import type { Broker } from "../core/broker.ts";
import type { UplinkLink } from "../sync/uplink-link.ts";
import type { RecentLog } from "./recent-log.ts";
import type { TopTopics } from "./top-topics.ts";
import type { BuildInfo, MetricsSnapshot, ProcessStats } from "./metrics-snapshot.ts";
import type { MetricsHistory } from "./metrics-history.ts";

export interface Readiness {
  store_open: boolean;
  listeners_up: boolean;
}

export interface AdminDeps {
  broker: Broker;
  /** The uplink manager (only its links are used). */
  uplinks: { readonly links: readonly UplinkLink[] };
  config: FerryConfig;
  /** When set, every route but /healthz and the dashboard page needs `Authorization: Bearer <token>`. */
  token?: string | undefined;
  /** Recent warnings and errors (the wiring wraps the broker's logger with it). */
  recent?: RecentLog | undefined;
  /** Readiness for /readyz; default: ready. */
  ready?: (() => Readiness) | undefined;
  /** Bound listener addresses, shown by GET /api/v1/broker. */
  listeners?: (() => Record<string, string | null>) | undefined;
  /** The machine's own names (hostname, hostname.local), accepted in Host when the API listens off loopback. */
  ownNames?: readonly string[] | undefined;
  /**
   * Topic counts fed by the broker's publish hook; default: a new one, counting from
   * now. `listenAdmin` starts counting at start-up but builds the app on the first request.
   */
  topTopics?: TopTopics | undefined;
  /** The process's memory, CPU and descriptors for /metrics (the runtime reads them). */
  process?: (() => ProcessStats) | undefined;
  /** The git commit and runtime, for ferry_build_info. */
  build?: Partial<BuildInfo> | undefined;
  /** The dashboard's last hour (time series kept server-side); `listenAdmin` starts one. */
  history?: MetricsHistory | undefined;
}

export interface AdminContext {
  broker: Broker;
  uplinks: { readonly links: readonly UplinkLink[] };
  config: FerryConfig;
  tokenRequired: boolean;
  recent: RecentLog | undefined;
  ready: () => Readiness;
  listeners: () => Record<string, string | null>;
  topTopics: TopTopics;
  /** The metrics snapshot, taken now: /metrics and the REST API render it. */
  snapshot(): MetricsSnapshot;
  history: MetricsHistory | undefined;
}
