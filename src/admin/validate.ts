/**
 * Input validation with zod: query strings and JSON bodies are parsed against the
 * schemas in `schemas.ts`; a failure is a 400 that names every bad field.
 */
import type { Context } from "hono";
import type { z } from "zod";
import { badRequest } from "./errors.ts";

function describe(issues: readonly z.core.$ZodIssue[], where: string): string {
  return issues.map((i) => {
    if (i.code === "unrecognized_keys") {
      return `${where}: unknown ${i.keys.length > 1 ? "fields" : "field"} ${i.keys.join(", ")}`;
    }
    return `${i.path.length > 0 ? i.path.join(".") : where}: ${i.message}`;
  }).join("; ");
}

function check<S extends z.ZodType>(schema: S, input: unknown, where: string): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw badRequest(
    describe(r.error.issues, where),
    r.error.issues.map((i) => ({ path: i.path.join("."), message: i.message })),
  );
}

/** The request's query string, validated (unknown parameters are refused). */
export function parseQuery<S extends z.ZodType>(c: Context, schema: S): z.output<S> {
  return check(schema, c.req.query(), "query");
}

/** The request's JSON body, validated. */
export async function parseJson<S extends z.ZodType>(c: Context, schema: S): Promise<z.output<S>> {
  let body: unknown;
  try {
    body = await c.req.json();
  } catch {
    throw badRequest("body: not valid JSON");
  }
  return check(schema, body, "body");
}
