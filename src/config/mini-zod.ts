/**
 * The part of zod 4's API that src/config/schema.ts uses, written out: the configuration
 * schema is built and checked at every start, and zod itself (95 of the modules an idle
 * broker had loaded, and the objects its schemas are made of) cost about 4 MB of the
 * executable's idle RSS. The admin API's schemas still use zod, which is loaded with the
 * admin app on its first request.
 *
 * Same names, same behaviour for what is used: `z.object({...}).strict().prefault({})`,
 * `z.number().int().min().max()`, `z.string().min().regex()`, `z.boolean()`, `z.enum()`,
 * `z.union([z.literal()...])`, `z.array().min()`, `.optional()`, `.nullable()`,
 * `.default()`, `.describe()`, `.refine()`, `.superRefine()`; issues with zod's codes and
 * fields (what src/config/schema-issues.ts turns into messages), in zod's order, with
 * zod's rule that a check is skipped once the value has an issue that is not a failed
 * check (a wrong type, say); and the introspection scripts/config-doc.ts and
 * edge/example-config.ts read (`shape`, `def.innerType`, `def.defaultValue`, `minValue`,
 * `isInt`, `options`, `description`). test/unit/config.test.ts holds the messages to the
 * ones zod gave.
 */

export type KeyPath = Array<string | number>;

/** One problem, as zod 4 reports it (the fields schema-issues.ts reads). */
export interface Issue {
  code:
    | "invalid_type"
    | "too_small"
    | "too_big"
    | "invalid_value"
    | "invalid_union"
    | "invalid_format"
    | "unrecognized_keys"
    | "custom";
  path: KeyPath;
  message: string;
  /** invalid_type: "string", "number", "int", "boolean", "object", "array". */
  expected?: string;
  /** too_small / too_big */
  minimum?: number;
  maximum?: number;
  inclusive?: boolean;
  origin?: "number" | "string" | "array";
  /** invalid_value: what is allowed. */
  values?: unknown[];
  /** invalid_union: each option's issues. */
  errors?: Issue[][];
  /** unrecognized_keys */
  keys?: string[];
  /** A failed check (true) lets later checks run; any other issue stops them, as in zod. */
  continue?: boolean;
}

/** What `superRefine` gets to report with. */
export interface RefinementCtx {
  addIssue(issue: { code: "custom"; message: string; path?: KeyPath }): void;
}

type Check = (value: unknown, path: KeyPath, issues: Issue[]) => void;

/** The definition scripts read: the kind of schema and what it wraps or holds. */
export interface Def {
  type: string;
  innerType?: ZodType;
  defaultValue?: unknown;
  element?: ZodType;
  shape?: Record<string, ZodType>;
  options?: readonly ZodType[];
  values?: readonly unknown[];
}

export type SafeParseResult<T> = { success: true; data: T } | { success: false; error: { issues: Issue[] } };

function aborted(issues: Issue[], from: number): boolean {
  for (let i = from; i < issues.length; i++) if (issues[i]!.continue !== true) return true;
  return false;
}

function clone<T>(v: T): T {
  if (Array.isArray(v)) return [...v] as T;
  if (v !== null && typeof v === "object") return { ...v };
  return v;
}

export abstract class ZodType<O = unknown> {
  /** The type a parse gives (compile time only). */
  declare readonly _output: O;
  description: string | undefined;
  protected checks: Check[] = [];

  abstract get def(): Def;

  /** zod keeps a schema's definition at `_zod.def`; schema-issues.ts reads it there. */
  get _zod(): { def: Def } {
    return { def: this.def };
  }

  /** Check `value` (found at `path`), adding issues; the result means something only without new issues. */
  protected abstract parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown;

  /** `parseInner`, then this schema's checks, each skipped once the value has an issue that stops them. */
  run(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    const start = issues.length;
    const out = this.parseInner(value, path, issues);
    for (const check of this.checks) {
      if (aborted(issues, start)) break;
      check(out, path, issues);
    }
    return out;
  }

  safeParse(value: unknown): SafeParseResult<O> {
    const issues: Issue[] = [];
    const data = this.run(value, [], issues) as O;
    return issues.length === 0 ? { success: true, data } : { success: false, error: { issues } };
  }

  parse(value: unknown): O {
    const r = this.safeParse(value);
    if (!r.success) throw new Error(r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("\n"));
    return r.data;
  }

  protected copy(): this {
    const c = Object.create(Object.getPrototypeOf(this)) as this;
    Object.assign(c, this);
    c.checks = [...this.checks];
    return c;
  }

  protected withCheck(check: Check): this {
    const c = this.copy();
    c.checks.push(check);
    return c;
  }

  describe(description: string): this {
    const c = this.copy();
    c.description = description;
    return c;
  }

  optional(): ZodOptional<this> {
    return new ZodOptional(this);
  }

  nullable(): ZodNullable<this> {
    return new ZodNullable(this);
  }

  default(value: Exclude<O, undefined>): ZodDefault<this> {
    return new ZodDefault(this, value);
  }

  /** Like `default`, but the value is parsed (an object's own defaults apply). */
  prefault(value: unknown): ZodPrefault<this> {
    return new ZodPrefault(this, value);
  }

  refine(ok: (value: O) => boolean, message: string | { message: string; path?: KeyPath }): this {
    const m = typeof message === "string" ? { message } : message;
    return this.withCheck((value, path, issues) => {
      if (!ok(value as O)) {
        issues.push({ code: "custom", path: [...path, ...(m.path ?? [])], message: m.message, continue: true });
      }
    });
  }

  superRefine(fn: (value: O, ctx: RefinementCtx) => void): this {
    return this.withCheck((value, path, issues) => {
      fn(value as O, {
        addIssue: (i) =>
          issues.push({ code: "custom", path: [...path, ...(i.path ?? [])], message: i.message, continue: true }),
      });
    });
  }
}

export type output<T> = T extends ZodType<infer O> ? O : never;
export type { output as infer };

export class ZodString extends ZodType<string> {
  get def(): Def {
    return { type: "string" };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (typeof value !== "string") {
      issues.push({ code: "invalid_type", expected: "string", path, message: "Invalid input: expected string" });
    }
    return value;
  }

  min(n: number): this {
    return this.withCheck((value, path, issues) => {
      if ((value as string).length < n) {
        issues.push({
          code: "too_small",
          origin: "string",
          minimum: n,
          inclusive: true,
          path,
          message: `Too small: expected string to have >=${n} characters`,
          continue: true,
        });
      }
    });
  }

  regex(pattern: RegExp, message?: string): this {
    return this.withCheck((value, path, issues) => {
      pattern.lastIndex = 0;
      if (!pattern.test(value as string)) {
        issues.push({
          code: "invalid_format",
          path,
          message: message ?? `Invalid string: must match pattern ${pattern}`,
          continue: true,
        });
      }
    });
  }
}

export class ZodNumber extends ZodType<number> {
  minValue: number | null = null;
  maxValue: number | null = null;
  isInt = false;

  get def(): Def {
    return { type: "number" };
  }

  /** "safeint" for integers, as zod names it. */
  get format(): string | null {
    return this.isInt ? "safeint" : null;
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (typeof value !== "number" || !Number.isFinite(value)) {
      issues.push({ code: "invalid_type", expected: "number", path, message: "Invalid input: expected number" });
    }
    return value;
  }

  int(): this {
    const c = this.withCheck((value, path, issues) => {
      const n = value as number;
      if (!Number.isInteger(n)) {
        issues.push({
          code: "invalid_type",
          expected: "int",
          path,
          message: "Invalid input: expected int",
          continue: false,
        });
      } else if (!Number.isSafeInteger(n)) {
        const big = n > 0;
        issues.push({
          code: big ? "too_big" : "too_small",
          origin: "number",
          ...(big ? { maximum: Number.MAX_SAFE_INTEGER } : { minimum: Number.MIN_SAFE_INTEGER }),
          inclusive: true,
          path,
          message: "Integers must be within the safe integer range.",
          continue: true,
        });
      }
    });
    c.isInt = true;
    return c;
  }

  min(n: number): this {
    const c = this.withCheck((value, path, issues) => {
      if ((value as number) < n) {
        issues.push({
          code: "too_small",
          origin: "number",
          minimum: n,
          inclusive: true,
          path,
          message: `Too small: expected number to be >=${n}`,
          continue: true,
        });
      }
    });
    c.minValue = Math.max(n, this.minValue ?? Number.NEGATIVE_INFINITY);
    return c;
  }

  max(n: number): this {
    const c = this.withCheck((value, path, issues) => {
      if ((value as number) > n) {
        issues.push({
          code: "too_big",
          origin: "number",
          maximum: n,
          inclusive: true,
          path,
          message: `Too big: expected number to be <=${n}`,
          continue: true,
        });
      }
    });
    c.maxValue = Math.min(n, this.maxValue ?? Number.POSITIVE_INFINITY);
    return c;
  }
}

export class ZodBoolean extends ZodType<boolean> {
  get def(): Def {
    return { type: "boolean" };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (typeof value !== "boolean") {
      issues.push({ code: "invalid_type", expected: "boolean", path, message: "Invalid input: expected boolean" });
    }
    return value;
  }
}

export class ZodEnum<T extends readonly string[] = readonly string[]> extends ZodType<T[number]> {
  constructor(readonly options: T) {
    super();
  }

  get def(): Def {
    return { type: "enum", values: this.options };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (!(this.options as readonly unknown[]).includes(value)) {
      issues.push({ code: "invalid_value", values: [...this.options], path, message: "Invalid option" });
    }
    return value;
  }
}

export class ZodLiteral<T extends string | number | boolean = string | number | boolean> extends ZodType<T> {
  constructor(readonly value: T) {
    super();
  }

  get def(): Def {
    return { type: "literal", values: [this.value] };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (value !== this.value) {
      issues.push({ code: "invalid_value", values: [this.value], path, message: "Invalid input" });
    }
    return value;
  }
}

export class ZodUnion<T extends readonly ZodType[] = readonly ZodType[]> extends ZodType<output<T[number]>> {
  constructor(readonly options: T) {
    super();
  }

  get def(): Def {
    return { type: "union", options: this.options };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    const errors: Issue[][] = [];
    for (const option of this.options) {
      const own: Issue[] = [];
      const out = option.run(value, path, own);
      if (own.length === 0) return out;
      errors.push(own);
    }
    issues.push({ code: "invalid_union", errors, path, message: "Invalid input" });
    return value;
  }
}

export class ZodArray<T extends ZodType = ZodType> extends ZodType<Array<output<T>>> {
  constructor(readonly element: T) {
    super();
  }

  get def(): Def {
    return { type: "array", element: this.element };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (!Array.isArray(value)) {
      issues.push({ code: "invalid_type", expected: "array", path, message: "Invalid input: expected array" });
      return value;
    }
    return value.map((v, i) => this.element.run(v, [...path, i], issues));
  }

  min(n: number): this {
    return this.withCheck((value, path, issues) => {
      if ((value as unknown[]).length < n) {
        issues.push({
          code: "too_small",
          origin: "array",
          minimum: n,
          inclusive: true,
          path,
          message: `Too small: expected array to have >=${n} items`,
          continue: true,
        });
      }
    });
  }
}

type Shape = Record<string, ZodType>;
type OptionalKeys<S extends Shape> = { [K in keyof S]: undefined extends output<S[K]> ? K : never }[keyof S];
type Flatten<T> = { [K in keyof T]: T[K] };
type ObjectOutput<S extends Shape> = Flatten<
  & { [K in Exclude<keyof S, OptionalKeys<S>>]: output<S[K]> }
  & { [K in OptionalKeys<S>]?: output<S[K]> }
>;

export class ZodObject<S extends Shape = Shape> extends ZodType<ObjectOutput<S>> {
  /** Plain fields only, here and in every schema: `copy` makes instances without the constructor. */
  protected isStrict = false;

  constructor(readonly shape: S) {
    super();
  }

  get def(): Def {
    return { type: "object", shape: this.shape };
  }

  /** Keys the shape does not name are an issue (unrecognized_keys), not dropped. */
  strict(): this {
    const c = this.copy();
    c.isStrict = true;
    return c;
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      issues.push({ code: "invalid_type", expected: "object", path, message: "Invalid input: expected object" });
      return value;
    }
    const input = value as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(this.shape)) {
      const result = this.shape[key]!.run(input[key], [...path, key], issues);
      // An absent optional key stays absent.
      if (result !== undefined || key in input) out[key] = result;
    }
    if (this.isStrict) {
      const unknown = Object.keys(input).filter((k) => !(k in this.shape));
      if (unknown.length > 0) {
        issues.push({
          code: "unrecognized_keys",
          keys: unknown,
          path,
          message: `Unrecognized key${unknown.length > 1 ? "s" : ""}: ${unknown.map((k) => `"${k}"`).join(", ")}`,
          continue: true,
        });
      }
    }
    return out;
  }
}

export class ZodOptional<T extends ZodType = ZodType> extends ZodType<output<T> | undefined> {
  constructor(readonly innerType: T) {
    super();
  }

  get def(): Def {
    return { type: "optional", innerType: this.innerType };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    return value === undefined ? undefined : this.innerType.run(value, path, issues);
  }
}

export class ZodNullable<T extends ZodType = ZodType> extends ZodType<output<T> | null> {
  constructor(readonly innerType: T) {
    super();
  }

  get def(): Def {
    return { type: "nullable", innerType: this.innerType };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    return value === null ? null : this.innerType.run(value, path, issues);
  }
}

export class ZodDefault<T extends ZodType = ZodType> extends ZodType<Exclude<output<T>, undefined>> {
  constructor(readonly innerType: T, readonly defaultValue: unknown) {
    super();
  }

  get def(): Def {
    return { type: "default", innerType: this.innerType, defaultValue: this.defaultValue };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    // As in zod, the default is the result as it is (not parsed), a fresh copy each time.
    return value === undefined ? clone(this.defaultValue) : this.innerType.run(value, path, issues);
  }
}

export class ZodPrefault<T extends ZodType = ZodType> extends ZodType<Exclude<output<T>, undefined>> {
  constructor(readonly innerType: T, readonly defaultValue: unknown) {
    super();
  }

  get def(): Def {
    return { type: "prefault", innerType: this.innerType, defaultValue: this.defaultValue };
  }

  protected parseInner(value: unknown, path: KeyPath, issues: Issue[]): unknown {
    return this.innerType.run(value === undefined ? clone(this.defaultValue) : value, path, issues);
  }
}

export function object<S extends Shape>(shape: S): ZodObject<S> {
  return new ZodObject(shape);
}

export function string(): ZodString {
  return new ZodString();
}

export function number(): ZodNumber {
  return new ZodNumber();
}

export function boolean(): ZodBoolean {
  return new ZodBoolean();
}

function enum_<const T extends readonly [string, ...string[]]>(values: T): ZodEnum<T> {
  return new ZodEnum(values);
}
export { enum_ as enum };

export function literal<const T extends string | number | boolean>(value: T): ZodLiteral<T> {
  return new ZodLiteral(value);
}

export function union<const T extends readonly ZodType[]>(options: T): ZodUnion<T> {
  return new ZodUnion(options);
}

export function array<T extends ZodType>(element: T): ZodArray<T> {
  return new ZodArray(element);
}
