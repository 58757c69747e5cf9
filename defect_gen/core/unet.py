"""The denoising UNet (guided-diffusion style) and its receptive field.

One class serves both of Defect-Gen's networks; the config picks the shape:
- large receptive field: deep `channel_mult`, attention at coarse resolutions, a middle
  block. It sees the whole image and learns global layout.
- small receptive field: shallow `channel_mult`, no attention, no middle block (its first
  decoder block takes the deepest feature alone). Each output pixel sees only a patch, so
  with few training images it learns local texture instead of memorising whole images.

Module names follow guided-diffusion (`time_embed`, `input_blocks`, `middle_block`,
`output_blocks`, `out`), so the published implementation's state_dicts load with
strict=True. The network knows nothing of diffusion: it maps (x_t, t) to a tensor of the
same shape, optionally given the classes a pair should hold (`class_cond`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from defect_gen.config import ModelConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def class_condition(present: torch.Tensor, given: torch.Tensor | None = None) -> torch.Tensor:
    """The class-conditional UNet's input y: (B, K + 1) = [multi-hot of the K classes | given].

    `present` (B, K) says which defect classes the pair holds; `given` (B,) says whether the
    row is conditioned at all (default: all rows). A dropped row (given = 0) is all zeros.
    The extra "given" bit is there because an all-zero multi-hot already means something:
    "no defect" (a defect-free pair, data.good_share). Without it, "unconditional" and "a
    clean surface" would be the same input and guidance towards a clean pair would be lost.
    """
    present = present.float()
    given = torch.ones(present.shape[0], device=present.device) if given is None else given.float()
    return torch.cat([present * given[:, None], given[:, None]], dim=1)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the activation dtype (stable under bf16/fp16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second argument."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Stride-2 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class ResBlock(TimestepBlock):
    """Two 3x3 convolutions with the timestep injected between them, plus a skip path.

    With `use_scale_shift_norm` the embedding modulates the second GroupNorm as
    norm(h) * (1 + scale) + shift (FiLM); otherwise it is added to the features.
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int, dropout: float,
                 use_scale_shift_norm: bool, use_checkpoint: bool):
        super().__init__()
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        zero_module(nn.Conv2d(out_channels, out_channels, 3, padding=1)))
        if out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels, with a residual connection.

    The qkv projection is a 1x1 Conv1d and heads are split before q, k, v (guided-diffusion's
    "legacy" order), which is what the published checkpoints were trained with. The attention
    itself goes through scaled_dot_product_attention (flash / memory-efficient kernels).
    """

    def __init__(self, channels: int, num_heads: int, num_head_channels: int, use_checkpoint: bool):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = zero_module(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))  # (B, 3C, L), laid out per head as [q | k | v]
        qkv = qkv.reshape(b, self.num_heads, 3 * c // self.num_heads, -1).transpose(-1, -2)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, heads, L, head_ch)
        h = F.scaled_dot_product_attention(q, k, v)
        h = h.transpose(-1, -2).reshape(b, c, -1)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """guided-diffusion's UNet: encoder, optional middle block, decoder with skip concatenation.

    `attention_downsample` lists the down-sampling rates (1, 2, 4, ...) that get an
    attention block after each ResBlock. Without a middle block the deepest encoder output
    *is* the current feature map, so the first decoder block takes it alone rather than
    concatenated with itself (as the published small-RF network does).
    """

    def __init__(self, in_channels: int, out_channels: int, model_channels: int, channel_mult,
                 num_res_blocks: int, attention_downsample=(), num_heads: int = 4,
                 num_head_channels: int = -1, middle_block: bool = True,
                 use_scale_shift_norm: bool = True, dropout: float = 0.0, use_checkpoint: bool = False,
                 num_heads_upsample: int = -1, num_classes: int | None = None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.has_middle = middle_block
        emb_ch = 4 * model_channels
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        # Class conditioning (num_classes = K): y = [multi-hot | given] (see class_condition)
        # through one Linear, added to the timestep embedding. An unconditional row (all zeros)
        # gets the bias alone: a learned "null" embedding. Zero-initialised, so the network
        # starts out as the unconditional one. Absent when unconditional: the state_dict keeps
        # the published names.
        self.num_classes = num_classes
        if num_classes is not None:
            self.class_embed = zero_module(nn.Linear(num_classes + 1, emb_ch))

        def res(cin, cout):
            return ResBlock(cin, emb_ch, cout, dropout, use_scale_shift_norm, use_checkpoint)

        def attn(ch, heads=num_heads):
            return AttentionBlock(ch, heads, num_head_channels, use_checkpoint)

        # As in guided-diffusion, the decoder's attention has its own head count (-1: num_heads);
        # it matters only when num_head_channels is -1.
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample

        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [res(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_downsample:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch), res(ch, ch)) if middle_block else None

        self.output_blocks = nn.ModuleList()
        first = True
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                skip = skip_chans.pop()
                cin = ch if (first and not middle_block) else ch + skip
                first = False
                layers = [res(cin, model_channels * mult)]
                ch = model_channels * mult
                if ds in attention_downsample:
                    layers.append(attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W) noisy sample; t: (B,) timesteps; y: (B, K + 1) class condition
        (class_condition; None = unconditional), for class-conditional networks only.
        Returns (B, out_channels, H, W)."""
        emb = self.time_embed(timestep_embedding(t, self.model_channels).to(x.dtype))
        if self.num_classes is not None:
            if y is None:
                y = torch.zeros(x.shape[0], self.num_classes + 1, device=x.device)
            emb = emb + self.class_embed(y.to(emb.dtype))
        elif y is not None:
            raise ValueError("this UNet is unconditional (model.class_cond false): it takes no class condition")
        hs, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            hs.append(h)
        if self.middle_block is not None:
            h = self.middle_block(h, emb)
        for i, block in enumerate(self.output_blocks):
            skip = hs.pop()
            # Without a middle block, h is the deepest skip itself: take it once.
            h = block(h if (i == 0 and self.middle_block is None) else torch.cat([h, skip], dim=1), emb)
        return self.out(h).type(x.dtype)


def num_channels(num_defect: int) -> int:
    """RGB plus one-hot mask channels (background first)."""
    return 3 + num_defect + 1


def build_unet(cfg: ModelConfig, num_defect: int) -> UNetModel:
    ch = num_channels(num_defect)
    return UNetModel(
        in_channels=ch, out_channels=ch, model_channels=cfg.model_channels, channel_mult=cfg.channel_mult,
        num_res_blocks=cfg.num_res_blocks, attention_downsample=cfg.attention_downsample,
        num_heads=cfg.num_heads, num_head_channels=cfg.num_head_channels, middle_block=cfg.middle_block,
        use_scale_shift_norm=cfg.use_scale_shift_norm, dropout=cfg.dropout, use_checkpoint=cfg.use_checkpoint,
        num_heads_upsample=cfg.num_heads_upsample, num_classes=num_defect if cfg.class_cond else None,
    )


# ---------------------------------------------------------------------------------------
# Receptive field by layer arithmetic


@dataclass
class ReceptiveField:
    """Theoretical receptive field of an output pixel.

    `conv_pixels` is the widest region the convolutions connect to any one output pixel, over
    every path (skips included; see `_conv_extent`). Attention
    (at any used rate, or in the middle block) makes every output depend on every input: then
    `is_global` is True and the effective field is the whole image.
    """

    conv_pixels: int
    is_global: bool
    image_size: int

    @property
    def pixels(self) -> int:
        return self.image_size if self.is_global else min(self.conv_pixels, self.image_size)

    @property
    def share(self) -> float:
        """Side of the field as a share of the image side (1.0 = the whole image)."""
        return self.pixels / self.image_size


# How each layer widens the input interval [a, b] (at its own resolution) that an output
# interval depends on: a 3x3 conv by one pixel each side, a ResBlock by two (its 1x1 skip is
# narrower), a stride-2 3x3 conv with padding 1 maps q to 2q-1..2q+1, and Upsample (nearest x2,
# then a 3x3 conv) maps fine pixel p to coarse pixel p // 2 after its conv.
_BACK = {"conv": lambda a, b: (a - 1, b + 1), "res": lambda a, b: (a - 2, b + 2),
         "down": lambda a, b: (2 * a - 1, 2 * b + 1), "up": lambda a, b: ((a - 1) // 2, (b + 1) // 2)}


def _conv_extent(cfg: ModelConfig, p: int) -> int:
    """Width of the input region the convolutions connect to output pixel p (unbounded image).

    Follows every path back, the skips included: each decoder block adds the encoder feature
    it concatenates. With floors and strides the region is not centred on p, so shallower
    paths can reach past the deepest one on one side, and the width depends on p's position
    modulo the total down-sampling.
    """
    levels, n = len(cfg.channel_mult), cfg.num_res_blocks
    encoder = ["conv"]  # input_blocks, as the layer that sets each one's field
    for level in range(levels):
        encoder += ["res"] * n + (["down"] if level != levels - 1 else [])
    upsamples = [bool(level) and i == n for level in reversed(range(levels)) for i in range(n + 1)]

    def through_encoder(i: int, iv: tuple[int, int]) -> tuple[int, int]:
        for kind in reversed(encoder[: i + 1]):
            iv = _BACK[kind](*iv)
        return iv

    iv, parts = _BACK["conv"](p, p), []  # the output conv
    for j in reversed(range(len(upsamples))):  # output_blocks, last first
        iv = _BACK["res"](*(_BACK["up"](*iv) if upsamples[j] else iv))
        parts.append(through_encoder(len(encoder) - 1 - j, iv))  # the skip it concatenates
    if cfg.middle_block:
        parts.append(through_encoder(len(encoder) - 1, _BACK["res"](*_BACK["res"](*iv))))
    return max(hi for _, hi in parts) - min(lo for lo, _ in parts) + 1


def receptive_field(cfg: ModelConfig) -> ReceptiveField:
    """The largest convolutional field of any output pixel, and whether attention makes it global.

    The pattern of widths repeats every 2^(levels-1) pixels, so those positions are enough.
    """
    levels = len(cfg.channel_mult)
    conv = max(_conv_extent(cfg, p) for p in range(2 ** (levels - 1)))
    used_ds = {2**level for level in range(levels)}
    has_attention = cfg.middle_block or bool(used_ds & set(cfg.attention_downsample))
    return ReceptiveField(conv_pixels=conv, is_global=has_attention, image_size=cfg.image_size)
