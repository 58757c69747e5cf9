"""`defect-gen evaluate`: do the generated pairs help a segmentation model?

For each seed a fresh segmenter is trained on the real few-shot split alone, and on the
real split plus `ratio x (real count)` synthetic pairs from each `--synthetic` folder
(a seeded subset per seed), with the same number of steps; all are scored on the same
held-out real pairs. A ratio that needs more pairs than a folder holds is skipped and
noted, never silently shrunk. Then the generation-quality measures of `quality`, and
`report.write_report` writes REPORT_DIR/report.md, results.json and the plots.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from tqdm.auto import tqdm

from defect_gen.config import Config
from defect_gen.data.image_io import write_png
from defect_gen.errors import ConfigError
from defect_gen.evaluation import quality
from defect_gen.evaluation.data import (
    PairSet,
    check_no_leak,
    class_counts,
    concat,
    copy_paste_pairs,
    load_negatives,
    load_real,
    load_synthetic,
)
from defect_gen.evaluation.metrics import confusion, mean_std, scores
from defect_gen.evaluation.parallel import run_parallel
from defect_gen.evaluation.segmenter import SegSettings, build_segmenter, predict, train_segmenter
from defect_gen.models.checkpoint import atomic_save


@dataclass
class EvalSettings:
    ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    seeds: int = 3
    image_size: int = 128
    max_heldout: int | None = None  # None: every defect image outside the training split
    copy_paste_dir: str | None = None  # defect-free photos for the copy-paste baseline (None: no baseline)
    negatives: int = 0  # defect-free photos of the real config added to every training set (real ones)
    jobs: int = 1  # segmenters trained at once, each in its own process (parallel.py)
    seg: SegSettings = field(default_factory=SegSettings)
    progress: bool = True


@dataclass
class Run:
    """One training set (real alone, or real + synthetic) and its held-out scores per seed."""

    label: str  # "real only" or the synthetic folder's name
    ratio: float
    num_synthetic: int
    per_seed: list[dict[str, float]]

    @property
    def summary(self) -> dict[str, tuple[float, float]]:
        return mean_std(self.per_seed)


@dataclass
class Results:
    real_config: str
    how: str
    class_names: list[str]
    settings: EvalSettings
    train: PairSet
    heldout: PairSet
    synthetic: dict[str, PairSet]  # label -> pairs
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    quality: dict[str, dict] = field(default_factory=dict)  # label -> measures
    cache_dir: str | None = None  # finished segmenter runs, reused when the evaluation runs again
    seconds: float = 0.0
    folds: int = 0  # > 0: cross-validated over the training pairs (crossval.py); heldout is then train
    folders: dict[str, str] = field(default_factory=dict)  # label -> --synthetic folder (for `mix --choose`)
    negatives: PairSet | None = None  # defect-free photos in every training set (settings.negatives of them)

    def with_negatives(self, real: PairSet) -> PairSet:
        """`real` defect pairs followed by the negatives: the real part of a training set. Ratios
        count the defect pairs only, so a ratio means the same synthetic pairs with or without them."""
        return concat(real, self.negatives) if self.negatives is not None else real


def add_negatives(cfg: Config, config_path: str, settings: EvalSettings, how: str) -> tuple[PairSet | None, str]:
    """(the `settings.negatives` defect-free photos, or None; `how` saying so) for evaluate and --folds."""
    if not settings.negatives:
        return None, how
    negatives = load_negatives(cfg, config_path, settings.negatives, settings.image_size, settings.progress)
    return negatives, f"{how}; + {settings.negatives} defect-free photos (empty masks) in every training set"


def parse_ratios(text: str) -> list[float]:
    """'0.5,1,2' -> [0.5, 1.0, 2.0]; ConfigError names the bad value."""
    try:
        ratios = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError.with_params("{ratios}: expected comma-separated numbers such as 0.5,1,2, got {value}",
                                      value=repr(text)) from None
    if not ratios or any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ConfigError.with_params("{ratios}: expected positive numbers (synthetic pairs per real pair), got "
                                      "{value}", value=repr(text))
    return sorted(set(ratios))


def folder_labels(dirs: list[str]) -> list[str]:
    """Folder names as labels, made unique (runs/a/samples and runs/b/samples -> a/samples, b/samples)."""
    names = [os.path.basename(os.path.normpath(d)) for d in dirs]
    if len(set(names)) < len(names):
        names = [os.path.normpath(d) for d in dirs]
    return names


def _run_key(train: PairSet, num_real: int, val: PairSet, results: Results, seed: int) -> str:
    """What decides a segmenter's scores: its training pairs (the first `num_real` real), the
    pairs it is scored on, the settings and the seed. Hashing the pixels (not the names) means a
    re-generated folder never reuses scores of its old pairs."""
    seg = dataclasses.asdict(results.settings.seg)
    for mixing in ("real_finish", "real_share"):  # settings added later, of mixed sets only
        if len(train) == num_real or not seg[mixing]:
            del seg[mixing]  # they change nothing there: keys (and cached runs) stay as they were
    h = hashlib.sha256(repr((seg, seed, results.class_names)).encode())
    for t in (train.images, train.masks, val.images, val.masks):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def _cache_path(train: PairSet, num_real: int, val: PairSet, results: Results, seed: int) -> str | None:
    if not results.cache_dir:
        return None
    return os.path.join(results.cache_dir, f"{_run_key(train, num_real, val, results, seed)}.pt")


def train_and_cache(train: PairSet, num_real: int, val: PairSet, seg: SegSettings, class_names: list[str],
                    seed: int, path: str | None):
    """Train one segmenter on `train` (its first `num_real` pairs real); (its pixel confusion
    matrix on `val`, the model), both kept in `path` when given (atomically: a stopped run
    leaves no half-written file). Runs in a worker process under --jobs."""
    num_classes = len(class_names) + 1
    model = train_segmenter(train.images, train.masks, num_classes, seg, seed, num_real)
    conf = confusion(predict(model, val.images), val.masks, num_classes)
    if path:
        atomic_save({"scores": scores(conf, class_names), "confusion": torch.from_numpy(conf),
                     "model": model.state_dict()}, path)
    return conf, model


def _train_to_cache(*args) -> None:
    """train_and_cache for a worker process: the model stays in its file, not sent back."""
    train_and_cache(*args)


def score_run(train: PairSet, num_real: int, val: PairSet, results: Results, seed: int):
    """Train one segmenter on `train` (its first `num_real` pairs real) with `seed`; (its pixel
    confusion matrix on `val`, the model).

    Each finished run is kept in OUT/segmenters/<key>.pt (confusion, scores and weights), so an
    evaluation that was stopped, or one that adds a folder, reuses every run already done.
    """
    num_classes = len(results.class_names) + 1
    path = _cache_path(train, num_real, val, results, seed)
    if path and os.path.exists(path):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_segmenter(results.settings.seg.arch, num_classes, results.settings.seg.width)
        model.load_state_dict(saved["model"])
        model.eval()
        if "confusion" in saved:
            return saved["confusion"].numpy(), model
        # Runs cached before the confusion was kept: predicting again costs seconds, not a training.
        return confusion(predict(model, val.images), val.masks, num_classes), model
    return train_and_cache(train, num_real, val, results.settings.seg, results.class_names, seed, path)


def train_uncached(results: Results, jobs: Callable[[], Iterator[tuple]]) -> None:
    """With settings.jobs > 1, train every run that `jobs()` lists ((train, num_real, val, seed)
    tuples, in the order the scoring loop will ask for them) and the cache lacks, that many at
    a time; the scoring loop that follows then finds each one cached. `jobs` is called twice
    (count, then train), so only the sets being trained are held in memory, not all of them."""
    s = results.settings
    if s.jobs < 2 or not results.cache_dir:
        return
    paths = (_cache_path(train, num_real, val, results, seed) for train, num_real, val, seed in jobs())
    todo = {path for path in paths if not os.path.exists(path)}
    if not todo:
        return

    def tasks():
        for train, num_real, val, seed in jobs():
            path = _cache_path(train, num_real, val, results, seed)
            if path in todo:
                todo.discard(path)  # the same set twice (e.g. two identical folders) trains once
                yield train, num_real, val, s.seg, results.class_names, seed, path

    run_parallel(_train_to_cache, tasks(), len(todo), s.jobs, "segmenters", s.progress)


def _num_real(results: Results) -> int:
    """The real pairs at the start of every training set: the defect pairs, then the negatives."""
    return len(results.train) + (len(results.negatives) if results.negatives is not None else 0)


def _score(train: PairSet, results: Results, seed: int):
    """(held-out scores, model) of one segmenter trained on `train` (the real split first)."""
    conf, model = score_run(train, _num_real(results), results.heldout, results, seed)
    return scores(conf, results.class_names), model


def _specs(results: Results) -> list[tuple[str, float, PairSet | None, int]]:
    """(label, ratio, synthetic folder's pairs or None, synthetic count) of every held-out run,
    real only first. A ratio that needs more pairs than a folder holds is noted, never shrunk."""
    n_real, out = len(results.train), [("real only", 0.0, None, 0)]
    for label, syn in results.synthetic.items():
        for ratio in results.settings.ratios:
            n = round(ratio * n_real)
            if n < 1 or n > len(syn):
                results.skipped.append(f"{label} x{ratio:g}: needs {n} synthetic pairs, the folder has {len(syn)}")
            else:
                out.append((label, ratio, syn, n))
    return out


def _training_set(results: Results, syn: PairSet | None, n: int, seed: int) -> PairSet:
    """The real split, then (a different seeded subset for each seed) n pairs of `syn`."""
    real = results.with_negatives(results.train)
    if syn is None:
        return real
    return concat(real, syn.subset(sorted(random.Random(seed).sample(range(len(syn)), n))))


def _jobs(results: Results, specs: list) -> Iterator[tuple]:
    """(train, num_real, held-out pairs, seed) of every held-out run, in _train_runs' order."""
    for _, _, syn, n in specs:
        for seed in range(results.settings.seeds):
            yield _training_set(results, syn, n, seed), _num_real(results), results.heldout, seed


def _train_runs(results: Results, specs: list, log) -> list:
    """Score every run of `specs` (each seed: the same init as real only); returns the
    real-only models (one per seed) for mask consistency."""
    s = results.settings
    bar = tqdm(total=s.seeds * len(specs), desc="segmenters", disable=not s.progress, leave=False)
    real_models = []
    for label, ratio, syn, n in specs:
        per_seed = []
        for seed in range(s.seeds):
            sc, model = _score(_training_set(results, syn, n, seed), results, seed)
            per_seed.append(sc)
            if syn is None:
                real_models.append(model)
            bar.update()
        results.runs.append(Run(label, ratio, n, per_seed))
        what = f"{label} ({len(results.train)} pairs)" if syn is None else f"{label} x{ratio:g} ({n} pairs)"
        log(f"{what}: mIoU {results.runs[-1].summary['mIoU'][0]:.3f}")
    bar.close()
    return real_models


def _fidelity(results: Results, synthetic_dirs: list[str], out_dir: str) -> None:
    """KID / FID per folder against the held-out images, only when torch-fidelity's weights are on disk."""
    if quality.fidelity_weights() is None:
        line = quality.kid_fid("", "")  # the reason it is skipped, without touching any file
        for label in results.synthetic:
            results.quality[label]["kid_fid"] = line
        return
    real_dir = os.path.join(out_dir, "heldout_images")
    os.makedirs(real_dir, exist_ok=True)
    for i, image in enumerate(results.heldout.images):
        write_png(os.path.join(real_dir, f"{i:05d}.png"), image.permute(1, 2, 0).numpy())
    for label, d in zip(folder_labels(synthetic_dirs), synthetic_dirs):
        results.quality[label]["kid_fid"] = quality.kid_fid(os.path.join(d, "images"), real_dir)


def _quality(results: Results, models: list) -> None:
    """Memorisation, diversity, mask consistency and areas of each synthetic folder."""
    f_train, f_held = quality.features(results.train.images), quality.features(results.heldout.images)
    k = len(results.class_names)
    results.quality["real train"] = {"diversity": quality.diversity(f_train),
                                     "areas": quality.areas(results.train.masks, k)}
    results.quality["real held-out"] = {"diversity": quality.diversity(f_held),
                                        "areas": quality.areas(results.heldout.masks, k)}
    for label, syn in results.synthetic.items():
        f_gen = quality.features(syn.images)
        consistency = mean_std([quality.mask_consistency(m, syn, results.class_names) for m in models])
        results.quality[label] = {"memorisation": quality.memorisation(f_gen, f_train, f_held),
                                  "diversity": quality.diversity(f_gen), "consistency": consistency,
                                  "areas": quality.areas(syn.masks, k)}


COPY_PASTE = "copy-paste"  # the label of the built-in baseline
MIN_HELDOUT_PER_CLASS = 5


def _report_heldout(held: PairSet, classes: list[str], log) -> None:
    """Held-out images per class; a class with fewer than 5 gets a warning (its IoU is noise),
    one with none has no IoU at all (metrics.scores leaves it out of mIoU)."""
    counts = class_counts(held, classes)
    log("held out per class: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for name, n in counts.items():
        if n < MIN_HELDOUT_PER_CLASS:
            log(f"warning: only {n} held-out image(s) hold {name}: its IoU rests on too few images to compare"
                + ("; it has no IoU" if n == 0 else ""))


def evaluate(cfg: Config, config_path: str, synthetic_dirs: list[str], out_dir: str, settings: EvalSettings,
             log=print) -> Results:
    """Load the data, train and score every segmenter, measure the generated pairs."""
    start = time.time()
    size = settings.image_size
    train, held, how = load_real(cfg, config_path, size, settings.max_heldout, progress=settings.progress)
    check_no_leak(held, synthetic_dirs, config_path)
    negatives, how = add_negatives(cfg, config_path, settings, how)
    log(f"{how}; at {size} px")
    _report_heldout(held, list(cfg.data.classes), log)
    synthetic = {}
    if settings.copy_paste_dir:
        n = round(max(settings.ratios) * len(train))
        synthetic[COPY_PASTE] = copy_paste_pairs(cfg, settings.copy_paste_dir, n, size, progress=settings.progress)
    synthetic.update({label: load_synthetic(d, cfg.data.classes, size, settings.progress)
                      for label, d in zip(folder_labels(synthetic_dirs), synthetic_dirs)})
    results = Results(config_path, how, list(cfg.data.classes), settings, train, held, synthetic,
                      cache_dir=os.path.join(out_dir, "segmenters"),
                      folders=dict(zip(folder_labels(synthetic_dirs), synthetic_dirs)), negatives=negatives)
    os.makedirs(results.cache_dir, exist_ok=True)
    specs = _specs(results)
    train_uncached(results, lambda: _jobs(results, specs))
    models = _train_runs(results, specs, log)
    _quality(results, models)
    _fidelity(results, synthetic_dirs, out_dir)
    results.seconds = time.time() - start
    return results
