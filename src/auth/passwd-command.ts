/**
 * `ferry passwd`: manage a password file the way `mosquitto_passwd` does. Uses node:fs and
 * node:process, which Bun and Deno both provide.
 */
import {
  closeSync,
  existsSync,
  fchmodSync,
  fchownSync,
  fsyncSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import process from "node:process";
import { PasswordFile, usernameProblem } from "./password-file.ts";
import { DEFAULT_ITERATIONS, hashPassword, MAX_ITERATIONS, MIN_ITERATIONS } from "./password-hash.ts";

export const PASSWD_HELP = `Usage: ferry passwd [-c | -D] [--stdin] [--iterations N] FILE USER

Add USER to the password file FILE, or change its password; the password is asked for
twice on a terminal. Each line holds a salted PBKDF2-SHA512 hash ($7$, the format of
Mosquitto 2's mosquitto_passwd, so the files are interchangeable).

 -c               create FILE, replacing it if it exists.
 -D               delete USER from FILE.
 --stdin          read the password from the first line of standard input (for scripts).
 --iterations N   PBKDF2 iterations (default ${DEFAULT_ITERATIONS}, at least ${MIN_ITERATIONS}).

An existing FILE keeps its owner, group and mode (so 'sudo ferry passwd' leaves it
readable by the broker's user); a new one is created with mode 0640. A FILE every user
may read is warned about. A running broker picks the change up within
auth.reload_check_seconds, or at once on SIGHUP.`;

/** Terminal and stream I/O, injectable for tests. */
export interface PasswdIo {
  isTerminal(): boolean;
  /** Ask for a line without echoing it. */
  promptHidden(prompt: string): Promise<string>;
  readStdin(): Promise<string>;
  error(line: string): void;
}

/** Run `ferry passwd ARGS`; resolves to the exit status (0 ok, 1 failed, 2 usage). */
export async function runPasswd(args: readonly string[], io: PasswdIo = processIo): Promise<number> {
  let create = false;
  let remove = false;
  let fromStdin = false;
  let iterations = DEFAULT_ITERATIONS;
  const positional: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === "-c") create = true;
    else if (a === "-D") remove = true;
    else if (a === "--stdin") fromStdin = true;
    else if (a === "-h" || a === "--help") {
      console.log(PASSWD_HELP);
      return 0;
    } else if (a === "--iterations" || a.startsWith("--iterations=")) {
      const v = a.includes("=") ? a.slice(a.indexOf("=") + 1) : args[++i];
      iterations = Number(v);
      if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) {
        return usage(io, `--iterations: expected an integer from ${MIN_ITERATIONS} to ${MAX_ITERATIONS}`);
      }
    } else if (a.startsWith("-") && a !== "-") return usage(io, `unknown option '${a}'`);
    else positional.push(a);
  }
  if (create && remove) return usage(io, "-c and -D cannot be used together");
  if (positional.length !== 2) return usage(io, "expected FILE and USER");
  const [path, user] = positional as [string, string];
  const problem = usernameProblem(user);
  if (problem) return usage(io, problem);

  let file: PasswordFile;
  if (create) file = new PasswordFile();
  else {
    if (!existsSync(path)) {
      io.error(`ferry passwd: ${path}: no such file (-c creates it)`);
      return 1;
    }
    const parsed = PasswordFile.parse(readFileSync(path, "utf8"));
    if (parsed.problems.length > 0) {
      io.error(`ferry passwd: ${path}: ${parsed.problems.join("; ")}`);
      return 1;
    }
    file = parsed.file;
  }

  if (remove) {
    if (!file.delete(user)) {
      io.error(`ferry passwd: user '${user}' is not in ${path}`);
      return 1;
    }
  } else {
    let password: string;
    if (fromStdin) {
      password = (await io.readStdin()).split(/\r?\n/)[0] ?? "";
    } else {
      if (!io.isTerminal()) {
        io.error("ferry passwd: standard input is not a terminal; use --stdin to read the password from it");
        return 1;
      }
      password = await io.promptHidden("Password: ");
      const again = await io.promptHidden("Reenter password: ");
      if (password !== again) {
        io.error("ferry passwd: passwords do not match");
        return 1;
      }
    }
    if (password.length === 0) {
      io.error("ferry passwd: empty password");
      return 1;
    }
    file.set(user, await hashPassword(password, iterations));
  }
  const mode = writeKeepingOwnership(path, file.format());
  if (mode & 0o004) {
    io.error(
      `ferry passwd: warning: ${path} is readable by every user (mode ${
        octal(mode)
      }); restrict it with: chmod o-rwx ${path}`,
    );
  }
  return 0;
}

function usage(io: PasswdIo, message: string): number {
  io.error(`ferry passwd: ${message}`);
  io.error("Usage: ferry passwd [-c | -D] [--stdin] [--iterations N] FILE USER");
  return 2;
}

/** Mode bits of a new password file: the owner writes, the broker's group reads, nobody else. */
export const NEW_FILE_MODE = 0o640;

/**
 * Replace the contents of `path` with `text`, keeping the file's owner, group and mode,
 * so that `sudo ferry passwd` does not leave a root-owned 0600 file the broker's user can
 * no longer read. Written next to it and renamed over it, so a reader (the broker) never
 * sees half a file; through a symlink, the file it points to is replaced, not the link. A
 * new file gets NEW_FILE_MODE whatever the umask. When the new file cannot be given the old
 * owner (not root, and the file belongs to someone else), the file is rewritten in place as
 * `mosquitto_passwd` does: owner and mode stay, at the price of a moment in which a reader
 * sees it empty (the broker then refuses everyone until its next check). Returns the mode.
 */
function writeKeepingOwnership(path: string, text: string): number {
  const target = existsSync(path) ? realpathSync(path) : path;
  const old = existsSync(target) ? statSync(target) : undefined;
  const mode = old ? old.mode & 0o7777 : NEW_FILE_MODE;
  const tmp = join(dirname(target), `.${basename(target)}.tmp-${process.pid}`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, "wx", 0o600); // exclusive: never writes through a planted file or link
    writeSync(fd, text);
    fsyncSync(fd);
    if (old && !chownKept(fd, old.uid, old.gid)) {
      closeSync(fd);
      fd = undefined;
      rmSync(tmp, { force: true });
      writeFileSync(target, text); // same inode: owner, group and mode stay
      return mode;
    }
    fchmodSync(fd, mode); // after the chown, which may clear set-id bits; not filtered by the umask
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, target);
    return mode;
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
}

/** Give the open file `uid:gid`; false when not permitted (then nothing changed). */
function chownKept(fd: number, uid: number, gid: number): boolean {
  try {
    fchownSync(fd, uid, gid);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === "EPERM") return false;
    throw err;
  }
}

function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

const processIo: PasswdIo = {
  isTerminal: () => process.stdin.isTTY === true,
  error: (line) => console.error(line),
  async readStdin() {
    const chunks: Uint8Array[] = [];
    for await (const chunk of process.stdin) {
      chunks.push(typeof chunk === "string" ? new TextEncoder().encode(chunk) : chunk);
    }
    let n = 0;
    for (const c of chunks) n += c.length;
    const all = new Uint8Array(n);
    n = 0;
    for (const c of chunks) {
      all.set(c, n);
      n += c.length;
    }
    return new TextDecoder().decode(all);
  },
  promptHidden(prompt) {
    return new Promise((resolve, reject) => {
      const stdin = process.stdin;
      process.stderr.write(prompt);
      stdin.setRawMode(true);
      stdin.resume();
      let line = "";
      const done = (err?: Error) => {
        stdin.off("data", onData);
        stdin.setRawMode(false);
        stdin.pause();
        process.stderr.write("\n");
        if (err) reject(err);
        else resolve(line);
      };
      const onData = (data: Uint8Array | string) => {
        for (const ch of typeof data === "string" ? data : new TextDecoder().decode(data)) {
          if (ch === "\r" || ch === "\n") return done();
          if (ch === "\u0003" || ch === "\u0004") return done(new Error("cancelled"));
          if (ch === "\u007f" || ch === "\b") line = line.slice(0, -1);
          else line += ch;
        }
      };
      stdin.on("data", onData);
    });
  },
};
