"""Tests of defect_gen.core.masks (tensor/picture conversions) and defect_gen.data.image_io (file I/O)."""

import numpy as np
import pytest
import torch
from PIL import Image

from defect_gen.core.masks import (
    PALETTE,
    class_pixel_counts,
    colorize,
    image_to_uint8,
    mask_to_index,
    one_hot,
    overlay,
    resize_mask,
    split_image_mask,
    stack_image_mask,
    uint8_to_image,
)
from defect_gen.data.image_io import pair_grid, read_image, read_mask, read_mask_rgb, write_png
from defect_gen.errors import DataError


def _index_map(shape=(2, 8, 8), num_defect=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, num_defect + 1, shape, generator=generator)


def test_one_hot_stack_split_argmax_round_trip():
    index = _index_map()
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    x = stack_image_mask(image, index, num_defect=3)
    assert x.shape == (2, 3 + 3 + 1, 8, 8)
    rgb, mask = split_image_mask(x)
    assert torch.equal(rgb, image)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.all(mask.sum(dim=1) == 1)
    assert torch.equal(mask_to_index(mask), index)
    assert mask_to_index(mask).dtype == torch.int64


def test_stack_unbatched():
    index = _index_map((8, 8))
    x = stack_image_mask(torch.zeros(3, 8, 8), index, num_defect=3)
    assert x.shape == (7, 8, 8)
    assert torch.equal(mask_to_index(split_image_mask(x)[1]), index)
    assert one_hot(index, 4).shape == (4, 8, 8)
    assert one_hot(index, 4).dtype == torch.float32


def test_one_hot_out_of_range_names_value():
    index = torch.zeros(4, 4, dtype=torch.int64)
    index[1, 2] = 7
    with pytest.raises(DataError, match=r"7.*0\.\.3"):
        one_hot(index, 4)
    with pytest.raises(DataError, match="-1"):
        one_hot(torch.full((2, 2), -1), 4)


def test_image_uint8_round_trip():
    array = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    tensor = uint8_to_image(array)
    assert tensor.shape == (3, 5, 6) and tensor.min() >= -1 and tensor.max() <= 1
    assert np.array_equal(image_to_uint8(tensor), array)
    batch = image_to_uint8(torch.stack([tensor, tensor]) * 3)  # out of range -> clamped
    assert batch.shape == (2, 5, 6, 3) and batch.dtype == np.uint8


def test_colorize_uses_palette():
    index = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    picture = colorize(index)
    assert picture.shape == (2, 2, 3) and picture.dtype == np.uint8
    for (y, x), cls in np.ndenumerate(index):
        assert tuple(picture[y, x]) == PALETTE[cls]
    # Classes past the palette cycle through the non-background colours.
    assert tuple(colorize(np.array([[len(PALETTE)]]))[0, 0]) == PALETTE[1]


def test_overlay_changes_only_defect_pixels():
    image = np.full((10, 10, 3), 128, dtype=np.uint8)
    index = np.zeros((10, 10), dtype=np.int64)
    index[3:7, 3:7] = 2
    out = overlay(image, index, alpha=0.5)
    background = index == 0
    assert np.array_equal(out[background], image[background])
    assert np.all(np.any(out[~background] != image[~background], axis=-1))
    assert tuple(out[3, 3]) == PALETTE[2]  # outline in the full colour
    assert tuple(out[4, 4]) != PALETTE[2]  # interior is blended


def test_class_pixel_counts():
    index = np.zeros((4, 4), dtype=np.uint8)
    index[0, :3] = 1
    index[3, 3] = 3
    assert class_pixel_counts(index, 3) == {1: 3, 3: 1}


def test_png_round_trip(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    mask = np.random.default_rng(2).integers(0, 4, (9, 7), dtype=np.uint8)
    write_png(tmp_path / "sub" / "dir" / "image.png", rgb)
    write_png(tmp_path / "mask.png", mask)
    assert np.array_equal(read_image(tmp_path / "sub" / "dir" / "image.png"), rgb)
    assert np.array_equal(read_mask(tmp_path / "mask.png"), mask)
    assert read_image(tmp_path / "mask.png").shape == (9, 7, 3)  # grey -> RGB
    assert np.array_equal(read_mask_rgb(tmp_path / "sub" / "dir" / "image.png"), rgb)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_read_mask_rgb_image(tmp_path):
    grey = np.repeat(np.arange(12, dtype=np.uint8).reshape(3, 4, 1) % 3, 3, axis=2)
    write_png(tmp_path / "grey.png", grey)
    assert np.array_equal(read_mask(tmp_path / "grey.png"), grey[..., 0])
    colour = grey.copy()
    colour[0, 0] = (255, 0, 0)
    write_png(tmp_path / "colour.png", colour)
    with pytest.raises(DataError, match="palette"):
        read_mask(tmp_path / "colour.png")


def test_read_mask_palette_keeps_indices(tmp_path):
    index = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    picture = Image.fromarray(index, mode="P")
    picture.putpalette([c for rgb in PALETTE for c in rgb])
    picture.save(tmp_path / "p.png")
    assert np.array_equal(read_mask(tmp_path / "p.png"), index)


def test_truncated_png_raises_data_error_with_path(tmp_path):
    path = tmp_path / "cut.png"
    write_png(path, np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=str(path)):
        read_image(path)
    with pytest.raises(DataError, match=str(path)):
        read_mask(path)


def test_missing_file_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_pair_grid_shape():
    images = [np.full((32, 32, 3), 100, dtype=np.uint8) for _ in range(5)]
    masks = [np.zeros((32, 32), dtype=np.uint8) for _ in range(5)]
    masks[0][5:9, 5:9] = 1
    grid = pair_grid(images, masks, ncols=4, gap=2)
    factor = 4  # 32 px upscaled to 128 px
    cell_w = 3 * 32 * factor + 2 * 2
    cell_h = 32 * factor
    assert grid.shape == (2 * cell_h + 6, 4 * cell_w + 3 * 6, 3)
    assert grid.dtype == np.uint8
    assert np.all(grid[cell_h : cell_h + 6] == 255)  # white gap between rows
    assert np.all(grid[cell_h + 6 :, cell_w + 6 :] == 255)  # empty cells stay white


def test_pair_grid_shows_the_given_image_first_when_defects_were_painted_into_one():
    images = [np.full((32, 32, 3), 100, dtype=np.uint8) for _ in range(2)]
    masks = [np.zeros((32, 32), dtype=np.uint8) for _ in range(2)]
    given = [np.full((32, 32, 3), 7, dtype=np.uint8) for _ in range(2)]
    grid = pair_grid(images, masks, ncols=3, gap=2, given=given)
    factor, cell_w = 4, 4 * 32 * 4 + 3 * 2  # given | image | colour mask | overlay
    assert grid.shape == (32 * factor, 2 * cell_w + 6, 3)
    assert np.all(grid[:, : 32 * factor] == 7) and np.all(grid[:, 32 * factor + 2 : 2 * 32 * factor + 2] == 100)
    with pytest.raises(ValueError, match="pair_grid needs"):
        pair_grid(images, masks, given=[np.zeros((16, 16, 3), np.uint8)] * 2)


# --- resize_mask (issue 12 item 7: masks vanished at resize) -------------------------------


def test_resize_mask_keeps_a_thin_crack_that_nearest_drops():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, 9] = 1  # a 1 px crack: nearest at 32 -> 4 px samples columns 4, 12, ... and loses it
    assert not np.asarray(Image.fromarray(mask).resize((4, 4), Image.NEAREST)).any()
    small = resize_mask(mask, (4, 4))
    assert small.dtype == np.uint8 and small.shape == (4, 4)
    assert small[:, 1].tolist() == [1, 1, 1, 1] and (small[:, [0, 2, 3]] == 0).all()


def test_resize_mask_keeps_a_speck_and_the_larger_share_wins():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[5, 27] = 2  # one pixel of 64 per output pixel: under the threshold, kept as a dot
    mask[16:24, 0:5] = 1  # 5/8 of output pixels (2, 0): class 1 ...
    mask[16:24, 5:8] = 3  # ... against 3/8 of class 3
    small = resize_mask(mask, (4, 4))
    assert small[0, 3] == 2 and (small == 2).sum() == 1
    assert small[2, 0] == 1 and (small == 3).sum() == 0


def test_resize_mask_non_square_and_threshold():
    mask = np.zeros((16, 24), dtype=np.uint8)
    mask[0:1, 0:12] = 1  # 12 of the 48 pixels under output pixel (0, 0): exactly the threshold
    mask[4, 0:11] = 1  # 11 of 48 under (1, 0): below it, and its region already kept (0, 0)
    mask[8:16, 12:24] = 2
    small = resize_mask(mask, (4, 2))
    assert small.tolist() == [[1, 0], [0, 0], [0, 2], [0, 2]]


def test_resize_mask_enlarging_is_nearest():
    rng = np.random.default_rng(0)
    for (h, w), (oh, ow) in [((5, 7), (16, 23)), ((8, 8), (24, 24)), ((3, 9), (10, 31))]:
        mask = rng.integers(0, 4, (h, w)).astype(np.uint8)
        nearest = np.asarray(Image.fromarray(mask).resize((ow, oh), Image.NEAREST))
        assert np.array_equal(resize_mask(mask, (oh, ow)), nearest)
    same = rng.integers(0, 4, (6, 6)).astype(np.uint8)
    assert np.array_equal(resize_mask(same, (6, 6)), same)
