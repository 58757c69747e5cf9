"""The pairs an evaluation uses: the real few-shot split, its held-out rest, and synthetic folders.

The real split is exactly the one training used: the real config's few-shot selection
(`data.num_images_per_class` + `data.selection_seed`, or `data.selection_file`) through the
same `select_pairs` as `DefectDataset`. The held-out split is the rest of the *defect*
images (defect-free ones are left out: in magnetic tile they would outnumber the defects
and turn mIoU into a false-positive count), a seeded subset when capped. Synthetic folders
are `defect-gen sample` outputs, read as the `paired` layout with the real classes.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from defect_gen import logs
from defect_gen.config import Config, DataConfig
from defect_gen.data.check import PairStats, check_dataset, read_pair
from defect_gen.data.dataset import refuse_or_skip, resize_pair, select_pairs
from defect_gen.errors import ConfigError, DataError
from defect_gen.pipeline import pair_folder


@dataclass
class PairSet:
    """Pairs in memory at one size: uint8 images (N, 3, S, S) and class-index masks (N, S, S)."""

    names: list[str]
    images: torch.Tensor
    masks: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: list[int]) -> "PairSet":
        return PairSet([self.names[i] for i in idx], self.images[idx], self.masks[idx])


def concat(a: PairSet, b: PairSet) -> PairSet:
    return PairSet(a.names + b.names, torch.cat([a.images, b.images]), torch.cat([a.masks, b.masks]))


def _load(pairs: list[PairStats], cfg: DataConfig, kind: str, size: int, desc: str, progress: bool) -> PairSet:
    """Decode and resize the pairs (area for images, `resize_mask` for masks, as training does)."""
    images, masks = [], []
    for p in tqdm(pairs, desc=desc, disable=not progress, leave=False):
        image, mask = resize_pair(*read_pair(p.record, cfg, kind), size, cfg.resize)
        images.append(image)
        masks.append(mask)
    names = [os.path.relpath(p.record.image, cfg.root) if "://" not in cfg.root else p.record.image for p in pairs]
    return PairSet(names, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                   torch.from_numpy(np.stack(masks)))


def _selection(d: DataConfig, config_path: str, progress: bool):
    """(dataset report, few-shot selection, its defect pairs) of the real config."""
    report = check_dataset(d, progress=progress)
    refuse_or_skip(report, logs.warn)
    selection = select_pairs(report)
    train = [p for p in selection.train if p.class_pixels]
    if not train:
        raise DataError.with_params("{config_path} {path}: the few-shot selection ({how}) holds no defect image",
                                    path=config_path, how=selection.how)
    return report, selection, train


def load_train(cfg: Config, config_path: str, size: int, progress: bool = False) -> tuple[PairSet, str]:
    """(the real training split's defect pairs, how they were chosen): what a user trains on,
    with no held-out part needed (every pair of the config when no few-shot selection is set)."""
    report, selection, train = _selection(cfg.data, config_path, progress)
    return _load(train, cfg.data, report.kind, size, "loading train", progress), selection.how


def load_real(cfg: Config, config_path: str, size: int, max_heldout: int | None = None, seed: int = 0,
              progress: bool = False) -> tuple[PairSet, PairSet, str]:
    """(train, held-out, one line saying how they were chosen) from the real config.

    Held out: every defect image outside the training split (a seeded `max_heldout` of them
    when given). The split does not depend on the segmenter seeds.
    """
    d = cfg.data
    if d.num_images_per_class is None and not d.selection_file:
        raise ConfigError.with_params("{config_path} {path}: data.num_images_per_class is not set, so every image "
                                      "is a training image and none is left to test on; set it, e.g. "
                                      "{overrides} data.num_images_per_class=10", path=config_path)
    report, selection, train = _selection(d, config_path, progress)
    rest = [p for p in selection.rest if p.class_pixels]
    if not rest:
        raise DataError.with_params("{config_path} {path}: no defect image is left out of the few-shot selection "
                                    "({how}) to test on; lower data.num_images_per_class",
                                    path=config_path, how=selection.how)
    if max_heldout is not None and len(rest) > max_heldout:
        rest = sorted(random.Random(seed).sample(rest, max_heldout), key=lambda p: p.record.image)
    how = (f"train: {selection.how}; held out: {len(rest)} of the "
           f"{sum(1 for p in selection.rest if p.class_pixels)} defect images not selected")
    return (_load(train, d, report.kind, size, "loading train", progress),
            _load(rest, d, report.kind, size, "loading held-out", progress), how)


def load_negatives(cfg: Config, config_path: str, n: int, size: int, progress: bool = False) -> PairSet:
    """`n` defect-free photos of the real config (its good folders), with all-background masks:
    negatives a user adds to every segmenter's training set. A seeded pick (seed 0), the same
    for every run, seed and fold; never in the held-out split, which holds defect images only."""
    report = check_dataset(cfg.data, progress=progress)
    good = [p for p in report.pairs if not p.class_pixels]
    if len(good) < n:
        raise DataError.with_params(f"{{negatives}} {n}: the real config {{path}} has {len(good)} defect-free "
                                    f"image(s) (data.good_folders {{folders}} under data.root); expected at least {n}",
                                    path=config_path, folders=list(cfg.data.good_folders))
    pick = sorted(random.Random(0).sample(good, n), key=lambda p: p.record.image)
    return _load(pick, cfg.data, report.kind, size, "loading negatives", progress)


def load_synthetic(path: str, classes: list[str], size: int, progress: bool = False) -> PairSet:
    """A `defect-gen sample` folder (paired layout: images/ + masks/ class indices) at `size`."""
    if not os.path.isdir(os.path.join(path, "images")) or not os.path.isdir(os.path.join(path, "masks")):
        raise DataError.with_params("{synthetic_dirs} {path}: expected a `defect-gen sample` folder with images/ "
                                    "and masks/ (paired layout)", path=path)
    cfg = DataConfig(root=path, layout="paired", classes=list(classes), good_folders=[])
    report = check_dataset(cfg, progress=progress)
    # A class the generator never drew is a finding for the report, not a reason to refuse.
    bad = [p for p in report.problems if p.skippable]
    if bad:
        raise DataError.with_params(f"{{synthetic_dirs}} {{path}}: {len(bad)} bad pair(s), e.g. {{problem}}",
                                    path=path, problem=bad[0].message)
    if not report.pairs:
        raise DataError.with_params("{synthetic_dirs} {path}: no pairs found; expected images/<stem>.png with "
                                    "masks/<stem>.png", path=path)
    return _load(sorted(report.pairs, key=lambda p: p.record.image), cfg, report.kind, size,
                 f"loading {os.path.basename(path)}", progress)


def export_train_masks(config_path: str, overrides: list[str], out_dir: str, size: int) -> int:
    """Write the real training split's masks (class-index PNGs at `size`) for `sample --mask`.

    Generating images for the few-shot masks (placed at random) guarantees a defect in every
    pair, which briefly trained models rarely draw on their own. Returns how many were written.
    """
    from defect_gen.config import load_config
    from defect_gen.data.image_io import write_png

    train, _, _ = load_real(load_config(config_path, overrides), config_path, size, max_heldout=1)
    os.makedirs(out_dir, exist_ok=True)
    for i, mask in enumerate(train.masks):
        write_png(os.path.join(out_dir, f"train_{i:03d}.png"), mask.numpy())
    return len(train)


def class_counts(pairs: PairSet, classes: list[str]) -> dict[str, int]:
    """Images holding each class (at the evaluation size)."""
    present = torch.stack([(pairs.masks == c).flatten(1).any(1) for c in range(1, len(classes) + 1)], 1)
    return {name: int(n) for name, n in zip(classes, present.sum(0).tolist())}


def generator_training_pairs(folder: str) -> set[str]:
    """The real pairs a synthetic folder's generator took its defects from, where the folder
    records them (`defect-gen paint` writes each pair's `source`, relative to data.root, and
    its `background` when it painted into the training split's own photos)."""
    return {row[k] for row in pair_folder.read_rows(folder, strict=False) for k in ("source", "background")
            if isinstance(row.get(k), str)}


def check_no_leak(heldout: PairSet, synthetic_dirs: list[str], config_path: str) -> None:
    """Refuse when a held-out pair is one the generator was trained on (or took a defect from):
    its scores would measure memory, not generalisation."""
    held = set(heldout.names)
    for folder in synthetic_dirs:
        leaked = sorted(held & generator_training_pairs(folder))
        if leaked:
            raise ConfigError.with_params(f"{{synthetic_dirs}} {{folder}}: {len(leaked)} held-out pair(s) of "
                                          f"{{config_path}} {{path}} were used to make these pairs (e.g. {{pair}}); "
                                          f"evaluate on the generator's own split: {{overrides}} "
                                          f"data.selection_file=RUN/selected_files.json",
                                          folder=folder, path=config_path, pair=leaked[0])


def copy_paste_pairs(cfg: Config, good_dir: str, n: int, size: int, seed: int = 0,
                     progress: bool = False) -> PairSet:
    """The copy-paste baseline: `n` pairs made by pasting the real training split's defect pixels
    (cut out by their masks, flipped, turned, scaled 0.75-1.25x) onto defect-free photos from
    `good_dir` at random spots, at the photos' own resolution, then resized like every pair."""
    from defect_gen.pipeline import inputs, painting

    settings = painting.PaintSettings("", n, good_dir, seed=seed, strength=0.0, progress=progress)
    painter = painting.Painter(None, None, 0, 1, len(cfg.data.classes))
    goods = inputs.list_good_images(good_dir)
    images, masks, names = [], [], []
    for i, _, _, _, rgb, mask, _ in painting.pairs(painter, painting.training_sources(cfg), goods, settings,
                                               desc="copy-paste pairs"):
        image, mask = resize_pair(rgb, mask, size, cfg.data.resize)
        images.append(image)
        masks.append(mask)
        names.append(f"copy_paste_{i:05d}")
    return PairSet(names, torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                   torch.from_numpy(np.stack(masks)))
