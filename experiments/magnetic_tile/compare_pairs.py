"""A picture of real pairs beside generated ones, one row per class (docs/results.md).

    .venv/bin/python experiments/magnetic_tile/compare_pairs.py --real configs/magnetic_tile_paint.yaml \
        --folders runs/mt_paint/samples/copy_paste runs/mt_paint/samples/paint_s1 --out compare.png

Each row: for every source (the real training split first, then each folder), the first
pairs holding that class, cropped to CROP px around the defect at native resolution, as
image | overlay. Columns are labelled in the file name order given; nothing is resized
except cells from photos smaller than CROP.
"""

import argparse
import json
import os

import numpy as np
from PIL import Image

from defect_gen.config import load_config
from defect_gen.core.masks import overlay
from defect_gen.data.image_io import read_image, read_mask, write_png
from defect_gen.pipeline.painting import training_sources

CROP, PER_SOURCE, GAP = 96, 2, 4


def crop_around(image: np.ndarray, mask: np.ndarray, cls: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.nonzero(mask == cls)
    k = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)  # a defect pixel near the centre
    h, w = mask.shape
    side = min(CROP, h, w)
    top = int(min(max(rows[k] - side / 2, 0), h - side))
    left = int(min(max(cols[k] - side / 2, 0), w - side))
    box = (slice(top, top + side), slice(left, left + side))
    image, mask = image[box], mask[box]
    if side < CROP:
        image = np.asarray(Image.fromarray(image).resize((CROP, CROP), Image.NEAREST))
        mask = np.asarray(Image.fromarray(mask).resize((CROP, CROP), Image.NEAREST))
    return image, mask


def folder_pairs(folder: str):
    with open(os.path.join(folder, "manifest.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            yield (read_image(os.path.join(folder, row["files"]["image"])),
                   read_mask(os.path.join(folder, row["files"]["mask"])))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--folders", nargs="+", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    cfg = load_config(args.real, args.overrides)
    sources = [[(s.image, s.mask) for s in training_sources(cfg)]] + [list(folder_pairs(f)) for f in args.folders]
    rows = []
    for cls in range(1, len(cfg.data.classes) + 1):
        cells = []
        for pairs in sources:
            picked = [crop_around(im, m, cls) for im, m in pairs if (m == cls).any()][:PER_SOURCE]
            for image, mask in picked:
                cells += [image, overlay(image, mask), np.full((CROP, GAP, 3), 255, np.uint8)]
            cells.append(np.full((CROP, 4 * GAP, 3), 255, np.uint8))  # between sources
        rows.append(np.concatenate(cells, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    write_png(args.out, np.concatenate(rows, axis=0))
    print(f"{args.out}: rows {', '.join(cfg.data.classes)}; columns real training, " + ", ".join(args.folders))


if __name__ == "__main__":
    main()
