"""The class-conditioning table (issue 16) from the folders experiments/class_conditioning/run.sh wrote.

    python experiments/class_conditioning/table.py runs/classcond/samples --classes scratch stain hole \
        [--real_config runs/classcond/cond/large/config.yaml]

SAMPLES/<setting>/<class>/ is one `defect-gen sample --classes <class>` run (settings: rejection,
rejection_cond, cond_w1, cond_w2, ...). Per class and setting it prints

- first: share of the pairs whose first candidate (seed + i) held the class: the pairs with
  tries == 1 in manifest.jsonl, out of the pairs asked for (sample_settings.json);
- per pair: candidates drawn per accepted pair (a pair given up after --max-tries counts all
  its tries and no pair);

and, with --real_config (a trained model's config.yaml: its data and few-shot selection are
the real pairs it learnt from), the evaluate report's quality columns for each setting over
all classes: diversity (mean pairwise RMS distance at 32 px) and mask consistency (mIoU /
defect F1 of a segmenter trained on those real pairs, on the generated images against their
masks), with the real pairs' own diversity as the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from defect_gen.config import load_config
from defect_gen.data.check import check_dataset
from defect_gen.data.dataset import select_pairs
from defect_gen.evaluation import quality
from defect_gen.evaluation.data import _load, concat, load_synthetic
from defect_gen.evaluation.segmenter import SegSettings, train_segmenter


def _count(folder: str) -> tuple[int, int, int, int] | None:
    """(pairs asked for, pairs kept, pairs whose first candidate was kept, candidates drawn) of one run."""
    manifest = os.path.join(folder, "manifest.jsonl")
    settings = os.path.join(folder, "sample_settings.json")
    if not os.path.isfile(settings) or not os.path.isfile(os.path.join(folder, ".done")):
        return None  # not run yet, or still running (run.sh marks finished runs .done)
    with open(settings, encoding="utf-8") as f:
        recorded = json.load(f)
    max_tries, num_samples = recorded["max_tries"], recorded["num_samples"]
    rows = []
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
    drawn = sum(r["tries"] for r in rows) + (num_samples - len(rows)) * max_tries
    return num_samples, len(rows), sum(r["tries"] == 1 for r in rows), drawn


def _quality(folders: list[str], classes: list[str], size: int, seg) -> dict:
    done = [f for f in folders if os.path.isfile(os.path.join(f, ".done")) and os.path.isdir(os.path.join(f, "images"))
            and os.listdir(os.path.join(f, "images"))]
    sets = [load_synthetic(f, classes, size) for f in done]
    if not sets:
        return {}
    pairs = sets[0]
    for other in sets[1:]:
        pairs = concat(pairs, other)
    consistency = quality.mask_consistency(seg, pairs, classes)
    return {"n": len(pairs), "diversity": quality.diversity(quality.features(pairs.images)),
            "mIoU": consistency["mIoU"], "F1": consistency["F1"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("samples")
    p.add_argument("--classes", nargs="+", required=True)
    p.add_argument("--settings", nargs="+", default=["rejection", "rejection_cond", "cond_w1", "cond_w2", "cond_w4"])
    p.add_argument("--real_config", default=None, help="a trained model's config.yaml: its real pairs, for the "
                   "quality columns")
    p.add_argument("--seg_steps", type=int, default=400)
    p.add_argument("--pictures", default=None, metavar="PREFIX",
                   help="write PREFIX_<class>.png: the first 8 pairs of each class's preview in --picture_setting")
    p.add_argument("--picture_setting", default="cond_w2")
    args = p.parse_args(argv)
    if args.pictures:
        _pictures(args)
    settings = [s for s in args.settings if os.path.isdir(os.path.join(args.samples, s))]
    head = "| setting | " + " | ".join(f"{c}: first / per pair" for c in args.classes) + " | all: first / per pair |"
    print(head)
    print("|---" * (len(args.classes) + 2) + "|")
    for setting in settings:
        cells, total = [], [0, 0, 0, 0]
        for c in args.classes:
            got = _count(os.path.join(args.samples, setting, c))
            if got is None:
                cells.append("-")
                continue
            asked, kept, first, tries = got
            total = [a + b for a, b in zip(total, got)]
            per = f"{tries / kept:.2f}" if kept else f"∞ ({tries} drawn, 0 kept)"
            cells.append(f"{first / asked:.0%} / {per}")
        per = f"{total[3] / total[1]:.2f}" if total[1] else f"∞ ({total[3]} drawn, 0 kept)"
        all_cell = f"{total[2] / total[0]:.0%} / {per}" if total[0] else "-"
        print(f"| {setting} | " + " | ".join(cells) + f" | {all_cell} |")
    if args.real_config:
        _print_quality(args, settings)
    return 0


def _print_quality(args, settings: list[str]) -> None:
    cfg = load_config(args.real_config)
    size = cfg.model.image_size
    report = check_dataset(cfg.data, progress=False)
    train = [p for p in select_pairs(report).train if p.class_pixels]
    real = _load(train, cfg.data, report.kind, size, "real", False)
    seg = train_segmenter(real.images, real.masks, len(args.classes) + 1,
                          SegSettings(steps=args.seg_steps, crop=min(64, size)), seed=0)
    print()
    print(f"real pairs: n = {len(real)}, diversity {quality.diversity(quality.features(real.images)):.4f}")
    print("| setting | pairs | diversity | mask consistency mIoU | consistency F1 |")
    print("|---|---|---|---|---|")
    for setting in settings:
        q = _quality([os.path.join(args.samples, setting, c) for c in args.classes], args.classes, size, seg)
        if q:
            print(f"| {setting} | {q['n']} | {q['diversity']:.4f} | {q['mIoU']:.3f} | {q['F1']:.3f} |")


def _pictures(args) -> None:
    """The top half of each class's preview.png (4 x 4 pairs: the first two rows, 8 pairs)."""
    from PIL import Image

    for c in args.classes:
        path = os.path.join(args.samples, args.picture_setting, c, "preview.png")
        if os.path.isfile(path):
            with Image.open(path) as im:
                im.crop((0, 0, im.width, im.height // 2)).save(f"{args.pictures}_{c}.png", optimize=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    sys.exit(main())
