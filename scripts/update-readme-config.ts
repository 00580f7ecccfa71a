/** Regenerate the configuration table in README.md from the schema. */
import { readFileSync, writeFileSync } from "node:fs";

const table = Bun.spawnSync([process.execPath, "scripts/config-doc.ts"]).stdout.toString().trim();
const readme = readFileSync("README.md", "utf8");
const start = "<!-- config-table:start -->";
const end = "<!-- config-table:end -->";
const next = readme.replace(new RegExp(`${start}[\\s\\S]*?${end}`), `${start}\n${table}\n${end}`);
writeFileSync("README.md", next);
console.log(next === readme ? "README.md config table already current" : "README.md config table updated");
