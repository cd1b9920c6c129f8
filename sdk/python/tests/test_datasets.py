"""read_dataset on capstan-dataset v1 folders written with numpy per the format, and on broken ones."""
from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

from capstan_stage import BadInput

try:
    import numpy as np
except ImportError:  # the venv of npm run setup:python has it
    np = None

if np is not None:
    from capstan_stage.datasets import DatasetError, read_dataset
    from tests.fixtures import pixels_dataset, write_dataset


@unittest.skipIf(np is None, "numpy is not installed (npm run setup:python installs it)")
class ReadDatasetTest(unittest.TestCase):
    def setUp(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="capstan-ds-")
        self.tmp = Path(self._tmp.name)

    def tearDown(self) -> None:
        self._tmp.cleanup()

    def test_uint8_scaled(self):
        folder = self.tmp / "pixels"
        m = pixels_dataset(folder, counts=(30, 10, 5), shape=(4, 4), num_classes=3)
        ds = read_dataset(folder)
        self.assertEqual((ds.feature_shape, ds.num_classes, ds.splits), ((4, 4), 3, ("train", "validation", "test")))
        self.assertEqual(ds.normalization, {"kind": "scale", "factor": 1 / 255})
        self.assertEqual(ds.input_range, tuple(m["inputRange"]))
        self.assertEqual((ds.count("train"), ds.class_counts("train")), (30, m["splits"]["train"]["classCounts"]))
        raw_x, raw_y = ds.raw("train")
        self.assertEqual((raw_x.dtype, raw_x.shape, raw_y.dtype), (np.uint8, (30, 4, 4), np.uint8))
        x, y = ds.split("train")
        self.assertEqual((x.dtype, x.shape, y.dtype, y.shape), (np.float32, (30, 4, 4), np.int32, (30,)))
        # What ml/data/dataset.ts inputsOf computes: value * factor in float64, stored as float32.
        np.testing.assert_array_equal(x, (raw_x.astype(np.float64) * (1 / 255)).astype(np.float32))
        np.testing.assert_array_equal(y, raw_y)
        self.assertEqual(float(x.max()), np.float32(int(raw_x.max()) / 255))
        self.assertTrue(x.flags.writeable and raw_x.flags.writeable)

    def test_float32_zscore_is_stored_ready(self):
        rng = np.random.default_rng(1)
        splits = {n: (rng.standard_normal((k, 5)).astype(np.float32), rng.integers(0, 2, k).astype(np.uint8)) for n, k in (("train", 20), ("validation", 6))}
        norm = {"kind": "zscore", "mean": [0.1] * 5, "std": [2.0] * 5}
        write_dataset(self.tmp / "tab", feature_shape=[5], num_classes=2, normalization=norm, splits=splits)
        ds = read_dataset(self.tmp / "tab")
        self.assertEqual((ds.feature_shape, ds.splits, ds.normalization, ds.input_range), ((5,), ("train", "validation"), norm, None))
        x, y = ds.split("validation")
        np.testing.assert_array_equal(x, splits["validation"][0])
        self.assertEqual((x.dtype, x.flags.writeable), (np.float32, True))
        np.testing.assert_array_equal(y, splits["validation"][1])
        with self.assertRaisesRegex(KeyError, "has no 'test' split"):
            ds.split("test")

    def test_only_the_splits_asked_for(self):
        pixels_dataset(self.tmp / "p")
        (self.tmp / "p" / "test-x.bin").write_bytes(b"corrupt, but not read")
        ds = read_dataset(self.tmp / "p", splits=["train"])
        self.assertEqual(ds.splits, ("train",))
        with self.assertRaisesRegex(KeyError, "no 'validation' split read"):
            ds.split("validation")
        with self.assertRaisesRegex(ValueError, "unknown split 'val'"):
            read_dataset(self.tmp / "p", splits=["val"])

    def broken(self, damage, **kw) -> DatasetError:
        folder = self.tmp / "b"
        pixels_dataset(folder)
        damage(folder)
        with self.assertRaises(DatasetError) as caught:
            read_dataset(folder, **kw)
        e = caught.exception
        self.assertIsInstance(e, BadInput)
        self.assertEqual((e.bad_input, e.retryable), (True, False))
        return e

    def test_a_changed_byte_fails_the_hash_check(self):
        def flip(folder):
            f = folder / "train-x.bin"
            b = bytearray(f.read_bytes())
            b[7] ^= 0xFF
            f.write_bytes(bytes(b))

        e = self.broken(flip)
        self.assertEqual(e.type, "DATA_CORRUPT")
        self.assertIn("train-x.bin: SHA-256 does not match the manifest", str(e))
        self.assertEqual(e.file, str(self.tmp / "b" / "train-x.bin"))
        read_dataset(self.tmp / "b", verify=False)  # the hash check is what caught it

    def test_a_truncated_file(self):
        def cut(folder):
            f = folder / "validation-y.bin"
            f.write_bytes(f.read_bytes()[:-3])

        e = self.broken(cut, verify=False)
        self.assertEqual(e.type, "DATA_CORRUPT")
        self.assertRegex(str(e), r"validation-y\.bin: has 13 bytes, manifest says 16")

    def test_a_missing_file(self):
        e = self.broken(lambda folder: (folder / "test-y.bin").unlink())
        self.assertEqual(e.type, "DATA_NOT_FOUND")
        self.assertIn("test-y.bin: dataset file is missing", str(e))

    def test_a_label_out_of_range(self):
        def relabel(folder):
            m = json.loads((folder / "manifest.json").read_text())
            m["numClasses"] = 2
            (folder / "manifest.json").write_text(json.dumps(m))

        e = self.broken(relabel)
        self.assertRegex(str(e), r"train-y\.bin: label 2 at \d+ is outside 0\.\.1")

    def test_bad_manifests(self):
        cases = {
            "DATA_NOT_FOUND": lambda f: (f / "manifest.json").unlink(),
            "DATA_CORRUPT": lambda f: (f / "manifest.json").write_text("{"),
            "DATA_UNSUPPORTED": lambda f: (f / "manifest.json").write_text(json.dumps({"format": "capstan-dataset", "version": 2})),
        }
        for code, damage in cases.items():
            with self.subTest(code):
                e = self.broken(damage)
                self.assertEqual(e.type, code)
                self.assertIn("manifest.json", str(e))

    def test_shape_disagreeing_with_the_manifest(self):
        def reshape(folder):
            m = json.loads((folder / "manifest.json").read_text())
            m["featureShape"] = [16]
            (folder / "manifest.json").write_text(json.dumps(m))

        e = self.broken(reshape)
        self.assertIn("train-x.bin: shape [48, 4, 4] in the manifest, expected [48, 16]", str(e))


if __name__ == "__main__":
    unittest.main()
