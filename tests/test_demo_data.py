"""Tests of the procedural demo dataset (defect_gen.data.demo)."""

import numpy as np
import pytest

from defect_gen.data.demo import CLASSES, HOLE, SCRATCH, STAIN, make_demo_data
from defect_gen.data.image_io import read_image, read_mask
from defect_gen.errors import DataError

NUM, SIZE = 12, 32


def _files(root):
    """Relative path -> bytes of every file below root."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def _load(root):
    names = sorted(p.name for p in (root / "images").iterdir())
    images = [read_image(root / "images" / n) for n in names]
    masks = [read_mask(root / "masks" / n) for n in names]
    return images, masks


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    summary = make_demo_data(root, num_images=NUM, image_size=SIZE, seed=0)
    return root, summary


def test_layout_and_summary(demo_dir):
    root, summary = demo_dir
    assert (root / "classes.txt").read_text().split() == list(CLASSES)
    assert len(list((root / "images").iterdir())) == NUM
    assert len(list((root / "masks").iterdir())) == NUM
    assert summary["num_images"] == NUM
    images, masks = _load(root)
    assert all(i.shape == (SIZE, SIZE, 3) for i in images)
    assert all(m.shape == (SIZE, SIZE) and m.dtype == np.uint8 for m in masks)
    for cls, name in enumerate(CLASSES, start=1):
        assert summary["images_per_class"][name] == sum(np.any(m == cls) for m in masks)
        assert summary["defect_pixels_per_class"][name] == sum(int((m == cls).sum()) for m in masks)


def test_deterministic_per_seed(demo_dir, tmp_path):
    root, _ = demo_dir
    make_demo_data(tmp_path / "same", num_images=NUM, image_size=SIZE, seed=0)
    make_demo_data(tmp_path / "other", num_images=NUM, image_size=SIZE, seed=1)
    assert _files(tmp_path / "same") == _files(root)
    assert _files(tmp_path / "other") != _files(root)


def test_masks_values_and_class_coverage(demo_dir):
    root, _ = demo_dir
    _, masks = _load(root)
    values = set(np.unique(np.stack(masks)).tolist())
    assert values <= {0, 1, 2, 3}
    for cls in (SCRATCH, STAIN, HOLE):
        present = sum(np.any(m == cls) for m in masks)
        assert present >= NUM // 3, f"class {cls} only in {present} images"
    assert all(np.any(m > 0) for m in masks)  # every image has a defect


def _luminance(image):
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_defects_differ_from_surface(demo_dir):
    root, _ = demo_dir
    images, masks = _load(root)
    for image, mask in zip(images, masks):
        lum = _luminance(image)
        background = lum[mask == 0].mean()
        if np.any(mask == HOLE):
            assert lum[mask == HOLE].mean() < 0.5 * background
        if np.any(mask == STAIN):
            assert lum[mask == STAIN].mean() < background - 10
            red, blue = image[mask == STAIN][:, 0].mean(), image[mask == STAIN][:, 2].mean()
            assert red > blue + 10  # brownish tint
        if np.any(mask == SCRATCH):
            # Absolute difference: an image may hold one dark and one bright scratch.
            assert np.abs(lum[mask == SCRATCH] - background).mean() > 30


def test_refuses_non_empty_dir_without_overwrite(tmp_path):
    make_demo_data(tmp_path, num_images=3, image_size=16, seed=0)
    with pytest.raises(DataError, match="images"):
        make_demo_data(tmp_path, num_images=3, image_size=16, seed=0)
    summary = make_demo_data(tmp_path, num_images=2, image_size=16, seed=1, overwrite=True)
    assert summary["num_images"] == 2
    assert len(list((tmp_path / "images").iterdir())) == 2  # stale files removed
