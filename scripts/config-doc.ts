/**
 * Print the configuration reference as a Markdown table, straight from the schema
 * (the one place defaults live). `bun scripts/config-doc.ts` — paste into README.md.
 */
import * as z from "../src/config/mini-zod.ts";
import { configSchema } from "../src/config/schema.ts";

type Row = [key: string, type: string, def: string, doc: string];

function unwrap(t: z.ZodType): { inner: z.ZodType; def?: unknown; nullable: boolean } {
  let cur: z.ZodType = t;
  let def: unknown;
  let nullable = false;
  for (;;) {
    if (cur instanceof z.ZodDefault) {
      def = cur.def.defaultValue;
      cur = cur.def.innerType as z.ZodType;
    } else if (cur instanceof z.ZodPrefault) {
      cur = cur.def.innerType as z.ZodType;
    } else if (cur instanceof z.ZodNullable) {
      nullable = true;
      cur = cur.def.innerType as z.ZodType;
    } else if (cur instanceof z.ZodOptional) {
      cur = cur.def.innerType as z.ZodType;
    } else break;
  }
  return { inner: cur, def, nullable };
}

function typeName(t: z.ZodType): string {
  if (t instanceof z.ZodEnum) return (t.options as string[]).map((o) => `"${o}"`).join(" \\| ");
  if (t instanceof z.ZodArray) return "array";
  if (t instanceof z.ZodNumber) return t.format === "safeint" ? "integer" : "number";
  if (t instanceof z.ZodUnion && t.options.every((o: z.ZodType) => o instanceof z.ZodLiteral)) {
    return t.options.map((o: z.ZodType) => JSON.stringify((o as z.ZodLiteral).value)).join(" \\| ");
  }
  if (t instanceof z.ZodString) return "string";
  if (t instanceof z.ZodBoolean) return "boolean";
  return "object";
}

function walk(obj: z.ZodObject, prefix: string, rows: Row[]): void {
  for (const [key, field] of Object.entries(obj.shape)) {
    const f = field as z.ZodType;
    const { inner, def, nullable } = unwrap(f);
    const path = prefix ? `${prefix}.${key}` : key;
    if (inner instanceof z.ZodObject) {
      walk(inner, path, rows);
      continue;
    }
    const doc = f.description ?? inner.description ?? "";
    rows.push([
      path,
      typeName(inner) + (nullable ? " \\| null" : ""),
      def === undefined ? "" : JSON.stringify(def),
      doc,
    ]);
    // Arrays of objects (uplinks, their rules): one row per element key, as `key[].field`.
    if (inner instanceof z.ZodArray) {
      const element = unwrap(inner.def.element as z.ZodType).inner;
      if (element instanceof z.ZodObject) walk(element, `${path}[]`, rows);
    }
  }
}

const rows: Row[] = [];
walk(configSchema, "", rows);
console.log("| key | type | default | meaning |\n| --- | --- | --- | --- |");
for (const [k, t, d, doc] of rows) console.log(`| \`${k}\` | ${t} | ${d ? `\`${d}\`` : ""} | ${doc} |`);
