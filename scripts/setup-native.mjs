#!/usr/bin/env node
// Builds the native TensorFlow.js backend (@tensorflow/tfjs-node, and with --gpu also
// @tensorflow/tfjs-node-gpu) against the TensorFlow C library inside PyPI's `tensorflow` wheel.
//
//   npm run setup:native              # CPU: tfjs-node → backend "node"
//   npm run setup:native -- --gpu     # + CUDA libraries (tensorflow[and-cuda]) and tfjs-node-gpu → "node-gpu"
//   node scripts/setup-native.mjs --link-only   # what `postinstall` runs after `npm ci`: re-links a
//                                               # build from .tools/native into node_modules; no-op without one
//   node scripts/setup-native.mjs --status      # prints what is built and linked
//
// Everything heavy lives in .tools/native/ (gitignored; CAPSTAN_NATIVE_DIR moves it):
//   cache/<wheel>                    the pinned wheel (sha256 checked), downloaded once per machine
//                                    (setup-python.mjs installs TensorFlow from it: ensureWheel)
//   tensorflow-2.21.0/tensorflow/    the wheel's libtensorflow_cc.so.2 + libtensorflow_framework.so.2 and
//                                    the C API headers, in the wheel's own layout
//   tensorflow-2.21.0/nvidia/        (--gpu) the nvidia-* wheels, where the libraries' RUNPATH
//                                    ($ORIGIN/../nvidia/*/lib) looks for them
//   bindings/<pkg>-<ver>-napi-v8/tfjs_binding.node   the built addons
// and node_modules/@tensorflow/tfjs-node(-gpu) gets deps/lib → tensorflow-2.21.0/tensorflow and
// lib/napi-v8/tfjs_binding.node, exactly where the package's own loader looks. `npm ci` wipes
// node_modules; its postinstall runs --link-only, which puts both back in milliseconds.
// Idempotent: each step is skipped when its result is already there and matches the pins.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// ---- pins ------------------------------------------------------------------------------------
export const TF_VERSION = '2.21.0';
export const TFJS_NODE_VERSION = '4.22.0';
export const NAPI_VERSION = 8;
/** The Linux x86-64 wheel (CPython 3.11 tag; its C libraries are the same for every Python). */
export const WHEEL = {
  file: `tensorflow-${TF_VERSION}-cp311-cp311-manylinux_2_27_x86_64.whl`,
  sha256: '9056fbc9ba04235810b71ae6cbd958a196e8804fb53bbcffbf3e23b56155f124',
  bytes: 572_440_367,
  // pip does not widen an explicit manylinux_2_27 to older tags; manylinux2014 brings in 2_17 … 2_5,
  // which several nvidia-* wheels carry. The same flags resolved the pins below.
  pip: [
    '--only-binary=:all:',
    '--python-version',
    '3.11',
    '--implementation',
    'cp',
    '--platform',
    'manylinux_2_27_x86_64',
    '--platform',
    'manylinux2014_x86_64',
  ],
};
/** What we take from the wheel: the two libraries and the headers the binding includes. */
const WHEEL_LIBS = ['tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2'];
const WHEEL_HEADER_PREFIXES = [
  'tensorflow/include/tensorflow/c/',
  'tensorflow/include/tensorflow/core/platform/ctstring',
  'tensorflow/include/tsl/platform/ctstring',
  'tensorflow/include/xla/tsl/c/',
];
const EXTRACTED_BYTES = 1_263_000_000; // the two libraries unpacked (1,045 + 155 MiB) + headers
/**
 * tensorflow[and-cuda]==2.21.0: its `and-cuda` extra, resolved by pip on 2026-05 to these
 * versions (installed with --no-deps --require-hashes, into the wheel's layout).
 */
export const NVIDIA_WHEELS = [
  ['nvidia-cublas-cu12', '12.9.3.13', 'd7d51055f161b317c7105ddaae90e71eda059026074ffef93cf7cde2886bfe72'],
  ['nvidia-cuda-cupti-cu12', '12.8.90', 'ea0cb07ebda26bb9b29ba82cda34849e73c166c18162d3913575b0c9db9a6182'],
  ['nvidia-cuda-nvcc-cu12', '12.9.86', '5d6a0d32fdc7ea39917c20065614ae93add6f577d840233237ff08e9a38f58f0'],
  ['nvidia-cuda-nvrtc-cu12', '12.9.86', '210cf05005a447e29214e9ce50851e83fc5f4358df8b453155d5e1918094dcb4'],
  ['nvidia-cuda-runtime-cu12', '12.9.79', '25bba2dfb01d48a9b59ca474a1ac43c6ebf7011f1b0b8cc44f54eb6ac48a96c3'],
  ['nvidia-cudnn-cu12', '9.28.0.42', '9ff58b7f36dacd0a93e89f8f2957b52466889217963701daa15e577317cfa375'],
  ['nvidia-cufft-cu12', '11.4.1.4', 'c67884f2a7d276b4b80eb56a79322a95df592ae5e765cf1243693365ccab4e28'],
  ['nvidia-curand-cu12', '10.3.10.19', '49b274db4780d421bd2ccd362e1415c13887c53c214f0d4b761752b8f9f6aa1e'],
  ['nvidia-cusolver-cu12', '11.7.5.82', '15da72d1340d29b5b3cf3fd100e3cd53421dde36002eda6ed93811af63c40d88'],
  ['nvidia-cusparse-cu12', '12.5.10.65', '73060ce019ac064a057267c585bf1fd5a353734151f87472ff02b2c5c9984e78'],
  ['nvidia-nccl-cu12', '2.32.3', 'bb94b2348e4861d5e8aa00b36c3d12d9bdf9c6369b82cbb723de0b582280a21c'],
  ['nvidia-nvjitlink-cu12', '12.9.86', 'e3f1171dbdc83c5932a45f0f4c99180a70de9bd2718c1ab77d14104f6d7147f9'],
];
const NVIDIA_BYTES = 7_000_000_000; // measured: 4.2 GB unpacked, plus pip's ≈ 3.3 GB of downloads while it installs
const CPU_PKG = '@tensorflow/tfjs-node';
const GPU_PKG = '@tensorflow/tfjs-node-gpu';

// ---- paths -----------------------------------------------------------------------------------
export const nativeDir = path.resolve(process.env.CAPSTAN_NATIVE_DIR ?? path.join(root, '.tools', 'native'));
const cacheDir = path.join(nativeDir, 'cache');
const tfDir = path.join(nativeDir, `tensorflow-${TF_VERSION}`);
const tfLibDir = path.join(tfDir, 'tensorflow');
const bindingsDir = path.join(nativeDir, 'bindings');
const stateFile = path.join(nativeDir, 'state.json');
const bindingFile = (pkg) => path.join(bindingsDir, `${pkg.replace('@tensorflow/', '')}-${TFJS_NODE_VERSION}-napi-v${NAPI_VERSION}`, 'tfjs_binding.node');
const pkgDir = (pkg) => path.join(root, 'node_modules', ...pkg.split('/'));

// ---- small helpers ---------------------------------------------------------------------------
const t0 = performance.now();
const say = (msg) => process.stdout.write(`setup:native: ${msg}\n`);
const secs = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
const gb = (n) => `${(n / 1e9).toFixed(1)} GB`;

export class SetupError extends Error {}

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: opts.inherit ? 'inherit' : ['ignore', 'pipe', 'pipe'], ...opts });
  return { ok: r.status === 0 && !r.error, status: r.status, out: r.stdout ?? '', err: (r.error?.message ?? '') + (r.stderr ?? '') };
}

function sha256File(file) {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(8 << 20);
  try {
    let n;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

function readState() {
  try {
    return JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  } catch {
    return undefined;
  }
}

function du(p) {
  const r = run('du', ['-sb', p]);
  return r.ok ? Number(r.out.split('\t')[0]) : 0;
}

// ---- steps -----------------------------------------------------------------------------------

/** Everything missing, named at once, before any download or build. */
function preflight({ gpu }) {
  const problems = [];
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    problems.push(`this recipe is pinned to Linux x86-64 (the ${WHEEL.file} wheel); this is ${process.platform} ${process.arch}`);
  }
  const [major] = process.versions.node.split('.').map(Number);
  if (major < 20) problems.push(`Node 20 or newer is needed (this is ${process.version})`);
  for (const pkg of gpu ? [CPU_PKG, GPU_PKG] : [CPU_PKG]) {
    const pj = path.join(pkgDir(pkg), 'package.json');
    if (!fs.existsSync(pj)) problems.push(`${pkg} is not in node_modules: run \`npm ci\` first (it is an optional dependency)`);
    else {
      const v = JSON.parse(fs.readFileSync(pj, 'utf8')).version;
      if (v !== TFJS_NODE_VERSION) problems.push(`${pkg} is ${v} in node_modules, this script is pinned to ${TFJS_NODE_VERSION}`);
    }
  }
  const nodedir = nodeHeadersDir();
  if (!nodedir) {
    problems.push(
      `Node's C headers are missing (looked for include/node/node_api.h under ${path.resolve(process.execPath, '../..')}): ` +
        "install Node from nodejs.org or your distribution's Node development package (Debian: libnode-dev), or set CAPSTAN_NODEDIR",
    );
  }
  if (!nodeGyp()) problems.push('node-gyp not found: it comes with npm (…/npm/node_modules/node-gyp); run this through `npm run setup:native`');
  const cxx = ['c++', 'g++', 'clang++'].find((c) => run(c, ['--version']).ok);
  if (!cxx) problems.push('no C++ compiler (c++/g++/clang++): Debian `apt-get install g++ make`');
  if (!run('make', ['--version']).ok) problems.push('no `make`: Debian `apt-get install make`');
  const py = python();
  if (!py) problems.push('no Python 3 (python3): node-gyp and pip need it');
  else if (((!wheelCached() && !extracted()) || gpu) && !run(py, ['-m', 'pip', '--version']).ok)
    problems.push(`no pip for ${py}: Debian \`apt-get install python3-pip\``);

  // Disk: what is still to be written, on the file system that holds .tools/native.
  let need = 0;
  if (!wheelCached() && !extracted()) need += WHEEL.bytes;
  if (!extracted()) need += EXTRACTED_BYTES;
  if (gpu && !fs.existsSync(path.join(tfDir, 'nvidia'))) need += NVIDIA_BYTES;
  need += 50_000_000; // build folders, bindings
  fs.mkdirSync(nativeDir, { recursive: true });
  const st = fs.statfsSync(nativeDir);
  const free = st.bavail * st.bsize;
  if (free < need) problems.push(`not enough disk space in ${nativeDir}: needs ${gb(need)} more, ${gb(free)} free (CAPSTAN_NATIVE_DIR puts it elsewhere)`);

  if (problems.length) throw new SetupError(`cannot set up the native backend:\n  - ${problems.join('\n  - ')}`);
  return { nodedir, py, need, free };
}

function nodeHeadersDir() {
  const candidates = [process.env.CAPSTAN_NODEDIR, path.resolve(process.execPath, '../..')].filter(Boolean);
  return candidates.find((d) => fs.existsSync(path.join(d, 'include', 'node', 'node_api.h')));
}

function nodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) candidates.push(path.join(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.join(path.resolve(process.execPath, '../..'), 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  return candidates.find((c) => fs.existsSync(c));
}

function python() {
  return ['python3', 'python'].find((p) => {
    const r = run(p, ['-c', 'import sys; print(sys.version_info[0])']);
    return r.ok && r.out.trim() === '3';
  });
}

function wheelCached() {
  const f = path.join(cacheDir, WHEEL.file);
  return fs.existsSync(f) && fs.statSync(f).size === WHEEL.bytes;
}

function extracted() {
  try {
    return fs.readFileSync(path.join(tfDir, '.complete'), 'utf8').trim() === WHEEL.sha256;
  } catch {
    return false;
  }
}

/** The wheel in the cache, hash checked; downloaded with pip only when absent. */
function fetchWheel(py) {
  const file = path.join(cacheDir, WHEEL.file);
  fs.mkdirSync(cacheDir, { recursive: true });
  if (!wheelCached()) {
    say(`downloading ${WHEEL.file} (${gb(WHEEL.bytes)}) with pip into ${cacheDir}`);
    const tmp = fs.mkdtempSync(path.join(cacheDir, '.download-'));
    try {
      const r = run(py, ['-m', 'pip', 'download', '--disable-pip-version-check', '--no-deps', ...WHEEL.pip, '-d', tmp, `tensorflow==${TF_VERSION}`], {
        inherit: true,
      });
      const got = path.join(tmp, WHEEL.file);
      if (!r.ok || !fs.existsSync(got))
        throw new SetupError(`pip download tensorflow==${TF_VERSION} failed (exit ${r.status}); is PyPI reachable (pip config, PIP_INDEX_URL)?`);
      fs.renameSync(got, file);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  } else say(`wheel cached: ${file}`);
  const sum = sha256File(file);
  if (sum !== WHEEL.sha256) {
    fs.rmSync(file, { force: true });
    throw new SetupError(`${WHEEL.file}: sha256 ${sum}, expected ${WHEEL.sha256}; the file was removed, run again to download it anew`);
  }
  say(`sha256 ok (${WHEEL.sha256.slice(0, 16)}…)`);
  return file;
}

/**
 * The pinned wheel's path in the cache (downloaded when absent, sha256 checked), for other set-up
 * scripts: scripts/setup-python.mjs installs TensorFlow from the same file.
 */
export function ensureWheel(py = python()) {
  if (!py) throw new SetupError('no Python 3 (python3): pip downloads the TensorFlow wheel');
  return fetchWheel(py);
}

/** The libraries and C headers, in the wheel's layout, plus the names the binding links against. */
function extractWheel(py, wheel) {
  if (extracted()) return say(`TensorFlow ${TF_VERSION} C library already unpacked in ${tfLibDir}`);
  say(`unpacking the C library and headers (${gb(EXTRACTED_BYTES)}) into ${tfDir}`);
  const tmp = `${tfDir}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  const script = `
import sys, zipfile
wheel, dest, libs, prefixes = sys.argv[1], sys.argv[2], sys.argv[3].split(','), sys.argv[4].split(',')
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n in libs or any(n.startswith(p) for p in prefixes)]
    missing = [l for l in libs if l not in names]
    if missing: sys.exit('not in the wheel: ' + ', '.join(missing))
    for n in names: z.extract(n, dest)
print(len(names))
`;
  const r = run(py, ['-c', script, wheel, tmp, WHEEL_LIBS.join(','), WHEEL_HEADER_PREFIXES.join(',')]);
  if (!r.ok) throw new SetupError(`unpacking ${wheel} failed: ${r.err.trim().split('\n').pop()}`);
  const lib = path.join(tmp, 'tensorflow');
  for (const f of fs.readdirSync(lib)) if (f.endsWith('.so.2')) fs.chmodSync(path.join(lib, f), 0o755);
  // -ltensorflow / -ltensorflow_framework at link time; the binary then records the SONAMEs (.so.2).
  fs.symlinkSync('libtensorflow_cc.so.2', path.join(lib, 'libtensorflow.so'));
  fs.symlinkSync('libtensorflow_framework.so.2', path.join(lib, 'libtensorflow_framework.so'));
  // Keep an nvidia/ folder from an earlier --gpu run.
  if (fs.existsSync(path.join(tfDir, 'nvidia'))) fs.renameSync(path.join(tfDir, 'nvidia'), path.join(tmp, 'nvidia'));
  fs.rmSync(tfDir, { recursive: true, force: true });
  fs.writeFileSync(path.join(tmp, '.complete'), `${WHEEL.sha256}\n`);
  fs.renameSync(tmp, tfDir);
  say(`unpacked ${r.out.trim()} files`);
}

/** tensorflow[and-cuda]'s nvidia-* wheels next to tensorflow/, as pip lays them out. */
function installNvidia(py) {
  const dest = path.join(tfDir, 'nvidia');
  const stamp = path.join(dest, '.complete');
  const want = NVIDIA_WHEELS.map(([n, v]) => `${n}==${v}`).join('\n');
  if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === want) return say('CUDA libraries (nvidia-* wheels) already installed');
  say(
    `installing ${NVIDIA_WHEELS.length} nvidia-* wheels (tensorflow[and-cuda]==${TF_VERSION}: ≈ 3.3 GB to download, 4.2 GB unpacked) with pip, hashes required`,
  );
  const tmp = path.join(nativeDir, `.nvidia-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const req = path.join(tmp, 'requirements.txt');
  fs.writeFileSync(req, `${NVIDIA_WHEELS.map(([n, v, h]) => `${n}==${v} --hash=sha256:${h}`).join('\n')}\n`);
  const target = path.join(tmp, 'site');
  try {
    const r = run(py, ['-m', 'pip', 'install', '--disable-pip-version-check', '--no-deps', '--require-hashes', ...WHEEL.pip, '--target', target, '-r', req], {
      inherit: true,
    });
    if (!r.ok || !fs.existsSync(path.join(target, 'nvidia'))) throw new SetupError(`pip install of the nvidia-* wheels failed (exit ${r.status})`);
    fs.rmSync(dest, { recursive: true, force: true });
    fs.renameSync(path.join(target, 'nvidia'), dest);
    fs.writeFileSync(stamp, `${want}\n`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** node-gyp (npm's own) against the local Node headers, in a build folder outside node_modules. */
function buildBinding(pkg, { nodedir, py }) {
  const out = bindingFile(pkg);
  const stampFile = `${out}.json`;
  const stamp = JSON.stringify({ pkg, version: TFJS_NODE_VERSION, napi: NAPI_VERSION, wheel: WHEEL.sha256 });
  if (fs.existsSync(out) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === stamp) return say(`${pkg} binding already built: ${out}`);
  const build = path.join(nativeDir, 'build', pkg.replace('@tensorflow/', ''));
  fs.rmSync(build, { recursive: true, force: true });
  fs.mkdirSync(path.join(build, 'deps'), { recursive: true });
  fs.cpSync(path.join(pkgDir(pkg), 'binding.gyp'), path.join(build, 'binding.gyp'));
  fs.cpSync(path.join(pkgDir(pkg), 'binding'), path.join(build, 'binding'), { recursive: true });
  fs.symlinkSync(tfLibDir, path.join(build, 'deps', 'lib'));
  fs.symlinkSync(path.join(tfLibDir, 'include'), path.join(build, 'deps', 'include'));
  say(`building the ${pkg} ${TFJS_NODE_VERSION} binding (N-API ${NAPI_VERSION}) with node-gyp against ${nodedir}/include/node`);
  const started = performance.now();
  const r = run(
    process.execPath,
    [
      nodeGyp(),
      'configure',
      'build',
      `--nodedir=${nodedir}`,
      '--module_name=tfjs_binding',
      '--module_path=lib/napi-v8',
      `--napi_build_version=${NAPI_VERSION}`,
      '--jobs',
      String(Math.max(1, os.cpus().length)),
    ],
    { cwd: build, env: { ...process.env, PYTHON: py, npm_config_python: py } },
  );
  const built = path.join(build, 'build', 'Release', 'tfjs_binding.node');
  if (!r.ok || !fs.existsSync(built)) throw new SetupError(`node-gyp failed building ${pkg}:\n${(r.out + r.err).trim().split('\n').slice(-25).join('\n')}`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.copyFileSync(built, out);
  fs.writeFileSync(stampFile, stamp);
  fs.rmSync(build, { recursive: true, force: true });
  say(`built ${out} in ${((performance.now() - started) / 1000).toFixed(0)} s`);
}

/**
 * Puts a built binding where the npm package's loader looks: lib/napi-v8/tfjs_binding.node, and
 * deps/lib → the unpacked library (the binary's RUNPATH is $ORIGIN/../../deps/lib). Returns the
 * packages linked.
 */
export function link({ quiet = false } = {}) {
  const state = readState();
  if (!state || !extracted()) return [];
  const linked = [];
  for (const pkg of state.packages ?? []) {
    const src = bindingFile(pkg);
    const dir = pkgDir(pkg);
    if (!fs.existsSync(src) || !fs.existsSync(path.join(dir, 'package.json'))) continue;
    const version = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).version;
    if (version !== TFJS_NODE_VERSION) {
      if (!quiet) say(`${pkg} in node_modules is ${version}, the build is for ${TFJS_NODE_VERSION}: not linked (run npm run setup:native)`);
      continue;
    }
    fs.mkdirSync(path.join(dir, 'deps'), { recursive: true });
    const depsLib = path.join(dir, 'deps', 'lib');
    const target = path.relative(path.dirname(depsLib), tfLibDir);
    let current;
    try {
      current = fs.readlinkSync(depsLib);
    } catch {
      current = undefined;
    }
    if (current !== target) {
      fs.rmSync(depsLib, { recursive: true, force: true });
      fs.symlinkSync(target, depsLib);
    }
    const dest = path.join(dir, 'lib', `napi-v${NAPI_VERSION}`, 'tfjs_binding.node');
    fs.mkdirSync(path.dirname(dest), { recursive: true });
    if (!fs.existsSync(dest) || fs.statSync(dest).size !== fs.statSync(src).size || !fs.readFileSync(dest).equals(fs.readFileSync(src)))
      fs.copyFileSync(src, dest);
    linked.push(pkg);
  }
  return linked;
}

/** Loads each linked package in a fresh Node process and runs an op on the native backend. */
function verify(pkg) {
  const code = `
const tf = require(${JSON.stringify(pkg)});
const y = tf.tensor([1, 2, 3]).square().dataSync();
const b = tf.backend();
console.log(JSON.stringify({ backend: tf.getBackend(), y: Array.from(y), gpu: typeof b.isUsingGpuDevice === 'boolean' ? b.isUsingGpuDevice : null }));
`;
  const r = run(process.execPath, ['-e', code], { cwd: root, env: { TF_CPP_MIN_LOG_LEVEL: '2', ...process.env } });
  const line = r.out.trim().split('\n').pop() ?? '';
  let got;
  try {
    got = JSON.parse(line);
  } catch {
    throw new SetupError(`${pkg} does not load: ${r.err.trim().split('\n').slice(-5).join('\n')}`);
  }
  if (got.backend !== 'tensorflow' || got.y.join() !== '1,4,9') throw new SetupError(`${pkg} loaded but tf.getBackend() is ${got.backend}`);
  return got;
}

function status() {
  const state = readState();
  if (!state) return say(`not set up (nothing in ${nativeDir}); run npm run setup:native`);
  for (const pkg of state.packages) {
    const dest = path.join(pkgDir(pkg), 'lib', `napi-v${NAPI_VERSION}`, 'tfjs_binding.node');
    say(`${pkg}: built ${fs.existsSync(bindingFile(pkg)) ? 'yes' : 'NO'}, linked into node_modules ${fs.existsSync(dest) ? 'yes' : 'NO'}`);
  }
  say(`TensorFlow ${state.tensorflow} in ${tfDir} (${gb(du(tfDir))}), cache ${gb(du(cacheDir))}, CUDA libraries ${state.gpu ? 'yes' : 'no'}`);
}

async function main() {
  const args = new Set(process.argv.slice(2));
  const known = new Set(['--gpu', '--link-only', '--status', '--help', '-h']);
  const unknown = [...args].filter((a) => !known.has(a));
  if (unknown.length || args.has('--help') || args.has('-h')) {
    process.stdout.write('usage: npm run setup:native [-- --gpu]   |   node scripts/setup-native.mjs --link-only | --status\n');
    process.exit(unknown.length ? 2 : 0);
  }
  if (args.has('--link-only')) {
    // postinstall: never fails an install, silent when there is nothing to link.
    try {
      const linked = link({ quiet: false });
      if (linked.length) say(`re-linked the native backend build from ${nativeDir} into node_modules: ${linked.join(', ')}`);
    } catch (e) {
      say(`could not re-link the native backend (${e.message}); run npm run setup:native`);
    }
    return;
  }
  if (args.has('--status')) return status();

  const gpu = args.has('--gpu');
  const pre = preflight({ gpu });
  say(`disk: ${gb(pre.need)} to write, ${gb(pre.free)} free in ${nativeDir}`);
  if (!extracted()) extractWheel(pre.py, fetchWheel(pre.py));
  else say(`TensorFlow ${TF_VERSION} C library already unpacked in ${tfLibDir} (checked against the wheel's sha256 when unpacked)`);
  if (gpu) installNvidia(pre.py);
  const previous = readState();
  const packages = [...new Set([...(previous?.packages ?? []), CPU_PKG, ...(gpu ? [GPU_PKG] : [])])];
  for (const pkg of packages) buildBinding(pkg, pre);
  fs.writeFileSync(
    stateFile,
    `${JSON.stringify({ tensorflow: TF_VERSION, wheelSha256: WHEEL.sha256, tfjsNode: TFJS_NODE_VERSION, napi: NAPI_VERSION, packages, gpu: gpu || Boolean(previous?.gpu) }, null, 2)}\n`,
  );
  const linked = link();
  for (const pkg of linked) {
    const v = verify(pkg);
    say(`${pkg}: tf.getBackend() = ${v.backend}${v.gpu === null ? '' : `, GPU device in use: ${v.gpu}`}`);
  }
  say(`done in ${secs()}; disk used: ${gb(du(tfDir))} unpacked + ${gb(du(cacheDir))} wheel cache (${nativeDir})`);
  say(`ml/backend.ts now picks ${gpu ? 'node-gpu (on a host with a visible NVIDIA GPU), else node' : 'node'}; CAPSTAN_TF_BACKEND=wasm keeps the wasm backend`);
}

/** Run as a script (not imported by another set-up script). */
function isEntryPoint() {
  try {
    return Boolean(process.argv[1]) && fs.realpathSync(process.argv[1]) === fs.realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  main().catch((e) => {
    process.stderr.write(`setup:native: ${e instanceof SetupError ? e.message : (e?.stack ?? e)}\n`);
    process.exit(1);
  });
}
