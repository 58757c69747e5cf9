"""Masks: conversions between class-index maps, one-hot channels and pictures.

Conventions used throughout defect_gen:

* an image tensor is float in [-1, 1], shape (B, 3, H, W) or (3, H, W);
* a mask is a class-index map (uint8 / int64), 0 = background, 1..K = defect classes;
* the model's data tensor stacks RGB with a one-hot mask, (B, 3 + K + 1, H, W), with the
  mask channels in {0, 1} and the background channel first.

Class colours used by `colorize` and `overlay` (the `PALETTE`; classes beyond its length
cycle through the non-background colours, so class 21 reuses class 1's red):

=====  ===========  ===============
index  colour       RGB
=====  ===========  ===============
0      background   (0, 0, 0)
1      red          (230, 25, 75)
2      green        (60, 180, 75)
3      blue         (0, 130, 200)
4      yellow       (255, 225, 25)
5      orange       (245, 130, 48)
6      purple       (145, 30, 180)
7      cyan         (70, 240, 240)
8      magenta      (240, 50, 230)
=====  ===========  ===============

The colours are Sasha Trubetskoy's "20 simple, distinct colours", chosen because they stay
distinguishable from each other and from grey industrial surfaces.
"""

import numpy as np
import torch

from defect_gen.core.postprocess import connected_components
from defect_gen.errors import DataError

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # 0 background
    (230, 25, 75),  # 1 red
    (60, 180, 75),  # 2 green
    (0, 130, 200),  # 3 blue
    (255, 225, 25),  # 4 yellow
    (245, 130, 48),  # 5 orange
    (145, 30, 180),  # 6 purple
    (70, 240, 240),  # 7 cyan
    (240, 50, 230),  # 8 magenta
    (210, 245, 60),  # 9 lime
    (250, 190, 212),  # 10 pink
    (0, 128, 128),  # 11 teal
    (220, 190, 255),  # 12 lavender
    (170, 110, 40),  # 13 brown
    (255, 250, 200),  # 14 beige
    (128, 0, 0),  # 15 maroon
    (170, 255, 195),  # 16 mint
    (128, 128, 0),  # 17 olive
    (255, 215, 180),  # 18 apricot
    (0, 0, 128),  # 19 navy
    (128, 128, 128),  # 20 grey
)


def palette_color(class_index: int) -> tuple[int, int, int]:
    """RGB colour of one class; classes past the palette cycle through colours 1..20."""
    if class_index <= 0:
        return PALETTE[0]
    return PALETTE[1 + (class_index - 1) % (len(PALETTE) - 1)]


# ---------------------------------------------------------------------------------------
# Tensor conversions (model side)
# ---------------------------------------------------------------------------------------


def one_hot(index: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class-index map (H, W) or (B, H, W) -> float32 one-hot (C, H, W) or (B, C, H, W).

    Raises DataError when a value lies outside 0..num_classes-1, because that means a mask
    file holds a class the configuration does not know about.
    """
    index = torch.as_tensor(index)
    if index.dtype.is_floating_point or index.dtype == torch.bool or index.dtype.is_complex:
        raise TypeError(f"one_hot expects an integer class-index tensor, got {index.dtype}")
    if index.dim() not in (2, 3):
        raise ValueError(f"one_hot expects shape (H, W) or (B, H, W), got {tuple(index.shape)}")
    index = index.long()
    if index.numel() > 0:
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= num_classes:
            bad = hi if hi >= num_classes else lo
            raise DataError(
                f"mask contains class value {bad}; expected values in 0..{num_classes - 1} "
                f"({num_classes} classes including background)"
            )
    channels = torch.nn.functional.one_hot(index, num_classes)  # (..., H, W, C)
    return channels.movedim(-1, -3).to(torch.float32).contiguous()


def stack_image_mask(image: torch.Tensor, index: torch.Tensor, num_defect: int) -> torch.Tensor:
    """Image (B, 3, H, W) + index (B, H, W) -> data tensor (B, 3 + num_defect + 1, H, W).

    Unbatched inputs (3, H, W) + (H, W) give (3 + num_defect + 1, H, W).
    """
    if image.dim() != index.dim() + 1 or image.shape[-3] != 3:
        raise ValueError(
            f"stack_image_mask expects image (B,3,H,W)/(3,H,W) with index (B,H,W)/(H,W), "
            f"got {tuple(image.shape)} and {tuple(index.shape)}"
        )
    if image.shape[:-3] + image.shape[-2:] != index.shape:
        raise ValueError(
            f"image {tuple(image.shape)} and mask {tuple(index.shape)} differ in size"
        )
    mask = one_hot(index, num_defect + 1).to(device=image.device, dtype=image.dtype)
    return torch.cat([image, mask], dim=-3)


def split_image_mask(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Data tensor (B, C, H, W) or (C, H, W) -> (RGB channels, mask channels)."""
    return x[..., :3, :, :], x[..., 3:, :, :]


def mask_to_index(mask_channels: torch.Tensor) -> torch.Tensor:
    """One-hot or soft mask channels (..., C, H, W) -> int64 class index (..., H, W).

    An argmax rather than a threshold, so generated (noisy, soft) masks always give exactly
    one class per pixel.
    """
    return mask_channels.argmax(dim=-3).to(torch.int64)


def image_to_uint8(image: torch.Tensor) -> np.ndarray:
    """Tensor (3, H, W) or (B, 3, H, W) in [-1, 1] -> uint8 HxWx3 (or BxHxWx3), clamped."""
    pixels = ((image.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return pixels.to(torch.uint8).movedim(-3, -1).numpy()


def uint8_to_image(array: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 array -> float32 tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"uint8_to_image expects uint8 HxWx3, got {array.dtype} {array.shape}")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(torch.float32)
    return (tensor / 127.5 - 1.0).permute(2, 0, 1).contiguous()


# ---------------------------------------------------------------------------------------
# Pictures and statistics (human side)
# ---------------------------------------------------------------------------------------


def _as_index_array(index) -> np.ndarray:
    """Torch or numpy class-index map -> int64 numpy array."""
    if isinstance(index, torch.Tensor):
        index = index.detach().cpu().numpy()
    index = np.asarray(index)
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"expected an integer class-index map, got {index.dtype}")
    return index.astype(np.int64)


def _palette_lut(max_class: int) -> np.ndarray:
    """(max_class + 1, 3) uint8 lookup table of class colours."""
    return np.array([palette_color(c) for c in range(max_class + 1)], dtype=np.uint8)


def colorize(index) -> np.ndarray:
    """Class-index map HxW -> uint8 HxWx3 picture in the palette colours."""
    index = _as_index_array(index)
    if index.size and index.min() < 0:
        raise ValueError(f"class-index map holds negative value {int(index.min())}")
    lut = _palette_lut(int(index.max()) if index.size else 0)
    return lut[index]


def _inner_outline(index: np.ndarray) -> np.ndarray:
    """Defect pixels with a 4-neighbour of another class (or the image edge).

    The outline lies *inside* each region so background pixels are never touched.
    """
    padded = np.pad(index, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    return differs & (index > 0)


def overlay(image_uint8: np.ndarray, index, alpha: float = 0.5) -> np.ndarray:
    """Blend defect pixels with their class colour; background stays untouched.

    Each defect region also gets a 1-pixel outline in the full class colour so defects only a
    few pixels wide remain visible (a thin scratch becomes entirely outline).
    """
    image = np.asarray(image_uint8)
    index = _as_index_array(index)
    if image.shape[:2] != index.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"overlay: image {image.shape} does not match mask {index.shape}")
    colours = colorize(index).astype(np.float32)
    blended = image.astype(np.float32) * (1.0 - alpha) + colours * alpha
    out = image.copy()
    defect = index > 0
    out[defect] = np.clip(np.round(blended[defect]), 0, 255).astype(np.uint8)
    outline = _inner_outline(index)
    out[outline] = colours[outline].astype(np.uint8)
    return out


def class_pixel_counts(index, num_defect: int) -> dict[int, int]:
    """Defect pixels per class 1..num_defect, only for classes present (for manifests)."""
    index = _as_index_array(index)
    if index.size and (index.min() < 0 or index.max() > num_defect):
        bad = int(index.min()) if index.min() < 0 else int(index.max())
        raise DataError(f"mask contains class value {bad}; expected values in 0..{num_defect}")
    counts = np.bincount(index.ravel(), minlength=num_defect + 1)
    return {c: int(counts[c]) for c in range(1, num_defect + 1) if counts[c] > 0}


# ---------------------------------------------------------------------------------------
# Resizing class-index masks
# ---------------------------------------------------------------------------------------

# A defect class takes an output pixel when it covers at least this share of the pixel's area.
MASK_RESIZE_THRESHOLD = 0.25


def _area_average(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Exact area average of `values` along `axis` onto `size` cells (size <= the axis length).

    Each output cell covers an interval of n / size input pixels; its mean is the difference
    of the piecewise-linear running integral at the interval's ends, so any ratio (not only
    integer ones) is averaged exactly, in O(n).
    """
    values = np.moveaxis(values, axis, 0)
    n = values.shape[0]
    integral = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])
    edges = np.arange(size + 1) * (n / size)
    whole = np.minimum(np.floor(edges).astype(np.int64), n - 1)
    part = (edges - whole).reshape((-1,) + (1,) * (values.ndim - 1))
    at_edges = integral[whole] + part * values[whole]
    return np.moveaxis((at_edges[1:] - at_edges[:-1]) / (n / size), 0, axis)


def _grow_within(seed: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of `allowed` 8-connected to `seed`: the components of `allowed` that hold a seed pixel."""
    labels, _ = connected_components(allowed)
    hit = np.unique(labels[seed & allowed])
    return np.isin(labels, hit[hit > 0])


def _keep_vanished_regions(out: np.ndarray, fractions: dict[int, np.ndarray]) -> None:
    """Give each region that the threshold wiped out its most-covered output pixels.

    A region is an 8-connected blob of output pixels that class c touches at all; when none
    of them got class c (a crack thinner than a quarter of an output pixel), those still
    background where c covers at least half the blob's peak share become c, so the defect
    survives as a thin line or a dot instead of vanishing.
    """
    for cls, share in fractions.items():
        touched = share > 0
        # regions holding a pixel of cls are fine; only the rest (usually a few pixels) is labelled
        lost = touched & ~_grow_within(out == cls, touched)
        if not lost.any():
            continue
        labels, count = connected_components(lost)
        peaks = np.zeros(count + 1)
        np.maximum.at(peaks, labels[lost], share[lost])
        out[lost & (share >= 0.5 * peaks[labels]) & (out == 0)] = cls


def resize_mask(index, size_hw: tuple[int, int], threshold: float = MASK_RESIZE_THRESHOLD) -> np.ndarray:
    """Class-index map (H, W) -> (h, w), keeping thin and small defects (uint8 out).

    Along each axis that shrinks, every class's share of each output pixel's area is
    computed exactly (a box filter of the one-hot channels); a defect class takes the pixel
    when its share is >= `threshold` (the largest share wins; background otherwise), and a
    region that would still vanish keeps its most-covered pixels. Nearest neighbour would
    drop a 2 px crack at a 10x reduction. Axes that grow use nearest neighbour, which keeps
    every class exactly; enlarging alone is therefore plain nearest.
    """
    index = _as_index_array(index)
    if index.ndim != 2:
        raise ValueError(f"resize_mask expects a (H, W) class-index map, got shape {index.shape}")
    height, width = (int(s) for s in size_hw)
    if height < 1 or width < 1:
        raise ValueError(f"resize_mask needs a positive size, got {height}x{width}")
    if index.shape == (height, width):
        return index.astype(np.uint8)
    small_h, small_w = min(height, index.shape[0]), min(width, index.shape[1])
    out = index
    if (small_h, small_w) != index.shape:
        fractions = {}
        present = np.bincount(index.ravel()) if index.size else np.zeros(1, np.int64)  # O(N), unlike unique
        for cls in np.nonzero(present)[0].tolist():
            if cls > 0:
                share = _area_average((index == cls).astype(np.float64), small_h, 0)
                fractions[cls] = _area_average(share, small_w, 1)
        out = np.zeros((small_h, small_w), dtype=np.int64)
        if fractions:
            classes = list(fractions)
            stacked = np.stack([fractions[c] for c in classes])
            best = stacked.argmax(axis=0)
            # a tiny tolerance so a share of exactly 1/4 is not lost to rounding
            won = np.take_along_axis(stacked, best[None], 0)[0] >= threshold - 1e-9
            out[won] = np.asarray(classes)[best[won]]
            _keep_vanished_regions(out, fractions)
    if out.shape != (height, width):  # nearest neighbour along the growing axes
        # the source pixel under each output pixel's centre, as PIL's NEAREST picks it
        rows = ((2 * np.arange(height) + 1) * out.shape[0]) // (2 * height)
        cols = ((2 * np.arange(width) + 1) * out.shape[1]) // (2 * width)
        out = out[rows][:, cols]
    return out.astype(np.uint8)
