"""Device selection from the config's ``auto | cpu | cuda | cuda:N | mps`` strings."""

from __future__ import annotations

import torch

from medt3d.errors import InputError

__all__ = ["resolve_device", "autocast_dtype"]


def resolve_device(name: str) -> torch.device:
    """Turn a device string into a ``torch.device``, checking that it is available.

    Raises:
        ValueError: the requested device is not available on this machine.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist; "
                             "choose one of cuda:0..cuda:N-1")
        return torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise InputError("device 'mps' requested but MPS is not available; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means full fp32.

    Raises:
        ValueError: the precision is not supported on that device (fp16 needs CUDA).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise InputError(f"precision bf16 is not supported on {device}; use fp16 or fp32")
        return torch.bfloat16
    if precision == "fp16":
        if device.type not in ("cuda", "mps"):
            raise InputError(f"precision fp16 needs a GPU (device is {device}); use bf16 on the CPU")
        return torch.float16
    raise InputError(f"unknown precision {precision!r}; use fp32, bf16 or fp16")
