"""The seed's Keras MLP as a Capstan stage (``seed:keras-mlp``, capstan-stage.yaml beside this file).

The essay's worked example, written the way its Keras code reads: flatten 28x28 -> dense 128 relu ->
dense 10 softmax, Adam (learning rate 0.001), sparse categorical cross-entropy, batch 32, 10 epochs,
validated every epoch (on the dataset's validation split; the test split is kept for the end), under
``tf.distribute.MirroredStrategy``:

- on a CPU host the physical CPU is split into ``devices`` logical CPU devices and the model is
  mirrored over them (the replicas share the process's intra-op threads, so this shows the strategy
  working, not extra speed: see BENCHMARKS.md);
- on a GPU device handed out by the worker (a ``resource: gpu`` copy of the manifest), over up to
  ``devices`` visible GPUs with TensorFlow's default all-reduce. Built, not run here: no GPU.

Every epoch it saves ``model.keras`` as a checkpoint (CapstanCallback); a retry resumes from the
last one (loaded inside strategy.scope(), optimizer state included) with ``initial_epoch``. The
trained model is the ``model`` output: ``model.keras`` plus its meta.

Under Capstan everything comes from the stage context. Run by hand (SDK local mode: outputs and
checkpoints under ./capstan-local):

    .tools/python/bin/python stages/keras-seed/train.py --dataset DIR [--epochs 2] [--devices 2] [--train-limit 2000]

DIR is a ``core:data-prep`` dataset folder (manifest.json + *.bin); ``npx tsx bench/python-stage.ts
--dataset-only DIR [--limit N]`` writes one from the bundled MNIST.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from capstan_stage import BadInput, open_stage
from capstan_stage.datasets import read_dataset

# The defaults of capstan-stage.yaml's params (Capstan fills them in; a hand run uses these).
DEFAULTS = {"epochs": 10, "batchSize": 32, "learningRate": 0.001, "devices": 2, "seed": 42, "stepsPerExecution": 1, "threads": 0}


def hand_params(argv: list[str]) -> tuple[dict, dict]:
    """Params and inputs of a run by hand, from the command line (ignored under Capstan)."""
    ap = argparse.ArgumentParser(description="The seed's Keras MLP as a Capstan stage; run by hand for a check.")
    ap.add_argument("--dataset", help="a core:data-prep dataset folder")
    ap.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    ap.add_argument("--batch-size", type=int, default=DEFAULTS["batchSize"])
    ap.add_argument("--learning-rate", type=float, default=DEFAULTS["learningRate"])
    ap.add_argument("--devices", type=int, default=DEFAULTS["devices"])
    ap.add_argument("--seed", type=int, default=DEFAULTS["seed"])
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--steps-per-execution", type=int, default=DEFAULTS["stepsPerExecution"])
    ap.add_argument("--threads", type=int, default=DEFAULTS["threads"])
    a = ap.parse_args(argv)
    params = {"epochs": a.epochs, "batchSize": a.batch_size, "learningRate": a.learning_rate, "devices": a.devices, "seed": a.seed, "stepsPerExecution": a.steps_per_execution, "threads": a.threads}
    if a.train_limit is not None:
        params["trainLimit"] = a.train_limit
    return params, ({"dataset": a.dataset} if a.dataset else {})


def thread_counts(param: int) -> tuple[int, int]:
    """Intra- and inter-op threads: the param, else what the environment says, else the cores this process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    intra = param or int(os.environ.get("TF_NUM_INTRAOP_THREADS") or 0) or cores
    inter = int(os.environ.get("TF_NUM_INTEROP_THREADS") or 0) or intra  # TensorFlow's own default: as many as intra
    return intra, inter


def use_gpus(ctx) -> bool:
    """GPUs only when the worker handed this attempt a GPU (a cpu stage must not take the pool's GPUs), or by hand."""
    if ctx.device:
        return ctx.device.get("kind") == "gpu"
    return not ctx.in_capstan


def mirrored_strategy(tf, devices: int, gpus_allowed: bool, threads: tuple[int, int]):
    """Sets TensorFlow's threads and devices (before it initialises) and returns the strategy and device names."""
    tf.config.threading.set_intra_op_parallelism_threads(threads[0])
    tf.config.threading.set_inter_op_parallelism_threads(threads[1])
    gpus = tf.config.list_physical_devices("GPU") if gpus_allowed else []
    if gpus:  # untested here (no GPU): one replica per visible GPU, up to `devices`
        use = gpus[:devices]
        tf.config.set_visible_devices(use, "GPU")
        for g in use:
            tf.config.experimental.set_memory_growth(g, True)
        names = [d.name for d in tf.config.list_logical_devices("GPU")]
        return tf.distribute.MirroredStrategy(devices=names), names
    tf.config.set_visible_devices([], "GPU")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(devices)])
    names = [d.name for d in tf.config.list_logical_devices("CPU")]
    # No NCCL between CPU devices: gradients are summed on the first one and broadcast back.
    return tf.distribute.MirroredStrategy(devices=names, cross_device_ops=tf.distribute.ReductionToOneDevice(reduce_to_device=names[0])), names


def build_model(keras, input_shape, num_classes: int, learning_rate: float, steps_per_execution: int):
    """The seed's MLP, compiled as the seed compiles it (call inside strategy.scope())."""
    model = keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=steps_per_execution)
    return model


def train_timer(keras):
    """Seconds spent training (each epoch's steps, validation excluded), as core:pretrain counts them."""

    class TrainTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = 0.0
            self.epochs = 0
            self._t0 = None

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            self._stop()

        def on_epoch_end(self, epoch, logs=None):
            self._stop()
            self.epochs += 1

        def _stop(self):
            if self._t0 is not None:
                self.seconds += time.perf_counter() - self._t0
                self._t0 = None

    return TrainTimer()


def main() -> None:
    params, inputs = hand_params(sys.argv[1:]) if "CAPSTAN_STAGE_CONTEXT" not in os.environ else (DEFAULTS, {})
    if "CAPSTAN_STAGE_CONTEXT" not in os.environ and "dataset" not in inputs:
        sys.exit("run by hand, train.py needs --dataset DIR (a core:data-prep dataset folder); see its docstring")
    with open_stage(params=params, inputs=inputs) as ctx:
        ctx.heartbeat(phase="started")  # a sign of life before the quiet seconds of importing TensorFlow
        p = {**DEFAULTS, **ctx.params}
        epochs, batch, devices = int(p["epochs"]), int(p["batchSize"]), int(p["devices"])
        started = time.perf_counter()

        ds = read_dataset(ctx.inputs["dataset"])
        x, y = ds.split("train")
        if p.get("trainLimit"):
            x, y = x[: int(p["trainLimit"])], y[: int(p["trainLimit"])]
        xv, yv = ds.split("validation")
        xt, yt = ds.split("test") if "test" in ds.splits else (None, None)
        if len(x) == 0:
            raise BadInput("the dataset's train split is empty", type="DATA_EMPTY")
        ctx.heartbeat(phase="data")

        threads = thread_counts(int(p["threads"]))
        import tensorflow as tf  # after the SDK opened, so a missing TensorFlow is reported through it
        import keras

        strategy, names = mirrored_strategy(tf, devices, use_gpus(ctx), threads)
        keras.utils.set_random_seed(int(p["seed"]))
        ctx.log.info("mirrored strategy", devices=names, replicas=strategy.num_replicas_in_sync, intraOpThreads=threads[0], interOpThreads=threads[1], tf=tf.__version__, keras=keras.__version__)

        from capstan_stage.keras import CapstanCallback, resume_from

        initial_epoch, resume_path = resume_from(ctx)
        with strategy.scope():
            if resume_path:
                model = keras.models.load_model(resume_path)  # weights and Adam state, mirrored
            else:
                initial_epoch = 0
                model = build_model(keras, ds.feature_shape, ds.num_classes, float(p["learningRate"]), int(p["stepsPerExecution"]))

        timer = train_timer(keras)
        history = {}
        if initial_epoch < epochs:
            fitted = model.fit(
                x,
                y,
                batch_size=batch,
                epochs=epochs,
                initial_epoch=initial_epoch,
                validation_data=(xv, yv) if len(xv) else None,
                callbacks=[CapstanCallback(ctx, checkpoint_every=1), timer],
                verbose=0,
            )
            history = fitted.history

        test = {}
        if xt is not None and len(xt):
            ctx.heartbeat(phase="test")
            loss, acc = model.evaluate(xt, yt, batch_size=512, verbose=0)
            test = {"testLoss": float(loss), "testAccuracy": float(acc), "testCount": int(len(xt))}

        out = ctx.output_dir("model")
        model.save(out / "model.keras")
        # "Saved and loaded back for deployment": the file must give the same predictions.
        sample = xt[:256] if xt is not None and len(xt) else x[:256]
        reloaded = keras.models.load_model(out / "model.keras", compile=False)
        same = bool(abs(reloaded.predict(sample, verbose=0) - model.predict(sample, verbose=0)).max() < 1e-5)
        if not same:
            raise RuntimeError("model.keras does not give the predictions of the model it was saved from")

        parameters = int(model.count_params())
        meta = {
            "format": "keras",
            "framework": "keras",
            "file": "model.keras",
            "kerasVersion": keras.__version__,
            "tfVersion": tf.__version__,
            "parameters": parameters,
            "inputShape": list(ds.feature_shape),
            "numClasses": int(ds.num_classes),
            "inputDtype": "float32",
            "inputEncoding": "normalised",  # model inputs are the dataset's normalised features (below), not raw values
            "normalization": ds.normalization,
            **({"inputRange": list(ds.input_range)} if ds.input_range else {}),
            **({"testAccuracy": test["testAccuracy"]} if test else {}),
        }
        ctx.output("model", **meta)

        last = {k: v[-1] for k, v in history.items() if v}
        trained = timer.epochs
        ctx.metrics(
            epochs=epochs,
            epochsRun=trained,
            resumedFromEpoch=initial_epoch,
            **{name: float(last[k]) for k, name in (("loss", "trainLoss"), ("accuracy", "trainAccuracy"), ("val_loss", "valLoss"), ("val_accuracy", "valAccuracy")) if k in last},
            **test,
            parameters=parameters,
            trainCount=int(len(x)),
            batchSize=batch,
            perReplicaBatch=round(batch / strategy.num_replicas_in_sync, 2),
            stepsPerExecution=int(p["stepsPerExecution"]),
            strategy="MirroredStrategy",
            devices=",".join(names),
            deviceCount=strategy.num_replicas_in_sync,
            intraOpThreads=threads[0],
            interOpThreads=threads[1],
            trainSeconds=round(timer.seconds, 3),
            samplesPerSec=round(len(x) * trained / timer.seconds, 1) if timer.seconds > 0 else 0,
            seconds=round(time.perf_counter() - started, 3),
            tfVersion=tf.__version__,
            kerasVersion=keras.__version__,
            framework="keras",
        )


if __name__ == "__main__":
    main()
