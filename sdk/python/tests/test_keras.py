"""capstan_stage.keras: a tiny Keras model trained as a stage, checkpointed, pruned and resumed."""
from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import unittest
from dataclasses import dataclass, field
from pathlib import Path

from capstan_stage import Checkpoint
from capstan_stage.keras import MODEL_FILE, epoch_metrics, prune_checkpoints, resume_from
from tests.harness import Worker

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
if not HAVE_TF:
    print(f"test_keras: tensorflow is not installed for {sys.executable}, so the Keras training tests are skipped (npm run setup:python installs it)", file=sys.stderr)

TRAIN = """
import keras
from capstan_stage import open_stage
from capstan_stage.datasets import read_dataset
from capstan_stage.keras import CapstanCallback, resume_from

with open_stage() as ctx:
    ds = read_dataset(ctx.inputs["dataset"])
    x, y = ds.split("train")
    xv, yv = ds.split("validation")
    initial_epoch, model_path = resume_from(ctx)
    if model_path:
        model = keras.models.load_model(model_path)
    else:
        keras.utils.set_random_seed(1)
        model = keras.Sequential([
            keras.Input(ds.feature_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(ds.num_classes, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, validation_data=(xv, yv), epochs=ctx.params["epochs"], initial_epoch=initial_epoch,
              batch_size=16, verbose=0, callbacks=[CapstanCallback(ctx, heartbeat_every=2)])
    model.save(ctx.output_dir("model") / "model.keras")
    ctx.output("model", format="keras", epochs=ctx.params["epochs"])
"""


@unittest.skipUnless(HAVE_TF, "tensorflow is not installed (npm run setup:python installs it)")
class CapstanCallbackTest(unittest.TestCase):
    def test_trains_checkpoints_prunes_and_resumes(self):
        from tests.fixtures import pixels_dataset

        with tempfile.TemporaryDirectory(prefix="capstan-keras-") as tmp:
            tmp = Path(tmp)
            pixels_dataset(tmp / "dataset", counts=(48, 16, 8))
            w = Worker(tmp / "run", params={"epochs": 3}, inputs={"dataset": tmp / "dataset"})
            r = w.run_script(TRAIN, timeout=300)
            self.assertEqual(r.returncode, 0, r.explain())
            self.assertEqual(r.messages[0]["type"], "open")
            epochs = r.of("epoch")
            self.assertEqual([(e["epoch"], e["epochs"]) for e in epochs], [(1, 3), (2, 3), (3, 3)])
            for e in epochs:
                self.assertEqual(set(e["metrics"]), {"trainLoss", "trainAccuracy", "valLoss", "valAccuracy"})
                self.assertTrue(all(isinstance(v, float) for v in e["metrics"].values()))
            ckpts = r.of("checkpoint")
            self.assertEqual([(c["path"], c["details"]) for c in ckpts], [(str(w.checkpoint_dir / f"epoch-{n:04d}"), {"epoch": n}) for n in (1, 2, 3)])
            self.assertEqual(sorted(p.name for p in w.checkpoint_dir.iterdir()), ["epoch-0002", "epoch-0003"])  # the last 2
            self.assertTrue((w.checkpoint_dir / "epoch-0003" / MODEL_FILE).is_file())
            beats = r.of("heartbeat")
            self.assertEqual(beats[0]["details"], {"epoch": 1, "batch": 2})  # 3 batches an epoch: one beat each
            self.assertEqual(len(beats), 3)
            self.assertEqual(r.of("output"), [{"type": "output", "kind": "model", "meta": {"format": "keras", "epochs": 3}}])
            self.assertTrue((w.output_dirs["model"] / "model.keras").is_file())

            # A retry: the worker hands back the last checkpoint; training goes on from epoch 4.
            w2 = Worker(tmp / "run", params={"epochs": 4}, inputs={"dataset": tmp / "dataset"}, last_checkpoint={"path": ckpts[-1]["path"], "details": ckpts[-1]["details"]})
            for f in w2.output_dirs["model"].iterdir():
                f.unlink()
            r2 = w2.run_script(TRAIN, timeout=300)
            self.assertEqual(r2.returncode, 0, r2.explain())
            resumed = [x for x in r2.of("log") if x["message"] == "resuming from checkpoint"]
            self.assertEqual(resumed[0]["fields"]["epoch"], 3)
            self.assertEqual([e["epoch"] for e in r2.of("epoch")], [4])
            self.assertEqual([c["details"] for c in r2.of("checkpoint")], [{"epoch": 4}])
            self.assertEqual(sorted(p.name for p in w.checkpoint_dir.iterdir()), ["epoch-0003", "epoch-0004"])
            # The resumed model is the trained one: its loss is below the first epoch's, not back at the start.
            self.assertLess(r2.of("epoch")[0]["metrics"]["trainLoss"], epochs[0]["metrics"]["trainLoss"])


@dataclass
class FakeLog:
    lines: list = field(default_factory=list)

    def warn(self, message, **fields):
        self.lines.append(("warn", message, fields))

    def info(self, message, **fields):
        self.lines.append(("info", message, fields))


@dataclass
class FakeContext:
    last_checkpoint: Checkpoint | None
    log: FakeLog = field(default_factory=FakeLog)


class HelpersTest(unittest.TestCase):
    """No Keras needed: the module imports Keras only when CapstanCallback is used."""

    def test_metric_names(self):
        got = epoch_metrics({"loss": 0.5, "accuracy": 0.9, "val_loss": 0.6, "val_accuracy": 0.8, "learning_rate": 0.001, "note": "x", "auc": float("nan")})
        self.assertEqual({k: v for k, v in got.items() if k != "auc"}, {"trainLoss": 0.5, "trainAccuracy": 0.9, "valLoss": 0.6, "valAccuracy": 0.8, "learning_rate": 0.001})
        self.assertIn("auc", got)  # NaN goes on to ctx.epoch, which leaves it out with a warning

    def test_resume_from(self):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "epoch-0004"
            folder.mkdir()
            (folder / MODEL_FILE).write_bytes(b"m")
            self.assertEqual(resume_from(FakeContext(None)), (0, None))
            self.assertEqual(resume_from(FakeContext(Checkpoint(folder, {"epoch": 4}))), (4, folder / MODEL_FILE))
            for bad in (Checkpoint(folder, {}), Checkpoint(folder, {"epoch": "4"}), Checkpoint(Path(tmp) / "gone", {"epoch": 2})):
                ctx = FakeContext(bad)
                self.assertEqual(resume_from(ctx), (0, None))
                self.assertEqual(ctx.log.lines[0][:2], ("warn", "last checkpoint is not usable; training from epoch 0"))

    def test_prune_keeps_the_newest_up_to_this_epoch(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for n in (1, 2, 3, 4, 9):
                (root / f"epoch-{n:04d}").mkdir()
            (root / "other").mkdir()
            prune_checkpoints(root, 4, keep=2)
            self.assertEqual(sorted(p.name for p in root.iterdir()), ["epoch-0003", "epoch-0004", "other"])

    def test_importing_the_module_does_not_import_keras(self):
        import subprocess

        code = "import sys, capstan_stage, capstan_stage.keras, capstan_stage.datasets, capstan_stage.tfjs; print(json.dumps(sorted(m for m in ('keras', 'tensorflow', 'numpy') if m in sys.modules)))"
        r = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout), [])


if __name__ == "__main__":
    unittest.main()
