"""`defect-gen evaluate --folds K`: does adding generated pairs help, judged on the user's own pairs?

A user with tens of labelled defects has no spare held-out set, so `evaluate`'s usual split
(train on the few-shot selection, score on the rest) is not theirs to run. K-fold
cross-validation over the pairs they have answers the same question with nothing more:
the real pairs are dealt into K validation groups (each class spread evenly); for each
group a segmenter is trained on the other real pairs, alone or with `ratio x (their count)`
synthetic pairs, and scores the group. The confusion matrices of the K groups add up, so
each seed gives one score over every real pair, each predicted by a segmenter that never saw it.

A synthetic pair made from a validation photo (its manifest's `source` or `background`,
as `defect-gen paint` writes them) is left out of that group's training: it would carry
the photo, or its defect, into training. What cannot be left out is the generator itself,
which trained on every pair: the validation favours the generated pairs by that much, and
`evaluate` on a real held-out split stays the stronger test where one exists.
"""

from __future__ import annotations

import os
import random
import time
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from defect_gen.config import Config
from defect_gen.errors import ConfigError
from defect_gen.evaluation.data import PairSet, concat, load_synthetic, load_train
from defect_gen.evaluation.metrics import scores
from defect_gen.evaluation.run import (
    EvalSettings,
    Results,
    Run,
    add_negatives,
    folder_labels,
    score_run,
    train_uncached,
)
from defect_gen.pipeline import pair_folder


def fold_groups(pairs: PairSet, num_classes: int, folds: int, seed: int = 0) -> list[list[int]]:
    """`folds` disjoint groups of pair indices covering every pair, each class spread evenly:
    pairs ordered by their largest class (shuffled within it with `seed`), then dealt in turn."""
    if not 2 <= folds <= len(pairs):
        raise ConfigError.with_params(f"{{folds}}: expected 2 to {len(pairs)} (the real training pairs), got {folds}")
    counts = [torch.bincount(m.reshape(-1).long(), minlength=num_classes)[1:] for m in pairs.masks]
    largest = [int(c.argmax()) if int(c.sum()) else -1 for c in counts]
    rng = random.Random(seed)
    order = []
    for c in sorted(set(largest)):
        members = [i for i, k in enumerate(largest) if k == c]
        rng.shuffle(members)
        order += members
    return [sorted(order[f::folds]) for f in range(folds)]


def made_from(folder: str, pairs: PairSet) -> list[set[str]]:
    """For each pair of a synthetic folder (names relative to the folder, as `load_synthetic`
    gives them): the real pairs it was made from, as its manifest records them (empty without one)."""
    rows = {row["files"]["image"]: row for row in pair_folder.read_rows(folder, strict=False)
            if isinstance(row.get("files"), dict) and isinstance(row["files"].get("image"), str)}
    out = []
    for name in pairs.names:
        row = rows.get(name.replace(os.sep, "/"), {})
        out.append({row[k] for k in ("source", "background") if isinstance(row.get(k), str)})
    return out


def fold_sets(real: PairSet, groups: list[list[int]], made: list[set[str]]) -> list[tuple]:
    """Per validation group: (the other real pairs, the group's pairs, the indices of the synthetic
    pairs not made from any of the group's photos; `made` as `made_from` gives it)."""
    out = []
    for g in groups:
        val_names, in_group = {real.names[i] for i in g}, set(g)
        rest = [i for i in range(len(real)) if i not in in_group]
        pool = [i for i, sources in enumerate(made) if not sources & val_names]
        out.append((real.subset(rest), real.subset(g), pool))
    return out


def _cv_needs(results: Results, label: str, ratio: float, folds: list[tuple]) -> tuple[list[int], str | None]:
    """(synthetic pairs each fold's training set takes, None) or ([], why a fold cannot have them)."""
    needs = [round(ratio * len(train)) for train, _, _ in folds]
    if results.synthetic.get(label) is not None:
        short = [(f, n, len(pool)) for f, (n, (_, _, pool)) in enumerate(zip(needs, folds)) if n > len(pool) or n < 1]
        if short:
            f, n, have = short[0]
            return [], (f"{label} x{ratio:g}: fold {f} needs {n} synthetic pairs, {have} of the folder's "
                        f"are not made from that fold's photos")
    return needs, None


def _cv_sets(results: Results, label: str, folds: list[tuple], needs: list[int]) -> Iterator[tuple]:
    """(training set, its real count, validation pairs, seed) for every seed and fold: the real
    pairs of the other folds, then a subset per seed and fold of the synthetic pairs allowed."""
    syn = results.synthetic.get(label)
    for seed in range(results.settings.seeds):
        for f, (train, val, pool) in enumerate(folds):
            pairs = real = results.with_negatives(train)
            if syn is not None:  # the same init as real only
                pairs = concat(real, syn.subset(sorted(random.Random(seed * 1009 + f).sample(pool, needs[f]))))
            yield pairs, len(real), val, seed


def _cv_run(results: Results, label: str, ratio: float, folds: list[tuple], bar) -> Run | None:
    """One training set over every fold and seed; None (and a note) when a fold lacks pairs.

    `folds`: (real training pairs, validation pairs, indices of the synthetic pairs allowed)."""
    needs, short = _cv_needs(results, label, ratio, folds)
    if short:
        results.skipped.append(short)
        bar.update(results.settings.seeds * len(folds))
        return None
    totals = [0] * results.settings.seeds  # each seed's confusion, summed over the folds
    for pairs, num_real, val, seed in _cv_sets(results, label, folds, needs):
        totals[seed] = totals[seed] + score_run(pairs, num_real, val, results, seed)[0]
        bar.update()
    per_seed = [scores(total, results.class_names) for total in totals]
    synthetic = 0 if results.synthetic.get(label) is None else round(float(np.mean(needs)))
    return Run(label, ratio, synthetic, per_seed)


def _cv_jobs(results: Results, plan: list[tuple]) -> Iterator[tuple]:
    """Every segmenter the cross-validation of `plan` ((label, ratio, folds) runs) will score."""
    for label, ratio, folds in plan:
        needs, short = _cv_needs(results, label, ratio, folds)
        if not short:
            yield from _cv_sets(results, label, folds, needs)


def crossvalidate(cfg: Config, config_path: str, synthetic_dirs: list[str], out_dir: str, settings: EvalSettings,
                  folds: int, log=print) -> Results:
    """K-fold cross-validation of real only against real + each synthetic folder at each ratio."""
    if settings.copy_paste_dir:
        raise ConfigError.with_params("{folds}: the built-in {copy_paste_dir} baseline pastes every training defect, "
                                      "the validation ones too; make a copy-paste folder with `defect-gen paint "
                                      "--copy-paste` (it records each pair's source) and give it as {synthetic_dirs}")
    start, size = time.time(), settings.image_size
    real, how = load_train(cfg, config_path, size, progress=settings.progress)
    classes = list(cfg.data.classes)
    groups = fold_groups(real, len(classes) + 1, folds)
    synthetic, per_fold = {}, {None: fold_sets(real, groups, [])}
    for label, d in zip(folder_labels(synthetic_dirs), synthetic_dirs):
        synthetic[label] = load_synthetic(d, classes, size, settings.progress)
        per_fold[label] = fold_sets(real, groups, made_from(d, synthetic[label]))
    how = (f"{how}; {folds}-fold cross-validation over these {len(real)} pairs: each scored once, by segmenters "
           f"trained on the other folds ({min(len(real) - len(g) for g in groups)}-"
           f"{max(len(real) - len(g) for g in groups)} real pairs)")
    # Negatives join every fold's training set and are never validated on (they hold no defect).
    negatives, how = add_negatives(cfg, config_path, settings, how)
    log(f"{how}; at {size} px")
    results = Results(config_path, how, classes, settings, real, real, synthetic,
                      cache_dir=os.path.join(out_dir, "segmenters"), folds=folds,
                      folders=dict(zip(folder_labels(synthetic_dirs), synthetic_dirs)), negatives=negatives)
    os.makedirs(results.cache_dir, exist_ok=True)
    plan = [("real only", 0.0, per_fold[None])] + [(lb, r, per_fold[lb]) for lb in synthetic for r in settings.ratios]
    train_uncached(results, lambda: _cv_jobs(results, plan))
    bar = tqdm(total=folds * settings.seeds * len(plan), desc="segmenters", disable=not settings.progress, leave=False)
    for label, ratio, label_folds in plan:
        run = _cv_run(results, label, ratio, label_folds, bar)
        if run is not None:
            results.runs.append(run)
            what = f"{run.label} x{ratio:g} ({run.num_synthetic} pairs per fold)" if ratio else run.label
            log(f"{what}: cross-validated mIoU {run.summary['mIoU'][0]:.3f}")
    bar.close()
    results.seconds = time.time() - start
    return results
