// Builds the console (console/src → console/dist) with esbuild: one minified ES module and one
// stylesheet with content-hashed names, and index.html naming them. Nothing is fetched at run
// time; the API serves console/dist at /console. Fails when the whole console is over its budget.
//
//   npm run build:console
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

/** The whole console (HTML, JS, CSS), gzipped, must stay under this. */
export const CONSOLE_BUDGET_GZIP_BYTES = 300 * 1024;

export interface ConsoleBuild {
  dir: string;
  files: { name: string; bytes: number; gzipBytes: number }[];
  gzipBytes: number;
}

export async function buildConsole(o: { root?: string } = {}): Promise<ConsoleBuild> {
  const root = o.root ?? path.resolve(import.meta.dirname, '..');
  const src = path.join(root, 'console');
  const dir = path.join(src, 'dist');
  await rm(dir, { recursive: true, force: true });
  await mkdir(path.join(dir, 'assets'), { recursive: true });
  const result = await build({
    entryPoints: [path.join(src, 'src/main.ts')],
    bundle: true,
    minify: true,
    format: 'esm',
    target: ['es2022', 'chrome110', 'firefox115', 'safari16'],
    outdir: path.join(dir, 'assets'),
    entryNames: 'console-[hash]',
    assetNames: 'asset-[hash]',
    metafile: true,
    legalComments: 'none',
    logLevel: 'warning',
    absWorkingDir: root,
  });
  const outs = Object.keys(result.metafile.outputs).map((f) => path.basename(f));
  const js = outs.find((f) => f.endsWith('.js'));
  const css = outs.find((f) => f.endsWith('.css'));
  if (!js || !css) throw new Error(`console build produced ${outs.join(', ')}; expected one .js and one .css`);
  const html = (await readFile(path.join(src, 'index.html'), 'utf8')).replace('%JS%', js).replace('%CSS%', css);
  await writeFile(path.join(dir, 'index.html'), html);
  const files: ConsoleBuild['files'] = [];
  for (const name of ['index.html', ...(await readdir(path.join(dir, 'assets'))).map((f) => `assets/${f}`)]) {
    const body = await readFile(path.join(dir, name));
    files.push({ name, bytes: body.length, gzipBytes: gzipSync(body, { level: 9 }).length });
  }
  const gzipBytes = files.reduce((n, f) => n + f.gzipBytes, 0);
  if (gzipBytes > CONSOLE_BUDGET_GZIP_BYTES) throw new Error(`the console is ${gzipBytes} bytes gzipped, over its ${CONSOLE_BUDGET_GZIP_BYTES}-byte budget`);
  return { dir, files, gzipBytes };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  buildConsole()
    .then((b) => {
      for (const f of b.files)
        process.stdout.write(
          `  ${f.name.padEnd(34)} ${(f.bytes / 1024).toFixed(1).padStart(7)} kB  ${(f.gzipBytes / 1024).toFixed(1).padStart(6)} kB gzipped\n`,
        );
      process.stdout.write(
        `  console: ${(b.gzipBytes / 1024).toFixed(1)} kB gzipped (budget ${CONSOLE_BUDGET_GZIP_BYTES / 1024} kB) → ${path.relative(process.cwd(), b.dir)}\n`,
      );
    })
    .catch((e: unknown) => {
      process.stderr.write(`console build failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exit(1);
    });
}
