"""Post-processing of generated masks: drop specks, decide which pairs are kept.

The argmax over soft mask channels can leave a few isolated pixels of some class, which a
segmentation model would learn as real defects. `drop_small_regions` sets every connected
region (8-connected, per class) smaller than `--min-defect-pixels` to background; `accept`
then says whether a pair is written: never with an empty mask unless `--keep-empty`, and
only with every class `--classes` asks for.
"""

from __future__ import annotations

import numpy as np


def connected_components(binary: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean HxW array: (labels 1..n with 0 outside, n).

    A depth-first flood fill over the foreground pixels only, so its cost follows the defect
    area, which is small in defect masks (no scipy needed).
    """
    grid = np.asarray(binary, dtype=bool)
    h, w = grid.shape
    cells = grid.tolist()  # Python lists: far faster than numpy scalar indexing in this loop
    labels = [[0] * w for _ in range(h)]
    count = 0
    for y0, x0 in zip(*np.nonzero(grid)):
        if labels[y0][x0]:
            continue
        count += 1
        labels[y0][x0] = count
        stack = [(int(y0), int(x0))]
        while stack:
            y, x = stack.pop()
            for ny in (y - 1, y, y + 1):
                if not 0 <= ny < h:
                    continue
                for nx in (x - 1, x, x + 1):
                    if 0 <= nx < w and cells[ny][nx] and not labels[ny][nx]:
                        labels[ny][nx] = count
                        stack.append((ny, nx))
    return np.asarray(labels, dtype=np.int32).reshape(h, w), count


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
