import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";

test("README's configuration table matches the schema (run scripts/update-readme-config.ts)", () => {
  const table = Bun.spawnSync([process.execPath, "scripts/config-doc.ts"]).stdout.toString().trim();
  expect(table).toContain("| `listeners.mqtt_port` |");
  const readme = readFileSync("README.md", "utf8");
  expect(readme).toContain(table);
});
