"""capstan_stage.onnx: Keras stacks exported to ONNX folders, checked against Keras, quantized with ONNX Runtime."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
import unittest
from pathlib import Path

from capstan_stage.onnx import META_FILE, MODEL_FILE, OnnxCheckError, OnnxExportUnsupported, check_against_keras, check_folder, encoding_of, export_keras, model_bytes, quantize_uint8, read_meta

HAVE = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "onnx", "onnxruntime"))
if not HAVE:
    print(f"test_onnx: tensorflow, onnx or onnxruntime is not installed for {sys.executable}, so the ONNX export tests are skipped (npm run setup:python installs them)", file=sys.stderr)

SCALE = {"kind": "scale", "scale": 1 / 255, "rawRange": [0, 255]}


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    keras.utils.set_random_seed(3)
    return keras


class EncodingTest(unittest.TestCase):
    def test_from_dataset_normalisation(self):
        self.assertEqual(encoding_of({"kind": "scale", "factor": 1 / 255}), SCALE)
        self.assertEqual(encoding_of({"kind": "zscore", "mean": [1, 2], "std": [3, 4]}), {"kind": "zscore", "mean": [1.0, 2.0], "std": [3.0, 4.0]})
        self.assertEqual(encoding_of({"kind": "none"}), {"kind": "none"})


@unittest.skipUnless(HAVE, "tensorflow, onnx or onnxruntime is not installed (npm run setup:python installs them)")
class ExportTest(unittest.TestCase):
    def setUp(self):
        import numpy as np

        self.np = np
        self.keras = _keras()
        self.tmp = Path(tempfile.mkdtemp(prefix="capstan-onnx-"))
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp, ignore_errors=True))

    def mlp(self, softmax=True):
        k = self.keras
        return k.Sequential([k.Input((28, 28)), k.layers.Flatten(), k.layers.Dense(64, activation="relu"), k.layers.Dropout(0.2), k.layers.Dense(10, activation="softmax" if softmax else None)])

    def test_mlp_float32_folder_matches_keras(self):
        m = self.mlp()
        meta = export_keras(m, self.tmp / "f32", input_shape=(28, 28), encoding=SCALE)
        on_disk = json.loads((self.tmp / "f32" / META_FILE).read_text())
        self.assertEqual(on_disk, meta)
        self.assertEqual(sorted(p.name for p in (self.tmp / "f32").iterdir()), [META_FILE, MODEL_FILE])
        self.assertEqual(meta["input"], {"name": "input", "shape": [None, 28, 28], "dtype": "float32", "encoding": SCALE})
        self.assertEqual(meta["output"], {"name": "probabilities", "kind": "probabilities"})
        self.assertEqual((meta["format"], meta["metaVersion"], meta["file"], meta["opset"], meta["quantization"]), ("onnx", 1, "model.onnx", 13, "none"))
        self.assertEqual(meta["labels"], [str(i) for i in range(10)])
        x = self.np.random.default_rng(0).random((200, 28, 28), dtype=self.np.float32)
        r = check_against_keras(m, self.tmp / "f32", x)
        self.assertLess(r["maxAbsDiff"], 1e-4)
        self.assertEqual((r["agreement"], r["samples"]), (1.0, 200))
        import onnx

        g = onnx.load(str(self.tmp / "f32" / MODEL_FILE))
        self.assertEqual([n.op_type for n in g.graph.node], ["Flatten", "MatMul", "Add", "Relu", "MatMul", "Add", "Softmax"])
        self.assertEqual(g.ir_version, 8)

    def test_logits_output_and_labels(self):
        m = self.mlp(softmax=False)
        meta = export_keras(m, self.tmp / "l", labels=list("abcdefghij"))
        self.assertEqual(meta["output"]["kind"], "logits")
        self.assertEqual(meta["labels"][:2], ["a", "b"])
        x = self.np.random.default_rng(1).random((50, 28, 28), dtype=self.np.float32)
        self.assertLess(check_against_keras(m, self.tmp / "l", x)["maxAbsDiff"], 1e-4)  # both sides as probabilities
        with self.assertRaises(Exception) as e:
            export_keras(m, self.tmp / "bad", labels=["a"])
        self.assertEqual(getattr(e.exception, "type", None), "MODEL_DATASET_MISMATCH")
        with self.assertRaises(Exception) as e:
            export_keras(m, self.tmp / "bad", input_shape=(784,))
        self.assertEqual(getattr(e.exception, "type", None), "MODEL_DATASET_MISMATCH")

    def test_conv_net_channels_last_at_the_edges(self):
        k = self.keras
        m = k.Sequential([
            k.Input((28, 28)),
            k.layers.Reshape((28, 28, 1)),
            k.layers.Conv2D(4, 3, padding="same", activation="relu"),
            k.layers.MaxPooling2D(2),
            k.layers.Conv2D(3, 3, strides=2, activation="tanh"),
            k.layers.Flatten(),
            k.layers.Dense(10),
            k.layers.Activation("softmax"),
        ])
        export_keras(m, self.tmp / "c")
        x = self.np.random.default_rng(2).random((64, 28, 28), dtype=self.np.float32)
        self.assertLess(check_against_keras(m, self.tmp / "c", x)["maxAbsDiff"], 1e-4)

    def test_quantize_uint8_with_onnxruntime(self):
        m = self.mlp()
        export_keras(m, self.tmp / "f32", encoding=SCALE)
        qmeta = quantize_uint8(self.tmp / "f32", self.tmp / "u8")
        self.assertEqual(qmeta["quantization"], "uint8")
        self.assertEqual(read_meta(self.tmp / "u8"), qmeta)
        self.assertIn("onnxruntime.quantization", qmeta["producer"])
        self.assertEqual({k: v for k, v in qmeta.items() if k not in ("quantization", "producer")}, {k: v for k, v in read_meta(self.tmp / "f32").items() if k not in ("quantization", "producer")})
        self.assertLess(model_bytes(self.tmp / "u8"), model_bytes(self.tmp / "f32") * 0.4)
        import onnx

        ops = [n.op_type for n in onnx.load(str(self.tmp / "u8" / MODEL_FILE)).graph.node]
        self.assertIn("MatMulInteger", ops)
        x = self.np.random.default_rng(3).random((300, 28, 28), dtype=self.np.float32)
        r = check_against_keras(m, self.tmp / "u8", x, tolerance=None)
        self.assertGreater(r["agreement"], 0.9)
        self.assertLess(r["maxAbsDiff"], 0.1)
        with self.assertRaises(OnnxCheckError):
            check_against_keras(m, self.tmp / "u8", x, tolerance=1e-9)
        with self.assertRaises(Exception) as e:
            quantize_uint8(self.tmp / "u8", self.tmp / "again")
        self.assertEqual(getattr(e.exception, "type", None), "CONVERSION_UNSUPPORTED")
        y = self.np.asarray(m.predict(x, verbose=0)).argmax(-1)
        self.assertGreater(check_folder(self.tmp / "u8", x, y)["accuracy"], 0.9)

    def test_unsupported_layers_and_activations_are_refused_by_name(self):
        k = self.keras
        cases = [
            (k.Sequential([k.Input((8,)), k.layers.Dense(4), k.layers.BatchNormalization(name="bn")]), "layer bn: BatchNormalization"),
            (k.Sequential([k.Input((8,)), k.layers.Dense(4, activation="gelu", name="d")]), "layer d: activation gelu"),
            (k.Sequential([k.Input((1, 6, 6)), k.layers.Conv2D(2, 3, data_format="channels_first", name="cf")]), "layer cf: data_format"),
        ]
        for model, says in cases:
            with self.assertRaises(OnnxExportUnsupported) as e:
                export_keras(model, self.tmp / "x")
            self.assertEqual(e.exception.type, "ONNX_EXPORT_UNSUPPORTED")
            self.assertTrue(e.exception.bad_input)
            self.assertIn(says, str(e.exception))
        inp = k.Input((8,))
        a = k.layers.Dense(4)(inp)
        b = k.layers.Dense(4)(inp)
        branched = k.Model(inp, k.layers.Add(name="add")([a, b]))
        with self.assertRaises(OnnxExportUnsupported) as e:
            export_keras(branched, self.tmp / "y")
        self.assertIn("straight stack", str(e.exception))

    def test_functional_chain_exports(self):
        k = self.keras
        inp = k.Input((12,))
        out = k.layers.Dense(3, activation="softmax")(k.layers.Dense(5, activation="tanh")(inp))
        m = k.Model(inp, out)
        export_keras(m, self.tmp / "fn")
        x = self.np.random.default_rng(4).random((20, 12), dtype=self.np.float32)
        self.assertLess(check_against_keras(m, self.tmp / "fn", x)["maxAbsDiff"], 1e-4)


EXPORT_STAGE = Path(__file__).resolve().parents[3] / "stages" / "onnx-export" / "export.py"
RUN_STAGE = f"import runpy; runpy.run_path({str(EXPORT_STAGE)!r}, run_name='__main__')"


@unittest.skipUnless(HAVE and EXPORT_STAGE.is_file(), "tensorflow, onnx or onnxruntime is not installed, or stages/onnx-export is not beside the SDK")
class ExportStageTest(unittest.TestCase):
    """stages/onnx-export/export.py (seed:onnx-export) run as the worker runs it, on a small Keras model."""

    @classmethod
    def setUpClass(cls):
        from tests.fixtures import pixels_dataset

        keras = _keras()
        cls.tmp = Path(tempfile.mkdtemp(prefix="capstan-onnx-stage-"))
        pixels_dataset(cls.tmp / "dataset", counts=(64, 16, 40))
        m = keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(3, activation="softmax")])  # big enough for uint8 to be smaller: quantize_dynamic adds ~1.2 KB of nodes
        (cls.tmp / "keras").mkdir()
        m.save(cls.tmp / "keras" / "model.keras")

    @classmethod
    def tearDownClass(cls):
        __import__("shutil").rmtree(cls.tmp, ignore_errors=True)

    def run_stage(self, name: str, params: dict, model_dir: Path | None = None):
        from tests.harness import Worker

        w = Worker(self.tmp / name, params={"quantize": "uint8", "checkSamples": 1000, "tolerance": 1e-4, **params}, inputs={"model": model_dir or self.tmp / "keras", "dataset": self.tmp / "dataset"})
        return w, w.run_script(RUN_STAGE, timeout=300)

    def test_keeps_the_folder_asked_for_and_reports_both_sizes(self):
        for quantize in ("uint8", "none"):
            w, r = self.run_stage(f"run-{quantize}", {"quantize": quantize})
            self.assertEqual(r.returncode, 0, r.explain())
            out = w.output_dirs["model"]
            self.assertEqual(sorted(p.name for p in out.iterdir()), [META_FILE, MODEL_FILE])
            meta = read_meta(out)
            self.assertEqual(meta["quantization"], quantize)
            self.assertEqual(meta["input"]["encoding"], {"kind": "scale", "scale": 1 / 255, "rawRange": [0, 255]})
            (o,) = r.of("output")
            self.assertEqual((o["kind"], o["meta"]["format"], o["meta"]["quantization"]), ("model", "onnx", quantize))
            (m,) = r.of("metrics")
            mm = m["metrics"]
            self.assertLess(mm["uint8Bytes"], mm["float32Bytes"])
            self.assertEqual(model_bytes(out), mm["uint8Bytes" if quantize == "uint8" else "float32Bytes"])
            self.assertLess(mm["maxAbsDiffFloat32"], 1e-4)
            self.assertEqual((mm["testCount"], mm["evalSplit"], mm["checkSamples"]), (40, "test", 40))
            self.assertEqual(mm["float32TestAccuracy"], mm["kerasTestAccuracy"])

    def test_a_folder_without_model_keras_is_refused(self):
        empty = self.tmp / "not-keras"
        empty.mkdir(exist_ok=True)
        _, r = self.run_stage("run-bad", {}, model_dir=empty)
        self.assertNotEqual(r.returncode, 0)
        (e,) = r.of("error")
        self.assertEqual((e["error"]["type"], e["error"]["badInput"]), ("MODEL_FORMAT_UNKNOWN", True))


if __name__ == "__main__":
    unittest.main()
