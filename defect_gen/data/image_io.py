"""Image and mask file I/O, plus the image | mask | overlay preview grid.

All file access goes through `blobfile`, so cloud paths (gs://, az://, https://) work like
local ones; PIL does the decoding. Decoding is forced eagerly (`Image.load()`) so a truncated
or corrupt file fails here, with a `DataError` naming it, and not later inside training.
Images and masks are turned upright by their EXIF Orientation tag, as every viewer and
annotation tool shows them, so a phone JPEG tagged "rotate 90" stays aligned with the mask
drawn over it (a file without the tag is returned as stored).
"""

import math
import os
import stat
import uuid
from io import BytesIO

import blobfile as bf
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from defect_gen.core.masks import colorize, overlay
from defect_gen.errors import DataError

# Preview cells are upscaled (nearest neighbour, integer factor) to at least this height so
# that 32/64 px samples are easy to inspect.
MIN_PREVIEW_HEIGHT = 128


def _one_line(exc: BaseException) -> str:
    """An exception's message squeezed onto one line (error messages must be one line)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_local(path: str) -> bool:
    """True for plain filesystem paths, False for blobfile URLs such as gs://bucket/x."""
    return "://" not in path


def _open_image(path) -> Image.Image:
    """Read and fully decode an image file; every failure becomes a DataError."""
    path = os.fspath(path)
    try:
        # Opening a FIFO (or a device) waits for a writer that never comes: refuse anything
        # that is not a regular file before opening it.
        if _is_local(path) and os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
            raise DataError(f"{path}: not a regular file (a FIFO, socket or device); expected an image file")
        with bf.BlobFile(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected an image file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({_one_line(exc)})") from exc
    try:
        image = Image.open(BytesIO(data))
        image.load()  # decode now so truncated files fail here, not on first use
        # as displayed: pixels stored sideways with an Orientation tag are turned upright
        image = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a recognised image file; expected PNG/JPEG/...") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{path}: cannot decode image, file is truncated or corrupt ({_one_line(exc)})"
        ) from exc
    return image


def read_image(path) -> np.ndarray:
    """Read an image as uint8 HxWx3 RGB (grey, RGBA, palette... are converted to RGB)."""
    image = _open_image(path)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise DataError(
            f"{os.fspath(path)}: {image.mode} (16-bit / float) images are not supported; "
            "expected an 8-bit RGB or greyscale image"
        )
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def read_mask(path, one_bit_value: int = 1) -> np.ndarray:
    """Read a class-index mask as uint8 HxW.

    'L' and 'P' images keep their stored values (for 'P' the palette *indices*, not colours);
    a 1-bit ('1') image gives 0 / `one_bit_value`: 1 where it holds class indices, 255 where
    masks are thresholded (0/1 would fall under any threshold). An RGB(A) image is accepted
    only if its three channels are equal; colour masks must be read with `read_mask_rgb` and
    mapped to classes through a palette.
    """
    path = os.fspath(path)
    image = _open_image(path)
    if image.mode in ("LA", "PA"):
        image = image.getchannel(0)  # drop alpha; the first band holds the class values
    if image.mode == "1":
        return np.asarray(image).astype(np.uint8) * np.uint8(one_bit_value)
    if image.mode in ("L", "P"):
        return np.asarray(image).astype(np.uint8)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise DataError(
                f"{path}: mask holds class value {int(values.max())}; expected values 0..255"
            )
        return values.astype(np.uint8)
    if image.mode in ("RGB", "RGBA"):
        rgb = np.asarray(image)[..., :3]
        if np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]):
            return rgb[..., 0].copy()
        raise DataError(
            f"{path}: mask has colours (unequal R, G, B); expected a single-channel class-index "
            "PNG, or configure a mask palette to map colours to classes"
        )
    raise DataError(f"{path}: unsupported mask mode {image.mode}; expected an 8-bit PNG")


def read_mask_rgb(path) -> np.ndarray:
    """Read a colour-coded mask as uint8 HxWx3 RGB (palette images give their colours)."""
    return np.asarray(_open_image(path).convert("RGB"), dtype=np.uint8).copy()


def _encode_png(array: np.ndarray) -> bytes:
    """uint8 HxW or HxWx3 array -> PNG bytes."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"write_png expects a uint8 array, got {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"write_png expects shape HxW or HxWx3, got {array.shape}")
    buffer = BytesIO()
    Image.fromarray(np.ascontiguousarray(array)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path, array: np.ndarray) -> None:
    """Write uint8 HxW (greyscale) or HxWx3 (RGB) as PNG, creating parent folders.

    Local files are written under a temporary name in the same folder and then renamed, so
    a crash never leaves a half-written PNG under the final name. Blob stores already make
    an object visible only when its upload completes, so those are written directly.
    """
    path = os.fspath(path)
    data = _encode_png(array)
    parent = bf.dirname(path)
    if parent:
        bf.makedirs(parent)
    if not _is_local(path):
        with bf.BlobFile(path, "wb") as f:
            f.write(data)
        return
    # A unique name (not mkstemp, which would make the final file mode 0600).
    unique = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    temp = os.path.join(parent, f".{os.path.basename(path)}.{unique}.tmp")
    try:
        with open(temp, "xb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def upscale(array: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor along both spatial axes."""
    if factor == 1:
        return array
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def _pair_cell(image: np.ndarray, mask: np.ndarray, factor: int, gap: int, given: np.ndarray | None = None
               ) -> np.ndarray:
    """One preview cell: [given image |] image | colorised mask | overlay, white `gap` between panels."""
    panels = ([] if given is None else [given]) + [image, colorize(mask), overlay(image, mask)]
    height = image.shape[0] * factor
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = []
    for i, panel in enumerate(panels):
        if i:
            parts.append(spacer)
        parts.append(upscale(panel, factor))
    return np.concatenate(parts, axis=1)


def pair_grid(images, masks, ncols: int = 4, gap: int = 2, given=None) -> np.ndarray:
    """Preview grid of image/mask pairs as one uint8 HxWx3 picture.

    `images` are uint8 HxWx3 and `masks` HxW class indices, all of one size. Each cell shows
    [image | colorize(mask) | overlay(image, mask)], panels `gap` white pixels apart and cells
    `3 * gap` apart, `min(ncols, len(images))` cells per row. Everything is upscaled by the
    smallest integer factor that makes each image at least 128 px tall. `given` (uint8 HxWx3
    per pair, optional): the image each pair was painted into, shown first in its cell.
    """
    if len(images) != len(masks) or not images:
        raise ValueError(f"pair_grid needs equally many images and masks (>0), "
                         f"got {len(images)} and {len(masks)}")
    if ncols < 1 or gap < 0:
        raise ValueError(f"pair_grid needs ncols >= 1 and gap >= 0, got {ncols}, {gap}")
    given = [None] * len(images) if given is None else [np.asarray(g) for g in given]
    height, width = np.asarray(images[0]).shape[:2]
    for image, mask, before in zip(images, masks, given):
        image_shape, mask_shape = np.asarray(image).shape, np.asarray(mask).shape
        if image_shape != (height, width, 3) or mask_shape != (height, width) or (
                before is not None and before.shape != image_shape):
            raise ValueError(f"pair_grid needs images {height}x{width}x3 and masks "
                             f"{height}x{width}, got {image_shape} and {mask_shape}")
    factor = max(1, math.ceil(MIN_PREVIEW_HEIGHT / height))
    cells = [_pair_cell(np.asarray(i), np.asarray(m), factor, gap, g) for i, m, g in zip(images, masks, given)]
    cell_h, cell_w = cells[0].shape[:2]
    cell_gap = 3 * gap
    cols = min(ncols, len(cells))
    rows = math.ceil(len(cells) / cols)
    grid = np.full((rows * cell_h + (rows - 1) * cell_gap,
                    cols * cell_w + (cols - 1) * cell_gap, 3), 255, dtype=np.uint8)
    for k, cell in enumerate(cells):
        top = (k // cols) * (cell_h + cell_gap)
        left = (k % cols) * (cell_w + cell_gap)
        grid[top:top + cell_h, left:left + cell_w] = cell
    return grid


def defect_window(focus: np.ndarray, size: int) -> tuple[slice, slice]:
    """The square window, side min(size, h, w), of a preview crop on the True pixels of `focus`
    (HxW): centred on the one nearest their centroid, since a curved crack's centroid, or that
    of two defects far apart, can lie on none of them; the top-left corner when there are none."""
    h, w = focus.shape
    side = min(size, h, w)
    top = left = 0
    rows, cols = np.nonzero(focus)
    if len(rows):
        k = np.argmin((rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2)
        top, left = int(min(max(rows[k] - side / 2, 0), h - side)), int(min(max(cols[k] - side / 2, 0), w - side))
    return slice(top, top + side), slice(left, left + side)


def save_pair_grid(path, images, masks, ncols: int = 4, given=None) -> None:
    """Write `pair_grid(images, masks, ncols, given=given)` as a PNG."""
    write_png(path, pair_grid(images, masks, ncols=ncols, given=given))
