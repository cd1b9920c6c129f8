"""Datasets written with numpy exactly as ml/data/dataset.ts writeDataset does (capstan-dataset v1)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def write_dataset(folder: Path, *, feature_shape, num_classes: int, normalization: dict, splits: dict, input_range=None) -> dict:
    """``splits``: name -> (x, y) numpy arrays, x uint8 or float32 shaped [count, *feature_shape], y uint8."""
    import numpy as np

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "capstan-dataset", "version": 1, "featureShape": list(feature_shape), "numClasses": num_classes, "normalization": normalization}
    if input_range is not None:
        manifest["inputRange"] = list(input_range)
    manifest["splits"] = {}
    for name, (x, y) in splits.items():
        count = int(y.shape[0])
        entry = {"count": count, "classCounts": np.bincount(y, minlength=num_classes).tolist()}
        for part, arr, shape in (("x", x, [count, *feature_shape]), ("y", y, [count])):
            data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
            file = f"{name}-{part}.bin"
            (folder / file).write_bytes(data)
            entry[part] = {"name": file, "dtype": str(arr.dtype), "shape": shape, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        manifest["splits"][name] = entry
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


def pixels_dataset(folder: Path, *, counts=(48, 16, 16), shape=(4, 4), num_classes: int = 3, seed: int = 0) -> dict:
    """A small uint8 'image' dataset, scale 1/255, whose label is learnable from the pixels."""
    import numpy as np

    rng = np.random.default_rng(seed)
    splits = {}
    for name, n in zip(("train", "validation", "test"), counts):
        y = rng.integers(0, num_classes, size=n).astype(np.uint8)
        x = rng.integers(0, 60, size=(n, *shape)).astype(np.uint8)
        x[:, 0, :] += (y[:, None] * 90).astype(np.uint8)  # the first row says the class
        splits[name] = (x, y)
    x = splits["train"][0]
    return write_dataset(folder, feature_shape=shape, num_classes=num_classes, normalization={"kind": "scale", "factor": 1 / 255}, splits=splits, input_range=[int(x.min()) / 255, int(x.max()) / 255])
