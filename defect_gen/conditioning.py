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

from defect_gen.errors import DataError
from defect_gen.io import read_image, read_mask
from defect_gen.masks import image_to_uint8, one_hot, resize_mask, uint8_to_image
from defect_gen.postprocess import drop_small_regions

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class GivenMask:
    path: str
    index: torch.Tensor  # (H, W) int64 class indices at the model's size


def _files(folder: str, flag: str, exts: tuple[str, ...]) -> list[str]:
    if not os.path.isdir(folder):
        raise DataError(f"{flag} {folder}: folder not found")
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(exts) and not n.startswith("."))
    if not names:
        raise DataError(f"{flag} {folder}: no {'/'.join(e.lstrip('.') for e in exts)} files in it")
    return [os.path.join(folder, n) for n in names]


def _mask_at_size(path: str, size: int, num_defect: int) -> np.ndarray:
    mask = read_mask(path)
    values = set(np.unique(mask).tolist())
    if values <= {0, 255} and 255 in values and num_defect == 1:
        mask = (mask > 0).astype(np.uint8)  # a binary 0/255 mask (MVTec style) of the only class
    elif max(values) > num_defect:
        raise DataError(f"--mask {path}: holds value {max(values)}; expected class indices 0..{num_defect} "
                        f"(0 background, 1..{num_defect} the model's classes)")
    if mask.shape != (size, size):
        mask = resize_mask(mask, (size, size))  # thin defects survive (nearest would drop them)
    return mask


def read_masks(folder: str, size: int, num_defect: int, min_pixels: int, keep_empty: bool) -> list[GivenMask]:
    """The class-index masks of --mask DIR (or DIR/masks), resized (`resize_mask`) to the model's size.

    Regions under `min_pixels` are dropped first, so the model is never asked to paint a speck
    the written mask would not show. Masks left empty are skipped unless `keep_empty`.
    """
    if os.path.isdir(os.path.join(folder, "masks")):
        folder = os.path.join(folder, "masks")  # a paired-layout dataset or sample folder
    masks = []
    for path in _files(folder, "--mask", (".png",)):
        index = drop_small_regions(_mask_at_size(path, size, num_defect), min_pixels)
        if keep_empty or index.any():
            masks.append(GivenMask(path, torch.from_numpy(index.astype(np.int64))))
    if not masks:
        raise DataError(f"--mask {folder}: every mask is empty (after --min-defect-pixels {min_pixels}); "
                        f"pass --keep-empty to generate defect-free images")
    return masks


def list_good_images(folder: str) -> list[str]:
    return _files(folder, "--good", IMAGE_EXTS)


def read_good_image(path: str, size: int) -> torch.Tensor:
    """A defect-free image as (3, size, size) in [-1, 1] (area-like shrinking, bicubic enlarging)."""
    image = read_image(path)
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


def mask_condition(index: torch.Tensor, num_defect: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, keep) for "an image for this mask": the mask channels known, RGB generated."""
    mask = one_hot(index, num_defect + 1)
    values = torch.cat([torch.zeros(3, *index.shape), mask])
    keep = torch.cat([torch.zeros(3, *index.shape), torch.ones_like(mask)])
    return values, keep


def inpaint_condition(image: torch.Tensor, index: torch.Tensor, num_defect: int) -> tuple[torch.Tensor, torch.Tensor]:
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

    def __init__(self, masks: list[GivenMask] | None, goods: list[str] | None, size: int, num_defect: int,
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

    def condition(self, i: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict, np.ndarray | None]:
        """(values, keep, manifest sources, the good image as uint8 or None) for pair i."""
        sources = {"mask_source": self.masks[i % len(self.masks)].path} if self.masks else {}
        if self.place == "random":
            sources["placement"] = "random"
        if self.goods is None:
            return (*mask_condition(index, self.num_defect), sources, None)
        path = self.goods[i % len(self.goods)]
        image = read_good_image(path, self.size)
        return (*inpaint_condition(image, index, self.num_defect), {**sources, "good_source": path},
                image_to_uint8(image))
