"""Painting defects into defect-free photos at their own resolution (`defect-gen paint`).

Pair i (seed + i) takes a defect-free photo and a defect of the real training split (the
model's own few-shot split, round robin over its pairs so every class gets its share), moves
the defect's mask by flips, quarter turns and a scale, and places it at a random spot of the
photo. Then a window around it (at least the model's training size, the rest of the photo
never enters the network) is denoised with known-region sampling: the mask channels are held
to the placed mask and the RGB outside the slightly dilated defect region to the photo, so
only the defect's pixels are generated. They are pasted back; every other pixel of the photo
stays as stored, and the pair is written at the photo's own size and aspect ratio.

Why this works with a few dozen real defects and a CPU: the photo supplies the global layout
(the job of the large-RF model in whole-image generation) and the small-RF model, trained on
native-resolution crops, only has to draw a defect's texture and its blend into the surface.

`strength` < 1 starts the chain from the copy-paste composite (the source defect's own pixels
pasted in) noised to t = strength * T instead of pure noise (SDEdit, Meng et al. 2022): the
model then redraws the pasted defect and its border rather than inventing one. strength = 0,
or no model at all (`copy_paste`), is plain copy-paste: the baseline a generator must beat.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from defect_gen import fsutil, logs
from defect_gen.core import guidance
from defect_gen.core.diffusion import GaussianDiffusion, space_timesteps
from defect_gen.core.masks import image_to_uint8, one_hot, resize_mask, uint8_to_image
from defect_gen.core.samplers import KnownRegion, known_region_sampler
from defect_gen.data.image_io import defect_window, read_image
from defect_gen.errors import ConfigError, DataError
from defect_gen.pipeline import pair_folder
from defect_gen.pipeline.generator import check_sampler
from defect_gen.pipeline.inputs import list_good_images


@dataclass
class Source:
    """A real defect pair at its own resolution: (H, W, 3) uint8 photo, (H, W) class indices."""

    name: str
    image: np.ndarray
    mask: np.ndarray


@dataclass
class PaintSettings:
    sample_dir: str
    num_samples: int
    good_dir: str
    seed: int = 0
    steps: int = 50  # respaced denoising steps (over the part of the chain strength selects)
    sampler: str = "ddim"  # ddim, ddpm or dpmpp_2m (samplers.SAMPLERS)
    eta: float | None = None  # DDIM noise (None: 0, deterministic); ddim only
    strength: float = 1.0  # 1: defect drawn from pure noise; < 1: SDEdit from the copy-paste composite
    scale_min: float = 0.75  # the placed defect is scaled by a factor drawn from [scale_min, scale_max]
    scale_max: float = 1.25
    margin: int = 16  # photo pixels around the defect inside the denoised window
    blend: int = 2  # defect region dilated by this many pixels: the border is redrawn too
    place: str = "random"  # random: anywhere, turned; source: where the defect was in its own photo
    # Scale the pasted pixels by the light of the surface around the new place over that around
    # the defect in its own photo, so the defect keeps its own contrast to the surface.
    match_light: bool = False
    # good: defect-free photos of good_dir; training: the training split's own photos;
    # same_class: those of them that hold a defect of the pasted defect's class
    backgrounds: str = "good"
    overwrite: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------
# Inputs


def training_sources(cfg, progress: bool = False) -> list[Source]:
    """The defect pairs of a config's few-shot training split, at native resolution, sorted by
    class then name (so a round robin over them cycles through the classes)."""
    from defect_gen.data.check import check_dataset, read_pair
    from defect_gen.data.dataset import refuse_or_skip, select_pairs

    report = check_dataset(cfg.data, progress=progress)
    refuse_or_skip(report)
    pairs = [p for p in select_pairs(report).train if p.class_pixels]
    if not pairs:
        raise DataError(f"{cfg.data.root}: the training split holds no defect image to take defects from")
    sources = []
    for p in sorted(pairs, key=lambda p: (min(p.class_pixels), p.record.image)):
        image, mask = read_pair(p.record, cfg.data, report.kind)
        sources.append(Source(os.path.relpath(p.record.image, cfg.data.root), image, mask))
    return sources


# ---------------------------------------------------------------------------------------
# Placement


@dataclass
class Placement:
    """A transformed defect at (top, left) of a photo: its mask and its source pixels (h, w)."""

    top: int
    left: int
    mask: np.ndarray
    pixels: np.ndarray


def transform_defect(src: Source, rng: np.random.Generator, scale_range: tuple[float, float],
                     fit: tuple[int, int], turn: bool = True) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The source's defect bounding box, flipped, turned (when `turn`) and scaled, shrunk to
    fit `fit` (h, w). Also returns the box's relative (top, left, bottom, right) in its own
    photo after the same flips, for placing it where it was."""
    h, w = src.mask.shape
    rows, cols = np.nonzero(src.mask)
    r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    mask, pixels = src.mask[r0:r1, c0:c1], src.image[r0:r1, c0:c1]
    if rng.random() < 0.5:  # a flip mirrors the whole photo, so the box moves with it
        mask, pixels, c0, c1 = mask[:, ::-1], pixels[:, ::-1], w - c1, w - c0
    if rng.random() < 0.5:
        mask, pixels, r0, r1 = mask[::-1], pixels[::-1], h - r1, h - r0
    turns = int(rng.integers(4)) if turn else 0
    mask, pixels = np.rot90(mask, turns), np.rot90(pixels, turns)
    scale = rng.uniform(*scale_range)
    scale = min(scale, fit[0] / mask.shape[0], fit[1] / mask.shape[1])
    size = (max(1, round(mask.shape[1] * scale)), max(1, round(mask.shape[0] * scale)))
    mask = resize_mask(np.ascontiguousarray(mask), (size[1], size[0]))  # thin cracks survive shrinking
    pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).resize(size, Image.BICUBIC))
    return mask, pixels, (r0 / h, c0 / w, r1 / h, c1 / w)


PLACES = ("random", "source")
BACKGROUNDS = ("good", "training", "same_class")
SOURCE_JITTER = 0.05  # --place source: shift by up to this share of the photo's height / width


def place(src: Source, photo_hw: tuple[int, int], rng: np.random.Generator,
          scale_range: tuple[float, float], at: str = "random") -> Placement:
    """Where the transformed defect goes: anywhere (`random`, with quarter turns), or where it
    was in its own photo, relative to the photo's size, give or take 5 % (`source`, no turns;
    a defect touching an edge of its photo stays on that edge). Defects tied to a place, such
    as breaks at a tile's edge, keep their context at `source`."""
    mask, pixels, rel = transform_defect(src, rng, scale_range, photo_hw, turn=at == "random")
    room = (photo_hw[0] - mask.shape[0], photo_hw[1] - mask.shape[1])
    if at == "source":
        spot = []
        for lo, hi, size, r in ((rel[0], rel[2], photo_hw[0], room[0]), (rel[1], rel[3], photo_hw[1], room[1])):
            jitter = rng.uniform(-SOURCE_JITTER, SOURCE_JITTER)
            spot.append(0 if lo == 0 else r if hi == 1 else int(np.clip(round((lo + jitter) * size), 0, r)))
        top, left = spot
    else:
        top, left = int(rng.integers(room[0] + 1)), int(rng.integers(room[1] + 1))
    return Placement(top, left, mask, pixels)


SURROUND = (2, 8)  # the ring of surface whose light is compared: 2 to 8 px beyond the defect
LIGHT_GAIN = (0.25, 4.0)  # the gain --match_light may apply, per channel


def surround_mean(image: np.ndarray, defect: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray | None:
    """Mean RGB (3,) of the surface in a ring around `defect` (a boolean map), leaving out
    `exclude` (other defects); None where the ring is empty (a defect filling the photo)."""
    rows, cols = np.nonzero(defect)
    if not len(rows):
        return None
    # Only the defect's box plus the ring and the exclusion's reach can matter: dilating that
    # crop instead of the whole photo gives the same ring at a fraction of the cost.
    pad = SURROUND[1] + SURROUND[0]
    box = (slice(max(rows.min() - pad, 0), rows.max() + 1 + pad), slice(max(cols.min() - pad, 0), cols.max() + 1 + pad))
    ring = dilate(defect[box], SURROUND[1]) & ~dilate(defect[box], SURROUND[0])
    if exclude is not None:
        ring &= ~dilate(exclude[box], SURROUND[0])
    if not ring.any():
        return None
    return image[box][ring].reshape(-1, image.shape[-1]).astype(np.float64).mean(axis=0)


def full_mask(p: Placement, photo_hw: tuple[int, int]) -> np.ndarray:
    out = np.zeros(photo_hw, np.uint8)
    h, w = p.mask.shape
    out[p.top:p.top + h, p.left:p.left + w] = p.mask
    return out


def copy_paste(photo: np.ndarray, p: Placement, surround: np.ndarray | None = None,
               existing: np.ndarray | None = None) -> np.ndarray:
    """The photo with the defect's own pixels pasted where its mask is set.

    `surround` (--match_light), the mean RGB around the defect in its own photo (`surround_mean`):
    the pixels are first scaled, per channel, by the mean light of the photo's surface around
    the new place over it (`existing`, the photo's own defects, left out of the ring). Photos
    of one line differ in exposure by 2x and more; pasted unscaled, a dark blowhole from a
    bright photo can come out brighter than a darker photo's surface around it, a defect no
    real photo shows."""
    out = photo.copy()
    h, w = p.mask.shape
    pixels = p.pixels
    if surround is not None:
        target = surround_mean(photo, full_mask(p, photo.shape[:2]) > 0, None if existing is None else existing > 0)
        if target is not None:
            gain = np.clip(target / np.maximum(surround, 1.0), *LIGHT_GAIN)
            pixels = np.clip(np.rint(pixels * gain), 0, 255).astype(np.uint8)
    region = out[p.top:p.top + h, p.left:p.left + w]
    region[p.mask > 0] = pixels[p.mask > 0]
    return out


def window(p: Placement, photo_hw: tuple[int, int], size: int, margin: int, multiple: int) -> tuple[slice, slice]:
    """Rows and columns of the denoised window: the defect plus `margin`, at least `size`, a
    multiple of `multiple` (the UNet's down-sampling factor), kept inside the photo."""
    spans = []
    for start, extent, limit in ((p.top, p.mask.shape[0], photo_hw[0]), (p.left, p.mask.shape[1], photo_hw[1])):
        want = max(size, extent + 2 * margin)
        want = min(-(-want // multiple) * multiple, limit // multiple * multiple)
        lo = min(max(start + extent // 2 - want // 2, 0), limit - want)
        spans.append(slice(lo, lo + want))
    return spans[0], spans[1]


def dilate(binary: np.ndarray, pixels: int) -> np.ndarray:
    if pixels <= 0:
        return binary
    t = torch.from_numpy(binary.astype(np.float32))[None, None]
    return F.max_pool2d(t, 2 * pixels + 1, stride=1, padding=pixels)[0, 0].numpy() > 0


# ---------------------------------------------------------------------------------------
# Denoising one window


def paint_window(denoise, diffusion: GaussianDiffusion, photo: np.ndarray, mask: np.ndarray, start: np.ndarray,
                 s: PaintSettings, num_defect: int, generator: torch.Generator,
                 placed: np.ndarray | None = None) -> np.ndarray:
    """The window's RGB (h, w, 3) uint8 with the defect region generated, the rest as in `photo`.

    `start` is the copy-paste composite the chain starts from when strength < 1. `placed` is the
    new defect's own mask when `mask` also holds defects the photo already had: only the new
    one is redrawn, the photo's own defects are held like the rest of it.
    """
    region = dilate((mask if placed is None else placed) > 0, s.blend)
    if placed is not None:
        region &= (mask == 0) | (placed > 0)
    index = torch.from_numpy(mask.astype(np.int64))
    values = torch.cat([uint8_to_image(photo), one_hot(index, num_defect + 1)])[None]
    keep_rgb = torch.from_numpy((~region).astype(np.float32))[None].expand(3, -1, -1)
    keep = torch.cat([keep_rgb, torch.ones(num_defect + 1, *mask.shape)])[None]
    clean = None
    if diffusion.clean_mask:  # the model was trained on clean masks: give it the mask as it is
        clean = torch.cat([torch.zeros(3, 1, 1), torch.ones(num_defect + 1, 1, 1)])[None]
    T = diffusion.num_timesteps
    t_start = T - 1 if s.strength >= 1 else int(round(s.strength * (T - 1)))
    timesteps = [t for t in space_timesteps(T, min(s.steps, T)) if t <= t_start] or [t_start]
    if s.strength >= 1:
        x = torch.randn(values.shape, generator=generator)
    else:
        x0 = values.clone()
        x0[:, :3] = uint8_to_image(start)
        ab = diffusion.alpha_bar_at(timesteps[0])
        x = ab ** 0.5 * x0 + (1 - ab) ** 0.5 * torch.randn(values.shape, generator=generator)
    sampler = known_region_sampler(s.sampler, KnownRegion(values, keep, clean))
    out = sampler(denoise, x, timesteps, diffusion, generator=generator, eta=s.eta or 0.0)
    rgb = photo.copy()
    rgb[region] = image_to_uint8(out[0, :3])[region]
    return rgb


# ---------------------------------------------------------------------------------------
# The job


@dataclass
class Painter:
    """A model (None: copy-paste only) and what it needs to paint windows."""

    denoise: object | None
    diffusion: GaussianDiffusion | None
    size: int  # smallest window: the model's training crop size
    multiple: int  # window sides are multiples of this (2 ** down-sampling levels)
    num_defect: int
    # Class-conditional models: the denoiser held to the classes of a window's mask (H, W).
    conditioned: object | None = None


def painter_from_model(loaded, device: torch.device, guidance_weight: float | None = None) -> Painter:
    """A Painter for a `sample.load_model` result. Models with attention are refused: attention
    over a whole window has no fixed receptive field and costs quadratically in its size.
    A class-conditional model paints each window conditioned on the classes of its placed mask
    (guidance_weight: classifier-free guidance, None = 1)."""
    cfg = loaded.cfg
    if cfg.model.attention_downsample:
        raise ConfigError(f"{loaded.path}: paint needs a model without attention (a small-RF config such as "
                          f"configs/magnetic_tile_small.yaml); this one attends at {cfg.model.attention_downsample}")
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    if cfg.diffusion.t_max is not None and cfg.diffusion.t_max < diffusion.num_timesteps:
        raise ConfigError(f"{loaded.path}: paint runs the whole chain (t up to {diffusion.num_timesteps - 1}) but "
                          f"this model was trained on t < {cfg.diffusion.t_max}; train it with diffusion.t_max="
                          f"{diffusion.num_timesteps} (configs/magnetic_tile_paint.yaml does)")

    weight = guidance.check_guidance(guidance_weight, [cfg.model.class_cond])

    def net(x, t, *y):
        return loaded.model(x.to(device), t.to(device), *(c.to(device) for c in y)).float().cpu()

    def conditioned(index: np.ndarray):
        masks = torch.from_numpy(np.ascontiguousarray(index)).long()[None]
        y = guidance.class_condition_of_masks(masks, cfg.num_defect)
        return diffusion.denoiser(guidance.guided(net, y, weight))

    return Painter(diffusion.denoiser(net), diffusion, cfg.model.image_size,
                   2 ** (len(cfg.model.channel_mult) - 1), cfg.num_defect,
                   conditioned if cfg.model.class_cond else None)


PLACE_TRIES = 20  # placements tried before a new defect may touch a defect the photo already has


def place_clear(src: Source, existing: np.ndarray | None, rng: np.random.Generator, s: PaintSettings) -> tuple:
    """A placement (see `place`) that keeps clear of the photo's own defects (`existing`, class
    indices, None for a defect-free photo) by more than the redrawn border. After PLACE_TRIES
    misses the last one is kept and marked as overlapping: the new defect wins where they meet."""
    if existing is None or not existing.any():
        return None, False
    hw = existing.shape
    keep_out = dilate(existing > 0, s.blend + 2)
    for _ in range(PLACE_TRIES):
        p = place(src, hw, rng, (s.scale_min, s.scale_max), s.place)
        h, w = p.mask.shape
        if not (keep_out[p.top:p.top + h, p.left:p.left + w] & (p.mask > 0)).any():
            return p, False
    return p, True


def paint_pair(painter: Painter, s: PaintSettings, photo: np.ndarray, src: Source,
               seed: int, existing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(image, class-index mask, details) of one pair, both at the photo's size. `existing` is
    the photo's own mask when it already holds defects (`--backgrounds training`): they are kept,
    in the image and in the mask, and the new defect is placed clear of them."""
    rng = np.random.default_rng(seed)
    hw = photo.shape[:2]
    p, overlap = place_clear(src, existing, rng, s)
    if p is None:  # a defect-free photo: one draw, as always (same seed, same pair)
        p = place(src, hw, rng, (s.scale_min, s.scale_max), s.place)
    surround = surround_mean(src.image, src.mask > 0) if s.match_light else None
    composite = copy_paste(photo, p, surround, existing)
    placed = full_mask(p, hw)
    mask = placed if existing is None else np.where(placed > 0, placed, existing).astype(np.uint8)
    details = {"window": None} if existing is None else {"window": None, "overlap": overlap}
    if painter.denoise is None or s.strength <= 0:
        return composite, mask, details
    rows, cols = window(p, hw, painter.size, s.margin, painter.multiple)
    generator = torch.Generator().manual_seed(seed)
    rgb = photo.copy()
    denoise = painter.denoise if painter.conditioned is None else painter.conditioned(mask[rows, cols])
    rgb[rows, cols] = paint_window(denoise, painter.diffusion, photo[rows, cols], mask[rows, cols],
                                   composite[rows, cols], s, painter.num_defect, generator,
                                   None if existing is None else placed[rows, cols])
    # A defect spanning almost the whole photo can reach past the window (whose sides are
    # multiples of the UNet's down-sampling factor): those few rows keep the real defect's
    # pixels, so the mask never labels untouched surface.
    outside = placed > 0
    outside[rows, cols] = False
    rgb[outside] = composite[outside]
    details["window"] = [rows.start, cols.start, rows.stop - rows.start, cols.stop - cols.start]
    return rgb, mask, details


def _preview_cell(photo: np.ndarray, rgb: np.ndarray, mask: np.ndarray, size: int = 96) -> tuple:
    """A size x size crop around the new defect of (result, mask, given photo) for preview.png:
    centred where the result differs from the given photo, so a training photo's own defects
    (kept in the mask with --backgrounds training / same_class) do not take the crop."""
    changed = np.any(rgb != photo, axis=-1) if rgb.shape == photo.shape else np.zeros(mask.shape, bool)
    crop = defect_window(changed if changed.any() else mask > 0, size)
    cells = rgb[crop], mask[crop], photo[crop]
    if crop[0].stop - crop[0].start < size:  # a photo smaller than a cell: enlarge, the grid needs equal cells
        cells = tuple(np.asarray(Image.fromarray(np.ascontiguousarray(c)).resize((size, size), Image.NEAREST))
                      for c in cells)
    return cells


def paint(painter: Painter, sources: list[Source], classes: list[str], s: PaintSettings, warn=None) -> int:
    """Write `s.num_samples` pairs (paired layout) into s.sample_dir; returns how many. `warn`
    takes the output folder's notes about the arguments (`pair_folder.prepare_dir`)."""
    if s.num_samples < 1:
        raise ConfigError.with_params(f"{{num_samples}} must be >= 1, got {s.num_samples}")
    if not 0.0 <= s.strength <= 1.0:
        raise ConfigError.with_params(f"{{strength}} must be in [0, 1] (1 = draw the defect from noise), "
                                      f"got {s.strength}")
    if s.steps < 1 or s.margin < 0:
        raise ConfigError.with_params(f"{{steps}} must be >= 1 and {{margin}} >= 0, got {s.steps} and {s.margin}")
    check_sampler(s.sampler or "", s.eta)  # no default sampler here: paint always names one
    if s.place not in PLACES:
        raise ConfigError.with_params(f"{{place}} must be one of {', '.join(PLACES)}, got {{value}}",
                                      value=repr(s.place))
    if s.backgrounds not in BACKGROUNDS:
        raise ConfigError.with_params(f"{{backgrounds}} must be one of {', '.join(BACKGROUNDS)}, got {{value}}",
                                      value=repr(s.backgrounds))
    if s.match_light and painter.denoise is not None and s.strength >= 1:
        raise ConfigError.with_params("{match_light} scales the pasted real defect: it needs {copy_paste} or "
                                      "{strength} below 1 (at 1 the model draws the defect from noise)")
    if not 0 < s.scale_min <= s.scale_max:
        raise ConfigError.with_params(f"{{scale}} must be two factors 0 < min <= max, got {s.scale_min}, "
                                      f"{s.scale_max}")
    goods = list_good_images(s.good_dir) if s.backgrounds == "good" else sources
    with fsutil.lock_dir(s.sample_dir, "painting run", "sample_dir"):  # one run per folder
        pair_folder.prepare_dir(s.sample_dir, "paired", s.overwrite, warn=warn)
        _write_pairs(painter, sources, goods, classes, s)
    return s.num_samples


def background_choices(src: Source, photos: list[Source], same_class: bool) -> list[Source]:
    """The training photos `src`'s defect may go into: never its own photo; with
    `same_class` only photos that already hold a defect of one of its classes, so that
    the pair keeps the tile type, lighting and texture that go with the class in real
    photos (falls back to every other photo where no such photo exists)."""
    others = [g for g in photos if g.name != src.name] or photos
    if not same_class:
        return others
    mine = set(np.unique(src.mask).tolist()) - {0}
    same = [g for g in others if mine & set(np.unique(g.mask).tolist())]
    return same or others


def pairs(painter: Painter, sources: list[Source], goods: list, s: PaintSettings, desc: str = "painting"):
    """Pair i (seed + i): a seeded pick of the photos, the i-th source (round robin), painted.
    `goods` are paths of defect-free photos, or Sources: the training split's own photos
    (`--backgrounds training`), whose defects are kept; a defect never goes back into its own
    photo. Yields (i, photo, its path or name, source, image, mask, details); `paint` and the
    evaluation's copy-paste baseline both draw from here, so the same settings give the same pairs."""
    for i in logs.iterate(range(s.num_samples), desc=desc, unit="pair", enabled=s.progress):
        seed, src = s.seed + i, sources[i % len(sources)]
        pick = np.random.default_rng([seed, 1])
        if goods and isinstance(goods[0], Source):
            others = background_choices(src, goods, s.backgrounds == "same_class")
            background = others[int(pick.integers(len(others)))]
            photo, good, existing = background.image, background.name, background.mask
        else:
            good = goods[int(pick.integers(len(goods)))]
            photo, existing = read_image(good), None
        yield (i, photo, good, src, *paint_pair(painter, s, photo, src, seed, existing))


def _write_pairs(painter: Painter, sources: list[Source], goods: list[str], classes: list[str],
                 s: PaintSettings, log=print) -> None:
    start, previews = time.time(), []
    with pair_folder.ManifestWriter(s.sample_dir) as manifest:
        for i, photo, good, src, rgb, mask, details in pairs(painter, sources, goods, s):
            name = f"paint_{i:05d}"
            row = pair_folder.write_pair(s.sample_dir, "paired", name, rgb, mask, classes)
            row.update(seed=s.seed + i, good=good, source=src.name, **details)
            if s.backgrounds != "good":  # a training photo: the evaluation's leak check reads both names
                row["background"] = good
            manifest.append(row)
            if len(previews) < 12:
                previews.append(_preview_cell(photo, rgb, mask))
    pair_folder.save_preview(s.sample_dir, previews)
    # Written last and atomically: its presence says the folder is complete.
    fsutil.atomic_write_json(os.path.join(s.sample_dir, "paint_settings.json"), asdict(s))
    log(f"{s.num_samples} pairs in {s.sample_dir} ({time.time() - start:.0f} s; "
        f"{'copy-paste' if painter.denoise is None else f'strength {s.strength:g}, {s.steps} steps'}); "
        f"preview: {os.path.join(s.sample_dir, pair_folder.PREVIEW)}")
