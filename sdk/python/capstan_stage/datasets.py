"""Reads the dataset folder ``core:data-prep`` writes (``capstan-dataset`` v1, docs/artifact-formats.md).

    ds = read_dataset(ctx.inputs["dataset"])
    x, y = ds.split("train")          # x: float32 [count, *feature_shape], model inputs; y: int32 labels

numpy is imported when a dataset is read.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from .errors import ArtifactError

DATASET_FORMAT = "capstan-dataset"
DATASET_VERSION = 1
SPLIT_NAMES = ("train", "validation", "test")
_DTYPES = {"uint8": "u1", "float32": "<f4"}  # stored little-endian, row-major


def _numpy():
    try:
        import numpy
    except ImportError:
        raise ImportError("capstan_stage.datasets needs numpy: pip install numpy (npm run setup:python installs it)") from None
    return numpy


class DatasetError(ArtifactError):
    """A dataset folder that is missing, malformed or corrupt; names the file. Never retried."""


class Dataset:
    """A ``capstan-dataset`` v1 folder read into numpy arrays (the splits asked for)."""

    def __init__(self, path: Path, manifest: dict, raw: dict):
        self.path = path
        self.manifest = manifest
        self.feature_shape: tuple = tuple(manifest["featureShape"])
        self.num_classes: int = int(manifest["numClasses"])
        self.normalization: dict = dict(manifest["normalization"])
        self.input_range: tuple | None = tuple(manifest["inputRange"]) if manifest.get("inputRange") else None
        self._raw = raw

    @property
    def splits(self) -> tuple:
        """The splits read, in order (train, validation, then test when present)."""
        return tuple(n for n in SPLIT_NAMES if n in self._raw)

    def count(self, name: str) -> int:
        return int(self.manifest["splits"][name]["count"])

    def class_counts(self, name: str) -> list:
        return list(self.manifest["splits"][name]["classCounts"])

    def raw(self, name: str):
        """The stored values: x as stored (uint8 or float32) shaped [count, *feature_shape], y uint8 [count]."""
        if name not in self._raw:
            have = ", ".join(self.splits) or "none"
            absent = name in SPLIT_NAMES and name not in self.manifest["splits"]
            raise KeyError(f"dataset {self.path} has no {name!r} split{'' if absent else ' read'} (read: {have})")
        return self._raw[name]

    def split(self, name: str):
        """Model inputs and labels: x float32 [count, *feature_shape], normalised as the manifest says; y int32 [count]."""
        np = _numpy()
        x, y = self.raw(name)
        return self.to_inputs(x), y.astype(np.int32)

    def to_inputs(self, x):
        """Stored values to model inputs. float32 is stored ready (z-scored data is stored standardised);
        uint8 is multiplied by the ``scale`` factor (computed in float64, rounded once, as the TypeScript side does)."""
        np = _numpy()
        if x.dtype == np.float32:
            return x
        factor = float(self.normalization["factor"]) if self.normalization.get("kind") == "scale" else 1.0
        table = (np.arange(256, dtype=np.float64) * factor).astype(np.float32)
        return table[x]

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {self.count(n)}" for n in self.splits)
        return f"<Dataset {self.path} features {list(self.feature_shape)}, {self.num_classes} classes, {self.normalization.get('kind')}: {counts}>"


def read_manifest(path: str | os.PathLike) -> dict:
    """The folder's manifest.json, checked to be a ``capstan-dataset`` v1 manifest with train and validation splits."""
    file = Path(path) / "manifest.json"
    try:
        m = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError("dataset manifest not found", "DATA_NOT_FOUND", file) from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"dataset manifest is not valid JSON: {e}", "DATA_CORRUPT", file) from None
    if not isinstance(m, dict) or m.get("format") != DATASET_FORMAT or m.get("version") != DATASET_VERSION:
        got = (m.get("format"), m.get("version")) if isinstance(m, dict) else (None, None)
        raise DatasetError(f"not a {DATASET_FORMAT} v{DATASET_VERSION} manifest (format {got[0]}, version {got[1]})", "DATA_UNSUPPORTED", file)
    splits = m.get("splits") or {}
    if "train" not in splits or "validation" not in splits:
        raise DatasetError("dataset has no train or validation split", "DATA_CORRUPT", file)
    for key in ("featureShape", "numClasses", "normalization"):
        if key not in m:
            raise DatasetError(f"manifest has no {key}", "DATA_CORRUPT", file)
    return m


def read_dataset(path: str | os.PathLike, splits: Iterable[str] | None = None, verify: bool = True) -> Dataset:
    """Reads the splits asked for (default: every split present), checking each file's size and shape,
    its SHA-256 when ``verify``, and the label range. A bad dataset raises ``DatasetError`` (a ``BadInput``)."""
    np = _numpy()
    folder = Path(path)
    m = read_manifest(folder)
    want = list(splits) if splits is not None else [n for n in SPLIT_NAMES if n in m["splits"]]
    for name in want:
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; splits are {', '.join(SPLIT_NAMES)}")
    feature_shape = [int(d) for d in m["featureShape"]]
    raw: dict[str, Any] = {}
    for name in want:
        s = m["splits"].get(name)
        if s is None:
            continue
        count = int(s["count"])
        x = _read_bin(np, folder, s["x"], [count, *feature_shape], verify)
        y = _read_bin(np, folder, s["y"], [count], verify)
        if y.dtype != np.uint8:
            raise DatasetError(f"labels are {y.dtype}, expected uint8", "DATA_CORRUPT", folder / s["y"]["name"])
        if y.size and int(y.max()) >= int(m["numClasses"]):
            i = int(np.argmax(y >= int(m["numClasses"])))
            raise DatasetError(f"label {int(y[i])} at {i} is outside 0..{int(m['numClasses']) - 1}", "DATA_CORRUPT", folder / s["y"]["name"])
        raw[name] = (x, y)
    return Dataset(folder, m, raw)


def _read_bin(np, folder: Path, info: dict, shape: list, verify: bool):
    file = folder / info["name"]
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
        raise DatasetError(f"dtype {info.get('dtype')!r} is not uint8 or float32", "DATA_UNSUPPORTED", file)
    if list(info.get("shape", [])) != shape:
        raise DatasetError(f"shape {info.get('shape')} in the manifest, expected {shape} (count × featureShape)", "DATA_CORRUPT", file)
    try:
        with open(file, "rb") as f:
            data = bytearray(os.fstat(f.fileno()).st_size)  # a writable buffer, read once
            got = f.readinto(data)
    except FileNotFoundError:
        raise DatasetError("dataset file is missing", "DATA_NOT_FOUND", file) from None
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if got != len(data) or len(data) != info["bytes"] or len(data) != expected:
        raise DatasetError(f"has {got} bytes, manifest says {info['bytes']} ({expected} for shape {shape})", "DATA_CORRUPT", file)
    if verify and hashlib.sha256(data).hexdigest() != info["sha256"]:
        raise DatasetError("SHA-256 does not match the manifest", "DATA_CORRUPT", file)
    arr = np.frombuffer(data, dtype=dtype)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr.reshape(shape)
