/**
 * The layer rules of ../../README.md *Layout*, enforced on the source text: the kernel
 * (src/core) imports no runtime and nothing from auth, admin, sync, config or runtime;
 * src/auth imports nothing from the kernel (auth and ACL are ports the kernel calls);
 * only src/mqtt imports mqtt-packet.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");
const SRC = join(ROOT, "src");

interface SourceFile {
  /** Path relative to the repository root, e.g. src/core/broker.ts. */
  path: string;
  text: string;
  /** Every module specifier it imports or re-exports, static or dynamic. */
  imports: string[];
}

function sourceFiles(): SourceFile[] {
  const files: SourceFile[] = [];
  for (const entry of readdirSync(SRC, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || !/\.(ts|tsx)$/.test(entry.name)) continue;
    const full = join(entry.parentPath, entry.name);
    const text = readFileSync(full, "utf8");
    files.push({ path: relative(ROOT, full), text, imports: importsOf(text) });
  }
  return files;
}

/** Specifiers of `import … from "x"`, `export … from "x"`, `import "x"` and `import("x")`. */
export function importsOf(text: string): string[] {
  const out: string[] = [];
  const code = text.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const patterns = [
    /\b(?:import|export)\b[^;'"`]*?\bfrom\s*["']([^"']+)["']/g,
    /\bimport\s*["']([^"']+)["']/g,
    /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[1]!);
  return out;
}

/** The top-level folder under src/ a relative specifier lands in ("core", "auth", …), or undefined. */
function layerOf(file: string, specifier: string): string | undefined {
  if (!specifier.startsWith(".")) return undefined;
  const target = relative(SRC, resolve(ROOT, dirname(file), specifier));
  if (target.startsWith("..")) return "outside-src";
  return target.split(/[\\/]/)[0];
}

function violations(files: SourceFile[], inLayer: string, rule: (file: SourceFile, spec: string) => boolean) {
  const out: string[] = [];
  for (const f of files) {
    if (!f.path.startsWith(`src/${inLayer}/`)) continue;
    for (const spec of f.imports) if (rule(f, spec)) out.push(`${f.path} imports ${spec}`);
  }
  return out;
}

const files = sourceFiles();

describe("layer rules", () => {
  test("the scan sees the source tree and its imports", () => {
    const broker = files.find((f) => f.path === "src/core/broker.ts");
    expect(broker?.imports).toContain("./router.ts");
    expect(files.filter((f) => f.path.startsWith("src/core/")).length).toBeGreaterThan(10);
    expect(importsOf(`import type { A } from "./a.ts";\nexport { b } from '../b.ts';\nawait import("c");`))
      .toEqual(["./a.ts", "../b.ts", "c"]);
  });

  test("src/core imports no runtime: no bun:*, node:*, npm packages or Deno", () => {
    const bad = violations(files, "core", (_f, spec) => !spec.startsWith("."));
    for (const f of files) {
      if (f.path.startsWith("src/core/") && /\bDeno\.|\bBun\./.test(f.text.replace(/\/\/.*$|\/\*[\s\S]*?\*\//gm, ""))) {
        bad.push(`${f.path} uses a runtime global`);
      }
    }
    expect(bad).toEqual([]);
  });

  test("src/core imports nothing from auth, admin, sync, config or runtime", () => {
    const forbidden = new Set(["auth", "admin", "sync", "config", "runtime", "outside-src"]);
    expect(violations(files, "core", (f, spec) => forbidden.has(layerOf(f.path, spec) ?? ""))).toEqual([]);
  });

  test("src/auth imports nothing from src/core (auth and ACL are ports the kernel calls)", () => {
    expect(violations(files, "auth", (f, spec) => layerOf(f.path, spec) === "core")).toEqual([]);
  });

  test("only src/mqtt imports mqtt-packet", () => {
    const bad: string[] = [];
    for (const f of files) {
      if (f.path.startsWith("src/mqtt/")) continue;
      for (const spec of f.imports) if (spec === "mqtt-packet" || spec.startsWith("mqtt-packet/")) bad.push(f.path);
    }
    expect(bad).toEqual([]);
    expect(files.some((f) => f.path.startsWith("src/mqtt/") && f.imports.includes("mqtt-packet"))).toBe(true);
  });
});
