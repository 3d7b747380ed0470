"""Inference engines: what runs the network on each window (``infer.engine``).

``torch`` runs the checkpoint's module (autocast to ``infer.precision``). ``onnxruntime`` runs a bundle's ONNX
file of that precision (``models/model.onnx``, ``model_fp16.onnx`` or ``model_int8.onnx``, written by
``medt3d export --onnx [--onnx-precision ...]``) in an ``onnxruntime.InferenceSession``, wrapped as a module on
torch tensors (:class:`OnnxNetwork`): the Predictor, MONAI's sliding window and the whole-scan pass call it as
they call the torch network, so pre- and post-processing, windows and blending are the same code.

The CPU execution provider runs by default; the CUDA one when the device is a GPU and the installed
onnxruntime has it (``onnxruntime-gpu``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medt3d.config import ENGINE_PRECISIONS, Config
from medt3d.errors import InputError
from medt3d.models.layout import BUNDLE_ONNX

__all__ = ["OnnxNetwork", "bundle_onnx_network", "engine_networks", "onnx_file", "onnx_providers", "runs_own_precision"]


def onnx_providers(device: torch.device) -> list[str]:
    """onnxruntime's execution providers for ``device``: CUDA (then CPU) on a GPU, else the CPU alone.

    Raises:
        InputError: a GPU device but an onnxruntime without the CUDA execution provider, or another device.
    """
    import onnxruntime as ort

    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise InputError(f"device {device} asks for onnxruntime's CUDA execution provider, but the installed "
                             f"onnxruntime has only {ort.get_available_providers()}; install onnxruntime-gpu or "
                             "use --device cpu")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise InputError(f"--engine onnxruntime runs on cpu or cuda, not {device}; use --device cpu")


class OnnxNetwork(torch.nn.Module):
    """An ONNX network in onnxruntime, called like the torch network: (B, C, X, Y, Z) float -> logits.

    It has no parameters: ``.to()`` and ``.eval()`` change nothing; the output comes back on the input's device.

    Args:
        model: the ONNX file, or its bytes.
        device: where it runs (:func:`onnx_providers`).
        name: for messages (the file, or the bundle and member).
        threads: onnxruntime's intra-op threads; default torch's (``OMP_NUM_THREADS``, ``torch.set_num_threads``),
            so that both engines use the same cores.
    """

    def __init__(self, model: str | Path | bytes, device: torch.device | str = "cpu", name: str = "model.onnx",
                 threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: not the notes on unused initializers
        source = model if isinstance(model, bytes) else str(model)
        try:
            self.session = ort.InferenceSession(source, sess_options=options,
                                                providers=onnx_providers(torch.device(device)))
        except InputError:
            raise
        except Exception as err:  # onnxruntime raises its own exception types
            raise InputError(f"{name}: onnxruntime cannot load it ({' '.join(str(err).split())[:300]}); export the "
                             "bundle again with medt3d export --onnx") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.providers = self.session.get_providers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, X, Y, Z) as float32, on ``x``'s device."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            out = self.session.run([self.output_name], {self.input_name: array})[0]
        except Exception as err:  # onnxruntime raises its own exception types
            raise InputError(f"{self.name}: onnxruntime fails on a {list(array.shape)} window "
                             f"({' '.join(str(err).split())[:300]}); a bundle exported from a network of one input "
                             "size takes only its ROI: run it with --engine torch") from None
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


def runs_own_precision(network: torch.nn.Module) -> bool:
    """True for an engine that runs its file's precision (ONNX Runtime): no torch autocast around it."""
    return isinstance(network, OnnxNetwork)


def onnx_file(model: str | Path, precision: str) -> tuple[bytes, str]:
    """The bytes of a bundle's ONNX network of ``precision`` (a bundle folder or zip), and a name for messages.

    Raises:
        InputError: not a bundle, no ONNX file of that precision in it, or an unsafe zip.
    """
    from medt3d.models.archive import unpack_bundle
    from medt3d.models.loading import is_bundle

    path = Path(model)
    member = BUNDLE_ONNX.get(precision)
    if member is None:
        raise InputError(f"precision {precision!r} has no ONNX file; choose one of {list(BUNDLE_ONNX)}")
    hint = ("export it with medt3d export --onnx" + ("" if precision == "fp32" else f" --onnx-precision {precision}")
            + " and pass the bundle")
    if not is_bundle(path):
        raise InputError(f"{path}: --engine onnxruntime runs a bundle's {member}, and this is not a bundle; {hint}")
    if path.is_dir():
        if not (path / member).is_file():
            raise InputError(f"bundle {path} has no {member}; {hint}")
        return (path / member).read_bytes(), str(path / member)
    with tempfile.TemporaryDirectory(prefix="medt3d-onnx-") as tmp:
        root = unpack_bundle(path, Path(tmp) / "bundle", only=(member,))
        if not (root / member).is_file():
            raise InputError(f"bundle {path} has no {member}; {hint}")
        return (root / member).read_bytes(), f"{path}!{member}"


def bundle_onnx_network(bundle: str | Path, precision: str, device: torch.device | str) -> OnnxNetwork:
    """The bundle's ONNX network of ``precision`` on ``device`` (what ``configs/inference_onnx.json`` runs).

    Raises:
        InputError: no such file in the bundle, or a device onnxruntime cannot use.
    """
    data, name = onnx_file(bundle, precision)
    return OnnxNetwork(data, device=device, name=name)


def engine_networks(sources: Sequence[str | Path], networks: Sequence[torch.nn.Module], cfg: Config,
                    device: torch.device) -> list[torch.nn.Module]:
    """The networks that run each member under ``cfg.infer.engine``: the torch modules, or their bundles' ONNX files.

    Raises:
        InputError: a precision the engine does not run, or a member that is not a bundle with that ONNX file.
    """
    engine, precision = cfg.infer.engine, cfg.infer.precision
    if precision not in ENGINE_PRECISIONS[engine]:
        raise InputError(f"precision {precision} does not run on --engine {engine}; choose one of "
                         f"{list(ENGINE_PRECISIONS[engine])}")
    if engine == "torch":
        return list(networks)
    if precision == "fp16" and device.type != "cuda":
        raise InputError("the fp16 ONNX network is for the GPU (onnxruntime's CPU provider has few fp16 kernels and "
                         "casts back and forth); use --precision fp32 or int8 on the CPU, or --device cuda")
    return [bundle_onnx_network(source, precision, device) for source in sources]
