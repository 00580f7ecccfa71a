/**
 * Where log lines go and what they look like: text or JSON lines on stderr, and, when stderr
 * is the systemd journal, a syslog priority prefix (`<3>` error, `<4>` warning, `<6>` info,
 * `<7>` debug) instead of a timestamp, so `journalctl -p warning` works and journald's own
 * timestamp is the only one. Every line is one line: control characters in a message (a
 * client id with a newline, a stack trace) are escaped, so nothing can forge a line.
 */
import type { Logger, LogLevel } from "../core/logger.ts";
import { logField } from "../core/client-log.ts";

export interface LogOutputOptions {
  level: LogLevel;
  format: "text" | "json";
  /** Syslog priority prefixes without timestamps: true under the journal (see `stderrIsJournal`). */
  journal: boolean;
  /** Writes one line (without its newline); console.error by default. */
  write?: (line: string) => void;
  now?: () => Date;
}

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };
/** RFC 5424 severities, as sd-daemon(3) prefixes use them. */
const PRIORITY = { debug: 7, info: 6, warn: 4, error: 3 } as const;

/** Long enough for any line Ferry writes itself; longer ones (a huge error message) are cut. */
const MAX_MESSAGE = 8192;

export function createLogger(options: LogOutputOptions): Logger {
  const write = options.write ?? ((line: string) => console.error(line));
  const now = options.now ?? (() => new Date());
  const line = (level: keyof typeof PRIORITY) => (message: string) => {
    if (ORDER[level] < ORDER[options.level]) return;
    const msg = logField(message, MAX_MESSAGE);
    const prefix = options.journal ? `<${PRIORITY[level]}>` : "";
    if (options.format === "json") {
      // JSON escapes control characters itself; the message is kept as it was, only cut short.
      const m = message.length > MAX_MESSAGE ? msg : message;
      write(`${prefix}${JSON.stringify({ time: now().toISOString(), level, msg: m })}`);
    } else if (options.journal) write(`${prefix}${level} ${msg}`);
    else write(`${now().toISOString()} ${level} ${msg}`);
  };
  return { debug: line("debug"), info: line("info"), warn: line("warn"), error: line("error") };
}

/**
 * Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to the
 * `device:inode` of the stream it connected stdout/stderr to (systemd.exec(5)); a
 * redirected stderr has another inode, so the variable alone is not enough.
 */
export function stderrIsJournal(
  env: Record<string, string | undefined>,
  fstatStderr: () => { dev: number | bigint; ino: number | bigint } | undefined,
): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  const [dev, ino] = stream.split(":");
  try {
    const st = fstatStderr();
    if (st === undefined) return true; // cannot tell: trust systemd's variable
    return String(st.dev) === dev && String(st.ino) === ino;
  } catch {
    return true;
  }
}
