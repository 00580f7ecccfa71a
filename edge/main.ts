#!/usr/bin/env bun
/**
 * Ferry's command line: serve · check-config · version. The one entry that is compiled
 * into the single executable.
 */
import { ConfigError, parseConfig, validateConfig } from "../src/config/load.ts";
import type { FerryConfig } from "../src/config/schema.ts";
import { startServer } from "../src/runtime/bun/server.ts";
import pkg from "../package.json" with { type: "json" };

const HELP = `ferry ${pkg.version} — MQTT edge broker with durable store-and-forward

Usage: ferry <command> [options]

Commands:
  serve                 run the broker (default)
  check-config FILE     validate a config file; prints every problem, exit 2 on errors
  version               print version and runtime

Options for serve:
  -c, --config FILE     config file (JSON, comments allowed)
  -h, --host HOST       address to bind (default 0.0.0.0)
  -p, --mqtt-port N     MQTT TCP port (default 1883; 0 picks a free one)
      --ws-port N       MQTT over WebSocket port, path /mqtt (default off)
  -d, --data-dir DIR    data directory (default ./data)
  -v, --verbose         debug logging
      --help            this text

See README.md for the configuration reference.`;

interface Args {
  command: string;
  positional: string[];
  flags: Map<string, string | true>;
}

function parseArgs(argv: string[]): Args {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  const withValue = new Set(["-c", "--config", "-h", "--host", "-p", "--mqtt-port", "--ws-port", "-d", "--data-dir"]);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith("--") && a.includes("=")) {
      const eq = a.indexOf("=");
      flags.set(a.slice(0, eq), a.slice(eq + 1));
    } else if (withValue.has(a)) {
      const v = argv[++i];
      if (v === undefined) fail(`${a} needs a value`);
      flags.set(a, v);
    } else if (a.startsWith("-")) flags.set(a, true);
    else positional.push(a);
  }
  return { command: positional.shift() ?? "serve", positional, flags };
}

function fail(msg: string, code = 2): never {
  console.error(`ferry: ${msg}`);
  process.exit(code);
}

function flag(args: Args, ...names: string[]): string | undefined {
  for (const n of names) {
    const v = args.flags.get(n);
    if (typeof v === "string") return v;
  }
  return undefined;
}

async function readConfig(path: string | undefined): Promise<FerryConfig> {
  if (path === undefined) return validateConfig({});
  const file = Bun.file(path);
  if (!(await file.exists())) fail(`config file ${path} not found`);
  return parseConfig(await file.text(), path);
}

function portArg(v: string, name: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`${name}: not a port number: ${v}`);
  return n;
}

async function serve(args: Args): Promise<void> {
  let config: FerryConfig;
  try {
    config = await readConfig(flag(args, "-c", "--config"));
  } catch (err) {
    if (err instanceof ConfigError) fail(`bad configuration:\n  ${err.problems.join("\n  ")}`);
    throw err;
  }
  const host = flag(args, "-h", "--host");
  const mqttPort = flag(args, "-p", "--mqtt-port");
  const wsPort = flag(args, "--ws-port");
  const dataDir = flag(args, "-d", "--data-dir");
  if (host !== undefined) config.listeners.host = host;
  if (mqttPort !== undefined) config.listeners.mqtt_port = portArg(mqttPort, "--mqtt-port");
  if (wsPort !== undefined) config.listeners.ws_port = portArg(wsPort, "--ws-port");
  if (dataDir !== undefined) config.data_dir = dataDir;
  if (args.flags.has("-v") || args.flags.has("--verbose")) config.log_level = "debug";

  let server;
  try {
    server = await startServer(config, pkg.version);
  } catch (err) {
    fail(`cannot start: ${(err as Error).message}`, 1);
  }
  console.log(`listening mqtt://${server.mqtt.host}:${server.mqtt.port}`);
  if (server.ws) console.log(`listening ws://${server.ws.host}:${server.ws.port}/mqtt`);
  const shutdown = async (signal: string) => {
    console.error(`ferry: ${signal}, shutting down`);
    await server.stop();
    process.exit(0);
  };
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
}

async function checkConfig(args: Args): Promise<void> {
  const path = args.positional[0] ?? flag(args, "-c", "--config");
  if (!path) fail("check-config needs a FILE");
  try {
    await readConfig(path);
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const p of err.problems) console.error(p);
      process.exit(2);
    }
    throw err;
  }
  console.log(`${path}: ok`);
}

const args = parseArgs(process.argv.slice(2));
if (args.flags.has("--help") || args.command === "help") {
  console.log(HELP);
} else if (args.command === "version") {
  console.log(`ferry ${pkg.version} (bun ${Bun.version})`);
} else if (args.command === "check-config") {
  await checkConfig(args);
} else if (args.command === "serve") {
  await serve(args);
} else {
  fail(`unknown command '${args.command}'\n\n${HELP}`);
}
