"""Time one window batch through a bundle's ONNX networks: fp32, static int8 (the bundle's) and dynamic int8.

Usage: ``python scripts/onnx_window_timing.py BUNDLE_DIR [--threads 2]`` (docs/benchmarks.md, "Inference
engines"). The dynamic int8 network (``onnxruntime.quantization.quantize_dynamic``, weights only) is made in a
temporary folder; each network runs once to warm up, then once timed, on a (2, C, 128, 128, 64) batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic


def _time(path: Path, x: np.ndarray, threads: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run(None, {session.get_inputs()[0].name: x})  # warm-up
    start = time.perf_counter()
    session.run(None, {session.get_inputs()[0].name: x})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", type=Path, help="a bundle exported with --onnx-precision int8")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    models = args.bundle / "models"
    static = onnx.load(str(models / "model_int8.onnx"))
    print("static int8 ops:", Counter(n.op_type for n in static.graph.node).most_common(8))
    channels = onnx.load(str(models / "model.onnx")).graph.input[0].type.tensor_type.shape.dim[1].dim_value or 1
    x = np.random.default_rng(0).random((2, channels, 128, 128, 64), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        dynamic = Path(tmp) / "model_dynamic_int8.onnx"
        quantize_dynamic(str(models / "model.onnx"), str(dynamic), weight_type=QuantType.QInt8)
        for name, path in (("fp32", models / "model.onnx"), ("int8 static QDQ", models / "model_int8.onnx"),
                           ("int8 dynamic", dynamic), ("fp32", models / "model.onnx")):
            print(f"{name}: {_time(path, x, args.threads):.2f} s per batch of 2 windows")


if __name__ == "__main__":
    main()
