#!/usr/bin/env node
// The Python environment for stages written in Python (docs/stage-protocol.md): a venv with
// TensorFlow 2.21.0 (Keras 3) and the capstan-stage SDK (sdk/python).
//
//   npm run setup:python     # creates or updates the venv; its python is the last line printed
//
// Where (gitignored; CAPSTAN_PYTHON_DIR moves it): .tools/python/, made with `python3 -m venv`.
//   - TensorFlow: on CPython 3.11 / Linux x86-64, the very wheel `npm run setup:native` pins and
//     sha256-checks (taken from its cache, .tools/native/cache, or downloaded there), installed
//     --no-deps after its dependencies, which come from PyPI pinned with hashes in
//     sdk/python/requirements-tf.lock (`pip install --require-hashes`, then `pip check`). On another
//     Python the wheel does not fit: tensorflow==2.21.0 comes from PyPI for that Python instead.
//   - The SDK: `pip install ./sdk/python` (built from a copy, so nothing is written into sdk/python),
//     again whenever its files change.
//   - ONNX: onnx and onnxruntime (capstan_stage.onnx: export Keras to ONNX, quantize with ONNX
//     Runtime's quantizer), pinned with hashes in sdk/python/requirements-onnx.lock, installed
//     --no-deps after TensorFlow (their dependencies are all in the TF lock), then `pip check`.
//   - OpenTelemetry: the SDK's optional `otel` extra (opentelemetry-api, -sdk, -exporter-otlp-proto-http
//     and their own pins), pure-Python wheels pinned with hashes in sdk/python/requirements-otel.lock,
//     installed the same way: a stage then joins the run's trace when the worker traces.
// Idempotent: capstan-setup.json in the venv records what each step installed (Python version,
// wheel sha256, lock hash, SDK hash); a step runs only when that differs, so a second run takes
// about a second.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SetupError, TF_VERSION, WHEEL, ensureWheel, nativeDir } from './setup-native.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const venvDir = path.resolve(process.env.CAPSTAN_PYTHON_DIR ?? path.join(root, '.tools', 'python'));
const venvPython = path.join(venvDir, 'bin', 'python');
const stampFile = path.join(venvDir, 'capstan-setup.json');
const sdkDir = path.join(root, 'sdk', 'python');
const lockFile = path.join(sdkDir, 'requirements-tf.lock');
const onnxLockFile = path.join(sdkDir, 'requirements-onnx.lock');
const otelLockFile = path.join(sdkDir, 'requirements-otel.lock');
const WHEEL_PYTHON = '3.11';
const VENV_BYTES = 2_400_000_000; // measured: 2.1 GB with TensorFlow, Keras, numpy and the SDK, + 0.11 GB onnx and onnxruntime

const t0 = performance.now();
const say = (msg) => process.stdout.write(`setup:python: ${msg}\n`);
const secs = (from = t0) => `${((performance.now() - from) / 1000).toFixed(1)} s`;
const gb = (n) => `${(n / 1e9).toFixed(1)} GB`;

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: opts.inherit ? ['ignore', 'inherit', 'inherit'] : ['ignore', 'pipe', 'pipe'], ...opts });
  return { ok: r.status === 0 && !r.error, status: r.status, out: r.stdout ?? '', err: (r.error?.message ?? '') + (r.stderr ?? '') };
}

const tail = (text, n = 15) => text.trim().split('\n').slice(-n).join('\n');
const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/** What a Python is: version, implementation, and whether it can make a venv with pip. */
function probeBase(py) {
  const code =
    'import sys, json, importlib.util as u; print(json.dumps({"version": "%d.%d.%d" % sys.version_info[:3], "impl": sys.implementation.name, "venv": bool(u.find_spec("venv")) and bool(u.find_spec("ensurepip"))}))';
  const r = run(py, ['-c', code]);
  if (!r.ok) return undefined;
  try {
    return JSON.parse(r.out.trim().split('\n').pop());
  } catch {
    return undefined;
  }
}

/** What the venv holds (fast: package metadata, no TensorFlow import). */
function probeVenv() {
  if (!fs.existsSync(venvPython)) return undefined;
  const code = `
import sys, json
from importlib import metadata
def v(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
print(json.dumps({"version": "%d.%d.%d" % sys.version_info[:3], "tensorflow": v("tensorflow"), "sdk": v("capstan-stage"), "pip": v("pip")}))
`;
  const r = run(venvPython, ['-c', code]);
  if (!r.ok) return undefined;
  try {
    return JSON.parse(r.out.trim().split('\n').pop());
  } catch {
    return undefined;
  }
}

function readStamp() {
  try {
    return JSON.parse(fs.readFileSync(stampFile, 'utf8'));
  } catch {
    return {};
  }
}

function writeStamp(stamp) {
  fs.writeFileSync(stampFile, `${JSON.stringify(stamp, null, 2)}\n`);
}

/** The files `pip install ./sdk/python` packages, hashed: a change means a re-install. */
function sdkFiles() {
  const files = ['pyproject.toml', 'README.md'];
  const walk = (rel) => {
    for (const e of fs.readdirSync(path.join(sdkDir, rel), { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(rel, e.name);
      if (e.isDirectory() && e.name !== '__pycache__') walk(p);
      else if (e.isFile() && e.name.endsWith('.py')) files.push(p);
    }
  };
  walk('capstan_stage');
  return files.filter((f) => fs.existsSync(path.join(sdkDir, f)));
}

function sdkHash(files) {
  const h = createHash('sha256');
  for (const f of files)
    h.update(`${f}\0`)
      .update(fs.readFileSync(path.join(sdkDir, f)))
      .update('\0');
  return h.digest('hex');
}

function freeBytes(dir) {
  let d = dir;
  while (!fs.existsSync(d)) d = path.dirname(d);
  const st = fs.statfsSync(d);
  return st.bavail * st.bsize;
}

function du(p) {
  const r = run('du', ['-sb', p]);
  return r.ok ? Number(r.out.split('\t')[0]) : 0;
}

function pip(args, what) {
  const r = run(venvPython, ['-m', 'pip', '--disable-pip-version-check', '--no-input', ...args], { inherit: true });
  if (!r.ok) throw new SetupError(`${what} failed (pip exit ${r.status}); the output above says why (is PyPI reachable? pip config, PIP_INDEX_URL)`);
}

const minor = (version) => version?.split('.').slice(0, 2).join('.');

/**
 * A venv made by python3 -m venv. One that runs, has pip and the same Python X.Y as python3 is kept
 * (a patch release or another python3 of that version on PATH changes nothing it installs); else it
 * is replaced, but only when it is a venv (pyvenv.cfg).
 */
function ensureVenv(base, stamp) {
  const inside = probeVenv();
  if (inside?.pip && minor(inside.version) === minor(base.version) && minor(stamp.python) === minor(base.version)) return { created: false, inside };
  if (fs.existsSync(venvDir) && fs.readdirSync(venvDir).length > 0) {
    if (!fs.existsSync(path.join(venvDir, 'pyvenv.cfg'))) {
      throw new SetupError(`${venvDir} exists and is not a Python venv (no pyvenv.cfg); move it away or set CAPSTAN_PYTHON_DIR elsewhere`);
    }
    say(`replacing the venv in ${venvDir} (${inside ? `Python ${inside.version}, now ${base.version}` : 'it does not run'})`);
    fs.rmSync(venvDir, { recursive: true, force: true });
  }
  say(`creating a venv with python3 ${base.version} -m venv in ${venvDir}`);
  const r = run('python3', ['-m', 'venv', venvDir]);
  if (!r.ok || !fs.existsSync(venvPython)) {
    throw new SetupError(`python3 -m venv ${venvDir} failed:\n${tail(r.err)}\n(Debian: apt-get install python3-venv)`);
  }
  writeStamp({ python: base.version });
  return { created: true, inside: probeVenv() };
}

/** The lock's numpy pin, also used when TensorFlow comes from PyPI for another Python. */
function lockedNumpy() {
  const v = /^numpy==([^\s\\]+)/m.exec(fs.readFileSync(lockFile, 'utf8'))?.[1];
  if (!v) throw new SetupError(`${path.relative(root, lockFile)} pins no numpy`);
  return v;
}

function installTensorflow(base, want) {
  const started = performance.now();
  if (want.mode === 'wheel') {
    const wheel = ensureWheel(venvPython); // setup:native's cache; downloaded with the venv's pip when absent
    say(`installing TensorFlow ${TF_VERSION}'s dependencies from PyPI, pinned with hashes (${path.relative(root, lockFile)})`);
    pip(['install', '--no-deps', '--require-hashes', '-r', lockFile], `pip install -r ${path.relative(root, lockFile)}`);
    say(`installing ${WHEEL.file} from ${path.dirname(wheel)}`);
    pip(['install', '--no-deps', '--no-index', wheel], `pip install ${WHEEL.file}`);
    const check = run(venvPython, ['-m', 'pip', '--disable-pip-version-check', 'check']);
    if (!check.ok)
      throw new SetupError(`pip check: the pinned packages do not fit together (update ${path.relative(root, lockFile)}):\n${tail(check.out + check.err)}`);
  } else {
    const numpy = want.numpy;
    say(
      `Python ${base.version} (${base.impl}) on ${process.platform} ${process.arch}: the pinned wheel is for CPython ${WHEEL_PYTHON} on Linux x86-64, so tensorflow==${TF_VERSION} comes from PyPI for this Python, with numpy==${numpy} and the rest of its dependencies resolved by pip (the lock file is for ${WHEEL_PYTHON})`,
    );
    pip(['install', `tensorflow==${TF_VERSION}`, `numpy==${numpy}`, 'setuptools', 'wheel'], `pip install tensorflow==${TF_VERSION} numpy==${numpy}`);
  }
  const r = run(venvPython, ['-c', 'import tensorflow as tf, keras, numpy; print(tf.__version__, keras.__version__, numpy.__version__)'], {
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
  });
  const [tf, keras, numpy] = r.out.trim().split('\n').pop()?.split(' ') ?? [];
  if (!r.ok || tf !== TF_VERSION) throw new SetupError(`TensorFlow does not import in the venv (got ${tf ?? 'nothing'}):\n${tail(r.err)}`);
  say(`TensorFlow ${tf}, Keras ${keras}, numpy ${numpy} installed and importing (${secs(started)})`);
}

/** onnx + onnxruntime from their lock, after TensorFlow (same pins of numpy and protobuf), then pip check. */
function installOnnx(mode) {
  const started = performance.now();
  if (mode === 'wheel') {
    say(`installing onnx and onnxruntime from PyPI, pinned with hashes (${path.relative(root, onnxLockFile)})`);
    pip(['install', '--no-deps', '--require-hashes', '-r', onnxLockFile], `pip install -r ${path.relative(root, onnxLockFile)}`);
  } else {
    // The hashes are of the CPython 3.11 Linux x86-64 wheels: another Python gets the same versions, resolved by pip.
    const pins = [...fs.readFileSync(onnxLockFile, 'utf8').matchAll(/^(onnx(?:runtime)?==[^\s\\]+)/gm)].map((m) => m[1]);
    say(`installing ${pins.join(' ')} from PyPI for this Python (the lock's hashes are for CPython ${WHEEL_PYTHON} on Linux x86-64)`);
    pip(['install', ...pins], `pip install ${pins.join(' ')}`);
  }
  const check = run(venvPython, ['-m', 'pip', '--disable-pip-version-check', 'check']);
  if (!check.ok)
    throw new SetupError(
      `pip check: the ONNX packages do not fit the TensorFlow pins (update ${path.relative(root, onnxLockFile)}):\n${tail(check.out + check.err)}`,
    );
  const r = run(venvPython, [
    '-c',
    'import onnx, onnxruntime; from onnxruntime.quantization import quantize_dynamic; print(onnx.__version__, onnxruntime.__version__)',
  ]);
  if (!r.ok) throw new SetupError(`onnx / onnxruntime do not import in the venv:\n${tail(r.err)}`);
  const [onnx, ort] = r.out.trim().split('\n').pop()?.split(' ') ?? [];
  say(`onnx ${onnx}, onnxruntime ${ort} installed and importing (${secs(started)})`);
}

/** The SDK's optional OpenTelemetry packages from their lock (pure-Python wheels: any Python), then pip check. */
function installOtel() {
  const started = performance.now();
  say(`installing the OpenTelemetry packages from PyPI, pinned with hashes (${path.relative(root, otelLockFile)})`);
  pip(['install', '--no-deps', '--require-hashes', '-r', otelLockFile], `pip install -r ${path.relative(root, otelLockFile)}`);
  const check = run(venvPython, ['-m', 'pip', '--disable-pip-version-check', 'check']);
  if (!check.ok)
    throw new SetupError(
      `pip check: the OpenTelemetry packages do not fit the other pins (update ${path.relative(root, otelLockFile)}):\n${tail(check.out + check.err)}`,
    );
  const r = run(venvPython, [
    '-c',
    'from opentelemetry.sdk.trace import TracerProvider; from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter; from opentelemetry import version; print(version.__version__)',
  ]);
  if (!r.ok) throw new SetupError(`the OpenTelemetry packages do not import in the venv:\n${tail(r.err)}`);
  say(`OpenTelemetry ${r.out.trim().split('\n').pop()} installed and importing (${secs(started)})`);
}

function installSdk(files) {
  // A copy, so setuptools' build/ and *.egg-info are not written into the repository.
  const tmp = fs.mkdtempSync(path.join(venvDir, '.sdk-build-'));
  try {
    for (const f of files) {
      fs.mkdirSync(path.dirname(path.join(tmp, f)), { recursive: true });
      fs.copyFileSync(path.join(sdkDir, f), path.join(tmp, f));
    }
    say('installing the capstan-stage SDK (pip install ./sdk/python)');
    // The venv's pinned setuptools builds it: nothing fetched, the same result every time.
    pip(['install', '--quiet', '--no-deps', '--no-build-isolation', '--force-reinstall', tmp], 'pip install ./sdk/python');
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  const r = run(venvPython, ['-c', 'import capstan_stage; print(capstan_stage.SDK)']);
  if (!r.ok) throw new SetupError(`capstan_stage does not import after installing it:\n${tail(r.err)}`);
  say(`${r.out.trim()} installed`);
}

function main() {
  const args = process.argv.slice(2);
  if (args.length) {
    process.stdout.write('usage: npm run setup:python   (CAPSTAN_PYTHON_DIR=<folder> puts the venv elsewhere than .tools/python)\n');
    process.exit(args.every((a) => a === '--help' || a === '-h') ? 0 : 2);
  }
  const base = probeBase('python3');
  if (!base) throw new SetupError('python3 not found or does not run: install Python 3.11 (Debian: apt-get install python3 python3-venv)');
  if (!base.venv) throw new SetupError(`python3 ${base.version} cannot make a venv with pip (no venv/ensurepip module): Debian apt-get install python3-venv`);
  const wheelFits = base.impl === 'cpython' && base.version.startsWith(`${WHEEL_PYTHON}.`) && process.platform === 'linux' && process.arch === 'x64';
  const wantTf = wheelFits
    ? { mode: 'wheel', wheelSha256: WHEEL.sha256, lockSha256: sha256(fs.readFileSync(lockFile)) }
    : { mode: 'pypi', tensorflow: TF_VERSION, numpy: lockedNumpy(), python: minor(base.version) };

  let stamp = readStamp();
  const { created, inside } = ensureVenv(base, stamp);
  if (created) stamp = readStamp();

  const tfOk = !created && inside?.tensorflow === TF_VERSION && JSON.stringify(stamp.tensorflow) === JSON.stringify(wantTf);
  if (!tfOk) {
    const need = VENV_BYTES + (wheelFits && !fs.existsSync(path.join(nativeDir, 'cache', WHEEL.file)) ? WHEEL.bytes : 0);
    const free = freeBytes(venvDir);
    if (free < need)
      throw new SetupError(`not enough disk space for ${venvDir}: needs about ${gb(need)}, ${gb(free)} free (CAPSTAN_PYTHON_DIR puts it elsewhere)`);
    delete stamp.tensorflow;
    delete stamp.sdk; // re-installed after TensorFlow, against the same venv
    writeStamp(stamp);
    installTensorflow(base, wantTf);
    stamp.tensorflow = wantTf;
    writeStamp(stamp);
  } else say(`TensorFlow ${TF_VERSION} already installed (${wantTf.mode === 'wheel' ? 'the pinned wheel + requirements-tf.lock' : 'from PyPI'})`);

  const wantOnnx = `${wantTf.mode}:${sha256(fs.readFileSync(onnxLockFile))}`;
  if (stamp.onnx !== wantOnnx || !tfOk) {
    delete stamp.onnx;
    writeStamp(stamp);
    installOnnx(wantTf.mode);
    stamp.onnx = wantOnnx;
    writeStamp(stamp);
  } else say('onnx and onnxruntime already installed (requirements-onnx.lock)');

  const wantOtel = sha256(fs.readFileSync(otelLockFile));
  if (stamp.otel !== wantOtel || !tfOk) {
    delete stamp.otel;
    writeStamp(stamp);
    installOtel();
    stamp.otel = wantOtel;
    writeStamp(stamp);
  } else say('OpenTelemetry packages already installed (requirements-otel.lock)');

  const files = sdkFiles();
  const wantSdk = sdkHash(files);
  if (stamp.sdk !== wantSdk || !inside?.sdk || !tfOk) {
    installSdk(files);
    stamp.sdk = wantSdk;
    writeStamp(stamp);
  } else say('capstan-stage SDK up to date');

  const installed = !tfOk;
  say(`done in ${secs()}${installed ? `; venv ${gb(du(venvDir))} in ${venvDir}` : ''}`);
  process.stdout.write(`${venvPython}\n`);
}

try {
  main();
} catch (e) {
  process.stderr.write(`setup:python: ${e instanceof SetupError ? e.message : (e?.stack ?? e)}\n`);
  process.exit(1);
}
