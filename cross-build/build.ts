/**
 * `npm run build`: single executables of Ferry for Linux, with `bun build --compile`.
 *
 *   dist/ferry-linux-x64     dist/ferry-linux-arm64     dist/SHA256SUMS
 *
 * A target other than the machine's own needs that platform's Bun runtime to append the
 * bundle to. It is taken from the npm package `@oven/bun-<platform>` at exactly the
 * version of the `bun` devDependency (the one compiling), fetched with `npm pack`, checked
 * against the integrity recorded in package-lock.json, and unpacked into
 * `cross-build/.cache/`. `npm ci` on x64 skips those packages (their `cpu` field says
 * arm64), so the first build needs the npm registry or a warm npm cache; after that the
 * build runs offline: from `cross-build/.cache/`, or from the npm cache (`npm pack
 * --prefer-offline`) when that directory was removed.
 *
 * The bytecode is laid out by a profile (`--bytecode-order`): a first executable for this
 * machine is built and run once (cross-build/record-profile.ts), then every target is
 * built with the order that run recorded. `--no-profile` skips that (a quicker build that
 * starts with more of itself resident); `--no-bytecode` carries the code as source (an
 * executable 4.9 MB smaller that idles about 2 MB higher).
 *
 * Usage: bun cross-build/build.ts [--target linux-x64|linux-arm64 ...] [--outdir DIR]
 *                                 [--no-profile] [--no-bytecode]
 * FERRY_COMMIT in the environment overrides the commit read from git (for builds from a
 * source tarball).
 */
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";
import { recordBytecodeOrder } from "./record-profile.ts";

const ROOT = join(import.meta.dir, "..");
const CACHE = join(ROOT, "cross-build", ".cache");

interface Target {
  /** Name in dist/: ferry-<name>. */
  name: string;
  /** `bun build --target`. */
  bunTarget: string;
  /** npm package holding the runtime for this platform. */
  runtimePackage: string;
  /** ELF e_machine of that runtime. */
  elfMachine: number;
  /** process.platform-process.arch that can compile it without fetching. */
  host: string;
}

/**
 * musl builds are not offered: Bun's musl runtimes need Alpine's libstdc++ and libgcc,
 * so no smoke test can run them on the Debian build machine.
 */
const TARGETS: Target[] = [
  {
    name: "linux-x64",
    bunTarget: "bun-linux-x64",
    runtimePackage: "@oven/bun-linux-x64",
    elfMachine: 0x3e,
    host: "linux-x64",
  },
  {
    name: "linux-arm64",
    bunTarget: "bun-linux-arm64",
    runtimePackage: "@oven/bun-linux-aarch64",
    elfMachine: 0xb7,
    host: "linux-arm64",
  },
];

function run(
  cmd: string[],
  opts: { cwd?: string; allowFail?: boolean } = {},
): { code: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync(cmd, { cwd: opts.cwd ?? ROOT, stdout: "pipe", stderr: "pipe" });
  const out = { code: r.exitCode ?? 1, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
  if (out.code !== 0 && !opts.allowFail) {
    throw new Error(`${cmd.join(" ")} failed (${out.code}):\n${out.stderr || out.stdout}`);
  }
  return out;
}

/** The commit being built: FERRY_COMMIT, else git's HEAD (+"-dirty" for uncommitted changes). */
function buildCommit(): string {
  const fromEnv = process.env.FERRY_COMMIT?.trim();
  if (fromEnv) return fromEnv;
  const head = run(["git", "rev-parse", "--short=12", "HEAD"], { allowFail: true });
  if (head.code !== 0) return "unknown";
  const dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], { allowFail: true });
  return head.stdout.trim() + (dirty.code === 0 && dirty.stdout.trim() !== "" ? "-dirty" : "");
}

/** The version of the `bun` package that is compiling; every runtime must match it. */
function bunVersion(): string {
  const installed = JSON.parse(
    readFileSync(join(ROOT, "node_modules", "bun", "package.json"), "utf8"),
  ) as { version: string };
  if (installed.version !== Bun.version) {
    throw new Error(
      `node_modules/bun is ${installed.version} but this is bun ${Bun.version}; run the build with npx bun`,
    );
  }
  return Bun.version;
}

/** Integrity of `pkg` as package-lock.json records it (bun lists every platform package). */
function lockedIntegrity(pkg: string, version: string): string | undefined {
  try {
    const lock = JSON.parse(readFileSync(join(ROOT, "package-lock.json"), "utf8")) as {
      packages?: Record<string, { version?: string; integrity?: string }>;
    };
    const entry = lock.packages?.[`node_modules/${pkg}`];
    return entry?.version === version ? entry.integrity : undefined;
  } catch {
    return undefined;
  }
}

function elfMachine(path: string): number {
  const header = readFileSync(path).subarray(0, 20);
  if (header[0] !== 0x7f || header.toString("latin1", 1, 4) !== "ELF") return -1;
  return header.readUInt16LE(18);
}

/** The Bun runtime for `target`: this very bun on its own platform, else from the npm package. */
function runtimeFor(target: Target, version: string): string | undefined {
  if (`${process.platform}-${process.arch}` === target.host) return undefined; // compile with this bun
  const dir = join(CACHE, `${target.runtimePackage.replace("/", "+")}-${version}`);
  const binary = join(dir, "package", "bin", "bun");
  if (existsSync(binary) && elfMachine(binary) === target.elfMachine) return binary;

  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const spec = `${target.runtimePackage}@${version}`;
  console.error(`build: fetching ${spec} (npm pack, npm cache first)`);
  const packed = run(
    ["npm", "pack", spec, "--prefer-offline", "--json", "--pack-destination", dir],
    { allowFail: true },
  );
  if (packed.code !== 0) {
    throw new Error(
      `cannot get ${spec}: npm pack failed. The first build needs the npm registry (or ` +
        `\`npm cache add ${spec}\` done while online).\n${packed.stderr.trim()}`,
    );
  }
  const info = (JSON.parse(packed.stdout) as Array<{ filename: string; integrity: string }>)[0]!;
  const expected = lockedIntegrity(target.runtimePackage, version);
  if (expected !== undefined && expected !== info.integrity) {
    throw new Error(
      `${spec}: integrity ${info.integrity} does not match package-lock.json (${expected})`,
    );
  }
  const tarball = join(dir, info.filename);
  run(["tar", "-xzf", tarball, "-C", dir, "package/bin/bun"]);
  rmSync(tarball);
  chmodSync(binary, 0o755);
  if (elfMachine(binary) !== target.elfMachine) {
    throw new Error(`${spec}: bin/bun is not a ${target.name} executable`);
  }
  return binary;
}

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

function parseArgs(argv: string[]): { targets: Target[]; outdir: string; bytecode: boolean; profile: boolean } {
  const names: string[] = [];
  let outdir = join(ROOT, "dist");
  let bytecode = true;
  let profile = true;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--target") names.push(argv[++i] ?? "");
    else if (a === "--outdir") outdir = argv[++i] ?? outdir;
    else if (a === "--no-profile") profile = false;
    else if (a === "--no-bytecode") bytecode = false;
    else throw new Error(`unknown argument ${a}`);
  }
  const targets = names.length === 0 ? TARGETS : names.map((n) => {
    const t = TARGETS.find((t) => t.name === n);
    if (!t) throw new Error(`unknown target ${n}; known: ${TARGETS.map((t) => t.name).join(", ")}`);
    return t;
  });
  return { targets, outdir, bytecode, profile };
}

/**
 * How the executable carries its code: as source, or as bytecode (laid out by an order file
 * when there is one).
 */
type CodeForm = { bytecode: false } | { bytecode: true; order?: string };

/** `bun build --compile` of Ferry for `target` into `outfile`. */
function compile(target: Target, runtime: string | undefined, commit: string, outfile: string, form: CodeForm): void {
  run([
    process.execPath,
    "build",
    "edge/main.ts",
    // The storage thread's Worker: a compiled executable carries a worker only when it
    // is an entry point of its own (see src/runtime/bun/sqlite-thread-spawn.ts).
    "src/runtime/bun/sqlite-thread.ts",
    "--compile",
    `--target=${target.bunTarget}`,
    ...(runtime ? [`--compile-executable-path=${runtime}`] : []),
    "--minify",
    // Functions precompiled into the executable: nothing is parsed at start (less heap),
    // and with an order file (cross-build/record-profile.ts) the bytecode a start uses lies
    // together (fewer pages of the executable resident). Idle RSS 35.4 MB without, 34.5 with
    // --bytecode alone, 33.4 with the order (scripts/measure-idle.ts, 5 runs each, same
    // run), for 4.9 MB more executable (--no-bytecode builds without).
    ...(form.bytecode ? ["--bytecode", "--format=esm"] : []),
    ...(form.bytecode && form.order ? [`--bytecode-order=${form.order}`] : []),
    // Start-up code runs once: with the JIT's thresholds 1000 times higher it stays in the
    // interpreter, and the idle broker does not carry its machine code (about 5 MB of RSS).
    // src/runtime/bun/platform.ts sets the normal policy back once the broker listens.
    "--compile-jit-policy=1000",
    // Modules that are imported lazily (the admin app, MQTT.js for uplinks) stay out of
    // the start-up bundle and are not even loaded until used: 1.3 MB less idle RSS.
    "--splitting",
    "--sourcemap=none",
    // An appliance must not change behaviour because of a .env or bunfig.toml in its cwd.
    "--no-compile-autoload-dotenv",
    "--no-compile-autoload-bunfig",
    `--define=FERRY_COMMIT=${JSON.stringify(commit)}`,
    `--define=FERRY_RUNTIME=${JSON.stringify("bun")}`,
    `--outfile=${outfile}`,
  ]);
}

/**
 * The order file for `--bytecode-order`: build this machine's executable once, run it
 * (cross-build/record-profile.ts) and keep what it recorded. Undefined, with a note, when
 * this machine runs none of the targets or the run fails (the executables are then built
 * without it).
 */
async function recordOrder(version: string, commit: string): Promise<string | undefined> {
  const host = TARGETS.find((t) => t.host === `${process.platform}-${process.arch}`);
  if (!host) {
    console.error(`build: no profile-guided bytecode layout: ${process.platform}-${process.arch} runs no target`);
    return undefined;
  }
  const dir = join(CACHE, "profile");
  mkdirSync(dir, { recursive: true });
  const probe = join(dir, `ferry-${host.name}`);
  compile(host, runtimeFor(host, version), commit, probe, { bytecode: true });
  try {
    return await recordBytecodeOrder(probe, dir);
  } catch (err) {
    // E.g. a build in a network namespace whose loopback is down (`unshare -n`): the
    // executables work the same without the order, they keep about 1 MB more resident.
    console.error(`build: no profile-guided bytecode layout: the profile run failed: ${(err as Error).message}`);
    return undefined;
  } finally {
    rmSync(probe, { force: true });
  }
}

async function main(): Promise<void> {
  const { targets, outdir, bytecode, profile } = parseArgs(process.argv.slice(2));
  const version = bunVersion();
  const commit = buildCommit();
  mkdirSync(outdir, { recursive: true });
  const order = bytecode && profile ? await recordOrder(version, commit) : undefined;
  const form: CodeForm = bytecode ? { bytecode, ...(order ? { order } : {}) } : { bytecode };
  const sums: string[] = [];
  for (const target of targets) {
    const runtime = runtimeFor(target, version);
    const outfile = join(outdir, `ferry-${target.name}`);
    const tmp = `${outfile}.tmp`;
    compile(target, runtime, commit, tmp, form);
    renameSync(tmp, outfile);
    const size = statSync(outfile).size;
    sums.push(`${sha256(outfile)}  ${relative(outdir, outfile)}`);
    console.log(
      `${relative(ROOT, outfile)}  ${(size / 1e6).toFixed(1)} MB  (bun ${version}, commit ${commit}${
        !bytecode ? ", source" : order ? "" : ", no bytecode order"
      })`,
    );
  }
  // Only for a full build: a partial one would drop the other targets' sums.
  if (targets.length === TARGETS.length) {
    writeFileSync(join(outdir, "SHA256SUMS"), `${sums.join("\n")}\n`);
  }
}

try {
  await main();
} catch (err) {
  console.error(`build: ${(err as Error).message}`);
  process.exit(1);
}
