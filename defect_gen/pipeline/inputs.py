"""Conditions for generation: given masks (--mask), defect-free images (--good), random placement.

A condition says which part of the clean sample is given, as `samplers.KnownRegion` values
and a keep map in model space (RGB in [-1, 1], one-hot mask channels in {0, 1}):

* mask given (`--mask DIR`): the mask channels are known everywhere, RGB is generated;
* inpainting (`--good DIR`): the mask channels and the RGB outside the defect region are
  known; only the RGB inside the region is generated. The region comes from `--mask DIR`
  or from a mask the model generated itself, moved to a random spot (`place_randomly`).

Pair i uses the i-th mask and the i-th good image in sorted file-name order, cycling when a
folder holds fewer files than pairs are asked for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from defect_gen import logs
from defect_gen.core.masks import image_to_uint8, one_hot, resize_mask, uint8_to_image
from defect_gen.core.postprocess import drop_small_regions
from defect_gen.data.image_io import read_image, read_mask
from defect_gen.errors import DataError, Note

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Condition:
    """What one pair is held to: the known part of its clean sample (`values`, and `keep` = 1
    where a value is known), where that came from (manifest `sources`: mask_source,
    good_source, placement), and the defect-free image it was painted into (uint8), if any."""

    values: torch.Tensor
    keep: torch.Tensor
    sources: dict
    good_image: np.ndarray | None = None


@dataclass(frozen=True)
class GivenMask:
    path: str
    index: torch.Tensor  # (H, W) int64 class indices at the model's size


# Folders under a --mask tree that hold pictures, not class-index or binary masks.
NOT_MASK_DIRS = {"images", "image", "test", "train", "masks_color", "rgb_mask", "rbg_mask"}


def mask_root(folder: str) -> str:
    """Where the masks of --mask DIR are: DIR/masks (paired), DIR/ground_truth (mvtec),
    DIR/mask (defect_spectrum), or DIR itself, so a dataset or a `sample` folder of any
    layout can be given as it is."""
    for sub in ("masks", "ground_truth", "mask"):
        if os.path.isdir(os.path.join(folder, sub)):
            return os.path.join(folder, sub)
    return folder


def list_mask_files(folder: str) -> list[str]:
    """Every PNG under `folder`, recursively (mask/<type>/ and ground_truth/<type>/ trees),
    sorted by path; picture folders, hidden files and a sample run's preview.png are left out."""
    if not os.path.isdir(folder):
        raise DataError.with_params("{masks} {folder}: folder not found", folder=folder)
    found = []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in NOT_MASK_DIRS and not d.startswith("."))
        found += [os.path.join(dirpath, n) for n in names
                  if n.lower().endswith(".png") and not n.startswith(".") and n != "preview.png"]
    if not found:
        raise DataError.with_params("{masks} {folder}: no png files in it", folder=folder)
    return sorted(found)


def folder_classes_of(classes: list[str] | None, folder_classes: dict[str, str] | None) -> dict[str, int]:
    """Folder name -> class index: each class's own name, and the model's data.folder_classes
    (so MVTec's broken_small/ or magnetic tile's MT_Crack/ name their class as in training)."""
    classes = classes or []
    names = {name: i + 1 for i, name in enumerate(classes)}
    names.update({f: classes.index(c) + 1 for f, c in (folder_classes or {}).items() if c in classes})
    return names


def _binary_class(path: str, num_defect: int, classes: list[str] | None, folders: dict[str, int]) -> int:
    """The class of a binary 0/255 mask: the only one, or the one its folder is named after
    (MVTec's ground_truth/<type>/)."""
    if num_defect == 1:
        return 1
    folder = os.path.basename(os.path.dirname(path))
    if folder in folders:
        return folders[folder]
    if folder == "combined":  # what `sample --layout mvtec` writes for pairs of several classes
        raise DataError.with_params("{masks} {path}: a binary 0/255 mask in combined/ (several classes) cannot "
                                    "say which pixel is which class; use class-index masks (`sample --layout "
                                    "paired` or defect_spectrum), or move it into a folder named after one class",
                                    path=path)
    known = f"({', '.join(classes)})" if classes else ""
    raise DataError.with_params(f"{{masks}} {{path}}: a binary 0/255 mask, but its folder '{{folder}}' is none of "
                                f"the model's {num_defect} classes {{known}}; put it in a folder named after its "
                                f"class (as in ground_truth/<class>/), or give class-index masks (0 background, "
                                f"1..{num_defect})", path=path, folder=folder, known=known)


def _mask_at_size(path: str, size: int, num_defect: int, classes: list[str] | None = None,
                  folders: dict[str, int] | None = None) -> np.ndarray:
    mask = read_mask(path)
    values = set(np.unique(mask).tolist())
    if values <= {0, 255} and 255 in values:  # a binary mask (MVTec style)
        folders = folder_classes_of(classes, None) if folders is None else folders
        mask = (mask > 0).astype(np.uint8) * np.uint8(_binary_class(path, num_defect, classes, folders))
    elif max(values) > num_defect:
        raise DataError.with_params(f"{{masks}} {{path}}: holds value {max(values)}; expected class indices "
                                    f"0..{num_defect} (0 background, 1..{num_defect} the model's classes)", path=path)
    if mask.shape != (size, size):
        mask = resize_mask(mask, (size, size))  # thin defects survive (nearest would drop them)
    return mask


def _some(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")


def read_masks(folder: str, size: int, num_defect: int, min_pixels: int, keep_empty: bool,
               classes: list[str] | None = None, folder_classes: dict[str, str] | None = None,
               log=None) -> list[GivenMask]:
    """The masks of a folder (see `mask_root`), resized (`resize_mask`) to the model's size.

    Class-index masks are taken as they are; binary 0/255 masks get the class their folder is
    named after (`classes`: the model's class names, and its data.folder_classes). Regions
    under `min_pixels` are dropped first, so the model is never asked to paint a speck the
    written mask would not show;
    masks left empty are skipped (and named) unless `keep_empty`, so pair i uses the i-th
    mask that is kept. What was left out goes to `log` as `errors.Note`s (default: stderr).
    """
    log = log or (lambda note: logs.warn(str(note)))
    folder = mask_root(folder)
    folders = folder_classes_of(classes, folder_classes)
    masks, empty, emptied, trimmed = [], [], [], 0
    for path in list_mask_files(folder):
        raw = _mask_at_size(path, size, num_defect, classes, folders)
        index = drop_small_regions(raw, min_pixels)
        trimmed += int(index.any() and not np.array_equal(index, raw))
        if keep_empty or index.any():
            masks.append(GivenMask(path, torch.from_numpy(index.astype(np.int64))))
        else:
            (emptied if raw.any() else empty).append(os.path.relpath(path, folder))
    if empty:
        log(Note("{masks} {folder}: {count} empty masks left out ({keep_empty} uses them): {some}",
                 folder=folder, count=len(empty), some=_some(empty)))
    if emptied or trimmed:
        left = "; left out (empty after it, {keep_empty} keeps them): {some}" if emptied else ""
        log(Note("{masks} {folder}: {min_defect_pixels} {min_pixels} dropped small regions from {count} masks "
                 "at {size}x{size} px, {emptied} of them entirely" + left + "; {used} masks are used, in name order",
                 folder=folder, min_pixels=min_pixels, count=trimmed + len(emptied), size=size,
                 emptied=len(emptied), some=_some(emptied), used=len(masks)))
    if not masks:
        raise DataError.with_params(f"{{masks}} {{folder}}: every mask is empty (after {{min_defect_pixels}} "
                                    f"{min_pixels}); pass {{keep_empty}} to generate defect-free images", folder=folder)
    return masks


def masks_from_arrays(arrays, size: int, num_defect: int, min_pixels: int, keep_empty: bool) -> list[GivenMask]:
    """Masks given in memory (the Python API's `masks=`): (H, W) class indices 0..num_defect,
    resized and filtered as `read_masks` does; each is named masks[i] in the metadata."""
    masks, count = [], 0
    for i, array in enumerate(arrays):
        count += 1
        index = np.asarray(array)
        if index.ndim != 2 or index.dtype.kind not in "iub":
            raise DataError(f"masks[{i}]: expected an (H, W) array of class indices, got shape "
                            f"{index.shape} of {index.dtype}")
        if index.size and (index.min() < 0 or index.max() > num_defect):
            bad = int(index.min()) if index.min() < 0 else int(index.max())
            raise DataError(f"masks[{i}]: holds value {bad}; expected class indices 0..{num_defect}")
        index = index.astype(np.uint8)
        if index.shape != (size, size):
            index = resize_mask(index, (size, size))
        index = drop_small_regions(index, min_pixels)
        if keep_empty or index.any():
            masks.append(GivenMask(f"masks[{i}]", torch.from_numpy(index.astype(np.int64))))
    if not masks:
        raise DataError(f"masks: none of the {count} masks holds a defect (after min_defect_pixels "
                        f"{min_pixels}); pass keep_empty=True to generate defect-free images")
    return masks


def good_images_from_arrays(arrays) -> list[np.ndarray]:
    """Defect-free images given in memory (the Python API's `good=`): (H, W, 3) uint8 each."""
    images = [np.asarray(a) for a in arrays]
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise DataError(f"good[{i}]: expected an (H, W, 3) uint8 RGB array, got shape {image.shape} of "
                            f"{image.dtype}")
    if not images:
        raise DataError("good: no images given")
    return images


def list_good_images(folder: str) -> list[str]:
    """The defect-free images under `folder` (`good`, the CLI's `--good`, of `sample` and `paint`
    alike), recursively: each folder's files in name order, then its subfolders in name order.
    Hidden files are left out, and so is a PNG beside a photo of the same stem in another format
    (x.png beside x.jpg): that is the photo's (empty) mask, as in the class_folders layout, so a
    dataset's good folder can be given as it is."""
    if not os.path.isdir(folder):
        raise DataError.with_params("{good} {folder}: folder not found", folder=folder)
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        stems = {os.path.splitext(f)[0] for f in files if f.lower().endswith(IMAGE_EXTS) and not f.endswith(".png")}
        for f in sorted(files):
            stem, ext = os.path.splitext(f)
            if ext.lower() in IMAGE_EXTS and not f.startswith(".") and not (ext.lower() == ".png" and stem in stems):
                found.append(os.path.join(root, f))
    if not found:
        raise DataError.with_params(f"{{good}} {{folder}}: no {'/'.join(e.lstrip('.') for e in IMAGE_EXTS)} images "
                                    f"in it", folder=folder)
    return found


def read_good_image(path: str | np.ndarray, size: int) -> torch.Tensor:
    """A defect-free image (a file, or an RGB uint8 array) as (3, size, size) in [-1, 1]
    (area-like shrinking, bicubic enlarging)."""
    image = read_image(path) if isinstance(path, str) else path
    if image.shape[:2] != (size, size):
        method = Image.BOX if min(image.shape[:2]) > size else Image.BICUBIC
        image = np.array(Image.fromarray(image).resize((size, size), method))  # writable, for torch
    return uint8_to_image(image)


def place_randomly(index: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The defect region moved to a random spot: random flips and quarter turns of its bounding
    box, then a shift that keeps every defect pixel inside the (square) image."""
    rows, cols = torch.nonzero(index, as_tuple=True)
    if rows.numel() == 0:
        return index.clone()
    crop = index[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    flip_h, flip_v, turns = torch.randint(0, 4, (3,), generator=generator).tolist()
    crop = crop.flip(1) if flip_h % 2 else crop
    crop = crop.flip(0) if flip_v % 2 else crop
    crop = torch.rot90(crop, turns, dims=(0, 1))
    size_y, size_x = index.shape
    h, w = crop.shape
    top = int(torch.randint(0, size_y - h + 1, (1,), generator=generator))
    left = int(torch.randint(0, size_x - w + 1, (1,), generator=generator))
    out = torch.zeros_like(index)
    out[top:top + h, left:left + w] = crop
    return out


def mask_known_region(index: torch.Tensor, num_defect: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, keep) for "an image for this mask": the mask channels known, RGB generated."""
    mask = one_hot(index, num_defect + 1)
    values = torch.cat([torch.zeros(3, *index.shape), mask])
    keep = torch.cat([torch.zeros(3, *index.shape), torch.ones_like(mask)])
    return values, keep


def inpaint_known_region(image: torch.Tensor, index: torch.Tensor, num_defect: int
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, keep) for painting the mask's defects into a defect-free image: the mask
    channels and the RGB outside the defect region are known, the RGB inside is generated."""
    mask = one_hot(index, num_defect + 1)
    outside = (index == 0).to(torch.float32).expand(3, -1, -1)
    return torch.cat([image, mask]), torch.cat([outside, torch.ones_like(mask)])


class Conditioner:
    """What pair i is held to: its given mask (or one the model generated), its good image.

    `place` is "as-is" or "random"; random placement draws from a generator seeded with the
    pair's seed, so it is reproduced with the pair.
    """

    def __init__(self, masks: list[GivenMask] | None, goods: list[str | np.ndarray] | None, size: int, num_defect: int,
                 place: str):
        self.masks, self.goods, self.size, self.num_defect, self.place = masks, goods, size, num_defect, place

    @property
    def two_pass(self) -> bool:
        """--good without --mask: the model first generates a pair, whose mask is then painted in."""
        return self.goods is not None and self.masks is None

    def placed(self, index: torch.Tensor, seed: int) -> torch.Tensor:
        if self.place != "random":
            return index
        return place_randomly(index, torch.Generator().manual_seed(seed))

    def given_mask(self, i: int, seed: int) -> torch.Tensor | None:
        """Pair i's mask when it is known before sampling (--mask), else None."""
        if self.masks is None:
            return None
        return self.placed(self.masks[i % len(self.masks)].index, seed)

    def condition(self, i: int, index: torch.Tensor) -> Condition:
        """Pair i held to the class-index mask `index` (and painted into its good image, if any)."""
        sources = {"mask_source": self.masks[i % len(self.masks)].path} if self.masks else {}
        if self.place == "random":
            sources["placement"] = "random"
        if self.goods is None:
            return Condition(*mask_known_region(index, self.num_defect), sources)
        good = self.goods[i % len(self.goods)]
        image = read_good_image(good, self.size)
        source = good if isinstance(good, str) else f"good[{i % len(self.goods)}]"
        return Condition(*inpaint_known_region(image, index, self.num_defect), {**sources, "good_source": source},
                         image_to_uint8(image))
