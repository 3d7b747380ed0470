"""Convolutional layers of MedT3D's stem and decoder, written for speed on CPU."""

from __future__ import annotations

import torch
from torch import nn

from medt3d.networks.registry import NORMS

__all__ = [
    "ConvNormAct", "FastConv3d", "PointwiseConv", "VoxelShuffleUp", "channels_first", "channels_last",
    "masked_instance_norm", "masked_moments", "zero_invalid",
]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, D, H, W) -> (B, D, H, W, C) view (an explicit permutation, which ONNX export needs)."""
    return x.permute(0, 2, 3, 4, 1)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(B, D, H, W, C) -> (B, C, D, H, W) view."""
    return x.permute(0, 4, 1, 2, 3)


class FastConv3d(nn.Conv3d):
    """``nn.Conv3d`` that runs batch-1 float32 CPU inputs through oneDNN.

    PyTorch picks its backend with a rule written for 2-D images
    (``use_mkldnn`` in aten/src/ATen/native/Convolution.cpp): with batch 1 and
    ``C * D * H <= 20480`` it falls back to its slow im2col kernel, which is 2-4x slower than
    oneDNN on small 3-D volumes such as a 64^3 patch. Eager CPU calls here go straight to
    oneDNN (same result, autograd included); scripted, traced and exported graphs, autocast
    and other devices use the ordinary ``F.conv3d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or torch.jit.is_tracing():
            return self._conv_forward(x, self.weight, self.bias)
        return self._eager_forward(x)

    @torch.jit.unused
    def _eager_forward(self, x):  # (Tensor) -> Tensor; unannotated so that TorchScript can stub it
        if (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
            and not torch.is_autocast_enabled("cpu")
        ):
            return torch.ops.aten.mkldnn_convolution(
                x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups
            )
        return self._conv_forward(x, self.weight, self.bias)


def zero_invalid(x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``x`` with every voxel outside ``valid`` (a (B, 1, D, H, W) 0/1 mask) set to 0; ``x`` itself when None.

    A convolution then sees zeros beyond the scan, as it does at the edge of an unpadded input.
    """
    return x if valid is None else x * valid


def masked_moments(x: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and variance of ``x`` over the voxels of ``valid`` (B, 1, D, H, W).

    The variance is ``E[x^2] - E[x]^2`` over the valid voxels (two reductions, no centred copy).
    """
    dims = [2, 3, 4]
    count = valid.sum(dim=dims, keepdim=True).clamp_min(1.0)
    masked = x * valid
    mean = masked.sum(dim=dims, keepdim=True) / count
    var = ((masked * x).sum(dim=dims, keepdim=True) / count - mean * mean).clamp_min(0.0)
    return mean, var


def masked_instance_norm(x: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor | None,
                         bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """Instance norm whose mean and variance are taken over the voxels of ``valid`` (B, 1, D, H, W) only.

    ``torch.nn.functional.instance_norm`` has no mask; padding would shift its statistics and so every voxel.
    The statistics are :func:`masked_moments`. (Folding the affine map into one multiply-add broke the ONNX
    export: a dangling initializer in torch 2.13's exporter.)
    """
    mean, var = masked_moments(x, valid)
    y = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None and bias is not None:
        y = y * weight.view(1, -1, 1, 1, 1) + bias.view(1, -1, 1, 1, 1)
    return y


def _norm_layer(norm: str, channels: int) -> nn.Module:
    return nn.InstanceNorm3d(channels, affine=True) if norm == "instance" else nn.BatchNorm3d(channels)


class ConvNormAct(nn.Sequential):
    """3x3x3 convolution (optionally strided), instance norm, leaky ReLU.

    Called with ``valid`` (the output's (B, 1, D, H, W) mask of scan voxels), an instance norm's statistics
    come from the valid voxels only; the caller zeroes the input outside its own mask (:func:`zero_invalid`).
    ``norm="batch"`` normalises over the training batch's valid voxels instead (at inference, with training's
    running statistics), so no other voxel of the window affects a voxel's output.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, norm: str = "instance") -> None:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        super().__init__(
            FastConv3d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False),
            _norm_layer(norm, cout),
            nn.LeakyReLU(0.01, inplace=True),
        )
        self.instance = norm == "instance"

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        y = self[0](x)
        if valid is None or not (self.instance or self.training):  # batch norm at inference: running statistics
            y = self[1](y)
        elif self.instance:
            y = masked_instance_norm(y, valid, self[1].weight, self[1].bias, self[1].eps)
        else:
            y = self._masked_batch_norm(y, valid)
        return self[2](y)

    @torch.jit.unused
    def _masked_batch_norm(self, y, valid):  # (Tensor, Tensor) -> Tensor; unannotated so that TorchScript can stub it
        """Training batch norm whose statistics (and so the running ones) come from the voxels of ``valid`` only.

        ``nn.BatchNorm3d`` has no mask: the padded and zero-filled voxels of training patches would enter
        the running statistics that every window is normalised with at inference.
        """
        norm = self[1]
        count = valid.sum().clamp_min(2.0)
        mean, var = masked_moments(y.transpose(0, 1).reshape(1, y.shape[1], -1, 1, 1),
                                   valid.transpose(0, 1).reshape(1, 1, -1, 1, 1))
        momentum = 0.1 if norm.momentum is None else norm.momentum
        with torch.no_grad():
            norm.running_mean.mul_(1 - momentum).add_(mean.flatten() * momentum)
            norm.running_var.mul_(1 - momentum).add_(var.flatten() * (count / (count - 1)) * momentum)
            norm.num_batches_tracked.add_(1)
        z = (y - mean.view(1, -1, 1, 1, 1)) * torch.rsqrt(var.view(1, -1, 1, 1, 1) + norm.eps)
        return z * norm.weight.view(1, -1, 1, 1, 1) + norm.bias.view(1, -1, 1, 1, 1)


class VoxelShuffleUp(nn.Module):
    """x2 upsampling equal to ``ConvTranspose3d(cin, cout, kernel_size=2, stride=2)``.

    Each input voxel's channels are mapped by one linear layer to the ``cout`` channels of its
    2x2x2 output voxels, then shuffled into place: one matrix product instead of PyTorch's slow
    transposed-convolution kernel on CPU; it scripts and exports like any linear layer.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.linear = nn.Linear(cin, 8 * cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape[0], x.shape[2], x.shape[3], x.shape[4]
        y = self.linear(channels_last(x)).view(b, d, h, w, self.cout, 2, 2, 2)
        return y.permute(0, 4, 1, 5, 2, 6, 3, 7).reshape(b, self.cout, 2 * d, 2 * h, 2 * w)


class PointwiseConv(nn.Module):
    """1x1x1 convolution as one matrix product per sample (cheaper than oneDNN for few channels)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        conv = nn.Conv3d(cin, cout, kernel_size=1)  # for PyTorch's default initialisation
        self.weight = nn.Parameter(conv.weight.detach().view(cout, cin).clone())
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape[0], x.shape[2], x.shape[3], x.shape[4]
        y = torch.matmul(self.weight, x.reshape(b, x.shape[1], d * h * w)) + self.bias[:, None]
        return y.view(b, self.weight.shape[0], d, h, w)
