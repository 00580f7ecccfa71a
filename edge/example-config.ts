/**
 * edge/ferry.example.jsonc, generated from the schema (src/config/schema.ts): every
 * key with its description, type, range and default. `bun edge/example-config.ts` (part of
 * `npm run docs`) writes it; test/install.test.ts fails when the file and the schema drift apart.
 *
 * The values are the defaults, except the few an installed appliance wants different
 * (APPLIANCE_VALUES). Lists of objects (ACL rules, uplinks) stay empty, with one sample
 * entry commented out underneath; `renderExampleConfig({ samples: true })` renders the
 * samples uncommented, so a test can prove they are valid too.
 */
import * as z from "../src/config/mini-zod.ts";
import { configSchema } from "../src/config/schema.ts";

/** Where the example differs from the schema's defaults, and why. */
const APPLIANCE_VALUES: Record<string, unknown> = {
  data_dir: "/var/lib/ferry", // install.sh's data directory; the unit may only write there
  // An installed gateway serves its network, so it listens everywhere and requires passwords.
  "listeners.host": "0.0.0.0",
  "auth.password_file": "/etc/ferry/passwd",
  // One device's credentials must not be able to kick another device off and fire its Will.
  "auth.bind_client_ids": true,
};

/** Values for sample list entries where the type alone gives no sensible one. */
const SAMPLE_VALUES: Record<string, unknown> = {
  "acl.rules[].action": "subscribe",
  "acl.rules[].topic": "private/%u/#",
  "acl.rules[].permission": "deny",
  "acl.rules[].username": "sensor-1",
  "acl.rules[].client_id": "sensor-1",
  "uplinks[].name": "cloud",
  "uplinks[].url": "mqtts://cloud.example.com:8883",
  "uplinks[].urls": ["mqtts://cloud-2.example.com:8883", "mqtts://cloud-3.example.com:8883"],
  "uplinks[].client_id": "ferry-edge-cloud",
  "uplinks[].username": "edge",
  "uplinks[].password_file": "/etc/ferry/cloud.password",
  "uplinks[].tls.ca": "/etc/ferry/cloud-ca.pem",
  "uplinks[].tls.cert": "/etc/ferry/edge.pem",
  "uplinks[].tls.key": "/etc/ferry/edge.key",
  "uplinks[].forward[].filter": "sensors/#",
  "uplinks[].forward[].topic": "edge/${edge_id}/${topic}",
  "uplinks[].downlink[].filter": "commands/${edge_id}/#",
  "uplinks[].downlink[].topic": "commands/${topic}",
  "uplinks[].downlink[].strip": "commands/${edge_id}/",
  "admin.token": "a-long-random-string-such-as-openssl-rand-hex-32",
};

/** Keys a sample entry leaves out (commented), because setting them has a cost. */
const SAMPLE_OMIT = new Set(["uplinks[].password"]);

interface Unwrapped {
  inner: z.ZodType;
  hasDefault: boolean;
  defaultValue: unknown;
  nullable: boolean;
  optional: boolean;
  description: string | undefined;
}

function unwrap(t: z.ZodType): Unwrapped {
  let cur = t;
  let description = t.description;
  let hasDefault = false;
  let defaultValue: unknown;
  let nullable = false;
  let optional = false;
  for (;;) {
    if (cur instanceof z.ZodDefault) {
      hasDefault = true;
      defaultValue = cur.def.defaultValue;
    } else if (cur instanceof z.ZodNullable) nullable = true;
    else if (cur instanceof z.ZodOptional) optional = true;
    else if (!(cur instanceof z.ZodPrefault)) break;
    cur = (cur.def as unknown as { innerType: z.ZodType }).innerType;
    description ??= cur.description;
  }
  return { inner: cur, hasDefault, defaultValue, nullable, optional, description };
}

function bound(n: number | null | undefined): string | undefined {
  if (
    n === null || n === undefined || !Number.isFinite(n) || Math.abs(n) >= Number.MAX_SAFE_INTEGER
  ) return undefined;
  return String(n);
}

/** "integer 0–65535", "one of "a" | "b"", "string", … */
function typeText(u: Unwrapped): string {
  const t = u.inner;
  let text: string;
  if (t instanceof z.ZodNumber) {
    const lo = bound(t.minValue);
    const hi = bound(t.maxValue);
    text = t.isInt ? "integer" : "number";
    if (lo !== undefined && hi !== undefined) text += ` ${lo}–${hi}`;
    else if (lo !== undefined) text += ` ≥ ${lo}`;
    else if (hi !== undefined) text += ` ≤ ${hi}`;
  } else if (t instanceof z.ZodEnum) {
    text = `one of ${(t.options as string[]).map((o) => JSON.stringify(o)).join(" | ")}`;
  } else if (t instanceof z.ZodUnion) {
    const values: unknown[] = t.options.flatMap((o: z.ZodType) => (o instanceof z.ZodLiteral ? [o.value] : []));
    text = values.length === t.options.length ? `one of ${values.map((v) => JSON.stringify(v)).join(" | ")}` : "value";
  } else if (t instanceof z.ZodString) text = "string";
  else if (t instanceof z.ZodBoolean) text = "true or false";
  else if (t instanceof z.ZodArray) text = "list";
  else text = "object";
  return u.nullable ? `${text}, or null` : text;
}

/** A value for a sample entry's field (or an optional key's disabled line). */
function placeholder(u: Unwrapped, path: string): unknown {
  if (path in SAMPLE_VALUES) return SAMPLE_VALUES[path];
  if (u.hasDefault) return u.defaultValue;
  const t = u.inner;
  if (t instanceof z.ZodEnum) return (t.options as string[])[0];
  if (t instanceof z.ZodNumber) return t.minValue ?? 0;
  if (t instanceof z.ZodBoolean) return false;
  if (t instanceof z.ZodArray) return [];
  return "";
}

const json = (v: unknown) => JSON.stringify(v);

/** One key of an object as it will be printed. */
interface Entry {
  about: string;
  key: string;
  value: Value;
  /** Printed commented out (an optional key with no default). */
  disabled: boolean;
}

type Value =
  | { kind: "scalar"; value: unknown }
  | { kind: "object"; entries: Entry[] }
  /** A list of objects: empty, with `sample` shown commented out below (or as its one item). */
  | { kind: "list"; sample: Entry[] };

/**
 * The entries of `obj`. `sample` is true inside a sample list entry, where fields take
 * sample values rather than defaults.
 */
function entriesOf(obj: z.ZodObject, path: string, sample: boolean): Entry[] {
  return Object.entries(obj.shape).map(([key, field]): Entry => {
    const u = unwrap(field as z.ZodType);
    const keyPath = path ? `${path}.${key}` : key;
    const about = [u.description ?? ""];
    if (u.inner instanceof z.ZodObject) {
      return {
        about: about.join(""),
        key,
        value: { kind: "object", entries: entriesOf(u.inner, keyPath, sample) },
        disabled: false,
      };
    }
    about.push(typeText(u));
    if (u.inner instanceof z.ZodArray && u.inner.def.element instanceof z.ZodObject) {
      const element = u.inner.def.element as z.ZodObject;
      const sampleEntries = entriesOf(element, `${keyPath}[]`, true);
      return {
        about: join(about),
        key,
        value: { kind: "list", sample: sampleEntries },
        disabled: false,
      };
    }
    const value = sample
      ? placeholder(u, keyPath)
      : keyPath in APPLIANCE_VALUES
      ? APPLIANCE_VALUES[keyPath]
      : u.hasDefault
      ? u.defaultValue
      : placeholder(u, keyPath); // an optional key without a default: shown commented out
    if (u.hasDefault && json(value) !== json(u.defaultValue)) {
      about.push(`default ${json(u.defaultValue)}`);
    }
    if (!u.hasDefault) about.push(u.optional ? "optional" : "required");
    const disabled = !u.hasDefault && u.optional && (!sample || SAMPLE_OMIT.has(keyPath));
    return { about: join(about), key, value: { kind: "scalar", value }, disabled };
  });
}

const join = (parts: string[]) => parts.filter(Boolean).join("; ");

interface Line {
  depth: number;
  text: string;
  /** A description, printed as a comment. */
  about?: boolean;
  /** Commented out from this depth on. */
  offDepth?: number;
}

function format(l: Line): string {
  const text = l.about ? `// ${l.text}` : l.text;
  if (l.offDepth === undefined) return `${"  ".repeat(l.depth)}${text}`;
  return `${"  ".repeat(l.offDepth)}// ${"  ".repeat(l.depth - l.offDepth)}${text}`;
}

/** Lines of `entries` at `depth`; `offDepth` set: commented out from there. `samples`: list samples live. */
function emitEntries(
  entries: Entry[],
  depth: number,
  offDepth: number | undefined,
  samples: boolean,
): Line[] {
  const out: Line[] = [];
  const lastLive = entries.findLastIndex((e) => !e.disabled);
  entries.forEach((e, i) => {
    const off = offDepth ?? (e.disabled ? depth : undefined);
    const at = (
      d: number,
      text: string,
    ): Line => (off === undefined ? { depth: d, text } : { depth: d, text, offDepth: off });
    const comma = i < lastLive || (e.disabled && i < entries.length - 1) ? "," : "";
    if (e.about) out.push({ ...at(depth, e.about), about: true });
    const v = e.value;
    if (v.kind === "scalar") {
      // Inside a commented sample a disabled key gets a second "//", so it stays off when
      // the sample is uncommented.
      const stayOff = e.disabled && offDepth !== undefined ? "// " : "";
      out.push(at(depth, `${stayOff}${json(e.key)}: ${json(v.value)}${comma}`));
    } else if (v.kind === "object") {
      out.push(at(depth, `${json(e.key)}: {`));
      out.push(...emitEntries(v.entries, depth + 1, off, samples));
      out.push(at(depth, `}${comma}`));
    } else if (samples || off !== undefined) {
      // One sample item: live for the validity test, or already inside a commented sample.
      out.push(at(depth, `${json(e.key)}: [`), at(depth + 1, "{"));
      out.push(...emitEntries(v.sample, depth + 2, off, samples));
      out.push(at(depth + 1, "}"), at(depth, `]${comma}`));
    } else {
      out.push(at(depth, `${json(e.key)}: []${comma}`));
      out.push({ depth, text: "An entry looks like this:", about: true });
      out.push({ depth, offDepth: depth, text: `${json(e.key)}: [` }, {
        depth: depth + 1,
        offDepth: depth,
        text: "{",
      });
      out.push(...emitEntries(v.sample, depth + 2, depth, samples));
      out.push({ depth: depth + 1, offDepth: depth, text: "}" }, {
        depth,
        offDepth: depth,
        text: "]",
      });
    }
  });
  return out;
}

const HEADER = `// Ferry configuration: every key, with what it does, its type and its default.
// Generated from src/config/schema.ts by \`npm run docs\` (bun edge/example-config.ts); a
// test fails when the two differ, so edit the schema's descriptions rather than this file.
//
// Every key is optional: a smaller file with only what you change works the same.
// Comments (// and /* */) are allowed. Check a file with \`ferry check-config FILE\`.
// Command-line options (--host, --mqtt-port, --ws-port, --data-dir, -v) override it.
// edge/install.sh installs this file as /etc/ferry/ferry.jsonc.`;

export function renderExampleConfig(options: { samples?: boolean } = {}): string {
  const lines = emitEntries(
    entriesOf(configSchema, "", false),
    1,
    undefined,
    options.samples ?? false,
  );
  return `${HEADER}\n{\n${lines.map(format).join("\n")}\n}\n`;
}

export const EXAMPLE_PATH = new URL("./ferry.example.jsonc", import.meta.url).pathname;

if (import.meta.main) {
  await Bun.write(EXAMPLE_PATH, renderExampleConfig());
  console.log(`wrote ${EXAMPLE_PATH}`);
}
