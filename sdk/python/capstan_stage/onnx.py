"""Keras 3 → ONNX model folders as Capstan serves them (docs/onnx-models.md), and uint8 quantization
with ONNX Runtime's own quantizer.

    from capstan_stage.onnx import export_keras, quantize_uint8, check_against_keras, encoding_of

    meta = export_keras(model, out / "float32", input_shape=ds.feature_shape, encoding=encoding_of(ds))
    check_against_keras(model, out / "float32", x_sample)          # max |Δp| < 1e-4 or OnnxCheckError
    quantize_uint8(out / "float32", out / "uint8")                  # onnxruntime.quantization.quantize_dynamic, QUInt8

A folder is ``model.onnx`` + ``capstan-model.json``, the same two files (and the same graph shape)
as the TypeScript exporter writes (ml/onnx/from-tfjs.ts): an opset-13 graph of MatMul, Add, Conv,
MaxPool, Flatten, Reshape, Transpose and activations, written layer by layer with ``onnx.helper``
(no tf2onnx: it pins a protobuf TensorFlow 2.21's does not fit). The graph keeps Keras's
channels-last layout at its edges; image layers run in ONNX's NCHW between two Transposes, so
Flatten sees the order the dense weights were trained on. Layers it cannot write raise
``OnnxExportUnsupported`` (type ``ONNX_EXPORT_UNSUPPORTED``) naming the layer.

``onnx``, ``onnxruntime`` and numpy are imported when a function is called (npm run setup:python
installs them from sdk/python/requirements-onnx.lock).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .errors import BadInput, StageError

MODEL_FILE = "model.onnx"
META_FILE = "capstan-model.json"
OPSET = 13
IR_VERSION = 8  # what ml/onnx/from-tfjs.ts writes; onnxruntime-node 1.30 reads it
PRODUCER = "capstan keras-to-onnx"
PRODUCER_VERSION = "1"
SUPPORTED = "Dense, Flatten, Reshape, Conv2D, MaxPooling2D, Activation, ReLU, Softmax, Dropout"
_ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "elu": "Elu", "softmax": "Softmax"}

__all__ = [
    "export_keras",
    "quantize_uint8",
    "check_against_keras",
    "check_folder",
    "encoding_of",
    "read_meta",
    "model_bytes",
    "OnnxExportUnsupported",
    "OnnxCheckError",
    "MODEL_FILE",
    "META_FILE",
    "OPSET",
]


class OnnxExportUnsupported(BadInput):
    """A model (layer, activation, padding, shape) the exporter cannot write; names what. Never retried."""

    def __init__(self, message: str):
        super().__init__(f"cannot convert the model to ONNX: {message}", type="ONNX_EXPORT_UNSUPPORTED")


class OnnxCheckError(StageError):
    """The ONNX graph does not compute what the Keras model does (beyond the tolerance). Never retried."""

    def __init__(self, message: str):
        super().__init__(message, type="ONNX_CHECK_FAILED")


def _libs():
    try:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise ImportError("capstan_stage.onnx needs onnx and numpy: npm run setup:python installs them (sdk/python/requirements-onnx.lock)") from None
    return np, onnx, TensorProto, helper, numpy_helper


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ImportError("capstan_stage.onnx needs onnxruntime: npm run setup:python installs it (sdk/python/requirements-onnx.lock)") from None
    return onnxruntime


def encoding_of(dataset) -> dict:
    """The input encoding capstan-model.json records, from a dataset's normalisation (what core:deploy checks against).

    ``dataset`` is a ``capstan_stage.datasets.Dataset`` or its ``normalization`` dict."""
    n = getattr(dataset, "normalization", dataset) or {}
    kind = n.get("kind")
    if kind == "scale":
        return {"kind": "scale", "scale": float(n["factor"]), "rawRange": [0, 255]}
    if kind == "zscore":
        return {"kind": "zscore", "mean": [float(v) for v in n["mean"]], "std": [float(v) for v in n["std"]]}
    if kind in (None, "none"):
        return {"kind": "none"}
    raise BadInput(f"dataset normalisation {kind!r} has no ONNX input encoding (scale, zscore or none)", type="ONNX_EXPORT_UNSUPPORTED")


def _pair(v, what: str) -> list[int]:
    if isinstance(v, int):
        return [v, v]
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return [int(v[0]), int(v[1])]
    if isinstance(v, (list, tuple)) and len(v) == 1 and isinstance(v[0], int):
        return [int(v[0])] * 2
    raise OnnxExportUnsupported(f"{what}: a size of {v!r}")


def _padding(p, layer: str) -> list:
    if p in (None, "valid"):
        return [("pads", [0, 0, 0, 0])]
    if p == "same":  # TF puts the extra padding at the end
        return [("auto_pad", "SAME_UPPER")]
    raise OnnxExportUnsupported(f"layer {layer}: padding {p!r}")


def _out_size(n: int, k: int, s: int, d: int, p) -> int:
    eff = (k - 1) * d + 1
    return -(-n // s) if p == "same" else (n - eff) // s + 1


def _layers_in_order(model) -> list:
    """The model's layers as a straight stack (Sequential, or a Functional chain); refuses anything else."""
    layers = [l for l in model.layers if type(l).__name__ != "InputLayer"]
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise OnnxExportUnsupported("the model must have one input and one output")
    if type(model).__name__ != "Sequential":
        prev = model.inputs[0]
        for l in layers:
            try:
                inp = l.input
            except (AttributeError, ValueError) as e:
                raise OnnxExportUnsupported(f"layer {l.name}: only a straight stack of layers converts ({e})") from None
            if inp is not prev:
                raise OnnxExportUnsupported(f"layer {l.name}: only a straight stack of layers converts (it does not take the previous layer's output alone)")
            prev = l.output
    return layers


def _activation_name(a) -> str:
    if a is None:
        return "linear"
    if isinstance(a, str):
        return a
    name = getattr(a, "__name__", None) or (a.get("config", {}).get("name") if isinstance(a, dict) else None)
    return str(name or a)


def keras_to_onnx(model, *, input_name: str = "input", output_name: str = "probabilities", opset: int = OPSET):
    """The ONNX ModelProto for a Keras model, and (sample shape, classes, output kind)."""
    np, onnx, TensorProto, helper, numpy_helper = _libs()
    if opset < 13:
        raise OnnxExportUnsupported(f"opset {opset}: the graphs need opset 13 or later")
    in_shape = list(model.inputs[0].shape)[1:]
    if any(d is None for d in in_shape):
        raise OnnxExportUnsupported(f"input shape {list(model.inputs[0].shape)} has unknown dimensions")
    sample_shape = [int(d) for d in in_shape]
    layers = _layers_in_order(model)

    nodes, inits = [], []
    state = {"cur": input_name, "shape": list(sample_shape), "nchw": False, "last": "linear", "seq": 0}

    def fresh(base: str) -> str:
        state["seq"] += 1
        return f"{base}_{state['seq'] - 1}"

    def add(op: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        name = name or fresh(op.lower())
        out = f"{name}:0"
        nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        state["cur"] = out
        return out

    def to_nhwc():
        if state["nchw"]:
            add("Transpose", [state["cur"]], perm=[0, 2, 3, 1])
            state["nchw"] = False

    def to_nchw():
        if not state["nchw"]:
            add("Transpose", [state["cur"]], perm=[0, 3, 1, 2])
            state["nchw"] = True

    def activate(a: str, layer: str):
        state["last"] = a
        if a == "linear":
            return
        op = _ACTIVATIONS.get(a)
        if not op:
            raise OnnxExportUnsupported(f"layer {layer}: activation {a} (supported: {', '.join(_ACTIVATIONS)}, linear)")
        attrs = {"axis": -1} if op == "Softmax" else {"alpha": 1.0} if op == "Elu" else {}
        add(op, [state["cur"]], name=fresh(f"{layer}_{a}"), **attrs)

    def weight(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name))
        return name

    for layer in layers:
        kind = type(layer).__name__
        cfg = layer.get_config()
        if kind == "Dropout":
            continue
        if kind == "Activation":
            activate(_activation_name(cfg.get("activation")), layer.name)
        elif kind == "ReLU":
            if cfg.get("max_value") is not None or cfg.get("negative_slope", 0) or cfg.get("threshold", 0):
                raise OnnxExportUnsupported(f"layer {layer.name}: ReLU with max_value, negative_slope or threshold")
            activate("relu", layer.name)
        elif kind == "Softmax":
            if cfg.get("axis", -1) != -1:
                raise OnnxExportUnsupported(f"layer {layer.name}: Softmax over axis {cfg.get('axis')}")
            activate("softmax", layer.name)
        elif kind == "Reshape":
            to_nhwc()
            target = [int(d) for d in cfg["target_shape"]]
            if -1 in target:
                raise OnnxExportUnsupported(f"layer {layer.name}: Reshape with an inferred (-1) dimension")
            inits.append(numpy_helper.from_array(np.array([-1, *target], dtype=np.int64), f"{layer.name}_shape"))
            add("Reshape", [state["cur"], f"{layer.name}_shape"], name=layer.name)
            state["shape"], state["last"] = target, "linear"
        elif kind == "Flatten":
            to_nhwc()
            add("Flatten", [state["cur"]], name=layer.name, axis=1)
            state["shape"], state["last"] = [int(np.prod(state["shape"]))], "linear"
        elif kind == "Dense":
            to_nhwc()
            if len(state["shape"]) != 1:
                raise OnnxExportUnsupported(f"layer {layer.name}: Dense on a {len(state['shape'])}-d sample (Flatten first)")
            w = layer.get_weights()
            kernel, bias = w[0], (w[1] if cfg.get("use_bias", True) and len(w) > 1 else None)
            add("MatMul", [state["cur"], weight(f"{layer.name}_kernel", kernel)], name=f"{layer.name}_matmul")
            if bias is not None:
                add("Add", [state["cur"], weight(f"{layer.name}_bias", bias)], name=f"{layer.name}_bias_add")
            state["shape"] = [int(kernel.shape[1])]
            activate(_activation_name(cfg.get("activation")), layer.name)
        elif kind == "Conv2D":
            shape = state["shape"]
            if len(shape) != 3:
                raise OnnxExportUnsupported(f"layer {layer.name}: Conv2D needs [h, w, c] inputs, got {shape}")
            if cfg.get("data_format") not in (None, "channels_last"):
                raise OnnxExportUnsupported(f"layer {layer.name}: data_format {cfg.get('data_format')}")
            if int(cfg.get("groups", 1)) != 1:
                raise OnnxExportUnsupported(f"layer {layer.name}: grouped convolution")
            kh, kw = _pair(cfg["kernel_size"], layer.name)
            strides = _pair(cfg.get("strides", 1), layer.name)
            dil = _pair(cfg.get("dilation_rate", 1), layer.name)
            w = layer.get_weights()
            kernel = w[0]  # HWIO
            cout = int(kernel.shape[3])
            to_nchw()
            inputs = [state["cur"], weight(f"{layer.name}_kernel", kernel.transpose(3, 2, 0, 1))]  # OIHW
            if cfg.get("use_bias", True) and len(w) > 1:
                inputs.append(weight(f"{layer.name}_bias", w[1]))
            add("Conv", inputs, name=layer.name, kernel_shape=[kh, kw], strides=strides, dilations=dil, **dict(_padding(cfg.get("padding"), layer.name)))
            p = cfg.get("padding")
            state["shape"] = [_out_size(shape[0], kh, strides[0], dil[0], p), _out_size(shape[1], kw, strides[1], dil[1], p), cout]
            activate(_activation_name(cfg.get("activation")), layer.name)
        elif kind == "MaxPooling2D":
            shape = state["shape"]
            if len(shape) != 3:
                raise OnnxExportUnsupported(f"layer {layer.name}: MaxPooling2D needs [h, w, c] inputs, got {shape}")
            if cfg.get("data_format") not in (None, "channels_last"):
                raise OnnxExportUnsupported(f"layer {layer.name}: data_format {cfg.get('data_format')}")
            pool = _pair(cfg["pool_size"], layer.name)
            strides = _pair(cfg.get("strides") or cfg["pool_size"], layer.name)
            to_nchw()
            add("MaxPool", [state["cur"]], name=layer.name, kernel_shape=pool, strides=strides, **dict(_padding(cfg.get("padding"), layer.name)))
            p = cfg.get("padding")
            state["shape"] = [_out_size(shape[0], pool[0], strides[0], 1, p), _out_size(shape[1], pool[1], strides[1], 1, p), shape[2]]
            state["last"] = "linear"
        else:
            raise OnnxExportUnsupported(f"layer {layer.name}: {kind} layers do not convert (supported: {SUPPORTED})")
    to_nhwc()
    if not nodes:
        raise OnnxExportUnsupported("the model has no layer that computes anything")
    last = nodes[-1]
    last.output[0] = output_name
    graph = helper.make_graph(
        nodes,
        model.name or "model",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *sample_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", *state["shape"]])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=PRODUCER, producer_version=PRODUCER_VERSION, ir_version=IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    kind = "probabilities" if state["last"] == "softmax" else "logits"
    return proto, sample_shape, int(state["shape"][-1]), kind


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def read_meta(folder: str | os.PathLike) -> dict:
    """A folder's capstan-model.json (checked for the fields everything else reads)."""
    file = Path(folder) / META_FILE
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{file}: not found: not an ONNX model folder", type="MODEL_NOT_FOUND") from None
    except (OSError, ValueError) as e:
        raise BadInput(f"{file}: not valid JSON: {e}", type="MODEL_META_INVALID") from None
    if not isinstance(meta, dict) or meta.get("format") != "onnx" or meta.get("metaVersion") != 1:
        raise BadInput(f"{file}: not a Capstan ONNX model description (format onnx, metaVersion 1)", type="MODEL_META_INVALID")
    return meta


def model_bytes(folder: str | os.PathLike) -> int:
    """Size of the folder's model.onnx in bytes."""
    return (Path(folder) / MODEL_FILE).stat().st_size


def export_keras(
    model,
    folder: str | os.PathLike,
    *,
    input_shape: Sequence[int] | None = None,
    encoding: dict | None = None,
    labels: Sequence[str] | None = None,
    opset: int = OPSET,
    input_name: str = "input",
    output_name: str = "probabilities",
) -> dict:
    """Writes ``model.onnx`` + ``capstan-model.json`` for a Keras model into ``folder``; returns the meta.

    ``input_shape`` (one sample's, e.g. the dataset's feature shape) must be the model's when given;
    ``encoding`` is how raw values became the inputs it was trained on (``encoding_of(dataset)``)."""
    proto, sample_shape, classes, kind = keras_to_onnx(model, input_name=input_name, output_name=output_name, opset=opset)
    if input_shape is not None and [int(d) for d in input_shape] != sample_shape:
        raise BadInput(f"the model takes samples of shape {sample_shape}, not {list(input_shape)}", type="MODEL_DATASET_MISMATCH")
    names = [str(l) for l in labels] if labels is not None else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise BadInput(f"{len(names)} labels for a model of {classes} classes", type="MODEL_DATASET_MISMATCH")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).write_bytes(proto.SerializeToString())
    meta = {
        "format": "onnx",
        "metaVersion": 1,
        "file": MODEL_FILE,
        "opset": opset,
        "producer": f"{PRODUCER} {PRODUCER_VERSION}",
        "input": {"name": input_name, "shape": [None, *sample_shape], "dtype": "float32", "encoding": encoding or {"kind": "none"}},
        "output": {"name": output_name, "kind": kind},
        "labels": names,
        "quantization": "none",
    }
    _write_meta(out, meta)
    return meta


def quantize_uint8(src: str | os.PathLike, dst: str | os.PathLike) -> dict:
    """Quantizes a float32 folder's weights to uint8 with ONNX Runtime's quantizer into ``dst`` (same layout); returns its meta.

    ``onnxruntime.quantization.quantize_dynamic`` with ``weight_type=QuantType.QUInt8``: MatMul and Conv
    weights are stored as uint8 with a scale and zero point per tensor; activations are quantized to
    uint8 at run time (DynamicQuantizeLinear → MatMulInteger / ConvInteger). Biases stay float32."""
    _libs()
    ort = _onnxruntime()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    meta = read_meta(src)
    if meta.get("quantization") != "none":
        raise BadInput(f"{Path(src) / META_FILE}: already quantized ({meta.get('quantization')}); quantize the float32 folder", type="CONVERSION_UNSUPPORTED")
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(Path(src) / MODEL_FILE), str(out / MODEL_FILE), weight_type=QuantType.QUInt8)
    import onnx

    q = onnx.load(str(out / MODEL_FILE))
    opset = next((int(o.version) for o in q.opset_import if o.domain in ("", "ai.onnx")), meta["opset"])
    qmeta = {**meta, "opset": opset, "producer": f"{meta['producer']} + onnxruntime.quantization {ort.__version__} (quantize_dynamic QUInt8)", "quantization": "uint8"}
    _write_meta(out, qmeta)
    return qmeta


def _session(folder: Path):
    ort = _onnxruntime()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(folder / MODEL_FILE), sess_options=opts, providers=["CPUExecutionProvider"])


def _probabilities(np, raw, kind: str):
    if kind == "probabilities":
        return raw
    e = np.exp(raw - raw.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def check_folder(folder: str | os.PathLike, x, y=None, *, batch: int = 1024) -> dict:
    """Runs an ONNX folder in ONNX Runtime on ``x`` (model inputs); returns its probabilities and, with labels ``y``, accuracy."""
    np = _libs()[0]
    f = Path(folder)
    meta = read_meta(f)
    sess = _session(f)
    x = np.asarray(x, dtype=np.float32)
    parts = [sess.run([meta["output"]["name"]], {meta["input"]["name"]: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    probs = _probabilities(np, np.concatenate(parts) if parts else np.zeros((0, len(meta["labels"])), np.float32), meta["output"]["kind"])
    out: dict[str, Any] = {"probabilities": probs, "count": int(len(x))}
    if y is not None:
        out["accuracy"] = float((probs.argmax(axis=-1) == np.asarray(y)).mean()) if len(x) else 0.0
    return out


def check_against_keras(model, folder: str | os.PathLike, x, *, tolerance: float | None = 1e-4) -> dict:
    """Compares an ONNX folder with the Keras model on ``x``: the largest absolute difference of the
    probabilities and the share of samples whose predicted class agrees.

    Raises ``OnnxCheckError`` when the difference exceeds ``tolerance`` (None: only report; use that
    for a quantized folder, whose probabilities move by design)."""
    np = _libs()[0]
    x = np.asarray(x, dtype=np.float32)
    keras_p = np.asarray(model.predict(x, verbose=0, batch_size=1024), dtype=np.float32)
    meta = read_meta(folder)
    if meta["output"]["kind"] == "logits":
        keras_p = _probabilities(np, keras_p, "logits")
    onnx_p = check_folder(folder, x)["probabilities"]
    if onnx_p.shape != keras_p.shape:
        raise OnnxCheckError(f"the ONNX graph gives {onnx_p.shape} for {len(x)} samples, Keras {keras_p.shape}")
    diff = float(np.abs(onnx_p - keras_p).max()) if len(x) else 0.0
    agree = float((onnx_p.argmax(-1) == keras_p.argmax(-1)).mean()) if len(x) else 1.0
    if tolerance is not None and not diff <= tolerance:
        raise OnnxCheckError(f"{Path(folder) / MODEL_FILE}: probabilities differ from Keras by up to {diff:.3g} on {len(x)} samples (tolerance {tolerance:g})")
    return {"maxAbsDiff": diff, "agreement": agree, "samples": int(len(x))}
