"""Generation quality with nothing downloaded: memorisation, diversity, mask-image
consistency and defect-area distributions; KID / FID only when their weights are on disk.

Distances are RMS pixel differences (0..1) between images area-downsampled to 32 px: crude,
but free of pretrained features, and enough to catch copies of the few training images,
which is the failure few-shot generators are prone to.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from defect_gen.evaluation.data import PairSet
from defect_gen.evaluation.metrics import confusion, scores
from defect_gen.evaluation.segmenter import predict

FEATURE_SIZE = 32
# torch-fidelity's Inception weights, where torch.hub keeps downloaded checkpoints.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


def features(images: torch.Tensor, size: int = FEATURE_SIZE) -> torch.Tensor:
    """uint8 (N, 3, S, S) -> (N, 3 * size * size) floats in [0, 1]."""
    x = images.float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="area" if x.shape[-1] > size else "bilinear")
    return x.flatten(1)


def nearest(a: torch.Tensor, b: torch.Tensor, exclude_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of a: RMS distance to its nearest row of b, and that row's index."""
    d = torch.cdist(a.double(), b.double()) / math.sqrt(a.shape[1])
    if exclude_self:
        d.fill_diagonal_(math.inf)
    dist, idx = d.min(1)
    return dist.float(), idx


def memorisation(gen: torch.Tensor, train: torch.Tensor, held: torch.Tensor) -> dict:
    """How much closer generated images are to the training images than unseen real ones are.

    ratio = median NN distance (generated -> train) / median NN distance (held-out -> train):
    about 1 means generated images sit as far from the training set as new real photos do;
    well below 1 means near-copies. `copies` is the share of generated images closer to their
    nearest training image than 95 % of held-out images are.
    """
    d_gen, idx = nearest(gen, train)
    d_held, _ = nearest(held, train)
    threshold = torch.quantile(d_held, 0.05)
    return {"ratio": float(d_gen.median() / d_held.median().clamp_min(1e-12)),
            "gen_median": float(d_gen.median()), "held_median": float(d_held.median()),
            "copies": float((d_gen < threshold).float().mean()), "dist": d_gen, "index": idx}


def diversity(f: torch.Tensor) -> float:
    """Mean pairwise RMS distance within a set (NaN for fewer than 2)."""
    if len(f) < 2:
        return math.nan
    d = torch.cdist(f.double(), f.double()) / math.sqrt(f.shape[1])
    n = len(f)
    return float(d.sum() / (n * (n - 1)))


def mask_consistency(model: torch.nn.Module, pairs: PairSet, class_names: list[str]) -> dict[str, float]:
    """Scores of the real-trained segmenter's predictions on generated images against their masks."""
    pred = predict(model, pairs.images)
    return scores(confusion(pred, pairs.masks, len(class_names) + 1), class_names)


def areas(masks: torch.Tensor, num_defect: int) -> dict[int, np.ndarray]:
    """Per class 1..K: the defect area (share of the image) of each image containing it."""
    per_image = torch.stack([(masks == c).flatten(1).float().mean(1) for c in range(1, num_defect + 1)], 1)
    return {c: per_image[:, c - 1][per_image[:, c - 1] > 0].numpy() for c in range(1, num_defect + 1)}


def fidelity_weights() -> str | None:
    """Path of torch-fidelity's Inception weights if already on disk, else None."""
    path = os.path.join(torch.hub.get_dir(), "checkpoints", INCEPTION_FILE)
    return path if os.path.isfile(path) else None


def kid_fid(gen_dir: str, real_dir: str) -> dict | str:
    """KID / FID through torch-fidelity, or a line saying why they were skipped (never downloads)."""
    try:
        import torch_fidelity
    except Exception as exc:
        return f"skipped: torch-fidelity does not import ({type(exc).__name__})"
    if fidelity_weights() is None:
        return f"skipped: Inception weights {INCEPTION_FILE} are not in {torch.hub.get_dir()}/checkpoints"
    n = min(len(os.listdir(gen_dir)), len(os.listdir(real_dir)))
    try:
        m = torch_fidelity.calculate_metrics(input1=gen_dir, input2=real_dir, fid=True, kid=True,
                                             kid_subset_size=max(2, min(1000, n)), verbose=False, cuda=False)
    except Exception as exc:  # small sets, odd sizes: report, do not fail the whole evaluation
        return f"failed: {type(exc).__name__}: {' '.join(str(exc).split())[:100]}"
    return {"FID": float(m["frechet_inception_distance"]), "KID": float(m["kernel_inception_distance_mean"])}
