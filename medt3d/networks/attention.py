"""Gated axial attention along one axis of a 5-D tensor (MedT, Valanarasu et al. 2021, in 3D).

For one line of length ``L`` along the chosen axis and one head (``d`` channels per head)::

    logits_ij = (q_i.k_j + g_qr * q_i.r^q_(i-j) + g_kr * k_j.r^k_(i-j)) / sqrt(d)
    a_ij      = softmax_j(logits_ij)
    out_i     = g_sv * sum_j a_ij v_j + g_sve * sum_j a_ij r^v_(i-j)

``r^q``, ``r^k`` and ``r^v`` are learned tables indexed by the relative distance ``i - j``
clipped to ``[-span, span]``, so one module accepts any axis length. The four gates are
scalar parameters. An optional key mask (the voxels that are scan, not padding) gives every
padded key zero weight, so padding at the end of a line changes nothing at its valid queries. Unlike MedT's code (a BatchNorm right after each gated term, which
cancels the gate) nothing normalises the gated terms here: the logit gates act before the
softmax and the value gates scale the output that goes straight on to a linear layer.

No library offers relative-position gated axial attention for 3-D tensors, hence this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AXES", "GatedAxialAttention", "gate_parameters", "relative_index"]

#: Logit given to a masked key: far enough below any real logit that its softmax weight is exactly 0 in
#: float32, float16 and bfloat16, and finite, so a line with no valid key (all padding) stays finite.
MASKED_LOGIT = -1.0e4

#: Names of the spatial axes of a (B, C, D, H, W) tensor and their dimension index.
AXES: dict[str, int] = {"D": 2, "H": 3, "W": 4}

#: MedT's initial gate values (g_qr, g_kr, g_sv, g_sve).
GATE_INIT: dict[str, float] = {"gate_qr": 0.1, "gate_kr": 0.1, "gate_sv": 1.0, "gate_sve": 0.1}


def relative_index(length: int, span: int, device: torch.device | None = None) -> torch.Tensor:
    """Table index of every (query i, key j) pair: ``clip(i - j, -span, span) + span``.

    Returns:
        A (length, length) int64 tensor with values in ``[0, 2 * span]``.
    """
    pos = torch.arange(length, device=device)
    return (pos[:, None] - pos[None, :]).clamp(-span, span) + span


class GatedAxialAttention(nn.Module):
    """Multi-head gated axial self-attention along one spatial axis of a (B, C, D, H, W) tensor.

    Every line along ``axis`` is an independent sequence (lines are folded into the batch
    dimension); q, k and v come from one pointwise (1x1x1) projection. The output has the
    input's shape. Long inputs are processed in chunks of lines so that the (lines, heads,
    L, L) attention tensor never holds more than ``chunk_elements`` values at once.

    Args:
        channels: input and output channels; must be divisible by ``heads``.
        axis: the axis attended along: 2, 3, 4 or ``"D"``, ``"H"``, ``"W"``.
        heads: attention heads.
        span: relative distances are clipped to ``[-span, span]``; any axis length is accepted.
        dropout: dropout on the attention weights (training only).
        chunk_elements: most values of one (lines, heads, L, L) tensor held at once: lines are
            processed in chunks beyond it, so attention memory grows linearly with the voxels.
    """

    def __init__(
        self,
        channels: int,
        axis: int | str,
        heads: int = 4,
        span: int = 8,
        dropout: float = 0.0,
        chunk_elements: int = 1 << 17,
    ) -> None:
        super().__init__()
        if isinstance(axis, str):
            if axis.upper() not in AXES:
                raise ValueError(f"axis must be one of {sorted(AXES)} or 2, 3, 4, got {axis!r}")
            axis = AXES[axis.upper()]
        if axis not in (2, 3, 4):
            raise ValueError(f"axis must be 2, 3 or 4 (D, H, W of a B,C,D,H,W tensor), got {axis!r}")
        if heads < 1 or channels < 1 or channels % heads:
            raise ValueError(f"channels ({channels}) must be a positive multiple of heads ({heads})")
        if span < 1:
            raise ValueError(f"span must be >= 1, got {span}")
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be >= 1, got {chunk_elements}")
        self.channels = channels
        self.axis = int(axis)
        # (B, C, D, H, W) -> (B, other, other, L, C) and back; explicit positive permutations export to ONNX
        others = [d for d in (2, 3, 4) if d != self.axis]
        self._to_lines: list[int] = [0, others[0], others[1], self.axis, 1]
        self._from_lines: list[int] = [self._to_lines.index(d) for d in range(5)]
        self.heads = heads
        self.head_dim = channels // heads
        self.span = span
        self.chunk_elements = chunk_elements
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(channels, 3 * channels, bias=False)
        std = self.head_dim**-0.5
        self.rel_q = nn.Parameter(torch.randn(2 * span + 1, self.head_dim) * std)
        self.rel_k = nn.Parameter(torch.randn(2 * span + 1, self.head_dim) * std)
        self.rel_v = nn.Parameter(torch.randn(2 * span + 1, self.head_dim) * std)
        self.gate_qr = nn.Parameter(torch.tensor(GATE_INIT["gate_qr"]))
        self.gate_kr = nn.Parameter(torch.tensor(GATE_INIT["gate_kr"]))
        self.gate_sv = nn.Parameter(torch.tensor(GATE_INIT["gate_sv"]))
        self.gate_sve = nn.Parameter(torch.tensor(GATE_INIT["gate_sve"]))
        self.attn_drop = nn.Dropout(dropout)
        self.masked_logit = MASKED_LOGIT

    def gates(self) -> list[nn.Parameter]:
        """The four gate parameters (g_qr, g_kr, g_sv, g_sve)."""
        return [self.gate_qr, self.gate_kr, self.gate_sv, self.gate_sve]

    def extra_repr(self) -> str:
        axis = "DHW"[self.axis - 2]
        return f"channels={self.channels}, axis={axis}, heads={self.heads}, span={self.span}"

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Attend along ``axis``: (B, C, D, H, W) -> (B, C, D, H, W).

        Args:
            x: the features.
            valid: optional (B, 1, D, H, W) mask, nonzero where a voxel is scan; keys where it is zero
                get zero attention weight. None: every voxel is valid.
        """
        if x.dim() != 5 or x.shape[1] != self.channels:
            raise ValueError(
                f"GatedAxialAttention expects (B, {self.channels}, D, H, W), got {list(x.shape)}"
            )
        # channels last, then the attended axis just before them: (B, o1, o2, L, C)
        lines = x.permute(self._to_lines)
        shape = lines.shape
        length = shape[-2]
        qkv = self.qkv(lines.reshape(-1, length, self.channels))
        qkv = qkv.view(qkv.shape[0], length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # each (N, heads, L, head_dim)
        idx = relative_index(length, self.span, x.device)
        n = q.shape[0]
        # (N, 1, 1, L): True where the key is padding, broadcast over heads and queries
        masked = None if valid is None else (valid.permute(self._to_lines).reshape(n, 1, 1, length) == 0)
        per_line = self.heads * length * length
        if n * per_line <= self.chunk_elements:
            out = self._attend(q, k, v, idx, masked)
        else:
            step = max(1, self.chunk_elements // per_line)
            parts: list[torch.Tensor] = []
            for start in range(0, n, step):
                stop = min(start + step, n)
                part_mask = None if masked is None else masked[start:stop]
                parts.append(self._attend(q[start:stop], k[start:stop], v[start:stop], idx, part_mask))
            out = torch.cat(parts, 0)
        out = out.transpose(1, 2).reshape(shape)
        return out.permute(self._from_lines)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, idx: torch.Tensor,
                masked: torch.Tensor | None = None) -> torch.Tensor:
        """Gated attention of (N, heads, L, d) lines; ``idx`` is the (L, L) relative index.

        ``masked`` (N, 1, 1, L), True at padded keys, or None.
        """
        n, h, length, _ = q.shape
        # gates and 1/sqrt(d) are folded into the small tables, not applied to (N, h, L, L) tensors
        q = q * self.scale
        rel_q = self.gate_qr * self.rel_q
        rel_k = (self.gate_kr * self.scale) * self.rel_k
        rel_v = self.gate_sve * self.rel_v
        # q_i.r^q_(i-j): project q on every table row once, then pick row idx[i, j]
        qr = torch.matmul(q, rel_q.t()).gather(-1, idx.expand(n, h, length, length))
        # k_j.r^k_(i-j): rows are j here, so gather with idx transposed and swap back
        kr = torch.matmul(k, rel_k.t()).gather(-1, idx.t().expand(n, h, length, length)).transpose(-1, -2)
        logits = torch.matmul(q, k.transpose(-1, -2)) + qr + kr
        if masked is not None:
            logits = logits.masked_fill(masked, self.masked_logit)
        attn = self.attn_drop(F.softmax(logits, dim=-1))
        out_r = torch.einsum("nhij,ijd->nhid", attn, rel_v[idx])
        return out_r + self.gate_sv * torch.matmul(attn, v)


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every MedT gate parameter of ``model`` (plain, DDP- or DataParallel-wrapped).

    Training freezes them for the first epochs with ``p.requires_grad_(False)``.
    """
    gates: list[nn.Parameter] = []
    for module in model.modules():
        if isinstance(module, GatedAxialAttention):
            gates.extend(module.gates())
    return gates
