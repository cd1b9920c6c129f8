"""A Keras model as an ONNX model folder (``seed:onnx-export``, capstan-stage.yaml beside this file).

Reads the ``model`` input (a ``model.keras`` folder, as seed:keras-mlp writes it) and the ``dataset``
it was trained on (for the input encoding, the sample shape and the check rows), then:

1. exports the float32 graph with ``capstan_stage.onnx.export_keras`` (opset 13, onnx.helper);
2. checks it against Keras on ``checkSamples`` test rows: the largest probability difference must be
   below ``tolerance`` (1e-4), else the stage fails (ONNX_CHECK_FAILED, not retried);
3. quantizes it to uint8 with ONNX Runtime's quantizer (``quantize_uint8``: quantize_dynamic, QUInt8);
4. scores Keras, the float32 graph and the uint8 graph on the whole test split;
5. keeps the folder ``quantize`` asks for as the ``model`` output (model.onnx + capstan-model.json),
   and reports both sizes and accuracies as metrics and in the output's meta.

Run by hand (SDK local mode: outputs under ./capstan-local):

    .tools/python/bin/python stages/onnx-export/export.py --model DIR --dataset DIR [--quantize none]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from capstan_stage import BadInput, open_stage
from capstan_stage.datasets import read_dataset

DEFAULTS = {"quantize": "uint8", "checkSamples": 1000, "tolerance": 1e-4}


def hand_params(argv: list[str]) -> tuple[dict, dict]:
    ap = argparse.ArgumentParser(description="Exports a Keras model folder to ONNX (and uint8); run by hand for a check.")
    ap.add_argument("--model", required=True, help="a folder holding model.keras")
    ap.add_argument("--dataset", required=True, help="the core:data-prep dataset folder it was trained on")
    ap.add_argument("--quantize", choices=["uint8", "none"], default=DEFAULTS["quantize"])
    ap.add_argument("--check-samples", type=int, default=DEFAULTS["checkSamples"])
    a = ap.parse_args(argv)
    return {**DEFAULTS, "quantize": a.quantize, "checkSamples": a.check_samples}, {"model": a.model, "dataset": a.dataset}


def main() -> None:
    in_capstan = "CAPSTAN_STAGE_CONTEXT" in os.environ
    params, inputs = (DEFAULTS, {}) if in_capstan else hand_params(sys.argv[1:])
    with open_stage(params=params, inputs=inputs) as ctx:
        ctx.heartbeat(phase="started")
        p = {**DEFAULTS, **ctx.params}
        started = time.perf_counter()
        keras_file = Path(ctx.inputs["model"]) / "model.keras"
        if not keras_file.is_file():
            fmt = ctx.input_meta.get("model", {}).get("format")
            raise BadInput(f"{keras_file}: not found; seed:onnx-export takes a Keras model folder (model.keras), got format {fmt or 'unknown'}", type="MODEL_FORMAT_UNKNOWN")

        ds = read_dataset(ctx.inputs["dataset"])
        split = "test" if "test" in ds.splits else "validation"
        xt, yt = ds.split(split)
        ctx.heartbeat(phase="data")

        import keras
        import tensorflow as tf

        from capstan_stage.onnx import check_against_keras, check_folder, encoding_of, export_keras, model_bytes, quantize_uint8, read_meta

        model = keras.models.load_model(keras_file, compile=False)
        labels = [str(i) for i in range(ds.num_classes)]
        scratch = Path(tempfile.mkdtemp(prefix="onnx-export-", dir=ctx.work_dir))
        try:
            f32, u8 = scratch / "float32", scratch / "uint8"
            export_keras(model, f32, input_shape=ds.feature_shape, encoding=encoding_of(ds), labels=labels)
            check = check_against_keras(model, f32, xt[: int(p["checkSamples"])], tolerance=float(p["tolerance"]))
            ctx.log.info("float32 graph matches Keras", maxAbsDiff=check["maxAbsDiff"], samples=check["samples"])
            ctx.heartbeat(phase="exported")
            quantize_uint8(f32, u8)
            ctx.heartbeat(phase="quantized")

            keras_acc = float((model.predict(xt, batch_size=1024, verbose=0).argmax(-1) == yt).mean()) if len(xt) else 0.0
            acc32 = check_folder(f32, xt, yt)
            acc8 = check_folder(u8, xt, yt)
            agree8 = float((acc8["probabilities"].argmax(-1) == acc32["probabilities"].argmax(-1)).mean()) if len(xt) else 1.0
            bytes32, bytes8 = model_bytes(f32), model_bytes(u8)
            keep = u8 if p["quantize"] == "uint8" else f32
            if bytes8 >= bytes32:  # tiny models: the quantizer's extra nodes (~1.2 KB) outweigh the weights saved
                ctx.log.warn("the uint8 graph is not smaller than the float32 one", float32Bytes=bytes32, uint8Bytes=bytes8)

            out = ctx.output_dir("model")
            for name in ("model.onnx", "capstan-model.json"):
                shutil.copyfile(keep / name, out / name)
            kept = read_meta(out)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        import onnx
        import onnxruntime

        kept_acc = acc8["accuracy"] if p["quantize"] == "uint8" else acc32["accuracy"]
        ctx.output(
            "model",
            format="onnx",
            file="model.onnx",
            quantization=p["quantize"],
            weightFormat="uint8" if p["quantize"] == "uint8" else "float32",
            opset=kept["opset"],
            bytes=bytes8 if p["quantize"] == "uint8" else bytes32,
            float32Bytes=bytes32,
            uint8Bytes=bytes8,
            testAccuracy=kept_acc,
            kerasTestAccuracy=keras_acc,
            parameters=int(model.count_params()),
            inputShape=list(ds.feature_shape),
            numClasses=int(ds.num_classes),
            producer=kept["producer"],
        )
        ctx.metrics(
            quantize=p["quantize"],
            float32Bytes=bytes32,
            uint8Bytes=bytes8,
            sizeRatio=round(bytes8 / bytes32, 4),
            maxAbsDiffFloat32=check["maxAbsDiff"],
            checkSamples=check["samples"],
            kerasTestAccuracy=keras_acc,
            float32TestAccuracy=acc32["accuracy"],
            uint8TestAccuracy=acc8["accuracy"],
            uint8Agreement=agree8,
            testAccuracy=kept_acc,
            testCount=int(len(xt)),
            evalSplit=split,
            seconds=round(time.perf_counter() - started, 3),
            onnxVersion=onnx.__version__,
            onnxruntimeVersion=onnxruntime.__version__,
            kerasVersion=keras.__version__,
            tfVersion=tf.__version__,
        )


if __name__ == "__main__":
    main()
