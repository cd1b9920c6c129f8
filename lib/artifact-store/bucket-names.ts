import path from 'node:path';
import { StageError } from '../errors.js';

/** Error type of a name from the bucket that cannot become a local path (non-retryable: the bucket will say the same again). */
export const ARTIFACT_UNSAFE_NAME = 'ARTIFACT_UNSAFE_NAME';

/**
 * Why a name found in the bucket (a file listed in a seal, the rest of a listed key) cannot
 * become a path under a local folder; undefined when it can. Anyone who may write to the
 * bucket writes these names, so they are checked as hostile input: a relative name of
 * `/`-separated segments, none empty, `.` or `..`, with no backslash (a separator elsewhere)
 * and no NUL (which ends a path in the system call).
 */
export function unsafeNameProblem(name: string): string | undefined {
  if (name === '') return 'it is empty';
  if (name.includes('\0')) return 'it contains a NUL character';
  if (name.includes('\\')) return 'it contains a backslash';
  if (name.startsWith('/')) return 'it is an absolute path';
  const segments = name.split('/');
  if (segments.includes('..')) return 'it has a ".." segment';
  if (segments.includes('.')) return 'it has a "." segment';
  if (segments.includes('')) return 'it has an empty segment ("//" or a trailing "/")';
  return undefined;
}

/**
 * The local path of a bucket name under `dir`, after the checks of `unsafeNameProblem` and a
 * final lexical check that the result stays inside `dir`. Throws a non-retryable StageError
 * (`ARTIFACT_UNSAFE_NAME`) naming where the name was found; nothing is written by this call.
 */
export function localPathOf(dir: string, name: string, foundIn: string): string {
  const problem = unsafeNameProblem(name);
  const target = path.resolve(dir, ...name.split('/'));
  const rel = path.relative(path.resolve(dir), target);
  const why = problem ?? (rel === '' || rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel) ? 'it leads outside its folder' : undefined);
  if (why) throw unsafeName(name, foundIn, why);
  return target;
}

function unsafeName(name: string, foundIn: string, why: string): StageError {
  const shown = JSON.stringify(name.length > 200 ? `${name.slice(0, 200)}…` : name);
  return new StageError(`${foundIn} names the file ${shown}, which is refused: ${why} (a name from the bucket must be a relative path inside the artifact)`, {
    type: ARTIFACT_UNSAFE_NAME,
    retryable: false,
    details: { name: name.slice(0, 200) },
  });
}
