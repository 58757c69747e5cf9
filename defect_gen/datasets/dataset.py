"""In-memory few-shot dataset: decode every pair once, then serve random augmented batches.

Few-shot sets are tens of images, so holding them as one tensor makes an epoch free of file
I/O and decoding. Items are RGB in [-1, 1] stacked with the one-hot mask (background first).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from defect_gen.config import DataConfig
from defect_gen.datasets.layouts import Record, find_records
from defect_gen.errors import DataError
from defect_gen.io import read_image, read_mask
from defect_gen.masks import stack_image_mask, uint8_to_image


def _load_pair(rec: Record, size: int, num_defect: int) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = read_image(rec.image), read_mask(rec.mask)
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(f"mask {rec.mask} is {mask.shape[1]}x{mask.shape[0]} but its image {rec.image} "
                        f"is {image.shape[1]}x{image.shape[0]}")
    if mask.max() > num_defect:
        raise DataError(f"mask {rec.mask} holds class value {int(mask.max())}, but data.classes lists only "
                        f"{num_defect} classes (values 0..{num_defect} allowed)")
    if image.shape[:2] != (size, size):
        # Area-like resampling for the photo; nearest for the mask so classes stay exact.
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BOX if image.shape[0] > size
                                                         else Image.BICUBIC))
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.NEAREST))
    return uint8_to_image(image), torch.from_numpy(mask.astype(np.int64))


class DefectDataset:
    """All pairs of a dataset as one (N, 3 + K + 1, S, S) float tensor."""

    def __init__(self, cfg: DataConfig, image_size: int, progress: bool = True):
        self.cfg = cfg
        self.num_defect = len(cfg.classes)
        self.records = find_records(cfg.root, cfg.layout)
        images, masks = [], []
        for rec in tqdm(self.records, desc="loading data", disable=not progress, leave=False):
            img, mask = _load_pair(rec, image_size, self.num_defect)
            images.append(img)
            masks.append(mask)
        self.data = stack_image_mask(torch.stack(images), torch.stack(masks), self.num_defect)

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """A random batch (with replacement across calls), augmented identically for image and mask."""
        idx = torch.randint(len(self.data), (batch_size,), generator=generator)
        return augment(self.data[idx], self.cfg, generator)


def augment(x: torch.Tensor, cfg: DataConfig, generator: torch.Generator) -> torch.Tensor:
    """Random flips / 90-degree rotations per item; image and mask channels move together."""
    b = x.shape[0]
    if cfg.hflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if cfg.vflip:
        flip = torch.rand(b, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    if cfg.rot90 and x.shape[-1] == x.shape[-2]:
        k = torch.randint(4, (b,), generator=generator)
        x = torch.stack([torch.rot90(xi, int(ki), dims=(-2, -1)) for xi, ki in zip(x, k)])
    return x
