"""Where a class's false positives fall, for the cached segmenters of an `evaluate` report.

Round 10 (docs/results.md) asked why generated cracks cost crack IoU: do they make predicted
cracks wider, or make cracks appear on photos that have none? For each run named, this loads
the report's cached segmenters (OUT/segmenters, matched to the run's seeds by their scores),
predicts the held-out photos again and counts, for CLASS: pixels found, false pixels within
`--near` px of a true one, false pixels elsewhere on photos that hold the class, and false
pixels on photos that do not (and how many such photos have more than 20).

    python experiments/magnetic_tile/false_alarms.py \\
        --real configs/magnetic_tile_paint.yaml --set data.root=../shared/data/magnetic-tile \\
        --set data.selection_file=runs/mt_paint/paint/selected_files.json \\
        --report runs/mt_paint/report_seeds10 --run "real only x0" --run "cp_same_source_160 x2" --class Crack
"""

import argparse
import glob
import json
import os

import numpy as np
import torch

from defect_gen.config import load_config
from defect_gen.evaluation.data import load_real
from defect_gen.evaluation.segmenter import build_segmenter, predict


def read_results(report: str) -> dict:
    path = os.path.join(report, "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--report {report}: cannot read results.json ({exc}); expected an `evaluate` --out folder")


def cached_models(report: str, label: str, seg: dict) -> list:
    """The run's segmenters, seed order, found in REPORT/segmenters by their cached mIoU."""
    results = read_results(report)
    runs = {f'{r["label"]} x{r["ratio"]:g}': r for r in results["runs"]}
    if label not in runs:
        raise SystemExit(f"--run {label!r}: not in {report}/results.json; runs there: {', '.join(runs)}")
    want = [round(float(s["mIoU"]), 10) for s in runs[label]["per_seed"]]
    found = {}
    for path in glob.glob(os.path.join(report, "segmenters", "*.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        key = round(float(saved.get("scores", {}).get("mIoU", -1)), 10)
        if key in want and "model" in saved:
            model = build_segmenter(seg["arch"], len(results["classes"]) + 1, seg["width"])
            model.load_state_dict(saved["model"])
            found[want.index(key)] = model.eval()
    return [found[i] for i in sorted(found)]


def counts(pred: np.ndarray, masks: np.ndarray, k: int, near: int) -> tuple:
    """(found, false near a true pixel, false elsewhere on class photos, false on other photos,
    other photos with > 20 false pixels) for class index k."""
    gt, pc = masks == k, pred == k
    dilated = torch.nn.functional.max_pool2d(torch.from_numpy(gt.astype(np.float32))[:, None],
                                             2 * near + 1, 1, near)[:, 0].numpy() > 0
    has = gt.reshape(len(gt), -1).any(1)[:, None, None]
    other = (pc & ~has).reshape(len(pc), -1).sum(1)
    return ((pc & gt).sum(), (pc & ~gt & dilated).sum(), (pc & ~dilated & has).sum(), other.sum(),
            int((other > 20).sum()))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real", required=True, help="the real config evaluate was given")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="its --set overrides")
    p.add_argument("--report", required=True, help="an evaluate --out folder (held-out, not --folds)")
    p.add_argument("--run", action="append", required=True, help='a run as "LABEL xRATIO", e.g. "real only x0"')
    p.add_argument("--class", dest="cls", required=True, help="the class to count, e.g. Crack")
    p.add_argument("--near", type=int, default=3, help="px around a true pixel counted as near")
    args = p.parse_args()
    results = read_results(args.report)
    if args.cls not in results["classes"]:
        raise SystemExit(f"--class {args.cls}: not a class of {args.report} ({', '.join(results['classes'])})")
    k = results["classes"].index(args.cls) + 1
    cfg = load_config(args.real, args.overrides)
    _, held, _ = load_real(cfg, args.real, results["settings"]["image_size"])
    masks = held.masks.numpy()
    print(f"{args.cls}: {int((masks == k).sum())} true pixels on {int((masks == k).reshape(len(masks), -1).any(1).sum())} "
          f"of {len(masks)} held-out photos")
    for label in args.run:
        models = cached_models(args.report, label, results["settings"]["segmenter"])
        if not models:
            raise SystemExit(f"--run {label!r}: no cached segmenter of it in {args.report}/segmenters")
        c = np.mean([counts(predict(m, held.images).numpy(), masks, k, args.near) for m in models], 0)
        print(f"{label} ({len(models)} seeds): found {c[0]:.0f}; false within {args.near} px {c[1]:.0f}, "
              f"elsewhere on {args.cls} photos {c[2]:.0f}, on other photos {c[3]:.0f} ({c[4]:.1f} photos > 20 px)")


if __name__ == "__main__":
    main()
