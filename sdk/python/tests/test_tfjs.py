"""read_tfjs_model on model folders laid out as tfjs writes them (float32, quantized, sharded, with optimizer weights)."""
from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

try:
    import numpy as np
except ImportError:
    np = None

if np is not None:
    from capstan_stage.tfjs import ModelError, read_tfjs_model


def write_model(folder: Path, weights: list, shards: int = 1, extra: dict | None = None) -> None:
    """``weights``: (spec, bytes) pairs, concatenated and cut into ``shards`` files as tfjs does."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"".join(b for _, b in weights)
    cut = [len(data) * i // shards for i in range(shards + 1)]
    paths = []
    for i in range(shards):
        name = f"group1-shard{i + 1}of{shards}.bin"
        (folder / name).write_bytes(data[cut[i]:cut[i + 1]])
        paths.append(f"./{name}")
    topology = {"class_name": "Sequential", "config": {"name": "mlp", "layers": []}, "keras_version": "tfjs-layers 4.22.0", "backend": "tensor_flow.js"}
    model = {"modelTopology": topology, "format": "layers-model", "generatedBy": "TensorFlow.js tfjs-layers v4.22.0", "convertedBy": None,
             "weightsManifest": [{"paths": paths, "weights": [s for s, _ in weights]}], **(extra or {})}
    (folder / "model.json").write_text(json.dumps(model))


@unittest.skipIf(np is None, "numpy is not installed (npm run setup:python installs it)")
class ReadTfjsModelTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="capstan-tfjs-")
        self.tmp = Path(self._tmp.name)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def test_plain_quantized_and_optimizer_weights(self):
        kernel = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
        bias = np.array([-1.5, 0, 2.25, 3], dtype=np.float32)
        steps = np.array([5], dtype=np.int32)
        q8 = np.array([0, 1, 2, 255], dtype=np.uint8)
        q16 = np.array([0, 40000, 65535], dtype=np.uint16)
        half = np.array([0.5, -2.0, 65504.0], dtype=np.float16)
        moment = np.full((3, 4), 0.25, dtype=np.float32)
        weights = [
            ({"name": "dense_1/kernel", "shape": [3, 4], "dtype": "float32"}, kernel.astype("<f4").tobytes()),
            ({"name": "dense_1/bias", "shape": [4], "dtype": "float32"}, bias.astype("<f4").tobytes()),
            ({"name": "steps", "shape": [1], "dtype": "int32"}, steps.astype("<i4").tobytes()),
            ({"name": "q8", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.1, "min": -0.2}}, q8.tobytes()),
            ({"name": "q16", "shape": [3], "dtype": "float32", "quantization": {"dtype": "uint16", "scale": 1e-4, "min": -3.0}}, q16.astype("<u2").tobytes()),
            ({"name": "half", "shape": [3], "dtype": "float32", "quantization": {"dtype": "float16"}}, half.astype("<f2").tobytes()),
            ({"name": "dense_1/kernel/m", "shape": [3, 4], "dtype": "float32", "group": "optimizer"}, moment.astype("<f4").tobytes()),
        ]
        write_model(self.tmp / "m", weights, shards=3, extra={"userDefinedMetadata": {"capstan": {"inputShape": [3]}}, "trainingConfig": {"loss": "x"}})
        m = read_tfjs_model(self.tmp / "m")
        self.assertEqual(list(m.weights), ["dense_1/kernel", "dense_1/bias", "steps", "q8", "q16", "half"])
        self.assertEqual(list(m.optimizer_weights), ["dense_1/kernel/m"])
        np.testing.assert_array_equal(m.weights["dense_1/kernel"], kernel)
        np.testing.assert_array_equal(m.weights["dense_1/bias"], bias)
        self.assertEqual((m.weights["steps"].dtype, int(m.weights["steps"][0])), (np.int32, 5))
        # As tfjs: q * scale + min in float64, stored as float32.
        np.testing.assert_array_equal(m.weights["q8"], (q8.astype(np.float64) * 0.1 - 0.2).astype(np.float32).reshape(2, 2))
        np.testing.assert_array_equal(m.weights["q16"], (q16.astype(np.float64) * 1e-4 - 3.0).astype(np.float32))
        np.testing.assert_array_equal(m.weights["half"], np.array([0.5, -2.0, 65504.0], dtype=np.float32))
        self.assertEqual(m.weights["q8"].dtype, np.float32)
        self.assertEqual((m.format, m.metadata, m.training_config, m.topology["class_name"]), ("layers-model", {"capstan": {"inputShape": [3]}}, {"loss": "x"}, "Sequential"))
        self.assertEqual(m.parameters, 12 + 4 + 1 + 4 + 3 + 3)
        self.assertEqual(len(m.weight_list()), 6)

    def broken(self, damage) -> ModelError:
        write_model(self.tmp / "b", [({"name": "w", "shape": [4], "dtype": "float32"}, np.ones(4, dtype="<f4").tobytes())])
        damage(self.tmp / "b")
        with self.assertRaises(ModelError) as caught:
            read_tfjs_model(self.tmp / "b")
        self.assertTrue(caught.exception.bad_input)
        return caught.exception

    def test_broken_folders_are_named(self):
        def manifest(change):
            def damage(folder):
                j = json.loads((folder / "model.json").read_text())
                change(j)
                (folder / "model.json").write_text(json.dumps(j))
            return damage

        e = self.broken(lambda f: (f / "model.json").unlink())
        self.assertEqual(e.type, "MODEL_NOT_FOUND")
        e = self.broken(lambda f: (f / "group1-shard1of1.bin").unlink())
        self.assertEqual((e.type, e.file), ("MODEL_NOT_FOUND", str((self.tmp / "b" / "group1-shard1of1.bin").resolve())))
        e = self.broken(lambda f: (f / "group1-shard1of1.bin").write_bytes(b"\0" * 12))
        self.assertIn("shorter than the manifest says (at w)", str(e))
        e = self.broken(lambda f: (f / "group1-shard1of1.bin").write_bytes(b"\0" * 20))
        self.assertIn("has 20 bytes of weights, the manifest accounts for 16", str(e))
        e = self.broken(manifest(lambda j: j["weightsManifest"][0]["weights"][0].update(quantization={"dtype": "int4"})))
        self.assertEqual(e.type, "MODEL_UNSUPPORTED")
        e = self.broken(manifest(lambda j: j["weightsManifest"][0].update(paths=["../../etc/passwd"])))
        self.assertIn("outside the model folder", str(e))
        e = self.broken(lambda f: (f / "model.json").write_text(json.dumps({"format": "graph-model"})))
        self.assertEqual(e.type, "MODEL_UNSUPPORTED")


if __name__ == "__main__":
    unittest.main()
