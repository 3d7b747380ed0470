"""The bundle's reduced-precision ONNX networks: fp16 for the GPU, int8 for the CPU (``medt3d export --onnx-precision``).

- fp16: onnxruntime's own converter (``onnxruntime.transformers.float16``) turns the fp32 ``models/model.onnx``
  into ``models/model_fp16.onnx``, keeping float32 input and output so that the engine feeds both alike.
- int8: ``onnxruntime.quantization.quantize_static`` (QDQ, int8 weights, uint8 activations), calibrated on
  windows of training cases preprocessed exactly as inference preprocesses them (:class:`WindowReader`), after
  onnxruntime's pre-processing (graph optimisation and shape inference, without the symbolic shape inference
  that MedT3D's dynamic shapes defeat).

Each file is checked on windows of the training patch against the fp32 network before the bundle is kept.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medt3d.config import Config
from medt3d.errors import InputError

__all__ = ["WindowReader", "calibration_windows", "label_agreement", "write_fp16", "write_int8", "write_precisions"]

logger = logging.getLogger("medt3d.export")

#: Least label agreement with the fp32 network on the check windows for fp16 (int8 is reported, not refused).
FP16_AGREEMENT = 0.99


def calibration_windows(cfg: Config, data: str | Path, count: int) -> list[np.ndarray]:
    """Up to ``count`` windows (1, C, *patch.roi_size) of the training cases of ``data``, preprocessed as inference does.

    Every training case gives its share of the windows (the first ones one more when ``count`` does not divide),
    spread evenly over its grid of non-overlapping windows (padded as the inferer pads, ``infer.padding_mode``).

    Raises:
        FileNotFoundError, InputError: no such data, or no training case in it.
    """
    from monai.data.utils import dense_patch_slices
    from monai.transforms import SpatialPad

    from medt3d.data.datalist import build_datalist
    from medt3d.data.transforms import build_infer_transforms

    cases = list(build_datalist(data, require_labels=False).train)
    if not cases:
        raise InputError(f"{data}: no training case to calibrate int8 on; pass the training data as "
                         "--calibration-data")
    roi = tuple(int(r) for r in cfg.patch.roi_size)
    pre = build_infer_transforms(cfg)
    pad = SpatialPad(roi, mode=cfg.infer.padding_mode)
    windows: list[np.ndarray] = []
    cases = cases[:count]
    for index, case in enumerate(cases):
        share = count // len(cases) + (1 if index < count % len(cases) else 0)
        image = pad(pre({"image": case["image"]})["image"])
        grid = dense_patch_slices(tuple(image.shape[1:]), roi, roi)
        picks = np.linspace(0, len(grid) - 1, min(share, len(grid))).round().astype(int)
        for pick in dict.fromkeys(picks.tolist()):
            window = image[(slice(None), *grid[pick])]
            windows.append(np.ascontiguousarray(torch.as_tensor(window).float().numpy()[None]))
    return windows[:count]


class WindowReader:
    """onnxruntime's ``CalibrationDataReader`` protocol over calibration windows (``get_next`` until None).

    Args:
        windows: the windows (1, C, X, Y, Z), float32.
        input_name: the network's input name.
    """

    def __init__(self, windows: list[np.ndarray], input_name: str = "image") -> None:
        self.windows = windows
        self.input_name = input_name
        self._next: Iterator[np.ndarray] = iter(windows)

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next window as an input feed, or None after the last."""
        window = next(self._next, None)
        return None if window is None else {self.input_name: window}

    def rewind(self) -> None:
        """Start again from the first window."""
        self._next = iter(self.windows)


def write_fp16(source: Path, target: Path) -> Path:
    """Convert the fp32 ONNX ``source`` to fp16 ``target`` (float32 input and output kept).

    Raises:
        InputError: the converter failed (the message says why).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
        onnx.save(converted, str(target))
    except Exception as err:  # the converter raises many types
        raise InputError(f"fp16 conversion of {source.name} failed: {type(err).__name__}: {str(err)[:300]}; "
                         "export without --onnx-precision fp16") from None
    return target


def write_int8(source: Path, target: Path, windows: list[np.ndarray]) -> Path:
    """Quantise the fp32 ONNX ``source`` to int8 ``target`` (static, QDQ), calibrated on ``windows``.

    Raises:
        InputError: the quantiser failed (the message says why).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="medt3d-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        except Exception as err:  # pre-processing is an optimisation: quantise the plain graph then
            logger.warning("onnxruntime's quantisation pre-processing failed (%s); quantising the graph as exported",
                           str(err)[:200])
            prepared = source
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_static(str(prepared), str(target), WindowReader(windows), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        except Exception as err:  # the quantiser raises many types
            raise InputError(f"int8 quantisation of {source.name} failed: {type(err).__name__}: {str(err)[:300]}; "
                             "export without --onnx-precision int8") from None
    return target


def label_agreement(network: torch.nn.Module, onnx_path: Path, windows: list[np.ndarray]) -> float:
    """Share of voxels whose argmax label from ``onnx_path`` (onnxruntime, CPU) equals the torch network's."""
    from medt3d.inference.engines import OnnxNetwork

    onnx_net = OnnxNetwork(onnx_path, "cpu", name=onnx_path.name)
    same = total = 0
    with torch.no_grad():
        for window in windows:
            x = torch.from_numpy(window)
            a, b = network(x).argmax(1), onnx_net(x).argmax(1)
            same += int((a == b).sum())
            total += a.numel()
    return same / max(total, 1)


def write_precisions(root: Path, cfg: Config, network: torch.nn.Module, precisions: list[str],
                     calibration: str | Path | None, count: int) -> dict[str, Any]:
    """Write the bundle's fp16 and int8 ONNX files beside ``models/model.onnx``; their label agreement with fp32.

    Raises:
        InputError: int8 without calibration data, a failed conversion, or an fp16 file that disagrees.
    """
    from medt3d.models.layout import BUNDLE_ONNX

    if "int8" in precisions and calibration is None:
        raise InputError("--onnx-precision int8 is calibrated on training windows: pass the training data as "
                         "--calibration-data DIR")
    source = root / BUNDLE_ONNX["fp32"]
    windows = calibration_windows(cfg, calibration, count) if calibration is not None else []
    checks = windows or [np.random.default_rng(0).random((1, cfg.data.in_channels, *cfg.patch.roi_size),
                                                         dtype=np.float32)]
    agreement: dict[str, Any] = {}
    for precision in precisions:
        target = root / BUNDLE_ONNX[precision]
        if precision == "fp16":
            write_fp16(source, target)
        else:
            write_int8(source, target, windows)
        agreement[precision] = round(label_agreement(network, target, checks), 5)
        logger.info("%s: labels agree with the checkpoint on %.4f of the voxels of %d window(s)", target.name,
                    agreement[precision], len(checks))
        if precision == "fp16" and agreement[precision] < FP16_AGREEMENT:
            raise InputError(f"{target.name} agrees with the checkpoint on only {agreement[precision]:.4f} of the "
                             f"voxels (< {FP16_AGREEMENT}); export without --onnx-precision fp16")
    return agreement
