import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import type { ArtifactStore } from '../lib/artifacts.js';
import type { Db } from '../lib/db/types.js';

export interface RetentionPolicy {
  /** Run folders untouched for longer than this may go (default 45 days: longer than the 30-day pause limit plus a week-long stage). */
  keepRunsMs: number;
  /** Staging and replaced registry folders older than this go (default one day: a model server may still read a replaced one). */
  keepScratchMs: number;
}

export const DEFAULT_RETENTION: RetentionPolicy = { keepRunsMs: 45 * 24 * 3_600_000, keepScratchMs: 24 * 3_600_000 };

export interface GcReport {
  removed: { path: string; bytes: number; why: string }[];
  kept: { path: string; why: string }[];
  bytesFreed: number;
  cacheRowsDropped: number;
}

/**
 * Removes what no run can need any more: run folders (outputs, checkpoints, replica rounds) not
 * touched within the retention window and not referenced by a registered model version or a stage
 * cache entry; staging leftovers; registry folders replaced more than a day ago. Runs still open
 * or recently closed keep everything (resume needs their outputs). Registered model versions are
 * never touched. `dryRun` only reports.
 */
export async function collectGarbage(o: {
  artifacts: ArtifactStore;
  db: Db;
  policy?: Partial<RetentionPolicy>;
  now?: number;
  dryRun?: boolean;
}): Promise<GcReport> {
  const policy = { ...DEFAULT_RETENTION, ...o.policy };
  const now = o.now ?? Date.now();
  const report: GcReport = { removed: [], kept: [], bytesFreed: 0, cacheRowsDropped: 0 };
  const root = o.artifacts.root;
  const referenced = await referencedTopFolders(o.db);

  const runsDir = path.join(root, 'runs');
  for (const run of await list(runsDir)) {
    const dir = path.join(runsDir, run);
    const rel = `runs/${run}`;
    const { newest, bytes } = await walk(dir);
    if (referenced.has(rel)) report.kept.push({ path: rel, why: 'referenced by a registered model or a stage cache entry' });
    else if (now - newest < policy.keepRunsMs) report.kept.push({ path: rel, why: 'within the retention window (resume may need it)' });
    else {
      report.removed.push({ path: rel, bytes, why: `untouched for ${Math.floor((now - newest) / 86_400_000)} days and not referenced` });
      if (!o.dryRun) await rm(dir, { recursive: true, force: true });
    }
  }
  // Scratch: staging folders of interrupted writes and registry folders replaced by a publish.
  const registry = path.join(root, 'registry');
  for (const model of await list(registry)) {
    for (const entry of await list(path.join(registry, model))) {
      if (!entry.startsWith('.staging-') && !/\.replaced-\d+$/.test(entry)) continue;
      const dir = path.join(registry, model, entry);
      const { newest, bytes } = await walk(dir);
      if (now - newest < policy.keepScratchMs) continue;
      report.removed.push({
        path: `registry/${model}/${entry}`,
        bytes,
        why: entry.startsWith('.staging-') ? 'an interrupted write' : 'replaced by a newer publish',
      });
      if (!o.dryRun) await rm(dir, { recursive: true, force: true });
    }
  }
  report.bytesFreed = report.removed.reduce((n, r) => n + r.bytes, 0);
  // Cache entries whose outputs are gone would only miss; drop them.
  if (!o.dryRun && report.removed.some((r) => r.path.startsWith('runs/'))) {
    const gone = new Set(report.removed.map((r) => r.path));
    const rows = await o.db.query<{ cache_key: string; result_json: string }>('SELECT cache_key, result_json FROM stage_cache');
    for (const row of rows) {
      if (urisOf(row.result_json).some((u) => gone.has(topFolder(u)))) {
        report.cacheRowsDropped += await o.db.run('DELETE FROM stage_cache WHERE cache_key = ?', [row.cache_key]);
      }
    }
  }
  return report;
}

/** `runs/<run>` folders that registered model versions or young cache entries point into. */
async function referencedTopFolders(db: Db): Promise<Set<string>> {
  const out = new Set<string>();
  for (const r of await db.query<{ artifact_uri: string }>('SELECT artifact_uri FROM model_versions')) out.add(topFolder(r.artifact_uri));
  for (const r of await db.query<{ result_json: string }>('SELECT result_json FROM stage_cache')) for (const u of urisOf(r.result_json)) out.add(topFolder(u));
  return out;
}

function urisOf(json: string): string[] {
  return [...json.matchAll(/"uri":"(artifact:[^"]+)"/g)].map((m) => m[1]!);
}

/** `artifact:runs/<run>/…` → `runs/<run>`; other references → their first two segments. */
function topFolder(uri: string): string {
  return uri
    .replace(/^artifact:/, '')
    .split('/')
    .slice(0, 2)
    .join('/');
}

async function list(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Newest modification time of the files under a folder (the folder's own for an empty one) and their total bytes. */
async function walk(dir: string): Promise<{ newest: number; bytes: number }> {
  let newest = 0;
  let bytes = 0;
  let files = 0;
  const visit = async (p: string) => {
    const st = await stat(p);
    if (st.isDirectory()) for (const e of await readdir(p)) await visit(path.join(p, e));
    else {
      files++;
      bytes += st.size;
      newest = Math.max(newest, st.mtimeMs);
    }
  };
  await visit(dir);
  if (files === 0) newest = (await stat(dir)).mtimeMs;
  return { newest, bytes };
}
