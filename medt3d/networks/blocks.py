"""Building blocks of MedT3D: the gated axial block and the LoGo local branch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medt3d.networks.attention import GatedAxialAttention
from medt3d.networks.layers import channels_first, channels_last

__all__ = ["ChannelLayerNorm", "GatedAxialBlock", "GatedAxialBlocks", "LocalBranch", "PointwiseMLP"]


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each voxel of a (B, C, D, H, W) tensor.

    Per-voxel statistics (not GroupNorm/BatchNorm over space or batch) keep the block's
    output at a voxel independent of voxels it does not attend to, and work with batch 1.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channels_first(F.layer_norm(channels_last(x), self.normalized_shape, self.weight, self.bias, self.eps))


class PointwiseMLP(nn.Module):
    """Per-voxel two-layer MLP (1x1x1 convolutions, run as linear layers on channels-last data)."""

    def __init__(self, channels: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(self.drop(F.gelu(self.fc1(channels_last(x)))))
        return channels_first(self.drop(y))


class GatedAxialBlock(nn.Module):
    """Pre-norm transformer block: gated axial attention along D, then H, then W, and an MLP.

    ``x + proj(attn_W(attn_H(attn_D(norm(x)))))`` followed by ``x + mlp(norm(x))``. The
    attention output is gated and goes straight to the linear projection, with no norm in
    between that would cancel the gates. One block reaches every voxel: D mixes along
    D-lines, H then spreads over the (D, H) plane, W over the volume.

    Args:
        channels: width; divisible by ``heads``.
        heads: attention heads.
        span: clip of relative distances in each attention.
        mlp_ratio: hidden width of the MLP relative to ``channels``.
        dropout: dropout on attention weights, projection and MLP.
    """

    def __init__(self, channels: int, heads: int, span: int, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(channels)
        self.attn_d = GatedAxialAttention(channels, "D", heads=heads, span=span, dropout=dropout)
        self.attn_h = GatedAxialAttention(channels, "H", heads=heads, span=span, dropout=dropout)
        self.attn_w = GatedAxialAttention(channels, "W", heads=heads, span=span, dropout=dropout)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(dropout)
        self.norm2 = ChannelLayerNorm(channels)
        self.mlp = PointwiseMLP(channels, max(1, int(round(channels * mlp_ratio))), dropout)
        # ViT-style initialisation: small linear weights, so each block starts close to the identity
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def attend(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """The attention residual branch alone (D, then H, then W), without the MLP.

        ``valid``: optional (B, 1, D, H, W) mask of the voxels that are scan (see :class:`GatedAxialAttention`).
        """
        y = self.attn_w(self.attn_h(self.attn_d(self.norm1(x), valid), valid), valid)
        return channels_first(self.proj_drop(self.proj(channels_last(y))))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attend(x, valid)
        return x + self.mlp(self.norm2(x))


class GatedAxialBlocks(nn.Sequential):
    """A sequence of :class:`GatedAxialBlock` that passes the validity mask to each one."""

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        for block in self:
            x = block(x, valid)
        return x


class LocalBranch(nn.Module):
    """MedT's local branch: gated axial blocks on non-overlapping sub-volumes of ``patch``^3.

    The sub-volumes are folded into the batch dimension (one reshape, no Python loop over
    patches); sizes that are not multiples of ``patch`` are zero-padded and cropped back.

    Args:
        channels: width.
        heads: attention heads.
        span: clip of relative distances (at most ``patch - 1`` is useful).
        patch: sub-volume edge, in voxels of the input.
        blocks: gated axial blocks applied to each sub-volume.
        mlp_ratio: MLP width relative to ``channels``.
        dropout: dropout inside the blocks.
    """

    def __init__(
        self, channels: int, heads: int, span: int, patch: int, blocks: int = 1, mlp_ratio: float = 2.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if patch < 1:
            raise ValueError(f"local patch must be >= 1, got {patch}")
        if blocks < 1:
            raise ValueError(f"local branch needs at least one block, got {blocks}")
        self.patch = patch
        span = max(1, min(span, patch - 1))
        self.blocks = GatedAxialBlocks(
            *[GatedAxialBlock(channels, heads, span, mlp_ratio, dropout) for _ in range(blocks)]
        )

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Blocks on each ``patch``^3 sub-volume; ``valid`` (B, 1, D, H, W) masks padded keys in each."""
        b, c, d, h, w = x.shape
        p = self.patch
        pad_d, pad_h, pad_w = (p - d % p) % p, (p - h % p) % p, (p - w % p) % p
        if torch.jit.is_tracing() or pad_d > 0 or pad_h > 0 or pad_w > 0:  # traced: keep sizes dynamic
            x = F.pad(x, [0, pad_w, 0, pad_h, 0, pad_d])
            if valid is not None:
                valid = F.pad(valid, [0, pad_w, 0, pad_h, 0, pad_d])
        nd, nh, nw = (d + pad_d) // p, (h + pad_h) // p, (w + pad_w) // p
        t = x.reshape(b, c, nd, p, nh, p, nw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        sub_valid: torch.Tensor | None = None
        if valid is not None:
            sub_valid = valid.reshape(b, 1, nd, p, nh, p, nw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
            sub_valid = sub_valid.reshape(b * nd * nh * nw, 1, p, p, p)
        t = self.blocks(t.reshape(b * nd * nh * nw, c, p, p, p), sub_valid)
        t = t.reshape(b, nd, nh, nw, c, p, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
        t = t.reshape(b, c, nd * p, nh * p, nw * p)
        return t[:, :, :d, :h, :w]
