// Issue 20: the data folder's secrets (admin-token, the SQLite databases, the dev stack's Temporal
// and SeaweedFS folders) are never inside a data root. The default roots are a `datasets` folder
// of the data folder and the bundled MNIST; a configured root holding a secret is a
// configuration error at start; and with the defaults, a spec cannot reach admin-token by an
// absolute path, by `..` or through a symlink placed in the datasets folder.
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../app/config.js';
import { DATA_PATH_REFUSED, openConfined, pathProblem, readConfined } from '../../lib/confine-path.js';
import { StageError } from '../../lib/errors.js';
import { mnistPackageDir } from '../../plugins/core/data-prep/index.js';

const TOKEN = 'cap_0123456789ab_secret-admin-token-value-for-the-test-000000';
let tmp: string;
let dataDir: string;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'capstan-roots-'));
  dataDir = path.join(tmp, 'project', '.data');
  await mkdir(path.join(dataDir, 'datasets'), { recursive: true });
  await mkdir(path.join(dataDir, 'temporal'), { recursive: true });
  await writeFile(path.join(dataDir, 'admin-token'), `${TOKEN}\n`);
  await writeFile(path.join(dataDir, 'capstan.db'), 'SQLite format 3\0');
  await writeFile(path.join(dataDir, 'datasets', 'ok.csv'), 'a,label\n1,0\n');
  await symlink(path.join(dataDir, 'admin-token'), path.join(dataDir, 'datasets', 'token.csv'));
  await symlink(dataDir, path.join(tmp, 'data-link'));
});
afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

const config = (env: Record<string, string> = {}, cwd = path.join(tmp, 'project')) => loadConfig({ CAPSTAN_DATA_DIR: dataDir, ...env }, cwd);

describe('data roots never hold the data folder’s secrets', () => {
  it('defaults to <data dir>/datasets and the bundled MNIST, not the data folder', () => {
    expect(config().dataRoots).toEqual([path.join(dataDir, 'datasets'), mnistPackageDir()]);
  });

  it('refuses at config load a root that holds admin-token, a database, temporal/ or seaweedfs/ — as written or through a symlink', () => {
    const cases: [string, string][] = [
      [dataDir, 'admin-token'],
      [path.join(tmp, 'project'), 'admin-token'],
      ['.', 'admin-token'],
      ['/', 'admin-token'],
      [path.join(dataDir, 'temporal'), 'temporal'],
      [path.join(dataDir, 'seaweedfs'), 'seaweedfs'],
      [path.join(tmp, 'data-link'), 'admin-token'],
      [`${path.join(dataDir, 'datasets')},${dataDir}`, 'admin-token'],
    ];
    for (const [roots, holds] of cases) {
      expect(() => config({ CAPSTAN_DATA_ROOTS: roots }), roots).toThrow(
        /^bad configuration in the environment:\n {2}CAPSTAN_DATA_ROOTS: the data root .* holds .*(admin-token|temporal|seaweedfs) \(the data folder's admin token and databases must never be readable as data\); use a folder of its own, such as .*datasets$/,
      );
      expect(() => config({ CAPSTAN_DATA_ROOTS: roots })).toThrow(holds);
    }
    // A folder of its own, inside the data folder or elsewhere, is fine.
    expect(config({ CAPSTAN_DATA_ROOTS: `${path.join(dataDir, 'datasets')},${path.join(tmp, 'elsewhere')}` }).dataRoots).toEqual([
      path.join(dataDir, 'datasets'),
      path.join(tmp, 'elsewhere'),
    ]);
  });

  it('with the default roots, admin-token is out of reach: by absolute path, by "..", through a symlink in the datasets folder', async () => {
    const roots = config().dataRoots;
    expect(pathProblem(path.join(dataDir, 'admin-token'), { roots })?.rule).toBe('outside-roots');
    expect(pathProblem(path.join(dataDir, 'capstan.db'), { roots })?.rule).toBe('outside-roots');
    expect(pathProblem('../admin-token', { roots })?.rule).toBe('dot-dot');
    const e = await openConfined('token.csv', { roots }).then(
      async (f) => {
        const text = new TextDecoder().decode(await readConfined(f));
        throw new Error(`read ${text.length} bytes of admin-token`);
      },
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(StageError);
    expect(e).toMatchObject({ type: DATA_PATH_REFUSED, details: { path: 'token.csv', rule: 'symlink-escape' } });
    expect((e as Error).message).not.toContain(TOKEN);
    // Data in the datasets folder is read as before, by a path relative to it.
    const ok = await openConfined('ok.csv', { roots });
    expect(new TextDecoder().decode(await readConfined(ok))).toBe('a,label\n1,0\n');
  });
});
