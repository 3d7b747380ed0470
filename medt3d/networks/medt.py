"""MedT3D: convolutional stem, gated axial attention encoder (+ LoGo local branch), U-shaped decoder.

Layout for ``stem_stride = 2**k`` and ``S = len(channels)`` attention stages::

    x -> conv s2 (level 1) -> ... -> conv s2 (level k)                       (3x3x3, norm, act)
           |  skip                     |
           |                           stage 0: gated axial blocks (+ local branch, LoGo)
           |                           |  skip
           |                           stage s: conv s2 -> gated axial blocks
           |                           |
           + <- refine <- up ... <- up +   (up: x2 transposed-conv equivalent; refine: 3x3x3 conv)
           |
    logits = trilinear x2 (pointwise(level 1)) + pointwise(x)

Attention runs only at ``1/stem_stride`` resolution and below, where it is cheap. The
full-resolution path holds no feature maps: the logits are computed at level 1 and upsampled
trilinearly, plus a pointwise term of the input itself. Trilinear upsampling treats every
full-resolution voxel alike; a learned x2 upsampling here (each level-1 voxel predicting its
2x2x2 children) printed a period-2 grid into the masks, because no convolution at full resolution
follows it to smooth it out.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from medt3d.errors import InputError
from medt3d.networks.blocks import GatedAxialBlock, GatedAxialBlocks, LocalBranch
from medt3d.networks.layers import ConvNormAct, PointwiseConv, VoxelShuffleUp, zero_invalid
from medt3d.networks.registry import MEDT3D_PRESETS, MedT3DPreset

__all__ = ["MedT3D", "input_multiple", "masked_upsample", "preset_sizes"]


def preset_sizes(preset: str, **overrides) -> MedT3DPreset:
    """The :data:`MEDT3D_PRESETS` entry ``preset`` with every size override that is not None applied.

    Raises:
        ValueError: unknown preset.
    """
    if preset not in MEDT3D_PRESETS:
        raise InputError(f"unknown MedT3D preset {preset!r}; choose one of {sorted(MEDT3D_PRESETS)}")
    sizes = {k: v for k, v in overrides.items() if k in MedT3DPreset.__dataclass_fields__ and v is not None}
    return replace(MEDT3D_PRESETS[preset], **sizes)


def input_multiple(stem_stride: int, stages: int) -> int:
    """The multiple MedT3D pads every input edge to: the stem stride times the downsampling between stages."""
    return stem_stride * 2 ** (stages - 1)


class EncoderStage(nn.Module):
    """Optional strided conv, then gated axial blocks; the local branch (LoGo) is added to their output."""

    def __init__(self, down: ConvNormAct | None, blocks: GatedAxialBlocks, local: LocalBranch | None) -> None:
        super().__init__()
        self.down = down
        self.blocks = blocks
        self.local = local

    def forward(self, x: torch.Tensor, valid_in: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid_in`` and ``valid``: the masks of scan voxels at the input's and this stage's resolution."""
        if self.down is not None:
            x = self.down(zero_invalid(x, valid_in), valid)
        y = self.blocks(x, valid)
        local = self.local
        if local is not None:
            y = 0.5 * (y + local(x, valid))  # LoGo: mean of the global and local branches (both residual on x)
        return y


class UpLevel(nn.Module):
    """Upsample x2 (transposed-conv equivalent), add the skip, refine.

    Resize-then-convolve (pointwise, trilinear x2, then the 3x3x3 refinement) was tried here against
    checkerboard artefacts; on real CT it fitted the training scan far more slowly in the same time
    (docs/benchmarks.md), and the refinement convolution already smooths this level's output.
    """

    def __init__(self, cin: int, cout: int, refine: bool, norm: str = "instance") -> None:
        super().__init__()
        self.out_channels = cout
        self.up = VoxelShuffleUp(cin, cout)
        self.refine: ConvNormAct | None = ConvNormAct(cout, cout, norm=norm) if refine else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid``: the mask of scan voxels at the output's resolution."""
        y = self.up(x) + skip
        if self.refine is not None:
            return self.refine(zero_invalid(y, valid), valid)
        return y


def masked_upsample(y: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Trilinear x2 upsampling that takes values from valid voxels only (normalised by the upsampled mask).

    At the edge of the valid region it repeats the edge value, as plain trilinear upsampling does at
    the edge of a tensor, so the logits there do not depend on the padding beyond.
    """
    if valid is None:
        return F.interpolate(y, scale_factor=2.0, mode="trilinear", align_corners=False)
    num = F.interpolate(y * valid, scale_factor=2.0, mode="trilinear", align_corners=False)
    den = F.interpolate(valid, scale_factor=2.0, mode="trilinear", align_corners=False)
    return num / den.clamp_min(1e-6)


def _check_sizes(in_channels: int, out_channels: int, channels: tuple[int, ...], blocks: tuple[int, ...], heads: int,
                 span: int, stem_stride: int, logo: bool, local_patch: int, full_res_channels: int) -> None:
    """Refuse sizes :class:`MedT3D` cannot be built with, naming the value."""
    if in_channels < 1 or out_channels < 1:
        raise InputError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}; fix network.* in the config")
    if not channels or len(channels) != len(blocks):
        raise InputError(
            f"channels {list(channels)} and blocks {list(blocks)} need one entry per stage (same length, >= 1); fix network.* in the config"
        )
    for c in channels:
        if c < 1 or c % heads:
            raise InputError(f"every width in channels {list(channels)} must be a multiple of heads={heads}; fix network.* in the config")
    if any(b < 0 for b in blocks):
        raise InputError(f"blocks must be >= 0, got {list(blocks)}; fix network.* in the config")
    if stem_stride < 1 or stem_stride & (stem_stride - 1):
        raise InputError(f"stem_stride must be a power of two (1, 2, 4, 8...), got {stem_stride}; fix network.* in the config")
    if span < 1:
        raise InputError(f"span must be >= 1, got {span}; fix network.* in the config")
    if logo and local_patch < 2:
        raise InputError(f"local_patch must be >= 2 when logo is on, got {local_patch}; fix network.* in the config")
    if full_res_channels < 0 or (full_res_channels and stem_stride < 2):
        raise InputError(
            f"full_res_channels must be 0, or > 0 with stem_stride >= 2, got {full_res_channels} "
            f"(stem_stride {stem_stride}); fix network.* in the config"
        )


def _stem_widths(channels: tuple[int, ...], stem_stride: int, stem_channels: tuple[int, ...]) -> list[int]:
    """``widths[i]``: channels at stem level i (stride 2**i); level 0 is the input (0 here), the last has channels[0]."""
    levels = stem_stride.bit_length() - 1
    if stem_channels and (len(stem_channels) != levels - 1 or min(stem_channels) < 1):
        raise InputError(f"stem_channels {list(stem_channels)} needs {max(0, levels - 1)} positive widths "
                         f"(one per stem level below stem_stride {stem_stride}); fix network.* in the config")
    derived = [max(8, channels[0] >> (levels - i)) for i in range(1, levels)]
    return [0, *(stem_channels or derived), channels[0]]


class MedT3D(nn.Module):
    """3-D Medical Transformer for segmentation: (B, in_channels, X, Y, Z) -> logits (B, out_channels, X, Y, Z).

    Any spatial size is accepted: the input is zero-padded at the end of each axis to a
    multiple of :attr:`size_multiple` and the logits are cropped back.

    Args:
        in_channels: image channels.
        out_channels: classes (logits, no softmax).
        channels: width of each attention stage.
        blocks: gated axial blocks per stage (0 allowed).
        heads: attention heads.
        span: clip of relative distances.
        stem_stride: stem downsampling before attention, a power of two (1 = attention at full resolution).
        logo: add the local branch to stage 0.
        local_patch: the local branch's sub-volume edge, at stage-0 resolution.
        dropout: dropout inside the attention blocks.
        mlp_ratio: MLP width relative to the block width.
        local_blocks: gated axial blocks of the local branch.
        full_res_channels: width of the optional full-resolution path (0: none).
        stem_channels: widths of the stem levels 1..k-1 (strides 2 .. stem_stride/2); empty: derived
            from ``channels[0]``, halved per level (at least 8).
        input_head: add a pointwise term of the input itself to the logits.
        deep_supervision: auxiliary logits heads on this many coarser decoder levels (0: none). In
            training mode the forward pass then returns the main logits and each auxiliary head's,
            upsampled to the input size, concatenated along the channels (``out_channels`` each,
            main first), for :class:`monai.losses.DeepSupervisionLoss`; in eval mode only the main logits.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...] | list[int] = MEDT3D_PRESETS["small"].channels,
        blocks: tuple[int, ...] | list[int] = MEDT3D_PRESETS["small"].blocks,
        heads: int = MEDT3D_PRESETS["small"].heads,
        span: int = MEDT3D_PRESETS["small"].span,
        stem_stride: int = MEDT3D_PRESETS["small"].stem_stride,
        logo: bool = True,
        local_patch: int = MEDT3D_PRESETS["small"].local_patch,
        dropout: float = 0.0,
        mlp_ratio: float = 2.0,
        local_blocks: int = 1,
        full_res_channels: int = 0,
        stem_channels: tuple[int, ...] | list[int] = (),
        input_head: bool = True,
        deep_supervision: int = 0,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        channels, blocks = tuple(channels), tuple(blocks)
        _check_sizes(in_channels, out_channels, channels, blocks, heads, span, stem_stride, logo, local_patch,
                     full_res_channels)

        self.in_channels = in_channels
        self.out_channels = out_channels
        levels = stem_stride.bit_length() - 1
        #: inputs are padded to a multiple of this (stem stride times the stage downsampling)
        self.size_multiple = input_multiple(stem_stride, len(channels))
        widths = _stem_widths(channels, stem_stride, tuple(stem_channels))

        self.embed = PointwiseConv(in_channels, channels[0]) if levels == 0 else nn.Identity()
        self.stem = nn.ModuleList(
            [ConvNormAct(in_channels if i == 1 else widths[i - 1], widths[i], stride=2, norm=norm)
             for i in range(1, levels + 1)]
        )

        def make_blocks(c: int, n: int) -> GatedAxialBlocks:
            return GatedAxialBlocks(*[GatedAxialBlock(c, heads, span, mlp_ratio, dropout) for _ in range(n)])

        stages = []
        for s, (c, n) in enumerate(zip(channels, blocks)):
            down = None if s == 0 else ConvNormAct(channels[s - 1], c, stride=2, norm=norm)
            local = None
            if s == 0 and logo:
                local = LocalBranch(c, heads, span, local_patch, local_blocks, mlp_ratio, dropout)
            stages.append(EncoderStage(down, make_blocks(c, n), local))
        self.stages = nn.ModuleList(stages)

        ups = [UpLevel(channels[s], channels[s - 1], refine=True, norm=norm) for s in range(len(channels) - 1, 0, -1)]
        ups += [UpLevel(widths[i], widths[i - 1], refine=True, norm=norm) for i in range(levels, 1, -1)]
        self.ups = nn.ModuleList(ups)
        if deep_supervision < 0 or deep_supervision > max(0, len(ups) - 1):
            raise InputError(f"deep_supervision must be 0..{max(0, len(ups) - 1)} for this network (one head per "
                             f"decoder level above the last), got {deep_supervision}; fix network.* in the config")
        self.deep_supervision = deep_supervision
        # aux head j sits after decoder level len(ups)-2-j (the coarser ones further from the output)
        self.aux_heads = nn.ModuleList([PointwiseConv(ups[len(ups) - 2 - j].out_channels, out_channels)
                                        for j in range(deep_supervision)])
        # logits: computed at stem level 1 and upsampled trilinearly (no grid), plus a pointwise term
        # of the input itself; no full-resolution feature maps unless the optional full-resolution
        # path is on (upsampled decoder + 3x3x3 conv of the input, refined, then logits)
        self.full_res_channels = full_res_channels
        self.upsample_final = levels > 0
        self.final = PointwiseConv(channels[0] if levels == 0 else widths[1], full_res_channels or out_channels)
        self.full_stem: ConvNormAct | None = None
        self.full_refine: ConvNormAct | None = None
        self.full_head: nn.Module = nn.Identity()
        if full_res_channels:
            self.full_stem = ConvNormAct(in_channels, full_res_channels, norm=norm)
            self.full_refine = ConvNormAct(full_res_channels, full_res_channels, norm=norm)
            self.full_head = PointwiseConv(full_res_channels, out_channels)
        self.input_head: nn.Module | None = PointwiseConv(in_channels, out_channels) if input_head else None

    @classmethod
    def from_preset(cls, preset: str, in_channels: int, out_channels: int, **overrides) -> MedT3D:
        """Build from a :data:`MEDT3D_PRESETS` entry; keyword overrides that are None keep the preset's value.

        Overrides: channels, blocks, heads, span, stem_stride, local_patch, full_res_channels,
        stem_channels (sizes),
        logo, dropout, mlp_ratio, input_head, deep_supervision, norm.
        """
        size = preset_sizes(preset, **overrides)
        if len(size.channels) != len(size.blocks):
            raise InputError(
                f"network.channels {list(size.channels)} and network.blocks {list(size.blocks)} "
                f"(preset {preset!r} fills what is null) must have one entry per stage; set both lists to the same length"
            )
        extra = {k: v for k, v in overrides.items() if k not in MedT3DPreset.__dataclass_fields__ and v is not None}
        return cls(in_channels, out_channels, **vars(size), **extra)

    def _validity(self, x: torch.Tensor, valid: torch.Tensor | None, pads: list[int]) -> torch.Tensor | None:
        """The (B, 1, X', Y', Z') 0/1 mask of scan voxels on the padded input, or None when every voxel is scan."""
        padded = pads[0] > 0 or pads[1] > 0 or pads[2] > 0
        if valid is not None:
            if valid.dim() != 5 or valid.shape[1] != 1 or valid.shape[0] != x.shape[0] or valid.shape[2:] != x.shape[2:]:
                raise ValueError(f"MedT3D's valid mask must be (B, 1, X, Y, Z) like the input {list(x.shape)}, "
                                 f"got {list(valid.shape)}")
            if not torch.jit.is_tracing() and not padded and not bool((valid == 0).any()):
                return None  # nothing is padding: the plain (faster) path gives the same result
            mask = (valid != 0).to(x.dtype)
        elif padded or torch.jit.is_tracing():  # traced: keep the mask in the graph for other sizes
            mask = torch.ones_like(x[:, :1])
        else:
            return None
        return F.pad(mask, [0, pads[2], 0, pads[1], 0, pads[0]])

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of ``x`` (B, in_channels, X, Y, Z).

        Args:
            x: the image.
            valid: optional (B, 1, X, Y, Z) mask, nonzero where a voxel is scan and zero where it is padding
                (a sliding window's or a training crop's). Padded voxels get no attention weight and no
                part in the instance-norm statistics, so the logits of the scan's voxels do not depend on
                how much padding surrounds them. None: every voxel is scan. The padding this network
                adds itself, up to :attr:`size_multiple`, is always masked.
        """
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"MedT3D expects (B, {self.in_channels}, X, Y, Z), got {list(x.shape)}")
        size_x, size_y, size_z = x.shape[2], x.shape[3], x.shape[4]
        m = self.size_multiple
        pads = [(m - size_x % m) % m, (m - size_y % m) % m, (m - size_z % m) % m]
        mask = self._validity(x, valid, pads)
        if torch.jit.is_tracing() or pads[0] > 0 or pads[1] > 0 or pads[2] > 0:  # traced: keep sizes dynamic
            x = F.pad(x, [0, pads[2], 0, pads[1], 0, pads[0]])
        masks: list[torch.Tensor | None] = [None for _ in range(len(self.stem) + len(self.stages))]
        if mask is not None:
            x = zero_invalid(x, mask)
            current = mask
            masks[0] = current
            for i in range(1, len(masks)):  # a coarse voxel is scan when any of its 8 children is
                current = F.max_pool3d(current, kernel_size=2, stride=2)
                masks[i] = current
        y = self.embed(x)
        skips: list[torch.Tensor] = []
        for i, conv in enumerate(self.stem):
            if i > 0:
                skips.append(y)  # stem levels 1..k-1 are skips; level k feeds stage 0
            y = conv(y if i == 0 else zero_invalid(y, masks[i]), masks[i + 1])  # level 0: x, zeroed above
        level = len(self.stem)
        for s, stage in enumerate(self.stages):
            if s > 0:
                level += 1
            y = stage(y, masks[max(level - 1, 0)], masks[level])
            skips.append(y)
        y = skips.pop()
        supervise = self.training and self.deep_supervision > 0
        levels: list[torch.Tensor] = []
        for i, up in enumerate(self.ups):
            level -= 1
            y = up(y, skips[len(skips) - 1 - i], masks[level])
            if supervise:
                levels.append(y)
        y = self.final(y)
        if self.upsample_final:
            y = masked_upsample(y, masks[1])
        if self.full_stem is not None and self.full_refine is not None:
            y = y + self.full_stem(x, masks[0])
            y = self.full_head(self.full_refine(zero_invalid(y, masks[0]), masks[0]))
        if self.input_head is not None:
            y = y + self.input_head(x)
        if supervise:
            size = [int(n) for n in y.shape[2:]]
            outputs = [y]
            for j, head in enumerate(self.aux_heads):
                outputs.append(F.interpolate(head(levels[len(levels) - 2 - j]), size=size, mode="trilinear",
                                             align_corners=False))
            y = torch.cat(outputs, dim=1)
        return y[:, :, :size_x, :size_y, :size_z]
