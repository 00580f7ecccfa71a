/**
 * GET /api/v1/history: messages read back from the durable log (the "one log, many
 * views" view), oldest first. The log holds QoS 1/2 messages and those logged for an
 * uplink, for as long as storage retention keeps them; QoS 0 messages nobody logged are
 * not in it. Pages continue from `next_offset`.
 */
import { Hono } from "hono";
import { parseSubscriptionFilter, topicFilterProblem, topicMatches } from "../../mqtt/topic.ts";
import type { Message } from "../../store/store.ts";
import { brokerLogPort, type LogPort } from "../../sync/log-port.ts";
import type { AdminContext } from "../deps.ts";
import { badRequest } from "../errors.ts";
import { historyQuery } from "../schemas.ts";
import { parseQuery } from "../validate.ts";
import { messageView } from "../views.ts";

const BATCH = 500;
/** Log entries one request reads at most, so a rare topic cannot make a request unbounded. */
const SCAN_BUDGET = 20_000;

/** The first offset whose message was received at or after `since` (binary search; the log is in arrival order). */
async function firstOffsetSince(store: LogPort, since: number, end: number): Promise<number> {
  let lo = 1;
  let hi = end;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const [m] = await store.readLog(mid, 1);
    if (!m || m.receivedAt >= since) hi = mid;
    else lo = m.offset + 1;
  }
  return lo;
}

export function historyRoutes(ctx: AdminContext): Hono {
  const broker = ctx.broker;
  // The log is read through the same narrow port as the uplink's (sync/log-port.ts).
  const log = brokerLogPort(broker);
  return new Hono().get("/", async (c) => {
    const q = parseQuery(c, historyQuery);
    let filter: string | undefined;
    if (q.topic !== undefined) {
      const problem = topicFilterProblem(q.topic, broker.options);
      if (problem) throw badRequest(`topic: ${problem}`);
      const parsed = parseSubscriptionFilter(q.topic);
      if (typeof parsed === "string" || parsed.group !== undefined) {
        throw badRequest("topic: a shared subscription filter does not select history");
      }
      filter = parsed.filter;
    }
    const since = q.since === undefined ? undefined : Date.parse(q.since);
    const store = log;
    const end = log.nextOffset();
    let next = q.from_offset ?? (since !== undefined ? await firstOffsetSince(store, since, end) : 1);
    const found: Message[] = [];
    let scanned = 0;
    let endOfLog = false;
    scan: while (scanned < SCAN_BUDGET) {
      const batch = await store.readLog(next, BATCH);
      for (const m of batch) {
        next = m.offset + 1;
        scanned++;
        if (filter !== undefined && !topicMatches(filter, m.topic)) continue;
        if (since !== undefined && m.receivedAt < since) continue;
        found.push(m);
        if (found.length >= q.limit) break scan;
      }
      if (batch.length < BATCH) {
        endOfLog = true;
        break;
      }
    }
    const [oldest] = await store.readLog(1, 1);
    return c.json({
      data: found.map(messageView),
      /** Pass as from_offset to continue (at the end of the log: to see what arrives later). */
      next_offset: next,
      end_of_log: endOfLog,
      scanned,
      log: { oldest_offset: oldest?.offset ?? null, next_offset: end },
    });
  });
}
