"""Keep the generated pairs that a segmenter trained on the real pairs agrees with.

A generated pair teaches a segmenter only where its image shows the defect its mask claims:
a crack drawn too faint, or a break left grey, teaches "this looks like background" at
pixels labelled defect. The check a user can run on the data they have, with no held-out
image: train the evaluation's segmenter on the real training pairs, predict every generated
image, and score each pair by the IoU of that prediction with its mask (defect classes,
class by class) inside the painted window that `defect-gen paint` records in its manifest,
or over the whole image for a pair without one. The top `keep` share of each class (the
class of the pair's placed defect) is written to a new folder, so the class mix stays as
generated. `evaluate` reports the same agreement over whole folders as mask consistency.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from defect_gen import fsutil
from defect_gen.config import Config
from defect_gen.core.masks import colorize
from defect_gen.data.image_io import write_png
from defect_gen.data.layouts import file_stem
from defect_gen.errors import ConfigError, DataError
from defect_gen.evaluation.data import PairSet, load_synthetic, load_train
from defect_gen.evaluation.segmenter import SegSettings, build_segmenter, predict, train_segmenter
from defect_gen.models.checkpoint import atomic_save
from defect_gen.pipeline import pair_folder
from defect_gen.training.plots import histogram_plot

SCORES = "filter_scores.jsonl"  # every input pair: its score, class and whether it was kept
SETTINGS = "filter_settings.json"


@dataclass
class FilterSettings:
    keep: float = 0.5  # share of each class's pairs kept, best-scored first
    image_size: int = 128  # where the segmenter trains and predicts (evaluate's default)
    seed: int = 0
    seg: SegSettings = field(default_factory=lambda: SegSettings(steps=2000))
    progress: bool = True


def regions(folder: str, pairs: PairSet, rows: dict[str, dict]) -> torch.Tensor:
    """(N, S, S) bool: each pair's painted window at the evaluation size S (the images are
    resized to S x S whatever their shape), or all of it where no window is recorded."""
    size = pairs.masks.shape[-1]
    out = torch.ones(len(pairs), size, size, dtype=torch.bool)
    for i, name in enumerate(pairs.names):
        box = rows.get(file_stem(name), {}).get("window")
        if not (isinstance(box, list) and len(box) == 4):
            continue
        with Image.open(os.path.join(folder, name)) as im:
            width, height = im.size
        y, x, h, w = box  # paint's window: top, left, height, width in the photo's pixels
        left, right = math.floor(x * size / width), math.ceil((x + w) * size / width)
        top, bottom = math.floor(y * size / height), math.ceil((y + h) * size / height)
        out[i] = False
        out[i, max(0, top):bottom, max(0, left):right] = True
    return out


def pair_scores(pred: torch.Tensor, masks: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Per pair, inside its region: pixels where prediction and mask name the same defect
    class, over pixels where either names a defect (0 when neither does)."""
    hit = ((pred == masks) & (masks > 0) & region).flatten(1).sum(1)
    either = (((pred > 0) | (masks > 0)) & region).flatten(1).sum(1)
    return hit.double() / either.clamp_min(1).double()


def pair_classes(masks: torch.Tensor, region: torch.Tensor, num_classes: int) -> list[int]:
    """The defect class with the most pixels inside each pair's region (0: none)."""
    counts = torch.stack([((masks == c) & region).flatten(1).sum(1) for c in range(1, num_classes)], 1)
    return [int(c) + 1 if n > 0 else 0 for c, n in zip(counts.argmax(1).tolist(), counts.max(1).values.tolist())]


def ranked_by_class(scores: list[float], classes: list[int]) -> dict[int, list[int]]:
    """Each class's pair indices, best score first (ties: the earlier pair first)."""
    return {c: sorted((i for i, k in enumerate(classes) if k == c), key=lambda i: (-scores[i], i))
            for c in sorted(set(classes))}


def keep_best(scores: list[float], classes: list[int], keep: float) -> list[bool]:
    """The top `keep` share (at least one) of each class's pairs by score; ties keep the earlier pair."""
    kept = [False] * len(scores)
    for ranked in ranked_by_class(scores, classes).values():
        for i in ranked[:max(1, round(keep * len(ranked)))]:
            kept[i] = True
    return kept


def _preview(path: str, pairs: PairSet, pred: torch.Tensor, scores: list[float], classes: list[int],
             per_class: int = 2, gap: int = 4) -> None:
    """filter_preview.png: for each class, its best-scored pairs (left) and its worst (right),
    each as image | mask | the segmenter's prediction, at the size the segmenter saw."""
    def cell(i: int) -> np.ndarray:
        panels = [pairs.images[i].permute(1, 2, 0).numpy(), colorize(pairs.masks[i].numpy()),
                  colorize(pred[i].numpy())]
        spacer = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
        return np.concatenate([panels[0], spacer, panels[1], spacer, panels[2]], axis=1)

    rows = []
    for ranked in ranked_by_class(scores, classes).values():
        for best, worst in zip(ranked[:per_class], ranked[::-1][:per_class]):
            left, right = cell(best), cell(worst)
            rows.append(np.concatenate([left, np.full((left.shape[0], 6 * gap, 3), 255, np.uint8), right], axis=1))
            rows.append(np.full((gap, rows[-1].shape[1], 3), 255, np.uint8))
    if rows:
        write_png(path, np.concatenate(rows[:-1], axis=0))


def _write(folder: str, out: str, pairs: PairSet, rows: dict[str, dict], scores: list[float],
           classes: list[str], kept: list[bool], settings: dict, preview) -> None:
    """The kept pairs' files and manifest rows (with their score), every score, a histogram of
    the scores per class, the settings; written into a temporary folder that becomes `out`
    only when complete, so a stopped run never leaves a folder that looks finished."""
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)  # what a stopped run left
    subs = [sub for sub in pair_folder.FOLDERS["paired"] if os.path.isdir(os.path.join(folder, sub))]
    for sub in subs:  # images/ and masks/ are always there (load_synthetic requires them): tmp is made too
        fsutil.make_output_dir(os.path.join(tmp, sub), "out")
    with pair_folder.ManifestWriter(tmp) as manifest, open(os.path.join(tmp, SCORES), "w", encoding="utf-8") as log:
        for name, score, cls, k in zip(pairs.names, scores, classes, kept):
            stem = file_stem(name)
            log.write(json.dumps({"name": stem, "class": cls, "score": round(score, 4), "kept": k}) + "\n")
            if not k:
                continue
            # The pair's files under the same name, as the paired layout names them (the row keeps its own).
            files = pair_folder.pair_files("paired", stem, "")
            sources = {what: os.path.join(folder, rel) for what, rel in files.items()}
            pair_folder.copy_pair({what: p for what, p in sources.items() if os.path.exists(p)}, tmp, stem)
            manifest.append({**rows.get(stem, {"name": stem}), "consistency": round(score, 4)})
    by_class: dict[str, list[float]] = {}
    for score, cls in zip(scores, classes):
        by_class.setdefault(cls, []).append(score)
    histogram_plot(os.path.join(tmp, "filter_scores.png"), by_class, f"agreement of a real-trained segmenter with "
                   f"each pair's mask (kept: the top {settings['keep']:g} of each class)",
                   [i / 10 for i in range(11)], x_label="IoU inside the painted window")
    preview(os.path.join(tmp, "filter_preview.png"))
    if os.path.exists(os.path.join(folder, "paint_settings.json")):  # how the pairs were made
        shutil.copy2(os.path.join(folder, "paint_settings.json"), tmp)
    fsutil.atomic_write_json(os.path.join(tmp, SETTINGS), settings)
    os.replace(tmp, out)


def _segmenter(train: PairSet, num_classes: int, s: FilterSettings, out_dir: str, log) -> torch.nn.Module:
    """The segmenter trained on `train`, kept in OUT/segmenters/<key>.pt: filtering more folders
    into the same OUT later (a new model's pairs) reuses it instead of training it again."""
    # real_share (added later) does nothing on real pairs alone: out of the key, as before it existed
    seg = {k: v for k, v in asdict(s.seg).items() if k != "real_share"}
    h = hashlib.sha256(repr((seg, s.seed, num_classes)).encode())
    h.update(train.images.contiguous().numpy().tobytes())
    h.update(train.masks.contiguous().numpy().tobytes())
    path = os.path.join(out_dir, "segmenters", f"{h.hexdigest()[:24]}.pt")
    model = build_segmenter(s.seg.arch, num_classes, s.seg.width)
    if os.path.exists(path):
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log(f"segmenter: reused {path} (same training pairs and settings)")
        return model.eval()
    model = train_segmenter(train.images, train.masks, num_classes, s.seg, s.seed)
    fsutil.make_output_dir(os.path.dirname(path), "out")
    atomic_save(model.state_dict(), path)
    return model


def filter_folders(cfg: Config, config_path: str, synthetic_dirs: list[str], out_dir: str, s: FilterSettings,
                   log=print) -> list[str]:
    """Train one segmenter on the real training pairs, then write the kept share of each
    folder to OUT/<folder name>; returns those paths. An existing output is never replaced."""
    if not 0.0 < s.keep <= 1.0:
        raise ConfigError.with_params(f"{{keep}} must be in (0, 1] (a share of each class's pairs), got {s.keep}")
    targets = [os.path.join(out_dir, os.path.basename(os.path.normpath(f))) for f in synthetic_dirs]
    if len(set(targets)) < len(targets):
        raise ConfigError.with_params("{synthetic_dirs}: two folders share a name ({folders}); each is written to "
                                      "OUT/<its name>", folders=", ".join(synthetic_dirs))
    for t in targets:
        if os.path.exists(t):
            raise DataError.with_params("{out_dir} {path}: {target} already exists; remove it or choose another "
                                        "{out_dir}", path=out_dir, target=t)
    names = ["background", *cfg.data.classes]
    loaded = [load_synthetic(f, cfg.data.classes, s.image_size, s.progress) for f in synthetic_dirs]  # fail early
    train, how = load_train(cfg, config_path, s.image_size, s.progress)
    log(f"segmenter: {s.seg.steps} steps on the real training pairs ({how}), seed {s.seed}, at {s.image_size} px")
    model = _segmenter(train, len(names), s, out_dir, log)
    settings = {"real": config_path, "training_pairs": how, **asdict(s)}
    for folder, pairs, out in zip(synthetic_dirs, loaded, targets):
        rows = pair_folder.rows_by_name(folder)
        region = regions(folder, pairs, rows)
        pred = predict(model, pairs.images)
        scores = pair_scores(pred, pairs.masks, region).tolist()
        classes = pair_classes(pairs.masks, region, len(names))
        kept = keep_best(scores, classes, s.keep)
        _write(folder, out, pairs, rows, scores, [names[c] for c in classes], kept, {**settings, "source": folder},
               lambda path: _preview(path, pairs, pred, scores, classes))
        mean_kept = sum(sc for sc, k in zip(scores, kept) if k) / max(1, sum(kept))
        log(f"{folder}: kept {sum(kept)} of {len(kept)} pairs in {out} (mean agreement {mean_kept:.2f} kept, "
            f"{sum(scores) / max(1, len(scores)):.2f} all)")
    return targets
