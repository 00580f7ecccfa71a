/**
 * A measured command given as one string, e.g. `--cmd "BUN_OPTIONS=--smol dist/ferry-linux-x64"`:
 * its leading NAME=VALUE words are environment variables for that command only (as a shell
 * reads them), the rest is what to run. Lets one run compare runtime settings read at
 * start-up (BUN_OPTIONS, BUN_JSC_*, MIMALLOC_*) on the same executable.
 */
export function splitCommand(command: string): { env: Record<string, string>; argv: string[] } {
  const words = command.split(/\s+/).filter(Boolean);
  const env: Record<string, string> = {};
  let i = 0;
  for (; i < words.length - 1; i++) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(words[i]!);
    if (!m) break;
    env[m[1]!] = m[2]!;
  }
  return { env, argv: words.slice(i) };
}
