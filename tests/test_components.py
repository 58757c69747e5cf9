"""Connected components through scipy.ndimage.label match the pure-Python flood fills they replaced."""

import numpy as np
import pytest

from defect_gen.core.masks import _grow_within
from defect_gen.core.postprocess import connected_components


def _flood_fill(binary):
    """The depth-first 8-connected flood fill postprocess.py used before scipy (labels in raster order)."""
    h, w = binary.shape
    labels, count = np.zeros((h, w), np.int32), 0
    for y0, x0 in zip(*np.nonzero(binary)):
        if labels[y0, x0]:
            continue
        count += 1
        labels[y0, x0] = count
        stack = [(y0, x0)]
        while stack:
            y, x = stack.pop()
            for ny in range(max(0, y - 1), min(h, y + 2)):
                for nx in range(max(0, x - 1), min(w, x + 2)):
                    if binary[ny, nx] and not labels[ny, nx]:
                        labels[ny, nx] = count
                        stack.append((ny, nx))
    return labels, count


def _dilate_within(seed, allowed):
    """masks.py's former _grow_within: dilate the seed one pixel at a time, inside `allowed`."""
    reached = seed & allowed
    while True:
        padded = np.pad(reached, 1)
        grown = np.zeros_like(reached)
        for dy in range(3):
            for dx in range(3):
                grown |= padded[dy:dy + reached.shape[0], dx:dx + reached.shape[1]]
        grown &= allowed
        if np.array_equal(grown, reached):
            return reached
        reached = grown


@pytest.mark.parametrize("density", [0.05, 0.3, 0.55, 0.9])
def test_same_labels_as_the_flood_fill_on_random_masks(density):
    rng = np.random.default_rng(int(density * 100))
    for shape in [(1, 1), (1, 17), (13, 1), (32, 32), (40, 27)]:
        binary = rng.random(shape) < density
        labels, count = connected_components(binary)
        expected, expected_count = _flood_fill(binary)
        assert count == expected_count and labels.dtype == np.int32
        assert np.array_equal(labels, expected)  # the same numbering too, not just the same partition
        seed = binary & (rng.random(shape) < 0.1)
        allowed = rng.random(shape) < density
        assert np.array_equal(_grow_within(seed, allowed), _dilate_within(seed, allowed))


def test_diagonal_pixels_are_one_component():
    assert connected_components(np.eye(5, dtype=bool))[1] == 1
    assert connected_components(np.zeros((4, 4), bool))[1] == 0
