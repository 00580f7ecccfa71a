/**
 * `npm run bench -- --variant SPEC`: how a spec becomes a way of starting Ferry (command,
 * environment, config) and the key its runs are recorded under, so that a comparison of
 * runtime settings (BUN_JSC_*, MIMALLOC_*) really starts each variant as written.
 */
import { expect, test } from "bun:test";
import { parseVariants } from "../../scripts/bench/run.ts";

test("one variant keeps the key 'ferry', so the tables stay those of a plain run", () => {
  const [v] = parseVariants(["/opt/ferry"]);
  expect(v).toEqual({ key: "ferry", spec: "/opt/ferry", start: { ferryCommand: ["/opt/ferry"] } });
});

test("several variants are ferry#1, ferry#2, … with their leading NAME=VALUE words as environment", () => {
  const vs = parseVariants([
    "dist/ferry-linux-x64",
    "BUN_JSC_useFTLJIT=0 MIMALLOC_PURGE_DELAY=-1 dist/ferry-linux-x64 --extra",
  ]);
  expect(vs.map((v) => v.key)).toEqual(["ferry#1", "ferry#2"]);
  expect(vs[1]!.start).toEqual({
    ferryCommand: ["dist/ferry-linux-x64", "--extra"],
    ferryEnv: { BUN_JSC_useFTLJIT: "0", MIMALLOC_PURGE_DELAY: "-1" },
  });
});

test("JSON after ' | ' is merged into the variant's config; a spec without a command is refused", () => {
  const [v] = parseVariants(['dist/ferry-linux-x64 | {"storage":{"commit_window_ms":0}}']);
  expect(v!.start).toEqual({
    ferryCommand: ["dist/ferry-linux-x64"],
    ferryExtra: { storage: { commit_window_ms: 0 } },
  });
  expect(() => parseVariants(["  "])).toThrow(/no command/);
});
