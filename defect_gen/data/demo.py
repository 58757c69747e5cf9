"""The built-in procedural demo dataset: brushed-metal surfaces with three defect classes.

It exists so the whole pipeline (train, sample, preview) can be tried without any data and
so a *tiny* diffusion model trained for minutes on a CPU has something learnable: defects
are simple, high-contrast and drawn the same way every time.

Layout written by `make_demo_data` (the paired layout the dataset loader reads)::

    out_dir/images/demo_0000.png   RGB surface with defects
    out_dir/masks/demo_0000.png    uint8 class index: 0 background, 1 scratch, 2 stain, 3 hole
    out_dir/classes.txt            one class name per line, in class-index order

What is drawn (sizes are for 64 px images and scale with `image_size`):

* surface - brushed metal: grey base tone 110..170 with a slight tint, a gentle linear
  brightness gradient, fine streaks along one axis and light grain;
* scratch (1) - a 1-2 px wide straight or slightly curved line, 30-80 % of the image long,
  much darker (or, one time in five, much brighter) than the surface;
* stain (2) - an irregular soft-edged brown blob 8-20 px across; its mask is exactly the
  pixels whose stain opacity exceeds 0.5 (the fainter fringe is painted but not masked);
* hole (3) - a round, nearly black pit of radius 2-5 px (the mask) with a slightly brighter
  one-pixel rim outside it (not in the mask).

Each image holds 1-3 defects, drawn stain -> scratch -> hole, so a later defect wins where
they overlap, in pixels and in mask alike. Unmasked decoration (stain fringe, hole rim) is
only painted on background pixels, so every mask pixel of class c shows defect c.
Everything comes from one `np.random.default_rng(seed)`: a seed gives byte-identical files.
"""

import math

import blobfile as bf
import numpy as np

from defect_gen.config import MAX_IMAGE_SIZE
from defect_gen.core.masks import class_pixel_counts
from defect_gen.data.image_io import write_png
from defect_gen.errors import DataError

CLASSES = ("scratch", "stain", "hole")
SCRATCH, STAIN, HOLE = 1, 2, 3

# Defect sizes in this module are specified for images of this size.
REFERENCE_SIZE = 64
MIN_IMAGE_SIZE = 16


# ---------------------------------------------------------------------------------------
# Noise and geometry helpers
# ---------------------------------------------------------------------------------------


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) weights that linearly interpolate n_in evenly spread knots to n_out."""
    if n_in == 1:
        return np.ones((n_out, 1))
    pos = np.linspace(0.0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
    frac = pos - lo
    weights = np.zeros((n_out, n_in))
    weights[np.arange(n_out), lo] = 1.0 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


def _smooth_noise(rng: np.random.Generator, size: int, knots_y: int, knots_x: int) -> np.ndarray:
    """size x size noise, roughly unit scale, bilinearly interpolated from a knot grid.

    Many knots along one axis and few along the other gives streaks along the second axis.
    """
    knots = rng.standard_normal((knots_y, knots_x))
    return _interp_matrix(size, knots_y) @ knots @ _interp_matrix(size, knots_x).T


def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) coordinates of pixel centres, as float arrays of shape (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size]
    return yy.astype(np.float64), xx.astype(np.float64)


def _distance_to_polyline(points: np.ndarray, size: int) -> np.ndarray:
    """Distance from every pixel centre to a polyline given as (N, 2) (x, y) points."""
    yy, xx = _pixel_grid(size)
    pix = np.stack([xx.ravel(), yy.ravel()], axis=-1)[:, None, :]  # (P, 1, 2)
    start, seg = points[:-1][None], (points[1:] - points[:-1])[None]  # (1, S, 2)
    seg_len2 = np.maximum((seg**2).sum(-1), 1e-12)
    t = np.clip(((pix - start) * seg).sum(-1) / seg_len2, 0.0, 1.0)
    closest = start + t[..., None] * seg
    return np.sqrt(((pix - closest) ** 2).sum(-1)).min(axis=1).reshape(size, size)


# ---------------------------------------------------------------------------------------
# Drawing: the surface and the three defect classes
# ---------------------------------------------------------------------------------------


def _draw_surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """Brushed-metal surface as float HxWx3 in 0..255."""
    base = rng.uniform(110.0, 170.0)
    tint = 1.0 + rng.uniform(-0.04, 0.04, size=3)
    yy, xx = _pixel_grid(size)
    angle = rng.uniform(0.0, 2.0 * math.pi)
    ramp = (math.cos(angle) * xx + math.sin(angle) * yy) / (size - 1)  # spans about 1
    gradient = rng.uniform(10.0, 25.0) * ramp
    # Fine streaks: one knot per row (or column), only a few along the brushing direction.
    streaks = 4.0 * _smooth_noise(rng, size, size, 3) + 3.0 * _smooth_noise(rng, size, size // 4, 2)
    if rng.random() < 0.5:
        streaks = streaks.T  # vertical brushing
    grain = rng.normal(0.0, 2.5, size=(size, size))
    grey = base + gradient - gradient.mean() + streaks + grain
    return grey[..., None] * tint


def _draw_scratch(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Paint a thin, long, straight or slightly curved line of class SCRATCH in place."""
    size = mask.shape[0]
    scale = size / REFERENCE_SIZE
    length = rng.uniform(0.3, 0.8) * size
    angle = rng.uniform(0.0, math.pi)
    half = 0.5 * length * np.array([math.cos(angle), math.sin(angle)])
    margin = 0.05 * size
    # Keep both end points inside the image so the visible length is the drawn length.
    low, high = margin + np.abs(half), size - 1 - margin - np.abs(half)
    centre = rng.uniform(low, high)
    normal = np.array([-half[1], half[0]]) / (np.linalg.norm(half) + 1e-12)
    control = centre + rng.uniform(-0.15, 0.15) * length * normal  # bend of the curve
    t = np.linspace(0.0, 1.0, 24)[:, None]
    p0, p2 = centre - half, centre + half
    points = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * control + t**2 * p2  # quadratic Bezier
    half_width = max(0.5, 0.5 * rng.choice([1.0, 2.0]) * scale)
    region = _distance_to_polyline(points, size) <= half_width
    if rng.random() < 0.8:
        painted = canvas * rng.uniform(0.3, 0.5)  # dark groove
    else:
        painted = canvas + (255.0 - canvas) * rng.uniform(0.55, 0.75)  # bright burr
    canvas[region] = painted[region]
    mask[region] = SCRATCH


def _stain_opacity(rng: np.random.Generator, size: int) -> np.ndarray:
    """Opacity map in [0, 1] of one irregular soft blob (union of a few soft ellipses)."""
    scale = size / REFERENCE_SIZE
    radius = 0.5 * rng.uniform(8.0, 20.0) * scale
    centre = rng.uniform(radius + 1.0, size - 2.0 - radius, size=2)
    yy, xx = _pixel_grid(size)
    opacity = np.zeros((size, size))
    for _ in range(rng.integers(2, 5)):
        offset_r, offset_a = 0.4 * radius * math.sqrt(rng.random()), rng.uniform(0, 2 * math.pi)
        cx = centre[0] + offset_r * math.cos(offset_a)
        cy = centre[1] + offset_r * math.sin(offset_a)
        axis_a = radius * rng.uniform(0.5, 0.8)
        axis_b = axis_a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0.0, math.pi)
        u = ((xx - cx) * math.cos(theta) + (yy - cy) * math.sin(theta)) / axis_a
        v = (-(xx - cx) * math.sin(theta) + (yy - cy) * math.cos(theta)) / axis_b
        r = np.sqrt(u**2 + v**2)  # 1 on the ellipse outline
        opacity = np.maximum(opacity, np.clip((1.3 - r) / 0.6, 0.0, 1.0))  # 0.5 at r = 1
    wobble = _smooth_noise(rng, size, 6, 6)  # makes the outline irregular
    return np.clip(opacity * (1.0 + 0.25 * wobble), 0.0, 1.0)


def _draw_stain(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Paint a brown soft-edged blob; mask = pixels with opacity above 0.5."""
    opacity = _stain_opacity(rng, mask.shape[0])
    strength = rng.uniform(0.8, 0.95)
    brown = np.array([0.72, 0.55, 0.38]) * rng.uniform(0.85, 1.0)  # multiplies the surface
    alpha = (strength * opacity)[..., None]
    painted = canvas * (1.0 - alpha * (1.0 - brown))
    region = opacity > 0.5
    fringe = (opacity > 0.0) & ~region & (mask == 0)  # faint edge, background only
    canvas[region | fringe] = painted[region | fringe]
    mask[region] = STAIN


def _draw_hole(rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray) -> None:
    """Paint a dark round pit (the mask) with a brighter one-pixel rim outside it."""
    size = mask.shape[0]
    radius = max(1.0, rng.uniform(2.0, 5.0) * size / REFERENCE_SIZE)
    centre = rng.uniform(radius + 2.0, size - 3.0 - radius, size=2)
    yy, xx = _pixel_grid(size)
    dist = np.hypot(xx - centre[0], yy - centre[1])
    disc = dist <= radius
    rim = (dist > radius) & (dist <= radius + 1.0) & (mask == 0)
    depth = rng.uniform(8.0, 22.0)
    pit = depth + 30.0 * (dist / radius) ** 2  # nearly black centre, dark grey edge
    canvas[disc] = pit[disc][:, None]
    canvas[rim] = np.minimum(canvas[rim] * 1.25 + 10.0, 255.0)
    mask[disc] = HOLE


_DRAW = {SCRATCH: _draw_scratch, STAIN: _draw_stain, HOLE: _draw_hole}
# Large diffuse stains first, holes last, so small sharp defects stay whole.
_DRAW_ORDER = (STAIN, SCRATCH, HOLE)


def _draw_sample(
    rng: np.random.Generator, size: int, primary: int
) -> tuple[np.ndarray, np.ndarray]:
    """One image (uint8 HxWx3) and its mask (uint8 HxW) containing `primary` and 0-2 more."""
    extra = rng.choice([0, 1, 2], p=[0.4, 0.45, 0.15])
    defects = [primary] + [int(c) for c in rng.integers(1, len(CLASSES) + 1, size=extra)]
    defects.sort(key=_DRAW_ORDER.index)
    canvas = _draw_surface(rng, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    for cls in defects:
        _DRAW[cls](rng, canvas, mask)
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return image, mask


# ---------------------------------------------------------------------------------------
# Writing the dataset
# ---------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: str, overwrite: bool) -> None:
    """Refuse to write over existing images unless asked to; then remove stale demo files."""
    images_dir = bf.join(out_dir, "images")
    if not (bf.isdir(images_dir) and bf.listdir(images_dir)):
        return
    if not overwrite:
        raise DataError(
            f"{images_dir}: already contains files; expected a new or empty folder "
            "(pass overwrite=True to replace the demo data)"
        )
    # Remove old demo files so a smaller new set does not mix with the previous one.
    for sub in ("images", "masks"):
        folder = bf.join(out_dir, sub)
        if bf.isdir(folder):
            for name in bf.listdir(folder):
                if name.startswith("demo_") and name.endswith(".png"):
                    bf.remove(bf.join(folder, name))


def make_demo_data(
    out_dir, num_images: int = 48, image_size: int = 64, seed: int = 0, overwrite: bool = False
) -> dict:
    """Write the demo dataset to `out_dir` and return a summary.

    The summary has `num_images`, `image_size`, `seed`, `classes`, `images_per_class`
    (class name -> number of images containing it) and `defect_pixels_per_class`
    (class name -> total mask pixels), computed from the masks as written.
    """
    out_dir = str(out_dir)
    if num_images < 1:
        raise DataError(f"{out_dir}: num_images must be at least 1, got {num_images}")
    if image_size < MIN_IMAGE_SIZE:
        raise DataError(
            f"{out_dir}: image_size must be at least {MIN_IMAGE_SIZE}, got {image_size}"
        )
    if image_size > MAX_IMAGE_SIZE:  # 60000 px would need 10 GB per image before failing
        raise DataError(f"{out_dir}: image_size must be at most {MAX_IMAGE_SIZE} (the largest model.image_size), "
                        f"got {image_size}")
    _prepare_out_dir(out_dir, overwrite)
    rng = np.random.default_rng(seed)
    # Every class is the first defect of a third of the images, so each is well represented.
    primaries = np.tile(np.arange(1, len(CLASSES) + 1), math.ceil(num_images / len(CLASSES)))
    primaries = rng.permutation(primaries[:num_images])
    digits = max(4, len(str(num_images - 1)))
    image_counts = dict.fromkeys(CLASSES, 0)
    pixel_totals = dict.fromkeys(CLASSES, 0)
    for i, primary in enumerate(primaries):
        image, mask = _draw_sample(rng, image_size, int(primary))
        name = f"demo_{i:0{digits}d}.png"
        write_png(bf.join(out_dir, "images", name), image)
        write_png(bf.join(out_dir, "masks", name), mask)
        for cls, count in class_pixel_counts(mask, len(CLASSES)).items():
            image_counts[CLASSES[cls - 1]] += 1
            pixel_totals[CLASSES[cls - 1]] += count
    with bf.BlobFile(bf.join(out_dir, "classes.txt"), "wb") as f:
        f.write(("\n".join(CLASSES) + "\n").encode("utf-8"))
    return {
        "num_images": num_images,
        "image_size": image_size,
        "seed": seed,
        "classes": list(CLASSES),
        "images_per_class": image_counts,
        "defect_pixels_per_class": pixel_totals,
    }
