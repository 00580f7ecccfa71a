#!/usr/bin/env bun
/**
 * Ferry's command line: serve · check-config · version · --help. The one entry that is
 * compiled into the single executable, and that `deno task start` runs.
 *
 * Nothing here is runtime-specific: arguments, files, signals, exit and the listeners come
 * from the platform `loadPlatform()` picks (Bun's, or Deno's under Deno).
 */
import { ConfigError, loadConfig, validateConfig } from "../src/config/load.ts";
import type { FerryConfig } from "../src/config/schema.ts";
import { loadPlatform, type Platform } from "../src/runtime/platform.ts";
import { runPasswd } from "../src/auth/passwd-command.ts";
import { commit, version } from "./build-info.ts";
import { createLogger } from "../src/runtime/log-output.ts";
import type { Logger } from "../src/core/logger.ts";
import { serviceNotifier } from "../src/runtime/sd-notify.ts";

const HELP = `ferry version ${version}

ferry is an MQTT v5.0/v3.1.1/v3.1 edge broker that keeps what it accepts on disk.

Usage: ferry [serve] [-c config_file] [--host host] [-p port] [--ws-port port] [--admin-port port] [-d dir] [-v]
       ferry check-config [--root DIR] config_file
       ferry passwd [-c | -D] [--stdin] FILE USER
       ferry version | --version | -V
       ferry --help

Commands:
  serve                run the broker (the default command).
  passwd FILE USER     add a user to a password file or change its password (-c creates
                       FILE, -D deletes USER, --stdin reads the password from stdin);
                       'ferry passwd --help' says more.
  check-config FILE    validate a config file and the files it names (password, ACL,
                       certificates): print every problem as file:line:col key: message
                       and exit 2, or print "FILE: ok" and exit 0. --root DIR looks for
                       the named files under DIR (a system image being prepared).
  version, --version, -V
                       print the version, the git commit it was built from and the runtime.

Options for serve:
 -c, --config FILE   : load the broker config file (JSON; // and /* */ comments allowed).
     --host HOST     : address to bind the listeners to. Default 127.0.0.1 (this machine
                       only); 0.0.0.0 serves the network (set auth.password_file too).
 -p, --mqtt-port N   : listen for MQTT over TCP on port N. Default 1883; 0 picks a free port.
     --ws-port N     : also listen for MQTT over WebSocket on port N, path /mqtt.
     --admin-port N  : serve the admin API, /metrics and dashboard on port N (on admin.host,
                       default 127.0.0.1). Default 8080; 0 picks a free port; "off" disables.
 -d, --data-dir DIR  : keep the database under DIR. Default ./data.
 -v, --verbose       : log everything (log_level debug). This overrides the config file.
 -h, --help          : display this help.

Command-line options override the config file. Ferry prints "listening mqtt://HOST:PORT"
(and "listening http://HOST:PORT (dashboard; ...)" for the dashboard and admin API) on
stdout once it accepts connections, and logs to stderr.

Signals: SIGINT or SIGTERM stops it cleanly (v5 clients get DISCONNECT 0x8B, storage is
flushed). SIGHUP re-reads the password file, ACL file and certificates and reconnects the
uplinks, without dropping any client (systemctl reload ferry sends it).
Exit status: 0 ok, 1 cannot start (e.g. port in use), 2 bad command line or configuration.

Every configuration key, with its default: /etc/ferry/ferry.example.jsonc (installed by
install.sh), or edge/ferry.example.jsonc in the source tree.`;

/** Options that take a value, by every name they go by. */
const VALUE_OPTIONS: Record<string, string> = {
  "-c": "config",
  "--config": "config",
  "--host": "host",
  "-p": "mqtt-port",
  "--mqtt-port": "mqtt-port",
  "--ws-port": "ws-port",
  "--admin-port": "admin-port",
  "-d": "data-dir",
  "--data-dir": "data-dir",
  "--root": "root",
};
const SWITCHES: Record<string, string> = {
  "-v": "verbose",
  "--verbose": "verbose",
  "-h": "help",
  "--help": "help",
  "-V": "version",
  "--version": "version",
};

interface Args {
  command: string;
  positional: string[];
  options: Map<string, string>;
  switches: Set<string>;
}

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args {
  const options = new Map<string, string>();
  const switches = new Set<string>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith("--") ? arg.indexOf("=") : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    if (VALUE_OPTIONS[name] !== undefined) {
      const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw new UsageError(`${name} needs a value`);
      options.set(VALUE_OPTIONS[name], value);
    } else if (SWITCHES[arg] !== undefined) {
      switches.add(SWITCHES[arg]);
    } else if (arg.startsWith("-") && arg !== "-") {
      throw new UsageError(`unknown option '${arg}'`);
    } else positional.push(arg);
  }
  return { command: positional.shift() ?? "serve", positional, options, switches };
}

function portArg(value: string, name: string): number {
  const n = Number(value);
  if (value.trim() === "" || !Number.isInteger(n) || n < 0 || n > 65535) {
    throw new UsageError(`${name}: not a port number: ${value}`);
  }
  return n;
}

/**
 * The config file at `path` (defaults when there is none), with the files it names checked
 * too: the one validation `serve` and `check-config` share. ConfigError lists every problem.
 */
async function readConfig(platform: Platform, path: string | undefined, root = ""): Promise<FerryConfig> {
  if (path === undefined) return validateConfig({});
  const text = await platform.readTextFile(path).catch((err: Error) => {
    throw new ConfigError([`${path}: cannot read: ${err.message}`]);
  });
  if (text === undefined) throw new ConfigError([`${path}: no such file`]);
  const readFile = root === ""
    ? platform.readFile
    : (file: string) => platform.readFile(file.startsWith("/") ? `${root.replace(/\/$/, "")}${file}` : file);
  return loadConfig(text, path, readFile);
}

async function serve(platform: Platform, args: Args): Promise<void> {
  if (args.positional.length > 0) {
    throw new UsageError(`serve takes no arguments, got '${args.positional[0]}'`);
  }
  const host = args.options.get("host");
  const mqttPort = args.options.get("mqtt-port");
  const wsPort = args.options.get("ws-port");
  const adminPort = args.options.get("admin-port");
  const dataDir = args.options.get("data-dir");
  let config: FerryConfig;
  try {
    config = await readConfig(platform, args.options.get("config"));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(`ferry: bad configuration:\n  ${err.problems.join("\n  ")}`);
    return platform.exit(2);
  }
  if (host !== undefined) config.listeners.host = host;
  if (mqttPort !== undefined) config.listeners.mqtt_port = portArg(mqttPort, "--mqtt-port");
  if (wsPort !== undefined) config.listeners.ws_port = portArg(wsPort, "--ws-port");
  if (adminPort !== undefined) config.admin.port = adminPort === "off" ? null : portArg(adminPort, "--admin-port");
  if (dataDir !== undefined) config.data_dir = dataDir;
  if (args.switches.has("verbose")) config.log_level = "debug";

  const prefix = config.log.syslog_prefix;
  const log: Logger = createLogger({
    level: config.log_level,
    format: config.log.format,
    journal: prefix === "always" || (prefix === "auto" && platform.stderrIsJournal()),
  });
  // Mosquitto's first two lines: what runs, and from which config.
  const built = await commit(platform.readTextFile);
  log.info(`ferry version ${version} (commit ${built}; ${platform.runtime}; ${platform.target}) starting`);
  const configPath = args.options.get("config");
  log.info(
    configPath === undefined ? "No config file given; using the defaults." : `Config loaded from ${configPath}.`,
  );

  let server;
  try {
    server = await platform.startServer(config, version, log, { commit: built, runtime: platform.runtime });
  } catch (err) {
    log.error(`cannot start: ${(err as Error).message}`);
    return platform.exit(1);
  }
  console.log(`listening mqtt://${server.mqtt.host}:${server.mqtt.port}`);
  if (server.ws) console.log(`listening ws://${server.ws.host}:${server.ws.port}/mqtt`);
  if (server.tls) console.log(`listening mqtts://${server.tls.host}:${server.tls.port}`);
  if (server.wss) console.log(`listening wss://${server.wss.host}:${server.wss.port}/mqtt`);
  if (server.admin) {
    console.log(`listening http://${server.admin.host}:${server.admin.port} (dashboard; admin API /api/v1, /metrics)`);
  }
  // Type=notify: systemctl start returns, and dependent units start, once every listener accepts.
  const service = serviceNotifier({
    env: platform.env,
    notifierFor: platform.notifierFor,
    pid: platform.pid,
    log,
    monotonicUsec: platform.monotonicUsec,
  });
  const status = `accepting MQTT on ${server.mqtt.host}:${server.mqtt.port}`;
  service.ready(status);

  let stoppingSince: number | undefined;
  const shutdown = (signal: string) => {
    if (stoppingSince !== undefined) {
      // The same signal often arrives twice at once (Ctrl+C reaches the whole process
      // group and `deno task` forwards it too): only a later one means "stop waiting".
      // Acknowledged messages are already committed, so nothing acknowledged is lost.
      if (Date.now() - stoppingSince < 1000) return;
      log.warn(`${signal} again, exiting now`);
      platform.exit(1);
    }
    stoppingSince = Date.now();
    service.stopping();
    service.close();
    log.info(`${signal}, shutting down`);
    server.stop().then(
      () => platform.exit(0),
      (err: Error) => {
        log.error(`shutdown failed: ${err.message}`);
        platform.exit(1);
      },
    );
  };
  platform.onSignal("SIGINT", () => shutdown("SIGINT"));
  platform.onSignal("SIGTERM", () => shutdown("SIGTERM"));
  // SIGHUP re-reads the password file, ACL file and certificates (like Mosquitto).
  platform.onSignal("SIGHUP", () => {
    log.info("SIGHUP, reloading security files");
    // systemctl reload waits between RELOADING=1 and the next READY=1.
    service.reloading();
    void server.reload().finally(() => service.ready(status));
  });
}

async function checkConfig(platform: Platform, args: Args): Promise<void> {
  const path = args.positional[0] ?? args.options.get("config");
  if (!path) throw new UsageError("check-config needs a FILE");
  try {
    await readConfig(platform, path, args.options.get("root"));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    for (const problem of err.problems) console.error(problem);
    return platform.exit(2);
  }
  console.log(`${path}: ok`);
}

async function main(platform: Platform): Promise<void> {
  // passwd has options of its own (-c means create there), so it parses its arguments itself.
  if (platform.args[0] === "passwd") {
    const status = await runPasswd(platform.args.slice(1)).catch((err: Error) => {
      console.error(`ferry passwd: ${err.message}`);
      return 1;
    });
    platform.exit(status);
  }
  let args: Args;
  try {
    args = parseArgs(platform.args);
    if (args.switches.has("help") || args.command === "help") {
      console.log(HELP);
    } else if (args.command === "version" || args.switches.has("version")) {
      console.log(
        `ferry ${version} (commit ${await commit(
          platform.readTextFile,
        )}; ${platform.runtime}; ${platform.target})`,
      );
    } else if (args.command === "check-config") {
      await checkConfig(platform, args);
    } else if (args.command === "serve") {
      await serve(platform, args);
    } else {
      throw new UsageError(`unknown command '${args.command}'\n\n${HELP}`);
    }
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`ferry: ${err.message}`);
    if (!err.message.includes("Usage:")) console.error("Try 'ferry --help'.");
    platform.exit(2);
  }
}

await main(await loadPlatform());
