"""Pair folders: the one module that writes and reads them (files, manifest, preview).

`sample`, `paint`, `mix` and `filter` write pair folders through this module, and `sample
--resume` / `--overwrite`, `evaluate`, `mix` and `filter` read them through it.

Layouts (`--layout`; SAMPLE_DIR reads straight back as `data.root` with the same `data.layout`):

paired           images/NAME.png, masks/NAME.png (class index), masks_color/NAME.png
mvtec            test/TYPE/NAME.png, ground_truth/TYPE/NAME_mask.png (binary 0/255)
defect_spectrum  image/TYPE/NAME.png, mask/TYPE/NAME_mask.png (class index),
                 rgb_mask/TYPE/NAME_rgb_mask.png (the mask in the palette colours)

TYPE is the pair's class name when its mask holds one class, "combined" (MVTec's name for
images with several defects) when it holds more, and "good" for an empty mask (only with
--keep-empty; the image alone is written there, as in MVTec). MVTec masks are binary
(0/255), except in combined/, where they hold class indices so that the pair reads back
with its classes (the mvtec reader accepts class indices there). `paint`, `mix` and
`filter` write the paired layout. Every file name comes from `pair_files`, one rule for
every writer; pair NAMEs are sample_<seed + i, 6 digits> (`sample`, `generator.pair_name`),
paint_<i, 5 digits> (`paint`), <folder name>_<name> (`mix`); `filter` keeps the names.

manifest.jsonl: one JSON object a line, one line per pair, appended as each pair is written
and flushed (`ManifestWriter`), so a killed run loses at most the line it was writing. The
fields, by who adds them:

  every writer (`write_pair`)
    name           the pair's name; its files are named after it
    classes        the class names its mask holds, in class order
    defect_pixels  {class name: pixels of that class}
    files          {image, mask, mask_color: path relative to the folder}; an empty-mask pair
                   in mvtec / defect_spectrum has the image alone; rows written before
                   layouts existed have no files (they were paired: `pair_files`)
  sample
    seed           the seed of the candidate that became the pair (reproduces it alone)
    tries          candidates drawn for it (rejection sampling: --classes, filters)
    mask_source    the --mask file its mask came from
    good_source    the --good image it was painted into
    placement      "random" when its mask was moved to a random spot (--place random)
    weights        {role: {path, step, sha256}} of each model that made it
  paint
    seed           --seed + i
    good           the defect-free photo it was painted into (its path), or with
                   --backgrounds training / same_class the training photo (relative to data.root)
    source         the real training pair its defect was taken from (relative to data.root)
    background     with --backgrounds training / same_class: that training photo again
    window         [top, left, height, width] of the denoised window in the photo's pixels
                   (null for copy-paste)
    overlap        with --backgrounds training / same_class: whether the new defect had to
                   touch one the photo already held
  mix (every field of the row it copies, and)
    name, files    renamed <folder name>_<name>, its files in the paired layout of OUT
    from           the folder the pair was taken from
  filter (every field of the row it copies, and)
    consistency    the pair's score: IoU of a real-trained segmenter's prediction with its
                   mask, inside its window (4 decimals)

Who reads what: `sample --resume` / `--overwrite` (name, files), the preview of a resumed run
(files, classes, good_source), `evaluate`'s leak check and --folds (source, background,
files), `mix` (name, files, classes), `filter` (name, window).

Reading (`read_rows`): a folder's own run (--resume, --overwrite, sorting) reads strictly:
a last line cut short by a kill is ignored (that pair is made again), any other line that
is not a JSON object with a name is an error naming it. Finished folders read by `evaluate`,
`mix` and `filter` skip every line that is not a JSON object (strict=False).
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from defect_gen import fsutil, logs
from defect_gen.core.masks import class_pixel_counts, colorize
from defect_gen.data.image_io import read_image, read_mask, save_pair_grid, write_png
from defect_gen.errors import ConfigError, DefectGenError, Note, short_repr

FOLDERS = {"paired": ("images", "masks", "masks_color"), "mvtec": ("test", "ground_truth"),
           "defect_spectrum": ("image", "mask", "rgb_mask")}
LAYOUTS = tuple(FOLDERS)
MANIFEST, PREVIEW = "manifest.jsonl", "preview.png"


def defect_type(index: np.ndarray, classes: list[str]) -> str:
    present = [int(c) for c in np.unique(index) if c > 0]
    if not present:
        return "good"
    return classes[present[0] - 1] if len(present) == 1 else "combined"


def pair_files(layout: str, name: str, kind: str) -> dict[str, str]:
    """Paths (relative to SAMPLE_DIR) of one pair's files; `kind` is its defect_type."""
    if layout == "paired":
        return {"image": f"images/{name}.png", "mask": f"masks/{name}.png", "mask_color": f"masks_color/{name}.png"}
    if layout == "mvtec":
        files = {"image": f"test/{kind}/{name}.png", "mask": f"ground_truth/{kind}/{name}_mask.png"}
    elif layout == "defect_spectrum":
        files = {"image": f"image/{kind}/{name}.png", "mask": f"mask/{kind}/{name}_mask.png",
                 "mask_color": f"rgb_mask/{kind}/{name}_rgb_mask.png"}
    else:
        raise ConfigError.with_params(f"{{layout}} {{value}}: expected one of {', '.join(LAYOUTS)}",
                                      value=repr(layout))
    return {"image": files["image"]} if kind == "good" else files


def write_pair(sample_dir: str, layout: str, name: str, rgb: np.ndarray, index: np.ndarray,
               classes: list[str]) -> dict:
    """Write one pair in `layout`; returns its manifest row (without seed and sources)."""
    kind = defect_type(index, classes)
    files = pair_files(layout, name, kind)
    # MVTec masks are binary, but a binary combined/ mask would lose which pixel is which
    # class: those are written as class indices, which the mvtec reader accepts there.
    binary = layout == "mvtec" and kind != "combined"
    mask = (index > 0).astype(np.uint8) * 255 if binary else index.astype(np.uint8)
    pictures = {"image": rgb, "mask": mask, "mask_color": colorize(index)}
    for what, rel in files.items():
        # TYPE folders come from class names, which come from configs and checkpoints:
        # whatever they hold, nothing is written outside SAMPLE_DIR.
        write_png(fsutil.path_inside(sample_dir, rel, f"output file of {name}"), pictures[what])
    counts = class_pixel_counts(index, len(classes))
    return {"name": name, "classes": [classes[c - 1] for c in sorted(counts)],
            "defect_pixels": {classes[c - 1]: n for c, n in sorted(counts.items())}, "files": files}


def copy_pair(sources: dict[str, str], out_dir: str, name: str) -> dict[str, str]:
    """Copy one pair's files into `out_dir` as pair `name` of the paired layout (`pair_files`).
    `sources`: what (image, mask, mask_color) -> an existing file; returns the row's files."""
    files = {}
    for what, rel in pair_files("paired", name, "").items():
        if what in sources:
            os.makedirs(os.path.dirname(os.path.join(out_dir, rel)), exist_ok=True)
            shutil.copy2(sources[what], os.path.join(out_dir, rel))
            files[what] = rel
    return files


def read_pair(folder: str, row: dict, layout: str, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rgb, class index) of the pair a manifest row lists, read from regular files inside
    `folder` only, whatever the row names (anything else fails to read). An mvtec mask is
    binary on disk: the row's (first) class names its defect pixels."""
    files = row.get("files") or pair_files("paired", row["name"], "")
    inside = {what: fsutil.removable_file(folder, rel) for what, rel in files.items()}
    rgb = read_image(inside["image"])
    index = np.zeros(rgb.shape[:2], np.uint8)
    if "mask" in files:
        index = read_mask(inside["mask"])
    if layout == "mvtec":
        names = row.get("classes") or []
        label = classes.index(names[0]) + 1 if names and names[0] in classes else 1
        index = np.where(index > 0, label, 0).astype(np.uint8)
    return rgb, index


# ---------------------------------------------------------------------------------------
# The manifest


class ManifestWriter:
    """Appends rows to `folder`/manifest.jsonl, one line per pair, flushed after each (a pair's
    files are written before its row, so a row means a finished pair). A context manager."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, MANIFEST)
        self._file = open(self.path, "a", encoding="utf-8")

    def append(self, row: dict) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ManifestWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def has_manifest(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, MANIFEST))


def _read_manifest(path: str, strict: bool = True) -> list[dict]:
    """Rows of a manifest. A last line cut short (the process was killed mid-write) is
    ignored: its pair is simply generated again on --resume. Not `strict`: every line that
    is not a JSON object is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if strict and n < len(lines):
                raise DefectGenError(f"{path} line {n} is not valid JSON: the manifest is damaged") from None
            continue
        if strict:
            _row_name(row, f"{path} line {n}")
        elif not isinstance(row, dict):
            continue
        rows.append(row)
    return rows


def read_rows(folder: str, strict: bool = True) -> list[dict]:
    """The rows of `folder`'s manifest in the order written ([] without one); see the module
    docstring for what `strict` tolerates."""
    path = os.path.join(folder, MANIFEST)
    return _read_manifest(path, strict) if os.path.exists(path) else []


def rows_by_name(folder: str) -> dict[str, dict]:
    """A finished folder's rows by pair name (read not strictly; the last row of a name wins)."""
    return {row["name"]: row for row in read_rows(folder, strict=False) if isinstance(row.get("name"), str)}


def _row_name(row, where: str) -> str:
    """A manifest row's name; a row without one (edited by hand, another tool) is one line."""
    name = row.get("name") if isinstance(row, dict) else None
    if not isinstance(name, str) or not name:
        raise DefectGenError(f"{where}: expected a JSON object with a \"name\" string (a row defect-gen wrote), "
                             f"got {short_repr(row)}; fix or remove that line")
    return name


def repair_manifest(path: str) -> bool:
    """Cut off a last line that a kill left unfinished (no newline, or not JSON), so that
    --resume appends after whole rows; that pair is simply made again. True if it cut."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.strip():
        return False
    body = data.rstrip(b"\n")
    start = body.rfind(b"\n") + 1  # where the last line begins
    last = body[start:]
    try:
        complete = data.endswith(b"\n") and (not last.strip() or isinstance(json.loads(last), dict))
    except ValueError:
        complete = False
    if complete:
        return False
    with open(path, "r+b") as f:
        f.truncate(start)
    return True


def manifest_rows(sample_dir: str) -> list[dict]:
    """The manifest's rows in name order, one per name (the last written wins)."""
    return sorted({r["name"]: r for r in read_rows(sample_dir)}.values(), key=lambda r: r["name"])


def sort_manifest(sample_dir: str) -> None:
    """Rows in name order, whichever rank or retry finished first."""
    path = os.path.join(sample_dir, MANIFEST)
    if os.path.exists(path):
        # One row per name (the last written wins: a pair remade on --resume replaces its old row).
        rows = manifest_rows(sample_dir)
        tmp = f"{path}.tmp{os.getpid()}"  # a kill mid-rewrite must not lose the manifest
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# The output folder


def _remove_previous(sample_dir: str, warn) -> None:
    """Delete what the previous run's manifest lists (never other files), then the manifest."""
    manifest = os.path.join(sample_dir, MANIFEST)
    left = []
    for row in read_rows(sample_dir):
        # Rows written before layouts existed name no files: they were paired.
        files = row.get("files") or pair_files("paired", _row_name(row, manifest), "")
        for rel in files.values() if isinstance(files, dict) else []:
            # A manifest is data, not trusted: only regular files inside SAMPLE_DIR are deleted
            # (never `../x`, an absolute path, a link's target, a FIFO or a folder).
            path = fsutil.removable_file(sample_dir, rel)
            if path is not None:
                os.remove(path)
            elif os.path.lexists(os.path.join(sample_dir, str(rel))):
                left.append(str(rel))
    if left:
        warn(Note(f"warning: {{overwrite}} left alone {len(left)} path(s) the manifest names that are not regular "
                  f"files inside {{folder}}: {{paths}}", folder=sample_dir, paths=", ".join(left[:3])))
    for name in (MANIFEST, PREVIEW):
        if os.path.exists(os.path.join(sample_dir, name)):
            os.remove(os.path.join(sample_dir, name))
    for top in sorted({f for folders in FOLDERS.values() for f in folders}):
        for dirpath, _, _ in sorted(os.walk(os.path.join(sample_dir, top)), reverse=True):
            if not os.listdir(dirpath):  # only folders the removal left empty
                os.rmdir(dirpath)


def _holds_files(folder: str) -> bool:
    return any(files for _, _, files in os.walk(folder))


def prepare_dir(sample_dir: str, layout: str, overwrite: bool, resume: bool = False, warn=None) -> set[str]:
    """Make the output folder ready; returns the names already done (only with `resume`).

    Refuses to mix with earlier output unless `overwrite` (which removes the earlier pairs)
    or `resume` (which keeps them and lets the caller generate only the missing ones).
    Errors and `warn`'s notes (`errors.Note`; default: printed with the parameter names)
    name the parameters `sample_dir`, `overwrite` and `resume`.
    """
    warn = warn or (lambda note: logs.warn(str(note)))
    if overwrite and resume:
        raise ConfigError.with_params("{overwrite} and {resume} contradict each other: choose one")
    manifest = os.path.join(sample_dir, MANIFEST)
    if os.path.lexists(manifest) and fsutil.removable_file(sample_dir, MANIFEST) is None:
        # It is appended to and repaired in place: a link would have that happen elsewhere.
        raise DefectGenError.with_params("{manifest} is not a regular file (a link, a folder?); expected the "
                                         "manifest a defect-gen run wrote: remove it or choose another {sample_dir}",
                                         manifest=manifest)
    if resume:
        if not os.path.exists(manifest):
            raise DefectGenError.with_params("{resume}: {manifest} not found; nothing to resume in {folder}",
                                             manifest=manifest, folder=sample_dir)
        if repair_manifest(manifest):
            warn(Note("note: the last line of {manifest} was cut short (the run was killed mid-write); removed it, "
                      "that pair is made again", manifest=manifest))
        return done_names(sample_dir)
    if overwrite:
        _remove_previous(sample_dir, warn)
    busy = [f for f in FOLDERS[layout] if _holds_files(os.path.join(sample_dir, f))]
    if os.path.exists(manifest) or (busy and not overwrite):
        where = MANIFEST if os.path.exists(manifest) else f"{busy[0]}/"
        raise DefectGenError.with_params("{folder} already holds generated pairs ({where}); pass {resume} to "
                                         "finish that run, {overwrite} to replace its pairs, or choose another "
                                         "{sample_dir}", folder=sample_dir, where=where)
    try:
        os.makedirs(sample_dir, exist_ok=True)
        with open(os.path.join(sample_dir, MANIFEST), "a", encoding="utf-8"):
            pass  # created now, so that a run killed before its first pair can be resumed
    except OSError as exc:
        raise DefectGenError(f"cannot write to output folder {sample_dir}: {exc.strerror}") from None
    return set()


def done_names(sample_dir: str) -> set[str]:
    """Names of the pairs a manifest records as finished (their files are written first) whose
    files are all still there: a pair deleted since is made again on --resume."""
    return {row["name"] for row in read_rows(sample_dir)
            if isinstance(row.get("files") or {}, dict)
            and all(fsutil.removable_file(sample_dir, rel) for rel in (row.get("files") or {}).values())}


# ---------------------------------------------------------------------------------------
# Preview


def save_preview(sample_dir: str, items: list[tuple]) -> None:
    """preview.png: image | colour mask | overlay per pair, with the given image first when
    defects were painted into one (items are (rgb, index, given rgb or None))."""
    if not items:
        return
    given = None if items[0][2] is None else [i[2] for i in items]
    save_pair_grid(os.path.join(sample_dir, PREVIEW), [i[0] for i in items], [i[1] for i in items],
                   ncols=4 if given is None else 3, given=given)
