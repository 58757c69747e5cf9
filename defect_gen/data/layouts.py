"""Dataset layouts: each turns a root folder into records (image, mask, class) and problems.

A layout only lists files; nothing is decoded here. What a user's folder gets wrong at this
level (an image without its mask, a mask without its image, a folder that maps to no class)
becomes a `Problem` naming the file, so `defect-gen data check` can show every one at once;
only a root that is not there at all raises straight away. All listing goes through
`blobfile`, so gs:// and az:// roots work like local folders.

Layouts (`data.layout`):

paired           ROOT/images/<stem>.<ext> + ROOT/masks/<stem>.png class-index masks (what
                 `make-demo-data` and `defect-gen sample` write, so generated pairs read back)
mvtec            ROOT/test/<type>/<stem>.png + ROOT/ground_truth/<type>/<stem>_mask.png
                 binary masks; the class is the <type> folder; good/ (and ROOT/train/good/)
                 is defect-free; combined/ (several classes) needs class-index masks
defect_spectrum  ROOT/<category>/image/<type>/<stem>.png + ROOT/<category>/mask/<type>/
                 <stem>_mask.png class indices; with data.palette the colour masks in
                 rgb_mask/ (spelled rbg_mask/ in parts of the published data) are read instead;
                 each <type> folder must be a class (its masks must hold it), a good folder
                 or combined/ (several classes)
official         the published Defect-Gen layout: ROOT/test/<type>/ + ROOT/converted_ground_truth/
                 <type>/ class-index masks; good/ is skipped
class_folders    ROOT/<ClassFolder>/.../<stem>.jpg beside <stem>.png binary masks (or
                 <stem>.png beside <stem>_mask.png); the class is the top folder
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field

import blobfile as bf

from defect_gen.config import DataConfig
from defect_gen.errors import DataError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# MVTec's (and `defect-gen sample`'s) folder for images holding several defect classes.
COMBINED = "combined"
# Mask names tried for an image <stem>, in order (MVTec and Defect Spectrum add "_mask").
MASK_SUFFIXES = ("_mask.png", ".png")
# Defect Spectrum's colour masks: <stem>_rgb_mask.png, in places <stem>_rbg_mask.png.
RGB_MASK_SUFFIXES = ("_rgb_mask.png", "_rbg_mask.png") + MASK_SUFFIXES


@dataclass(frozen=True)
class Record:
    """One image and its mask file.

    `mask` is None for a defect-free image that has no mask file (all background). `label` is
    the class (1..K, 0 = defect-free) its folder names: a binary mask's foreground, or, for
    class-index and colour masks, the class the mask must hold (a cross-check); None when no
    folder names one (paired, official, combined/).
    """

    image: str
    mask: typing.Optional[str]
    label: typing.Optional[int] = None


@dataclass(frozen=True)
class Problem:
    """Something wrong with the data, as one line that names the file or folder.

    `skippable` problems concern single files, which `data.skip_bad` can leave out; the rest
    (a class without images) no skipping can fix.
    """

    path: str
    message: str
    skippable: bool = True


@dataclass
class Listing:
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def file_stem(path: str) -> str:
    """A file's name without folder and extension: what pairs an image with its mask, and a
    generated pair's file with its manifest row."""
    return os.path.splitext(os.path.basename(path))[0]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTS) and not name.startswith(".")


def _require_dir(path: str, layout: str, expected: str) -> None:
    if not bf.isdir(path):
        raise DataError(f"dataset folder not found: {path} (layout '{layout}' expects {expected})")


def _listdir(folder: str) -> list[str]:
    """Names in a folder. Local folders use os.listdir, which (unlike blobfile's scandir) does not
    stat each entry, so a symlink loop is listed and then fails alone as an unreadable file."""
    return os.listdir(folder) if "://" not in folder else bf.listdir(folder)


def _subdirs(path: str) -> list[str]:
    return sorted(n.rstrip("/") for n in _listdir(path) if bf.isdir(bf.join(path, n.rstrip("/"))))


def pair_folder(out: Listing, image_dir: str, images: list[str], mask_dir: str, masks: list[str],
                suffixes: tuple[str, ...], label: typing.Optional[int] = None, optional: bool = False) -> None:
    """Pair each image name with the mask named <stem><suffix> (first suffix that exists).

    Images without a mask are problems unless `optional` (defect-free folders); masks that
    no image claims are problems too ("extra mask"), since they usually mean a renamed file.
    """
    by_lower = {m.lower(): m for m in masks}
    used = set()
    for name in sorted(images):
        stem = file_stem(name)
        match = next((by_lower[(stem + s).lower()] for s in suffixes if (stem + s).lower() in by_lower), None)
        if match is not None:
            used.add(match)
            out.records.append(Record(bf.join(image_dir, name), bf.join(mask_dir, match), label))
        elif optional:
            out.records.append(Record(bf.join(image_dir, name), None, label))
        else:
            out.problems.append(Problem(bf.join(image_dir, name), f"missing mask for {bf.join(image_dir, name)}: "
                                        f"expected {bf.join(mask_dir, stem + suffixes[0])}"))
    for name in sorted(set(masks) - used):
        out.problems.append(Problem(bf.join(mask_dir, name), f"extra mask {bf.join(mask_dir, name)}: no image "
                                    f"with its stem in {image_dir}"))


def _list_images(folder: str) -> list[str]:
    return [n for n in _listdir(folder) if _is_image(n)] if bf.isdir(folder) else []


def _list_masks(folder: str) -> list[str]:
    if not bf.isdir(folder):
        return []
    return [n for n in _listdir(folder) if n.lower().endswith(".png") and not n.startswith(".")]


# ---------------------------------------------------------------------------------------
# The layouts


def paired(cfg: DataConfig) -> Listing:
    """ROOT/images/<stem>.<ext> with ROOT/masks/<stem>.png."""
    images_dir, masks_dir = bf.join(cfg.root, "images"), bf.join(cfg.root, "masks")
    for d in (cfg.root, images_dir, masks_dir):
        _require_dir(d, "paired", "ROOT/images and ROOT/masks")
    out = Listing()
    pair_folder(out, images_dir, _list_images(images_dir), masks_dir, _list_masks(masks_dir), (".png",))
    return out


def folder_label(cfg: DataConfig, folder: str) -> typing.Optional[int]:
    """Class index (1..K) of a defect folder, 0 for a defect-free one, None if unknown."""
    if folder in cfg.good_folders:
        return 0
    name = cfg.folder_classes.get(folder, folder)
    return cfg.classes.index(name) + 1 if name in cfg.classes else None


def _combined(cfg: DataConfig, folder: str) -> bool:
    """A folder of images with several classes (not mapped to one through data.folder_classes)."""
    return folder == COMBINED and folder_label(cfg, folder) is None


def _unknown_folder(cfg: DataConfig, path: str) -> Problem:
    return Problem(path, f"folder {path}: '{bf.basename(path)}' is not a class in data.classes {cfg.classes}; "
                         f"map it with data.folder_classes or list it in data.good_folders")


def mvtec(cfg: DataConfig) -> Listing:
    """ROOT/test/<type>/<stem>.png with ROOT/ground_truth/<type>/<stem>_mask.png (binary)."""
    test_dir, gt_dir = bf.join(cfg.root, "test"), bf.join(cfg.root, "ground_truth")
    for d in (cfg.root, test_dir):
        _require_dir(d, "mvtec", "ROOT/test/<type> and ROOT/ground_truth/<type>")
    out = Listing()
    for folder in _subdirs(test_dir):
        label = folder_label(cfg, folder)
        if label is None and not _combined(cfg, folder):
            out.problems.append(_unknown_folder(cfg, bf.join(test_dir, folder)))
            continue
        image_dir, mask_dir = bf.join(test_dir, folder), bf.join(gt_dir, folder)
        pair_folder(out, image_dir, _list_images(image_dir), mask_dir, _list_masks(mask_dir),
                    MASK_SUFFIXES, label=label, optional=label == 0)
    # MVTec keeps its defect-free training images in train/good: more defect-free images
    train_dir = bf.join(cfg.root, "train")
    for folder in _subdirs(train_dir) if bf.isdir(train_dir) else []:
        if folder in cfg.good_folders:
            image_dir = bf.join(train_dir, folder)
            out.records += [Record(bf.join(image_dir, n), None, 0) for n in sorted(_list_images(image_dir))]
    return out


def official(cfg: DataConfig) -> Listing:
    """ROOT/test/<type>/ with ROOT/converted_ground_truth/<type>/ class-index masks; good/ skipped."""
    test_dir, gt_dir = bf.join(cfg.root, "test"), bf.join(cfg.root, "converted_ground_truth")
    for d in (cfg.root, test_dir, gt_dir):
        _require_dir(d, "official", "ROOT/test/<type> and ROOT/converted_ground_truth/<type>")
    out = Listing()
    for folder in _subdirs(test_dir):
        if folder in cfg.good_folders:
            continue  # as published: defect-free images are not trained on
        image_dir, mask_dir = bf.join(test_dir, folder), bf.join(gt_dir, folder)
        pair_folder(out, image_dir, _list_images(image_dir), mask_dir, _list_masks(mask_dir), MASK_SUFFIXES)
    return out


def _spectrum_categories(cfg: DataConfig) -> list[str]:
    """Category folders to read: data.categories, or every ROOT/<x> with an image/ folder."""
    if bf.isdir(bf.join(cfg.root, "image")):
        return [cfg.root]  # ROOT is a single category
    names = cfg.categories or [n for n in _subdirs(cfg.root) if bf.isdir(bf.join(cfg.root, n, "image"))]
    for name in cfg.categories:
        _require_dir(bf.join(cfg.root, name, "image"), "defect_spectrum", f"data.categories entry '{name}' "
                     "to hold image/<type>/ folders")
    if not names:
        raise DataError(f"no category folder in {cfg.root}: layout 'defect_spectrum' expects "
                        f"ROOT/<category>/image/<type>/ (or ROOT/image/<type>/)")
    return [bf.join(cfg.root, n) for n in names]


def _spectrum_mask_dir(category: str, colour: bool) -> tuple[str, tuple[str, ...]]:
    if not colour:
        return bf.join(category, "mask"), MASK_SUFFIXES
    for name in ("rgb_mask", "rbg_mask"):
        if bf.isdir(bf.join(category, name)):
            return bf.join(category, name), RGB_MASK_SUFFIXES
    return bf.join(category, "rgb_mask"), RGB_MASK_SUFFIXES


def defect_spectrum(cfg: DataConfig) -> Listing:
    """ROOT/<category>/image/<type>/ with mask/<type>/ (or, with a palette, rgb_mask/<type>/)."""
    _require_dir(cfg.root, "defect_spectrum", "ROOT/<category>/image/<type>/")
    out = Listing()
    for category in _spectrum_categories(cfg):
        mask_root, suffixes = _spectrum_mask_dir(category, colour=bool(cfg.palette))
        image_root = bf.join(category, "image")
        for folder in _subdirs(image_root):
            label = folder_label(cfg, folder)
            if label is None and not _combined(cfg, folder):
                # a type folder that is no class would have its mask values read as whichever
                # class data.classes puts there (a class left out shifts the rest): refuse
                out.problems.append(_unknown_folder(cfg, bf.join(image_root, folder)))
                continue
            image_dir, mask_dir = bf.join(image_root, folder), bf.join(mask_root, folder)
            pair_folder(out, image_dir, _list_images(image_dir), mask_dir, _list_masks(mask_dir), suffixes,
                        label=label, optional=label == 0)
    return out


def _split_class_folder(names: list[str]) -> tuple[list[str], list[str], tuple[str, ...]]:
    """Images, masks and mask suffixes of one folder of a class_folders dataset.

    A folder with non-PNG images (x.jpg) holds its masks as x.png; a PNG-only folder pairs
    x.png with x_mask.png.
    """
    files = [n for n in names if _is_image(n)]
    if any(not n.lower().endswith(".png") for n in files):
        return ([n for n in files if not n.lower().endswith(".png")],
                [n for n in files if n.lower().endswith(".png")], (".png",))
    masks = [n for n in files if n.lower().endswith("_mask.png")]
    return [n for n in files if n not in masks], masks, ("_mask.png",)


def class_folders(cfg: DataConfig) -> Listing:
    """ROOT/<ClassFolder>/.../<stem>.<ext> beside its <stem>.png binary mask."""
    _require_dir(cfg.root, "class_folders", "ROOT/<ClassFolder>/.../<stem>.jpg with <stem>.png masks")
    out = Listing()
    loose = _list_images(cfg.root)
    if loose:
        out.problems.append(Problem(bf.join(cfg.root, loose[0]), f"{len(loose)} images directly in {cfg.root}, "
                                    f"e.g. {loose[0]}: layout 'class_folders' expects them in class folders"))
    for folder in _subdirs(cfg.root):
        label = folder_label(cfg, folder)
        if label is None:
            out.problems.append(_unknown_folder(cfg, bf.join(cfg.root, folder)))
            continue
        for dirpath, _, names in bf.walk(bf.join(cfg.root, folder)):
            images, masks, suffixes = _split_class_folder(names)
            pair_folder(out, dirpath, images, dirpath, masks, suffixes, label=label, optional=label == 0)
    return out


LAYOUTS: dict[str, typing.Callable[[DataConfig], Listing]] = {
    "paired": paired,
    "mvtec": mvtec,
    "defect_spectrum": defect_spectrum,
    "official": official,
    "class_folders": class_folders,
}


def find_records(cfg: DataConfig) -> Listing:
    """List the dataset's records and layout-level problems (sorted, so listings are reproducible)."""
    if not cfg.root:
        # `overrides`: load_config's, a command's --set
        raise DataError.with_params("data.root is empty: set it in the config or with {overrides} data.root=DIR")
    if cfg.layout not in LAYOUTS:
        raise DataError(f"unknown data.layout {cfg.layout!r}; available: {', '.join(LAYOUTS)}")
    out = LAYOUTS[cfg.layout](cfg)
    out.records.sort(key=lambda r: r.image)
    out.problems.sort(key=lambda p: p.path)
    return out
