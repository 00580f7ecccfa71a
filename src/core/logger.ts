/** A minimal leveled logger; adapters decide where lines go. */
export interface Logger {
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";

const order: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

export function consoleLogger(level: LogLevel): Logger {
  const on = (l: LogLevel) => order[l] >= order[level];
  const stamp = () => new Date().toISOString();
  return {
    debug: (m) => on("debug") && console.error(`${stamp()} debug ${m}`),
    info: (m) => on("info") && console.error(`${stamp()} info ${m}`),
    warn: (m) => on("warn") && console.error(`${stamp()} warn ${m}`),
    error: (m) => on("error") && console.error(`${stamp()} error ${m}`),
  } as Logger;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
