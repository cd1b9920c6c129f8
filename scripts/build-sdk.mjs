// Builds the package entry `capstan/plugin` into dist/sdk: plugins/sdk.ts and what it imports,
// compiled to ESM with type declarations (tsconfig.sdk.json), plus the plain `.mjs` files under
// plugins/ (spawned with node at run time, e.g. a stage launcher) next to the compiled code.
// Run by `npm pack` (prepack) and `npm run build:sdk`. Plain Node: no tsx needed.
//
// Then it checks what came out: the compiled SDK may import only zod and Node built-ins, in its
// code and in its type declarations, so a plugin project needs nothing of the host's dependencies
// (no database, Temporal or TensorFlow packages or types).
import { spawnSync } from 'node:child_process';
import { cpSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const out = path.join(root, 'dist', 'sdk');
const ALLOWED_PACKAGES = new Set(['zod']);

rmSync(out, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const built = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.sdk.json')], { cwd: root, stdio: 'inherit' });
if (built.status !== 0) fail(`tsc -p tsconfig.sdk.json failed (exit ${built.status ?? built.signal})`);

for (const file of walk(path.join(root, 'plugins')).filter((f) => f.endsWith('.mjs'))) {
  cpSync(file, path.join(out, path.relative(root, file)));
}

const problems = [];
for (const file of walk(out).filter((f) => /\.(m?js|d\.ts)$/.test(f))) {
  const code = readFileSync(file, 'utf8')
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/^\s*\/\/.*$/gm, '');
  for (const m of code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"]([^'"]+)['"]/g)) {
    const spec = m[1];
    if (spec.startsWith('.') || spec.startsWith('node:')) continue;
    const pkg = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0];
    if (!ALLOWED_PACKAGES.has(pkg)) problems.push(`${path.relative(root, file)} imports '${spec}'`);
  }
}
if (problems.length) {
  fail(
    `the SDK may import only ${[...ALLOWED_PACKAGES].join(', ')} and node: built-ins; keep host modules out of what plugins/sdk.ts imports:\n  ${problems.join('\n  ')}`,
  );
}
process.stdout.write(`capstan/plugin built into ${path.relative(root, out)} (${walk(out).length} files)\n`);

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

function fail(message) {
  process.stderr.write(`build-sdk: ${message}\n`);
  process.exit(1);
}
