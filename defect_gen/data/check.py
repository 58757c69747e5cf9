"""Validation of a dataset: decode every pair once, collect every problem, summarise.

`defect-gen data check` prints `format_report(check_dataset(cfg))`; training runs the same
`check_dataset` before it trains (in `DefectDataset`) and refuses bad data with the same
messages, so what the check says is exactly what training would do.

A pair is decoded here into an RGB image and a class-index mask (0 = background, 1..K as in
`data.classes`), whatever the masks look like on disk:

* index masks hold class values; a value above K is a problem;
* binary masks are thresholded (`>= data.mask_threshold`, never trusting exact 0/255) and
  the foreground gets the record's class (from its folder, or the only class);
* colour masks are mapped through `data.palette`; a colour not in it is a problem.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field

import numpy as np

from defect_gen import logs
from defect_gen.config import DataConfig
from defect_gen.core.masks import resize_mask
from defect_gen.data.image_io import read_image, read_mask, read_mask_rgb
from defect_gen.data.layouts import Problem, Record, find_records
from defect_gen.errors import ConfigError, DataError

# Layouts whose masks are binary, the class coming from the folder.
BINARY_LAYOUTS = ("mvtec", "class_folders")


def mask_kind(cfg: DataConfig) -> str:
    """How masks encode classes: 'palette', 'binary' or 'index'."""
    if cfg.palette:
        return "palette"
    if cfg.mask_type != "auto":
        return cfg.mask_type
    return "binary" if cfg.layout in BINARY_LAYOUTS else "index"


# ---------------------------------------------------------------------------------------
# Decoding one pair


def _index_mask(path: str, num_defect: int) -> np.ndarray:
    mask = read_mask(path)
    if mask.size and mask.max() > num_defect:
        bad = np.unique(mask[mask > num_defect])
        hint = "; binary 0/255 masks need data.mask_type: binary" if 255 in bad else ""
        raise DataError(f"mask {path} holds class values {', '.join(map(str, bad[:5].tolist()))} outside "
                        f"the classes: data.classes lists {num_defect} (values 0..{num_defect} allowed){hint}")
    return mask


def _palette_mask(path: str, cfg: DataConfig) -> np.ndarray:
    rgb = read_mask_rgb(path).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    mask = np.full(code.shape, 255, dtype=np.uint8)  # 255 = not (yet) matched
    background = cfg.palette.get("background", [0, 0, 0])
    for index, colour in [(0, background)] + [(i + 1, cfg.palette[c]) for i, c in enumerate(cfg.classes)]:
        mask[code == (colour[0] << 16 | colour[1] << 8 | colour[2])] = index
    if (mask == 255).any():
        unknown = np.unique(code[mask == 255])[:3]
        shown = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown.tolist())
        raise DataError(f"mask {path} has {int((mask == 255).sum())} pixels of colours outside the classes, "
                        f"e.g. {shown}; data.palette maps only {len(cfg.palette)} colours")
    return mask


def _binary_mask(path: str, label: int, threshold: int, notes: list[str]) -> np.ndarray:
    raw = read_mask(path, one_bit_value=255)  # a 1-bit mask's set pixels are foreground
    fg = raw >= threshold
    if label == 0 and fg.any():
        notes.append(f"mask {path} is in a defect-free folder but has {int(fg.sum())} pixels >= {threshold}; "
                     f"treated as defect-free")
    elif label > 0 and not fg.any():
        notes.append(f"mask {path} is empty after thresholding at {threshold} (max value {int(raw.max())}); "
                     f"its image counts as defect-free")
    return (fg * label).astype(np.uint8)


def _combined_mask(path: str, num_defect: int) -> np.ndarray:
    """A binary-layout mask in combined/ (several classes): only class indices say which is which."""
    mask = read_mask(path)
    if mask.size and mask.max() > num_defect:
        raise DataError(f"mask {path} is in a combined/ folder (several classes) but holds value {int(mask.max())}: "
                        f"a binary mask cannot say which pixel is which class; write class indices 0..{num_defect} "
                        f"there, read such pairs with layout paired or defect_spectrum (`sample --layout`), or "
                        f"map the folder to one class with data.folder_classes")
    return mask


def _cross_check(rec: Record, mask: np.ndarray, cfg: DataConfig, notes: list[str]) -> None:
    """A class-index or colour mask against the class its folder names (rec.label)."""
    folder = rec.image.rstrip("/").split("/")[-2]
    if rec.label == 0:
        if mask.any():
            notes.append(f"mask {rec.mask} is in defect-free folder '{folder}' but holds {int((mask > 0).sum())} "
                         f"defect pixels; kept as they are")
        return
    if not mask.any():
        notes.append(f"mask {rec.mask} is empty, but its image is in defect folder '{folder}'; it counts as "
                     f"defect-free")
    elif not (mask == rec.label).any():
        held = ", ".join(f"{v} ('{cfg.classes[v - 1]}')" for v in np.unique(mask[mask > 0]).tolist()[:4])
        raise DataError(f"mask {rec.mask} is in folder '{folder}' (class '{cfg.classes[rec.label - 1]}', mask value "
                        f"{rec.label}) but holds only {held}; data.classes must list the classes in the order of "
                        f"their mask values (value i = the i-th class), or map the folder with data.folder_classes")


def read_pair(rec: Record, cfg: DataConfig, kind: str, notes: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode one record into (uint8 HxWx3 RGB, uint8 HxW class index); DataError names the file.

    Non-fatal findings (a binary mask empty after thresholding) are appended to `notes`.
    """
    notes = [] if notes is None else notes
    image = read_image(rec.image)  # grey, RGBA, palette... all become RGB here
    num_defect = len(cfg.classes)
    if rec.mask is None:
        mask = np.zeros(image.shape[:2], dtype=np.uint8)
    elif kind == "palette":
        mask = _palette_mask(rec.mask, cfg)
    elif kind == "binary" and rec.label is None and num_defect > 1:
        mask = _combined_mask(rec.mask, num_defect)
    elif kind == "binary":
        label = rec.label if rec.label is not None else 1  # a one-class dataset (checked up front)
        mask = _binary_mask(rec.mask, label, cfg.mask_threshold, notes)
    else:
        mask = _index_mask(rec.mask, num_defect)
    if kind != "binary" and rec.label is not None and rec.mask is not None:
        _cross_check(rec, mask, cfg, notes)
    if image.shape[:2] != mask.shape:
        raise DataError(f"mask {rec.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {rec.image} "
                        f"is {image.shape[1]}x{image.shape[0]}")
    return image, mask


# ---------------------------------------------------------------------------------------
# The whole dataset


@dataclass(frozen=True)
class PairStats:
    """What the check learnt about one good pair."""

    record: Record
    width: int
    height: int
    class_pixels: dict[int, int]  # class index (1..K) -> pixels, only classes present

    @property
    def classes(self) -> list[int]:
        return sorted(self.class_pixels)


@dataclass
class Report:
    cfg: DataConfig
    kind: str
    pairs: list[PairStats] = field(default_factory=list)  # pairs that decoded cleanly
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not a reason to refuse
    bad: list[Record] = field(default_factory=list)  # records with a problem of their own
    size: int | None = None  # the training size the masks were resized to, if checked
    shrunk: list[Problem] = field(default_factory=list)  # masks that lose most of a class at `size`

    @property
    def refusable(self) -> bool:
        """True when training must refuse even with data.skip_bad (a class without images...)."""
        return any(not p.skippable for p in self.problems)


def _check_kind(cfg: DataConfig, kind: str) -> None:
    if kind == "binary" and cfg.layout not in BINARY_LAYOUTS and len(cfg.classes) != 1:
        raise ConfigError(f"data.mask_type binary with layout '{cfg.layout}' needs exactly one class (its "
                          f"foreground), but data.classes lists {len(cfg.classes)}; use class-index masks, "
                          f"a palette, or layout mvtec / class_folders")


OnPair = typing.Callable[[Record, np.ndarray, np.ndarray], None]


def check_dataset(cfg: DataConfig, on_pair: OnPair | None = None, progress: bool = False,
                  size: int | None = None) -> Report:
    """List and decode every pair of `cfg`, collecting problems instead of stopping at the first.

    `on_pair(record, image, mask)` sees each good pair as decoded, so a caller can keep them
    and not decode twice. With `size`, every mask is also resized to size x size as training
    does, and each one that loses most of a class there is listed in `report.shrunk`.
    """
    kind = mask_kind(cfg)
    _check_kind(cfg, kind)
    listing = find_records(cfg)
    report = Report(cfg, kind, problems=list(listing.problems), size=size)
    for rec in logs.iterate(listing.records, "checking data", "pair", enabled=progress):
        try:
            image, mask = read_pair(rec, cfg, kind, report.notes)
        except DataError as exc:
            report.problems.append(Problem(rec.image, str(exc)))
            report.bad.append(rec)
            continue
        counts = np.bincount(mask.ravel(), minlength=len(cfg.classes) + 1)
        pixels = {c: int(counts[c]) for c in range(1, len(cfg.classes) + 1) if counts[c]}
        report.pairs.append(PairStats(rec, image.shape[1], image.shape[0], pixels))
        if size and pixels:
            report.shrunk += [Problem(rec.mask, line) for line in shrink_losses(rec.mask, mask, pixels, size,
                                                                                 cfg.classes)]
        if on_pair is not None:
            on_pair(rec, image, mask)
    _dataset_problems(report)
    return report


def shrink_losses(path: str, mask: np.ndarray, pixels: dict[int, int], size: int, classes: list[str]) -> list[str]:
    """One line per class that vanishes, or keeps under half its area, when `mask` is resized
    to size x size (areas compared at the original scale)."""
    small = resize_mask(mask, (size, size))
    kept = np.bincount(small.ravel(), minlength=len(classes) + 1)
    scale = mask.size / small.size  # original pixels per resized pixel
    lines = []
    for cls, before in pixels.items():
        after = kept[cls] * scale
        where = f"at {size}x{size} px (from {mask.shape[1]}x{mask.shape[0]})"
        if kept[cls] == 0:
            lines.append(f"mask {path}: class '{classes[cls - 1]}' ({before} px) vanishes {where}")
        elif after < 0.5 * before:
            lines.append(f"mask {path}: class '{classes[cls - 1]}' keeps {100 * after / before:.0f}% of its "
                         f"area {where}: {before} px -> {kept[cls]} px")
    return lines


def _dataset_problems(report: Report) -> None:
    """Problems of the dataset as a whole: no pairs at all, classes no image contains."""
    cfg = report.cfg
    if not report.pairs and not report.problems:
        report.problems.append(Problem(cfg.root, f"no image/mask pairs found in {cfg.root} (layout "
                                       f"'{cfg.layout}', image extensions png, jpg, jpeg, bmp, tif)", False))
    counts = images_per_class(report)
    for index, name in enumerate(cfg.classes, start=1):
        if report.pairs and counts[index] == 0:
            report.problems.append(Problem(cfg.root, f"class '{name}' (mask value {index}) is empty: no image in "
                                           f"{cfg.root} contains it; add images or remove it from data.classes",
                                           False))


def images_per_class(report: Report) -> list[int]:
    """Images containing each class, index 0 = defect-free images."""
    counts = [0] * (len(report.cfg.classes) + 1)
    for pair in report.pairs:
        for c in pair.classes or [0]:
            counts[c] += 1
    return counts


# ---------------------------------------------------------------------------------------
# Printing


def _share_row(name: str, images: int, shares: list[float]) -> str:
    if not shares:
        return f"  {name:<16} {images:>7}"
    lo, mid, hi = min(shares), float(np.median(shares)), max(shares)
    return f"  {name:<16} {images:>7}   {100 * lo:7.3f}% {100 * mid:7.3f}% {100 * hi:7.3f}%"


def _size_line(pairs: list[PairStats]) -> str:
    sizes: dict[tuple[int, int], int] = {}
    for p in pairs:
        sizes[(p.width, p.height)] = sizes.get((p.width, p.height), 0) + 1
    if len(sizes) == 1:
        (w, h), = sizes
        return f"image sizes: all {w}x{h}"
    (w, h), n = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    widths, heights = [s[0] for s in sizes], [s[1] for s in sizes]
    return (f"image sizes: {len(sizes)} different, width {min(widths)}..{max(widths)}, height "
            f"{min(heights)}..{max(heights)} px (most common {w}x{h}, {n} images)")


def _problem_split(report: Report) -> str:
    """Why problems outnumber bad pairs: the rest come from the listing or the class counts."""
    other = len(report.problems) - len(report.bad)
    if other <= 0:
        return ""
    bad = f"{len(report.bad)} bad pair{'s' * (len(report.bad) != 1)}; " if report.bad else ""
    return f" ({bad}{other} in the listing: missing or extra files, unknown folders, empty classes)"


def format_report(report: Report) -> list[str]:
    """The check's findings as printable lines: the table, then every problem and note."""
    cfg = report.cfg
    kind = {"binary": f"binary masks, threshold {cfg.mask_threshold}", "index": "class-index masks",
            "palette": "colour masks through data.palette"}[report.kind]
    lines = [f"dataset: {cfg.root} (layout {cfg.layout}, {kind})",
             f"pairs: {len(report.pairs)} readable, {len(report.bad)} bad"]
    if report.pairs:
        lines.append(_size_line(report.pairs))
    lines.append(f"  {'class':<16} {'images':>7}   defect-pixel share per image: min / median / max")
    counts = images_per_class(report)
    for index, name in enumerate(cfg.classes, start=1):
        shares = [p.class_pixels[index] / (p.width * p.height) for p in report.pairs if index in p.class_pixels]
        lines.append(_share_row(name, counts[index], shares))
    totals = [sum(p.class_pixels.values()) / (p.width * p.height) for p in report.pairs if p.class_pixels]
    lines.append(_share_row("(any defect)", len(totals), totals))
    lines.append(_share_row("(defect-free)", counts[0], []))
    lines.append(f"problems: {len(report.problems) or 'none'}{_problem_split(report)}")
    lines += [f"  {p.message}" for p in report.problems]
    if report.notes:
        lines.append(f"notes: {len(report.notes)}")
        lines += [f"  {n}" for n in report.notes]
    if report.size and report.pairs:
        s = report.size
        lines.append(f"masks at the training size {s}x{s}: " + (f"{len(report.shrunk)} lose most of a class"
                     if report.shrunk else "every class keeps at least half its area"))
        lines += [f"  {n.message}" for n in report.shrunk]
    return lines
