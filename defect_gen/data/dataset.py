"""The training set: check the data, pick the few-shot subset, decode it once, serve batches.

`DefectDataset` first runs the same check as `defect-gen data check` and refuses bad data
with the same messages (or, with `data.skip_bad`, leaves the bad files out and lists them).
It then selects the pairs to train on (`select_pairs`: a seeded few-shot subset, or all),
and holds them in memory as uint8 tensors at `data.load_size` (default: the model's
image size). Few-shot sets are tens of images, so an epoch does no file I/O or decoding,
and uint8 storage keeps even a few thousand 256 px pairs within a few GB; a DataLoader
with worker processes would only add start-up cost here. Batches are built on the fly:
a random `image_size` crop (when `load_size` is larger), the one-hot mask (background
first), then flips / 90-degree rotations applied identically to image and mask.

The pairs chosen are written by `write_selection` (TrainLoop: WORK_DIR/selected_files.json),
with the ones left over, so an experiment can be repeated (`data.selection_file`) and the
rest kept for testing.
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, field

import blobfile as bf
import numpy as np
import torch
from PIL import Image

from defect_gen import distributed, logs
from defect_gen.config import DataConfig
from defect_gen.core.masks import resize_mask, stack_image_mask
from defect_gen.data.check import PairStats, Report, check_dataset, read_pair
from defect_gen.data.layouts import Problem
from defect_gen.errors import DataError

# ---------------------------------------------------------------------------------------
# Few-shot selection


@dataclass
class Selection:
    train: list[PairStats]  # the pairs trained on, sorted by image path
    rest: list[PairStats]  # good pairs not trained on (kept for testing)
    how: str  # one line saying how `train` was chosen
    skipped: list[Problem] = field(default_factory=list)  # bad files left out with data.skip_bad


def _pick_per_class(pairs: list[PairStats], n: int, num_defect: int, rng: random.Random) -> list[PairStats]:
    """About `n` images per class, rarest class first.

    Images are shuffled once; each class, from the rarest, takes images containing it until
    it has `n` (counting images an earlier class already took), so a multi-class image
    counts for all its classes and rare classes get their share first.
    """
    order = list(pairs)
    rng.shuffle(order)
    by_class = {c: [p for p in order if c in p.class_pixels] for c in range(1, num_defect + 1)}
    have = [0] * (num_defect + 1)
    chosen: dict[str, PairStats] = {}
    for c in sorted(by_class, key=lambda c: (len(by_class[c]), c)):
        for pair in by_class[c]:
            if have[c] >= n:
                break
            if pair.record.image not in chosen:
                chosen[pair.record.image] = pair
                for k in pair.classes:
                    have[k] += 1
    return list(chosen.values())


def relative(path: str, root: str) -> str:
    """`path` relative to the dataset root (selection files stay valid when the data moves)."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def _from_file(report: Report, path: str) -> list[PairStats]:
    """The pairs named in an earlier run's selected_files.json."""
    try:
        with bf.BlobFile(path, "rb") as f:
            wanted = [row["image"] for row in json.loads(f.read())["selected"]]
    except FileNotFoundError:
        raise DataError(f"data.selection_file {path}: file not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"data.selection_file {path}: not a selected_files.json "
                        f"({type(exc).__name__}: {exc})") from None
    by_path = {relative(p.record.image, report.cfg.root): p for p in report.pairs}
    missing = [w for w in wanted if w not in by_path]
    if missing:
        raise DataError(f"data.selection_file {path} lists {len(missing)} images that are not good pairs under "
                        f"{report.cfg.root}, e.g. {missing[0]}")
    return [by_path[w] for w in wanted]


def select_pairs(report: Report) -> Selection:
    """The pairs to train on: data.selection_file, or a seeded few-shot pick, or all defect images.

    Defect-free images (empty masks, good folders) join only as `data.good_share` of the
    training set, drawn with the same seed.
    """
    cfg = report.cfg
    rng = random.Random(cfg.selection_seed)
    if cfg.selection_file:
        train = _from_file(report, cfg.selection_file)
        how = f"{len(train)} pairs listed in {cfg.selection_file}"
    else:
        defect = [p for p in report.pairs if p.class_pixels]
        good = [p for p in report.pairs if not p.class_pixels]
        n = cfg.num_images_per_class
        train = _pick_per_class(defect, n, len(cfg.classes), rng) if n else defect
        n_good = min(len(good), round(cfg.good_share / (1.0 - cfg.good_share) * len(train)))
        train += rng.sample(good, n_good)
        picked = f"{n} per class, seed {cfg.selection_seed}" if n else "all"
        how = f"{len(train) - n_good} defect images ({picked}) + {n_good} of {len(good)} defect-free"
    chosen = {p.record.image for p in train}
    train.sort(key=lambda p: p.record.image)
    return Selection(train, [p for p in report.pairs if p.record.image not in chosen], how)


def write_selection(selection: Selection, cfg: DataConfig, path: str) -> None:
    """Write the chosen and left-over pairs as JSON (paths relative to data.root)."""
    names = ["background", *cfg.classes]

    def row(p: PairStats) -> dict:
        mask = relative(p.record.mask, cfg.root) if p.record.mask else None
        return {"image": relative(p.record.image, cfg.root), "mask": mask, "classes": [names[c] for c in p.classes]}

    doc = {"root": cfg.root, "layout": cfg.layout, "how": selection.how,
           "num_images_per_class": cfg.num_images_per_class, "good_share": cfg.good_share,
           "selection_seed": cfg.selection_seed, "selected": [row(p) for p in selection.train],
           "rest": [row(p) for p in selection.rest],
           "skipped": [{"path": p.path, "problem": p.message} for p in selection.skipped]}
    parent = bf.dirname(path)
    if parent:
        bf.makedirs(parent)
    with bf.BlobFile(path, "wb") as f:
        f.write((json.dumps(doc, indent=1) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------------------
# Refusing bad data


def _stdout(line: str) -> None:
    if distributed.info().is_main:
        print(line)


def refuse_or_skip(report: Report, log=logs.warn) -> list[Problem]:
    """Raise on bad data (after logging every problem), or return the problems skipped."""
    problems, cfg = report.problems, report.cfg
    if not problems:
        return []
    if cfg.skip_bad and not report.refusable:
        log(f"data.skip_bad: {len(problems)} problem(s) found; leaving out {len(report.bad)} bad pair(s):")
        for p in problems:
            log(f"  {p.message}")
        return list(problems)
    if len(problems) > 1:  # a single problem is named by the error line itself
        for p in problems:
            log(p.message)
    if report.refusable:  # name the problem that skipping cannot fix
        first, fix = next(p for p in problems if not p.skippable), "data.skip_bad cannot skip this"
    else:
        first, fix = problems[0], "fix them, or set data.skip_bad: true to leave the bad files out"
    count = f"{len(problems)} problems (listed above), e.g." if len(problems) > 1 else "1 problem:"
    raise DataError(f"refusing to train on {cfg.root}: {count} {first.message}; {fix}")


# ---------------------------------------------------------------------------------------
# The dataset


def resize_pair(image: np.ndarray, mask: np.ndarray, size: int, resample: str) -> tuple[np.ndarray, np.ndarray]:
    """Resize to size x size: area (box) or bicubic for the photo; the mask through
    `resize_mask`, which keeps thin defects that nearest neighbour would drop."""
    if image.shape[:2] == (size, size):
        return image, mask
    shrinking = min(image.shape[:2]) >= size
    method = Image.BOX if resample == "area" and shrinking else Image.BICUBIC
    image = np.asarray(Image.fromarray(image).resize((size, size), method))
    mask = resize_mask(mask, (size, size))
    return image, mask


def report_shrunk(report: Report, records: list, log=logs.warn) -> None:
    """Name every training mask that loses most of a class at the training size."""
    masks = {rec.mask for rec in records}
    shrunk = [p.message for p in report.shrunk if p.path in masks]
    if shrunk:
        log(f"data: {len(shrunk)} training masks lose most of a class at {report.size}x{report.size} px (thin or "
            f"small defects; a larger model.image_size or data.load_size keeps more):")
        for line in shrunk:
            log(f"  {line}")


class DefectDataset:
    """The selected pairs in memory: `images` (N, 3, L, L) and `masks` (N, L, L) uint8."""

    def __init__(self, cfg: DataConfig, image_size: int, progress: bool = True, log=logs.warn, info=_stdout):
        self.cfg, self.image_size = cfg, image_size
        self.num_defect = len(cfg.classes)
        self.load_size = cfg.load_size or image_size
        cache: dict = {}

        def keep(rec, image, mask) -> None:
            # Without a few-shot pick every defect image is used: keep it now, decode once.
            if mask.any() or cfg.good_share > 0:
                cache[rec] = self._prepare(image, mask)

        selects = cfg.num_images_per_class is not None or cfg.selection_file
        report = check_dataset(cfg, on_pair=None if selects else keep, progress=progress, size=self.load_size)
        skipped = refuse_or_skip(report, log)
        self.selection = select_pairs(report)
        self.selection.skipped = skipped
        self.records = [p.record for p in self.selection.train]
        if not self.records:
            raise DataError(f"no pairs to train on in {cfg.root}: {self.selection.how}")
        info(f"data: {len(self.records)} pairs from {cfg.root}: {self.selection.how}"
            + (f"; {len(report.notes)} notes, see `defect-gen data check`" if report.notes else ""))
        report_shrunk(report, self.records, log)
        pairs = []
        for rec in logs.iterate(self.records, "loading data", "pair", enabled=progress):
            pair = cache.get(rec)
            pairs.append(pair if pair is not None else self._prepare(*read_pair(rec, cfg, report.kind)))
        if self.native:  # photos keep their own sizes: one tensor per pair
            self.images = [torch.from_numpy(np.ascontiguousarray(p[0])).permute(2, 0, 1).contiguous() for p in pairs]
            self.masks = [torch.from_numpy(np.ascontiguousarray(p[1])) for p in pairs]
        else:
            self.images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).contiguous()
            self.masks = torch.from_numpy(np.stack([p[1] for p in pairs]))
        # (row, col) of every defect pixel per pair, for crops centred on a defect
        self._defects = [torch.nonzero(m).to(torch.int32) for m in self.masks]

    @property
    def native(self) -> bool:
        return self.cfg.native_scale is not None

    def _prepare(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A decoded pair at training resolution: native scale, or load_size x load_size."""
        if self.native:
            return scale_pair(image, mask, self.cfg.native_scale, self.image_size, self.cfg.resize)
        return resize_pair(image, mask, self.load_size, self.cfg.resize)

    def __len__(self) -> int:
        return len(self.images)

    def write_selection(self, path: str) -> None:
        """Write the chosen pairs (and the rest) to `path`, e.g. WORK_DIR/selected_files.json."""
        write_selection(self.selection, self.cfg, path)

    def _stack(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """uint8 images (B, 3, S, S) + masks (B, S, S) -> (B, 3 + K + 1, S, S) float."""
        return stack_image_mask(images.float() / 127.5 - 1.0, masks.long(), self.num_defect)

    @functools.cached_property
    def data(self) -> torch.Tensor:
        """Every pair as one (N, 3 + K + 1, S, S) float tensor: centre crops when load_size > S;
        native-scale photos are cropped around the centre of their defect (or of the photo)."""
        s, crops = self.image_size, []
        for i in range(len(self)):
            h, w = self.masks[i].shape
            centre = self._defects[i].float().mean(0).round().int().tolist() if len(self._defects[i]) else None
            top, left = crop_origin(centre or [h // 2, w // 2], h, w, s) if self.native else \
                ((h - s) // 2, (w - s) // 2)
            crops.append((self.images[i][:, top:top + s, left:left + s], self.masks[i][top:top + s, left:left + s]))
        return self._stack(torch.stack([c[0] for c in crops]), torch.stack([c[1] for c in crops]))

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """A random batch (with replacement across calls), augmented identically for image and mask."""
        idx = torch.randint(len(self.images), (batch_size,), generator=generator)
        if not self.native and self.load_size == self.image_size:
            images, masks = self.images[idx], self.masks[idx]
        else:
            images, masks = self._random_crops(idx.tolist(), generator)
        return augment(self._stack(images, masks), self.cfg, generator)

    def _random_crops(self, idx: list[int], generator: torch.Generator):
        """image_size crops of pairs `idx`: centred on a random defect pixel with probability
        data.defect_crop_share (when the pair has one), uniformly placed otherwise."""
        s, share, images, masks = self.image_size, self.cfg.defect_crop_share, [], []
        for i in idx:
            h, w = self.masks[i].shape
            u, top, left = torch.rand(3, generator=generator).tolist()
            top, left = int(top * (h - s + 1)), int(left * (w - s + 1))
            defects = self._defects[i]
            if len(defects) and u < share:
                pick = int(torch.randint(len(defects), (1,), generator=generator))
                top, left = crop_origin(defects[pick].tolist(), h, w, s)
            images.append(self.images[i][:, top:top + s, left:left + s])
            masks.append(self.masks[i][top:top + s, left:left + s])
        return torch.stack(images), torch.stack(masks)


def crop_origin(centre: list[int], h: int, w: int, s: int) -> tuple[int, int]:
    """Top-left corner of the s x s crop centred on (row, col), moved inside an h x w image."""
    return min(max(centre[0] - s // 2, 0), h - s), min(max(centre[1] - s // 2, 0), w - s)


def scale_pair(image: np.ndarray, mask: np.ndarray, scale: float, min_side: int,
               resample: str) -> tuple[np.ndarray, np.ndarray]:
    """Scale a pair by `scale`, keeping its aspect ratio, and at least enough that its short
    side holds one min_side crop (area or bicubic for the photo, `resize_mask` for the mask)."""
    h, w = mask.shape
    scale = max(scale, min_side / min(h, w))
    size = (max(min_side, round(w * scale)), max(min_side, round(h * scale)))
    if size == (w, h):
        return image, mask
    method = Image.BOX if resample == "area" and scale < 1 else Image.BICUBIC
    return (np.asarray(Image.fromarray(image).resize(size, method)),
            resize_mask(mask, (size[1], size[0])))


def augment(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flips / 90-degree rotations per item; image and mask channels move together."""
    b = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if cfg.vflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    if cfg.rot90 and x.shape[-1] == x.shape[-2]:
        k = torch.randint(4, (b,), generator=generator)
        x = torch.stack([torch.rot90(xi, int(ki), dims=(-2, -1)) for xi, ki in zip(x, k)])
    return x
