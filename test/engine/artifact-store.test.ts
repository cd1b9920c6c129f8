import { mkdtemp, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ArtifactStore } from '../../lib/artifacts.js';

describe('artifact store publishing', () => {
  it('never deletes the destination: a folder already there is renamed aside, then replaced in one rename', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-publish-'));
    const store = new ArtifactStore(root);
    const dest = path.join(root, 'registry', 'm', 'sha256-x');
    await mkdir(dest, { recursive: true });
    await writeFile(path.join(dest, 'model.json'), 'old');
    // A reader that opened the old folder's file keeps reading it after the swap.
    const reader = await import('node:fs/promises').then((fs) => fs.open(path.join(dest, 'model.json')));
    const src = path.join(root, 'registry', 'm', '.staging-1');
    await mkdir(src, { recursive: true });
    await writeFile(path.join(src, 'model.json'), 'new');
    await store.publish(src, dest);
    expect(await readFile(path.join(dest, 'model.json'), 'utf8')).toBe('new');
    expect((await reader.readFile()).toString()).toBe('old');
    await reader.close();
    const aside = (await readdir(path.dirname(dest))).filter((f) => f.startsWith('sha256-x.replaced-'));
    expect(aside).toHaveLength(1);
    expect(await readFile(path.join(path.dirname(dest), aside[0]!, 'model.json'), 'utf8')).toBe('old');
  });

  it('content-addressed writes store identical content once and leave an existing folder untouched', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'capstan-cas-'));
    const store = new ArtifactStore(root);
    const write = (text: string) => (dir: string) => writeFile(path.join(dir, 'a.txt'), text);
    const a = await store.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'one' }, write('same'));
    const b = await store.writeContentAddressed({ kind: 'model', namespace: 'registry/m', stagingKey: 'two' }, write('same'));
    expect(b.uri).toBe(a.uri);
    expect((await readdir(path.join(root, 'registry', 'm'))).filter((f) => !f.startsWith('.'))).toHaveLength(1);
  });
});
