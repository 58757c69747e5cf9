"""Dataset layouts: each turns a root folder into records (image path, mask path).

The foundation reads the `paired` layout, which is also what `make-demo-data` and
`defect-gen sample` write, so generated pairs read straight back:

    ROOT/images/<stem>.<png|jpg|jpeg|bmp|tif|tiff>
    ROOT/masks/<stem>.png          uint8 class index, 0 = background, 1..K = data.classes
"""

from __future__ import annotations

from dataclasses import dataclass

import blobfile as bf

from defect_gen.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Record:
    image: str
    mask: str


def _stem(name: str) -> str:
    return name.rsplit(".", 1)[0]


def paired(root: str) -> list[Record]:
    images_dir, masks_dir = bf.join(root, "images"), bf.join(root, "masks")
    for d in (root, images_dir, masks_dir):
        if not bf.isdir(d):
            raise DataError(f"dataset folder not found: {d} (layout 'paired' expects ROOT/images and ROOT/masks)")
    masks = {_stem(n): n for n in bf.listdir(masks_dir) if n.lower().endswith(".png")}
    records = []
    for name in sorted(bf.listdir(images_dir)):
        if not name.lower().endswith(IMAGE_EXTS):
            continue
        stem = _stem(name)
        if stem not in masks:
            raise DataError(f"missing mask for {bf.join(images_dir, name)}: expected {bf.join(masks_dir, stem + '.png')}")
        records.append(Record(bf.join(images_dir, name), bf.join(masks_dir, masks[stem])))
    if not records:
        raise DataError(f"no images found in {images_dir} (extensions: {', '.join(IMAGE_EXTS)})")
    return records


LAYOUTS = {"paired": paired}


def find_records(root: str, layout: str) -> list[Record]:
    if not root:
        raise DataError("data.root is empty: set it in the config or with --set data.root=DIR")
    if layout not in LAYOUTS:
        raise DataError(f"unknown data.layout {layout!r}; available: {', '.join(LAYOUTS)}")
    return LAYOUTS[layout](root)
