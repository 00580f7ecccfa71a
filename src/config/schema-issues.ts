/**
 * Schema issues (zod's, as src/config/mini-zod.ts reports them) turned into what an operator can act on: one problem per key, in words
 * rather than zod's ("must be at least 1", not "Too small: expected number to be >=1"),
 * the value that was given, and a "did you mean" for a misspelt key or option.
 */
import type { ConfigProblem, KeyPath } from "./config-source.ts";
import { closest } from "./did-you-mean.ts";
import type { Issue, ZodType } from "./mini-zod.ts";

export function problemsFromIssues(issues: readonly Issue[], schema: ZodType, input: unknown): ConfigProblem[] {
  const out: ConfigProblem[] = [];
  for (const issue of issues) {
    const path = issue.path;
    if (issue.code === "unrecognized_keys") {
      const known = objectKeysAt(schema, path);
      for (const key of issue.keys ?? []) {
        const guess = closest(key, known);
        out.push({
          path: [...path, key],
          atKey: true,
          message: `unknown key${
            guess ? `; did you mean "${guess}"?` : known.length > 0 ? ` (known here: ${known.join(", ")})` : ""
          }`,
        });
      }
      continue;
    }
    out.push({ path, message: describe(issue, valueAt(input, path)) });
  }
  return out;
}

function describe(issue: Issue, given: unknown): string {
  switch (issue.code) {
    case "invalid_type":
      if (given === undefined) return `required (${article(issue.expected ?? "value")})`;
      return `must be ${article(issue.expected ?? "value")}, not ${kindOf(given)}${shown(given)}`;
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      const bound = small ? issue.minimum : issue.maximum;
      const word = small ? (issue.inclusive ? "at least" : "more than") : (issue.inclusive ? "at most" : "less than");
      const unit = issue.origin === "string" ? " characters" : issue.origin === "array" ? " entries" : "";
      return `must be ${word} ${bound}${unit}${shown(given)}`;
    }
    case "invalid_value": {
      const allowed = issue.values ?? [];
      const values = allowed.map((v) => JSON.stringify(v));
      const guess = typeof given === "string"
        ? closest(given, allowed.filter((v): v is string => typeof v === "string"))
        : "";
      return `must be ${values.length === 1 ? values[0] : `one of ${values.join(", ")}`}${shown(given)}${
        guess ? `; did you mean "${guess}"?` : ""
      }`;
    }
    case "invalid_union": {
      // A union of literals (qos: 0 | 1 | 2, protocol_version: 4 | 5): list what is allowed.
      const values = (issue.errors ?? []).flatMap((branch) =>
        branch.flatMap((i) => (i.code === "invalid_value" ? (i.values ?? []).map((v) => JSON.stringify(v)) : []))
      );
      return values.length > 0 ? `must be one of ${values.join(", ")}${shown(given)}` : `not valid${shown(given)}`;
    }
    case "invalid_format":
      // The schema's own message when it has one; zod's quotes the raw regex.
      return issue.message.startsWith("Invalid")
        ? `does not have the expected form${shown(given)}`
        : `${issue.message}${shown(given)}`;
    default:
      return issue.message;
  }
}

function article(type: string): string {
  if (type === "array") return "a list";
  if (type === "object") return "an object ({ ... })";
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function kindOf(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "a list";
  if (typeof v === "object") return "an object";
  return article(typeof v);
}

/** `, got "http://x"` — cut short, so a huge value does not flood the terminal. */
function shown(v: unknown): string {
  if (v === undefined || (typeof v === "object" && v !== null)) return "";
  const s = JSON.stringify(v);
  return ` (got ${s.length > 80 ? `${s.slice(0, 77)}...` : s})`;
}

function valueAt(input: unknown, path: KeyPath): unknown {
  let v = input;
  for (const p of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[p];
  }
  return v;
}

/** The keys an object in the schema allows at `path` (for "did you mean"). */
function objectKeysAt(schema: ZodType, path: KeyPath): string[] {
  let node: unknown = schema;
  for (const p of [...path, undefined]) {
    // Through wrappers (default, prefault, optional, nullable, pipes) to the object or list.
    for (let guard = 0; guard < 16; guard++) {
      const def = defOf(node);
      if (def === undefined) return [];
      if (def.innerType !== undefined) node = def.innerType;
      else if (def.type === "pipe") node = def.in;
      else break;
    }
    const def = defOf(node)!;
    if (p === undefined) return def.type === "object" && def.shape ? Object.keys(def.shape) : [];
    if (typeof p === "number") {
      if (def.type !== "array") return [];
      node = def.element;
    } else {
      if (def.type !== "object" || !def.shape) return [];
      node = def.shape[p];
    }
  }
  return [];
}

interface SchemaDef {
  type: string;
  innerType?: unknown;
  in?: unknown;
  element?: unknown;
  shape?: Record<string, unknown>;
}

/** A schema's definition, at `_zod.def` as zod 4 keeps it (src/config/mini-zod.ts does the same). */
function defOf(node: unknown): SchemaDef | undefined {
  return (node as { _zod?: { def?: SchemaDef } } | undefined)?._zod?.def;
}
