"""Segmentation scores from a confusion matrix, and their mean ± std over seeds.

- per-class IoU for each defect class; mIoU is their mean over the defect classes that occur
  in the ground truth or the prediction (a class absent from both has no IoU). Background
  IoU is reported apart: it is near 1 whatever the model does and would hide differences.
- pixel precision / recall / F1 of "defect" (any class) against background, so a model that
  finds the defect but names the wrong class still gets credit there.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, C) pixel counts, rows = ground truth, columns = prediction."""
    t = target.reshape(-1).long()
    p = pred.reshape(-1).long()
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).numpy().astype(np.int64)


def scores(conf: np.ndarray, class_names: list[str]) -> dict[str, float]:
    """IoU per defect class, mIoU, background IoU, defect-pixel precision / recall / F1."""
    tp = np.diag(conf).astype(np.float64)
    gt, pr = conf.sum(1).astype(np.float64), conf.sum(0).astype(np.float64)
    union = gt + pr - tp
    out: dict[str, float] = {}
    ious = []
    for c, name in enumerate(class_names, start=1):
        iou = tp[c] / union[c] if union[c] > 0 else math.nan
        out[f"IoU {name}"] = iou
        if union[c] > 0:
            ious.append(iou)
    out["mIoU"] = float(np.mean(ious)) if ious else math.nan
    out["IoU background"] = tp[0] / union[0] if union[0] > 0 else math.nan
    defect_tp = conf[1:, 1:].sum()  # defect predicted as some defect
    precision = defect_tp / conf[:, 1:].sum() if conf[:, 1:].sum() else math.nan
    recall = defect_tp / conf[1:, :].sum() if conf[1:, :].sum() else math.nan
    out["precision"], out["recall"] = precision, recall
    # F1 as 2 TP / (2 TP + FP + FN): a model that predicts no defect at all scores 0, not "undefined"
    denom = conf[:, 1:].sum() + conf[1:, :].sum()
    out["F1"] = 2 * defect_tp / denom if denom else math.nan
    return {k: float(v) for k, v in out.items()}


def mean_std(runs: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Per key: mean and sample std (ddof 1; 0 for one run) over the runs, ignoring NaNs."""
    out = {}
    for key in runs[0]:
        vals = np.array([r[key] for r in runs], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        if not len(vals):
            out[key] = (math.nan, math.nan)
        else:
            out[key] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0)
    return out


def fmt(ms: tuple[float, float], scale: float = 100.0) -> str:
    """'42.1 ± 3.0' (percent by default), or 'n/a'."""
    m, s = ms
    return "n/a" if not math.isfinite(m) else f"{m * scale:.1f} ± {s * scale:.1f}"
