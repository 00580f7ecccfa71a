/**
 * The log lines of a client's connection, in Mosquitto's words so that an operator's grep
 * and habits carry over:
 *
 *     New client connected from 127.0.0.1:53424 as sensor-1 (p5, c1, k60, u'alice').
 *     Client sensor-1 [127.0.0.1:53424] disconnected: keep alive timeout (0x8D).
 *
 * `p` is Mosquitto's protocol number (p1 = MQTT 3.1, p2 = 3.1.1, p5 = 5.0), `c` the clean
 * start flag, `k` the keep alive in seconds, `u` the username when there is one. Every
 * field a client chose goes through `logField`: escaped and capped, so a client id with a
 * newline cannot forge a log line, and a 64 KB username cannot flood the log.
 */

/** Longest client-chosen field written to a log line, in characters (the rest is counted, not shown). */
export const MAX_LOGGED_FIELD = 128;

/** `value` safe for a log line: control characters escaped (\n, \x1b, \u2028 …), at most `max` characters kept. */
export function logField(value: string, max = MAX_LOGGED_FIELD): string {
  const cut = value.length > max ? value.slice(0, max) : value;
  // deno-lint-ignore no-control-regex -- matching control characters is the point
  let out = cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g, escapeChar);
  if (value.length > max) out += `...(+${value.length - max} chars)`;
  return out;
}

function escapeChar(c: string): string {
  switch (c) {
    case "\n":
      return "\\n";
    case "\r":
      return "\\r";
    case "\t":
      return "\\t";
    default: {
      const code = c.charCodeAt(0);
      return code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u${code.toString(16).padStart(4, "0")}`;
    }
  }
}

/** What a connected client looks like to the log line. */
export interface LoggedClient {
  readonly clientId: string;
  readonly username: string | undefined;
  readonly version: 3 | 4 | 5;
  readonly cleanStart: boolean;
  readonly keepAlive: number;
  readonly conn: { readonly remoteAddress: string };
  readonly closeReason: string | undefined;
}

const PROTOCOL: Record<number, string> = { 3: "p1", 4: "p2", 5: "p5" };

export function connectedLine(c: LoggedClient): string {
  const user = c.username === undefined ? "" : `, u'${logField(c.username)}'`;
  return `New client connected from ${logField(c.conn.remoteAddress)} as ${logField(c.clientId)} (${
    PROTOCOL[c.version] ?? `p${c.version}`
  }, c${c.cleanStart ? 1 : 0}, k${c.keepAlive}${user}).`;
}

export function disconnectedLine(c: LoggedClient): string {
  return `Client ${logField(c.clientId)} [${logField(c.conn.remoteAddress)}] disconnected: ${
    c.closeReason ?? "connection closed"
  }.`;
}

/** A reason for the disconnect line: the words, then the reason code Ferry or the client sent. */
export function closeReason(words: string, code?: number): string {
  return code === undefined ? words : `${words} (0x${code.toString(16).padStart(2, "0").toUpperCase()})`;
}
