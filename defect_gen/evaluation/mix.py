"""Combine generated pair folders class by class: `defect-gen mix --take DIR[:CLASS,...] --out DIR`.

Different sources can help different classes (docs/results.md measures where they did on
magnetic tile). A mix takes, from each folder, only the pairs of the classes named after its `:`
(every pair without a list): a pair is taken when every class its manifest row lists is among
them. The result is one paired-layout folder that `evaluate`, `filter` and a user's
own training read like any other. Which source to take for which class is the user's choice,
made on their own pairs: `evaluate --folds K` reports per-class IoU without held-out photos,
and `--choose REPORT_DIR` makes the choice from such a report: for each class, the folder whose
run scored the highest mean IoU on that class, taken only where it beats real pairs alone.

Each pair keeps its manifest row (its `source` and `background`, which `evaluate --folds` and
the leak check read), renamed `<folder name>_<name>` so that pairs from two folders never
collide, with `from` added: the folder it came from. The folder is written under
OUT.partial and renamed to OUT only when complete; an existing OUT is never replaced.
OUT/preview.png shows a few pairs of each class, cropped around the defect, to check by eye
what the mix holds before a segmenter trains on it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass

import numpy as np

from defect_gen import fsutil
from defect_gen.data.image_io import defect_window, save_pair_grid
from defect_gen.errors import ConfigError, DataError
from defect_gen.pipeline import pair_folder

SETTINGS = "mix_settings.json"
SUBDIRS = pair_folder.FOLDERS["paired"][:2]  # images/, masks/; masks_color/ is made when a pair has a colour mask
PREVIEW = pair_folder.PREVIEW
PREVIEW_PER_CLASS = 3
PREVIEW_CROP = 96  # px around a defect: a whole photo would show a thin crack as a few pixels


@dataclass(frozen=True)
class Take:
    folder: str
    classes: tuple[str, ...] | None  # None: every pair of the folder


def parse_take(text: str) -> Take:
    """`DIR` or `DIR:CLASS,CLASS` (the last ':' splits, so a Windows drive letter is no class list)."""
    folder, sep, names = text.rpartition(":")
    if not sep or not folder or os.sep in names or "/" in names:
        return Take(text, None)
    classes = tuple(c.strip() for c in names.split(",") if c.strip())
    if not classes:
        raise ConfigError.with_params("{takes} {value}: expected DIR or DIR:CLASS[,CLASS...] with at least one "
                                      "class name", value=repr(text))
    return Take(folder, classes)


def _class_iou(run: dict, name: str) -> float:
    return float(run["summary"][f"IoU {name}"][0])


def _read_report(report_dir: str) -> tuple[str, dict]:
    """(path, contents) of an `evaluate` report's results.json that names its --synthetic folders."""
    path = os.path.join(report_dir, "results.json")
    try:
        with open(path, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as exc:
        raise DataError.with_params("{report_dir} {path}: cannot read results.json ({error}); expected an "
                                    "`evaluate` {out_dir} folder", path=report_dir, error=exc) from None
    if not isinstance(report, dict) or not isinstance(report.get("synthetic"), dict):
        raise DataError.with_params("{report_dir} {path}: no \"synthetic\" folder list (written by evaluate since "
                                    "`mix`); run the same `evaluate` again: its cached segmenters make that quick",
                                    path=path)
    return path, report


def _per_class_choice(report: dict, runs: list[dict], real: dict, log) -> dict[str, list[str]]:
    """label -> the classes it scored best on (above real only); logs the comparison."""
    chosen: dict[str, list[str]] = {}
    for name in report["classes"]:
        best = max(runs, key=lambda r: _class_iou(r, name))
        pick = best["label"] if _class_iou(best, name) > _class_iou(real, name) else None
        log(f"  {name}: real only {100 * _class_iou(real, name):.1f}; "
            + ", ".join(f"{r['label']} {100 * _class_iou(r, name):.1f}" for r in runs)
            + f" -> {pick or 'no generated pairs'}")
        if pick:
            chosen.setdefault(pick, []).append(name)
    return chosen


def choose_takes(report_dir: str, ratio: float | None = None, log=print) -> list[Take]:
    """The takes an `evaluate` report argues for: per class, the --synthetic folder with the
    highest mean IoU of that class at `ratio`, where it is above real only's; a class no folder
    improves gets no generated pairs. A cross-validated report (`--folds`) is the honest
    source; a held-out one chooses on the photos it then scores."""
    path, report = _read_report(report_dir)
    folders = report["synthetic"]
    try:
        runs = [r for r in report["runs"] if r["label"] in folders]
        real = next((r for r in report["runs"] if r["label"] == "real only"), None)
        ratios = sorted({r["ratio"] for r in runs})
        if real is None or not runs:
            raise DataError.with_params("{report_dir} {path}: expected a real-only run and runs of "
                                        "{synthetic_dirs} folders", path=path)
        if ratio is None and len(ratios) > 1:
            raise ConfigError.with_params(f"{{report_dir}} {{path}}: runs at ratios "
                                          f"{', '.join(f'{x:g}' for x in ratios)}; pick one with {{ratio}}", path=path)
        ratio = ratios[0] if ratio is None else ratio
        runs = [r for r in runs if r["ratio"] == ratio]
        if not runs:
            raise ConfigError.with_params(f"{{ratio}} {ratio:g}: {{path}} has runs at "
                                          f"{', '.join(f'{x:g}' for x in ratios)}", path=path)
        folds = report["settings"].get("folds")
        log(f"per-class IoU ({f'{folds}-fold cross-validated' if folds else 'held-out'}, x{ratio:g}, mean over "
            f"{report['settings']['seeds']} seed(s)):")
        chosen = _per_class_choice(report, runs, real, log)
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise DataError.with_params("{report_dir} {path}: not an `evaluate` results.json (missing or odd entry: "
                                    "{entry})", path=path, entry=repr(exc)) from None
    if not chosen:
        raise DataError.with_params("{report_dir} {path}: no folder beats real pairs alone on any class; nothing "
                                    "to mix", path=path)
    return [Take(folders[label], tuple(names)) for label, names in chosen.items()]


def _rows(take: Take) -> list[dict]:
    """The manifest rows of the pairs `take` asks for; each named class must occur in the folder."""
    if not pair_folder.has_manifest(take.folder):
        raise DataError.with_params(f"{{takes}} {{folder}}: no {pair_folder.MANIFEST} there (expected a "
                                    f"`defect-gen sample` / `paint` folder in the paired layout)", folder=take.folder)
    rows = [r for r in pair_folder.read_rows(take.folder, strict=False)
            if isinstance(r.get("name"), str) and isinstance(r.get("files"), dict)]
    present = Counter(c for r in rows for c in r.get("classes", []))
    if take.classes is None:
        return rows
    missing = [c for c in take.classes if c not in present]
    if missing:
        have = ", ".join(f"{c} ({n})" for c, n in sorted(present.items())) or "none"
        raise DataError.with_params("{takes} {folder}: no pair of class {missing} in its manifest; classes there: "
                                    "{have}", folder=take.folder, missing=", ".join(missing), have=have)
    wanted = set(take.classes)
    return [r for r in rows if r.get("classes") and set(r["classes"]) <= wanted]


def _copy_pair(take: Take, row: dict, tmp: str) -> dict:
    """Copy one pair's files under its new name; returns its new manifest row."""
    prefix = os.path.basename(os.path.normpath(take.folder))
    name = f"{prefix}_{row['name']}"
    sources = {}
    for key in ("image", "mask", "mask_color"):
        rel = row["files"].get(key)
        if rel is None:
            continue
        src = fsutil.path_inside(take.folder, rel, f"--take {take.folder}: manifest file of {row['name']}")
        if not os.path.isfile(src):
            if key == "mask_color":
                continue  # a colour preview only; image and mask are what a pair is
            raise DataError.with_params("{takes} {folder}: {rel} (listed for pair {name}) does not exist",
                                        folder=take.folder, rel=rel, name=row["name"])
        sources[key] = src
    return {**row, "name": name, "files": pair_folder.copy_pair(sources, tmp, name), "from": take.folder}


def _crop_around(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A size x size crop on the mask's defects (`io.defect_window`), white padding where the
    photo is smaller."""
    window = defect_window(mask > 0, size)
    crop_img = np.full((size, size, 3), 255, np.uint8)
    crop_mask = np.zeros((size, size), np.uint8)
    h, w = mask[window].shape
    crop_img[:h, :w], crop_mask[:h, :w] = image[window], mask[window]
    return crop_img, crop_mask


def write_preview(folder: str, rows: list[dict]) -> str | None:
    """folder/preview.png: the first PREVIEW_PER_CLASS pairs of each class (as listed in the
    rows, classes in name order), each cropped around its defect; None when no row names a class."""
    by_class: dict[str, list[dict]] = {}
    for row in rows:
        for name in row.get("classes") or []:
            by_class.setdefault(name, []).append(row)
    images, masks = [], []
    for name in sorted(by_class):
        for row in by_class[name][:PREVIEW_PER_CLASS]:
            image, mask = pair_folder.read_pair(folder, row, "paired", [])
            if image.shape[:2] != mask.shape:
                continue  # a mismatched pair is the trainer's error to report, not the preview's
            crop = _crop_around(image, mask, PREVIEW_CROP)
            images.append(crop[0])
            masks.append(crop[1])
    if not images:
        return None
    path = os.path.join(folder, PREVIEW)
    save_pair_grid(path, images, masks, ncols=PREVIEW_PER_CLASS)
    return path


def mix_folders(takes: list[Take], out: str, log=print) -> dict[str, int]:
    """Write the pairs each take selects into one folder `out`; returns the pairs per class."""
    folders = [os.path.normpath(t.folder) for t in takes]
    if len(set(folders)) < len(folders):
        raise ConfigError.with_params("{takes}: a folder is named twice; list all its classes in one {takes} DIR:A,B")
    prefixes = [os.path.basename(f) for f in folders]
    if len(set(prefixes)) < len(prefixes):
        raise ConfigError.with_params("{takes}: two folders share a name ({folders}); the pairs are renamed "
                                      "<folder name>_<name>, so the names must differ", folders=", ".join(folders))
    if os.path.exists(out):
        raise DataError.with_params("{out} {path} already exists; remove it or choose another {out}", path=out)
    chosen = [(t, _rows(t)) for t in takes]  # every folder checked before anything is written
    for t, rows in chosen:
        if not rows:
            what = f"holds only the classes {', '.join(t.classes)}" if t.classes else "is listed in its manifest"
            raise DataError.with_params("{takes} {folder}: no pair there {what}", folder=t.folder, what=what)
    tmp = out + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)  # what a stopped run left
    for sub in SUBDIRS:
        fsutil.make_output_dir(os.path.join(tmp, sub), "out")
    per_class: Counter = Counter()
    written = []
    try:
        with pair_folder.ManifestWriter(tmp) as manifest:
            for t, rows in chosen:
                for row in rows:
                    written.append(_copy_pair(t, row, tmp))
                    manifest.append(written[-1])
                    per_class.update(row.get("classes") or [])
                log(f"{t.folder}: {len(rows)} pairs ({', '.join(t.classes) if t.classes else 'every class'})")
        preview = write_preview(tmp, written)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a missing file, a full disk, Ctrl-C: no half-made folder left
        raise
    fsutil.atomic_write_json(os.path.join(tmp, SETTINGS), {
        "takes": [{"folder": t.folder, "classes": list(t.classes) if t.classes else None, "pairs": len(rows)}
                  for t, rows in chosen]})
    os.replace(tmp, out)
    log(f"wrote {sum(len(r) for _, r in chosen)} pairs to {out}: "
        + ", ".join(f"{c} {n}" for c, n in sorted(per_class.items()))
        + (f"; preview: {os.path.join(out, PREVIEW)}" if preview else ""))
    return dict(per_class)
