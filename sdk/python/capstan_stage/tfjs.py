"""Reads the TensorFlow.js layers-model folder Capstan's built-in stages write (``format: tfjs-layers``):
``model.json`` and the weight shards it lists, quantized or not (docs/artifact-formats.md).

    m = read_tfjs_model(ctx.inputs["model"])
    m.weights             # name -> float32 numpy array, in the model's order (Keras's get_weights order)
    keras_model.set_weights(m.weight_list())   # into the same architecture built in Keras

numpy is imported when a model is read.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import ArtifactError

MODEL_JSON = "model.json"
_PLAIN = {"float32": ("<f4", 4), "int32": ("<i4", 4), "bool": ("|b1", 1)}
_QUANTIZED = {"uint8": ("u1", 1), "uint16": ("<u2", 2), "float16": ("<f2", 2)}


class ModelError(ArtifactError):
    """A model folder that is missing, malformed or corrupt; names the file. Never retried."""


class TfjsModel:
    def __init__(self, path: Path, model_json: dict, weights: dict, optimizer_weights: dict):
        self.path = path
        self.model_json = model_json
        self.topology: dict = model_json.get("modelTopology") or {}
        self.format: str | None = model_json.get("format")
        self.generated_by: str | None = model_json.get("generatedBy")
        self.training_config: dict | None = model_json.get("trainingConfig")
        self.metadata: dict = model_json.get("userDefinedMetadata") or {}
        self.weights = weights
        self.optimizer_weights = optimizer_weights

    def weight_list(self) -> list:
        """The model's weights in order, for ``keras_model.set_weights`` on the same architecture."""
        return list(self.weights.values())

    @property
    def parameters(self) -> int:
        return int(sum(w.size for w in self.weights.values()))

    def __repr__(self) -> str:
        return f"<TfjsModel {self.path}: {len(self.weights)} weights, {self.parameters} parameters>"


def read_tfjs_model(path: str | os.PathLike) -> TfjsModel:
    """Reads ``model.json`` and its weights (dequantized to float32 exactly as tfjs does) from a model folder."""
    try:
        import numpy as np
    except ImportError:
        raise ImportError("capstan_stage.tfjs needs numpy: pip install numpy (npm run setup:python installs it)") from None
    folder = Path(path)
    file = folder / MODEL_JSON
    try:
        model_json = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError("model.json not found: not a TensorFlow.js model folder", "MODEL_NOT_FOUND", file) from None
    except (OSError, ValueError) as e:
        raise ModelError(f"not valid JSON: {e}", "MODEL_CORRUPT", file) from None
    if not isinstance(model_json, dict) or "modelTopology" not in model_json or "weightsManifest" not in model_json:
        raise ModelError("has no modelTopology or weightsManifest: not a TensorFlow.js layers model", "MODEL_UNSUPPORTED", file)

    weights, optimizer = {}, {}
    for group in model_json["weightsManifest"]:
        shards = []
        for p in group["paths"]:
            shard = (folder / p).resolve()
            if folder.resolve() not in shard.parents:
                raise ModelError(f"weight path {p} is outside the model folder", "MODEL_CORRUPT", file)
            try:
                shards.append(shard.read_bytes())
            except FileNotFoundError:
                raise ModelError("weight file is missing", "MODEL_NOT_FOUND", shard) from None
        data = b"".join(shards)
        where = folder / group["paths"][0] if group["paths"] else file
        offset = 0
        for spec in group["weights"]:
            values, offset = _decode(np, spec, data, offset, where)
            (optimizer if spec.get("group") == "optimizer" else weights)[spec["name"]] = values
        if offset != len(data):
            raise ModelError(f"has {len(data)} bytes of weights, the manifest accounts for {offset}", "MODEL_CORRUPT", where)
    return TfjsModel(folder, model_json, weights, optimizer)


def _decode(np, spec: dict, data: bytes, offset: int, where: Path):
    shape = [int(d) for d in spec["shape"]]
    count = int(np.prod(shape, dtype=np.int64))
    q = spec.get("quantization")
    stored = _QUANTIZED.get(q["dtype"]) if q else _PLAIN.get(spec["dtype"])
    if stored is None:
        raise ModelError(f"weight {spec['name']}: dtype {spec['dtype']}{' quantized as ' + q['dtype'] if q else ''} is not supported", "MODEL_UNSUPPORTED", where)
    dtype, size = stored
    end = offset + count * size
    if end > len(data):
        raise ModelError(f"weight data is shorter than the manifest says (at {spec['name']})", "MODEL_CORRUPT", where)
    raw = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    if not q:
        values = raw.astype(raw.dtype.newbyteorder("="))
    elif q["dtype"] == "float16":
        values = raw.astype(np.float32)
    else:  # affine: value = q * scale + min, in float64, rounded once (tfjs: a double stored into a Float32Array)
        values = raw.astype(np.float64) * float(q["scale"]) + float(q["min"])
        values = np.floor(values + 0.5).astype(np.int32) if spec["dtype"] == "int32" else values.astype(np.float32)  # Math.round
    return values.reshape(shape), end
