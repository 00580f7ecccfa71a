/**
 * Which Ferry this is: the package version, and the git commit it was built from.
 * `cross-build/build.ts` bakes the commit in with `--define FERRY_COMMIT=...`; run from
 * source, the checkout's `.git` is read instead.
 */
import { dirname, isAbsolute, join } from "node:path";
import { fileURLToPath } from "node:url";
import pkg from "../package.json" with { type: "json" };

declare const FERRY_COMMIT: string | undefined;

export const version: string = pkg.version;

type ReadText = (path: string) => Promise<string | undefined>;

/** The commit baked in at build time, else the source checkout's HEAD, else "unknown". */
export async function commit(read: ReadText): Promise<string> {
  if (typeof FERRY_COMMIT === "string") return FERRY_COMMIT;
  try {
    const root = join(dirname(fileURLToPath(import.meta.url)), "..");
    return (await checkoutHead(root, read)) ?? "unknown";
  } catch {
    return "unknown";
  }
}

/** HEAD of the git checkout at `root` (a plain clone or a worktree), abbreviated. */
async function checkoutHead(root: string, read: ReadText): Promise<string | undefined> {
  let gitDir = join(root, ".git");
  let head = await read(join(gitDir, "HEAD")).catch(() => undefined);
  if (head === undefined) {
    // A worktree: .git is a file "gitdir: <path>".
    const pointer = /^gitdir: (.+)$/m.exec((await read(gitDir)) ?? "")?.[1]?.trim();
    if (!pointer) return undefined;
    gitDir = isAbsolute(pointer) ? pointer : join(root, pointer);
    head = await read(join(gitDir, "HEAD"));
  }
  head = head?.trim();
  if (!head) return undefined;
  const ref = /^ref: (.+)$/.exec(head)?.[1];
  if (!ref) return head.slice(0, 12);
  const common = (await read(join(gitDir, "commondir")).catch(() => undefined))?.trim();
  const commonDir = common ? (isAbsolute(common) ? common : join(gitDir, common)) : gitDir;
  const direct = (await read(join(gitDir, ref)).catch(() => undefined)) ??
    (await read(join(commonDir, ref)).catch(() => undefined));
  if (direct) return direct.trim().slice(0, 12);
  const packed = await read(join(commonDir, "packed-refs")).catch(() => undefined);
  const line = packed?.split("\n").find((l) => l.endsWith(` ${ref}`));
  return line?.slice(0, 12);
}
