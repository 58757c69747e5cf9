"""Post-processing of generated masks: drop specks, decide which pairs are kept.

The argmax over soft mask channels can leave a few isolated pixels of some class, which a
segmentation model would learn as real defects. `drop_small_regions` sets every connected
region (8-connected, per class) smaller than `--min-defect-pixels` to background; `accept`
then says whether a pair is written: never with an empty mask unless `--keep-empty`, and
only with every class `--classes` asks for.
"""

from __future__ import annotations

import numpy as np

# 8-connectivity: diagonal neighbours join, so a one-pixel-wide diagonal crack is one region.
EIGHT = np.ones((3, 3), dtype=bool)


def connected_components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean HxW array: (labels 1..n with 0 outside, n).

    Labels are numbered in raster order of each component's first pixel.
    """
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(binary, dtype=bool), structure=EIGHT)
    return labels.astype(np.int32, copy=False), int(count)


def drop_small_regions(index: np.ndarray, min_pixels: int) -> np.ndarray:
    """A copy of the class-index map with each class's regions under `min_pixels` set to 0."""
    out = np.array(index, copy=True)
    if min_pixels <= 1:
        return out
    for cls in np.unique(out):
        if cls == 0:
            continue
        labels, count = connected_components(out == cls)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = np.nonzero(sizes < min_pixels)[0]
        small = small[small > 0]
        if small.size:
            out[np.isin(labels, small)] = 0
    return out


def accept(index: np.ndarray, required: list[int], keep_empty: bool) -> bool:
    """Whether a pair with this mask is written: it holds every required class, and some defect
    unless empty masks are wanted."""
    present = set(np.unique(index).tolist())
    if not keep_empty and present <= {0}:
        return False
    return all(c in present for c in required)
