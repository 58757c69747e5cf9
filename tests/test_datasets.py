"""Dataset layouts, mask decoding, preprocessing and few-shot selection on tiny fixtures."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from defect_gen.config import DATA_LAYOUTS, DataConfig, from_dict
from defect_gen.data.dataset import DefectDataset
from defect_gen.data.demo import make_demo_data
from defect_gen.data.image_io import write_png
from defect_gen.data.layouts import LAYOUTS
from defect_gen.errors import ConfigError

S = 16  # fixture image side


def quiet(line):
    """A log sink: tests do not need the dataset's stderr lines."""


def load(root, image_size=S, **data):
    return DefectDataset(DataConfig(root=str(root), **data), image_size, progress=False, log=quiet)


def blob(size=S, top=4, left=4, h=5, w=3):
    """A binary rectangle (not symmetric, so flips and rotations are visible)."""
    m = np.zeros((size, size), np.uint8)
    m[top:top + h, left:left + w] = 1
    return m


def photo(seed, size=S):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def masks_of(ds):
    """Class-index maps (N, S, S) back from the dataset's one-hot channels."""
    return ds.data[:, 3:].argmax(1)


# ---------------------------------------------------------------------------------------
# Layouts


def test_every_configurable_layout_is_implemented():
    assert set(LAYOUTS) == set(DATA_LAYOUTS)


def test_paired_demo_data_loads(tmp_path):
    make_demo_data(tmp_path, num_images=4, image_size=S, seed=0)
    ds = load(tmp_path, classes=["scratch", "stain", "hole"])
    assert len(ds) == 4 and ds.data.shape == (4, 3 + 3 + 1, S, S)
    assert ds.data[:, :3].min() >= -1 and ds.data[:, :3].max() <= 1
    assert torch.equal(ds.data[:, 3:].sum(1), torch.ones(4, S, S))  # exactly one class per pixel
    assert ds.batch(6, torch.Generator().manual_seed(0)).shape == (6, 7, S, S)


def test_paired_reads_what_sample_writes(tmp_path):
    """`defect-gen sample` adds masks_color/, manifest.jsonl and preview.png beside the pairs."""
    for i in range(2):
        write_png(tmp_path / "images" / f"sample_{i:06d}.png", photo(i))
        write_png(tmp_path / "masks" / f"sample_{i:06d}.png", blob() * 2 + blob(top=10))
        write_png(tmp_path / "masks_color" / f"sample_{i:06d}.png", photo(9))
    (tmp_path / "manifest.jsonl").write_text("{}\n")
    write_png(tmp_path / "preview.png", photo(3))
    ds = load(tmp_path, classes=["a", "b"])
    assert len(ds) == 2 and torch.equal(masks_of(ds)[0], torch.from_numpy(blob() * 2 + blob(top=10)).long())


def make_mvtec(root):
    write_png(root / "test" / "crack" / "000.png", photo(0))
    noisy = blob().astype(np.uint8) * 200 + 3  # never trust binary masks to be 0/255
    write_png(root / "ground_truth" / "crack" / "000_mask.png", noisy)
    write_png(root / "test" / "hole" / "000.png", photo(1))
    write_png(root / "ground_truth" / "hole" / "000_mask.png", blob(top=1).astype(np.uint8) * 255)
    write_png(root / "test" / "good" / "000.png", photo(2))  # no ground truth for good images


def test_mvtec_class_from_folder_with_threshold(tmp_path):
    make_mvtec(tmp_path)
    ds = load(tmp_path, layout="mvtec", classes=["Hole", "Crack"], folder_classes={"crack": "Crack", "hole": "Hole"})
    assert [r.image.split("/")[-2] for r in ds.records] == ["crack", "hole"]  # good/ only via good_share
    assert torch.equal(masks_of(ds)[0], torch.from_numpy(blob() * 2).long())
    assert torch.equal(masks_of(ds)[1], torch.from_numpy(blob(top=1)).long())
    with_good = load(tmp_path, layout="mvtec", classes=["hole", "crack"], good_share=0.5)
    assert len(with_good) == 3 and masks_of(with_good)[1].sum() == 0  # good/000.png: all background


def test_official_layout_skips_good(tmp_path):
    write_png(tmp_path / "test" / "bent" / "000.png", photo(0))
    write_png(tmp_path / "converted_ground_truth" / "bent" / "000_mask.png", blob() * 2 + blob(top=10))
    write_png(tmp_path / "test" / "good" / "000.png", photo(1))
    ds = load(tmp_path, layout="official", classes=["a", "b"], good_share=0.5)
    assert len(ds) == 1 and masks_of(ds)[0].max() == 2


SPECTRUM_COLOURS = {"scratch": [255, 0, 0], "stain": [0, 255, 0]}


def make_spectrum(root, colour_dir="rbg_mask"):
    two = blob() + 2 * blob(top=10, left=10)  # two classes in one image
    rgb = np.zeros((S, S, 3), np.uint8)
    for index, colour in ((1, SPECTRUM_COLOURS["scratch"]), (2, SPECTRUM_COLOURS["stain"])):
        rgb[two == index] = colour
    cat = root / "pill"
    write_png(cat / "image" / "combined" / "000.png", photo(0))
    write_png(cat / "mask" / "combined" / "000_mask.png", two)
    suffix = "rbg" if colour_dir == "rbg_mask" else "rgb"
    write_png(cat / colour_dir / "combined" / f"000_{suffix}_mask.png", rgb)
    write_png(cat / "image" / "good" / "001.png", photo(1))
    return two


@pytest.mark.parametrize("colour_dir", ["rbg_mask", "rgb_mask"])
def test_defect_spectrum_index_and_colour_masks_agree(tmp_path, colour_dir):
    two = make_spectrum(tmp_path, colour_dir)
    by_index = load(tmp_path, layout="defect_spectrum", classes=["scratch", "stain"])
    by_colour = load(tmp_path, layout="defect_spectrum", classes=["scratch", "stain"], palette=SPECTRUM_COLOURS)
    assert torch.equal(masks_of(by_index)[0], torch.from_numpy(two).long())
    assert torch.equal(masks_of(by_colour), masks_of(by_index))
    one_category = load(tmp_path / "pill", layout="defect_spectrum", classes=["scratch", "stain"])
    assert len(one_category) == 1  # ROOT may also be a single category folder


def test_class_folders_greyscale_jpg_beside_png_mask(tmp_path):
    for folder, cls in (("MT_Crack", 1), ("MT_Break", 2), ("MT_Free", 0)):
        sub = tmp_path / folder / "Imgs"
        sub.mkdir(parents=True)
        Image.fromarray(photo(cls)[..., 0], "L").save(sub / "a.jpg", quality=95)
        write_png(sub / "a.png", (blob(top=cls) * 140).astype(np.uint8))  # 140 >= 128: defect
    ds = load(tmp_path, layout="class_folders", classes=["Crack", "Break"], good_folders=["MT_Free"],
              folder_classes={"MT_Crack": "Crack", "MT_Break": "Break"})
    assert [r.label for r in ds.records] == [2, 1]  # sorted by path: MT_Break, MT_Crack
    assert ds.images.shape == (2, 3, S, S)
    assert torch.equal(ds.images[:, 0], ds.images[:, 1])  # greyscale became RGB
    assert torch.equal(masks_of(ds)[1], torch.from_numpy(blob(top=1)).long())


def test_palette_on_paired_layout_with_background_colour(tmp_path):
    rgb = np.full((S, S, 3), 7, np.uint8)  # a grey background colour
    rgb[blob() == 1] = (10, 20, 30)
    write_png(tmp_path / "images" / "a.png", photo(0))
    write_png(tmp_path / "masks" / "a.png", rgb)
    ds = load(tmp_path, classes=["dent"], palette={"dent": [10, 20, 30], "background": [7, 7, 7]})
    assert torch.equal(masks_of(ds)[0], torch.from_numpy(blob()).long())


def test_binary_masks_in_paired_layout_need_the_mask_type(tmp_path):
    write_png(tmp_path / "images" / "a.png", photo(0))
    write_png(tmp_path / "masks" / "a.png", (blob() * 255).astype(np.uint8))
    ds = load(tmp_path, classes=["dent"], mask_type="binary")
    assert torch.equal(masks_of(ds)[0], torch.from_numpy(blob()).long())
    with pytest.raises(ConfigError, match="needs exactly one class"):
        load(tmp_path, classes=["dent", "hole"], mask_type="binary")


# ---------------------------------------------------------------------------------------
# Preprocessing and augmentation


def test_rgba_and_non_square_images_resize_to_the_model_size(tmp_path):
    rgba = np.dstack([photo(0, 24)[:, :20], np.full((24, 20), 128, np.uint8)])
    (tmp_path / "images").mkdir()
    Image.fromarray(rgba, "RGBA").save(tmp_path / "images" / "a.png")
    mask = np.zeros((24, 20), np.uint8)
    mask[2:12, 4:8] = 1
    write_png(tmp_path / "masks" / "a.png", mask)
    for resize in ("area", "bicubic"):
        ds = load(tmp_path, classes=["dent"], resize=resize)
        assert ds.data.shape == (1, 5, S, S)
        assert set(ds.masks.unique().tolist()) == {0, 1}  # nearest: no blended class values


def test_random_crops_from_a_larger_resize(tmp_path):
    make_demo_data(tmp_path, num_images=3, image_size=24, seed=0)
    ds = load(tmp_path, image_size=S, classes=["scratch", "stain", "hole"], load_size=24, hflip=False)
    assert ds.images.shape[-1] == 24 and ds.data.shape[-1] == S  # .data: centre crops
    a = ds.batch(8, torch.Generator().manual_seed(0))
    b = ds.batch(8, torch.Generator().manual_seed(0))
    assert a.shape == (8, 7, S, S) and torch.equal(a, b)


def test_flips_and_rotations_move_image_and_mask_together(tmp_path):
    for i in range(3):
        m = blob(top=i, left=2 * i)
        write_png(tmp_path / "images" / f"{i}.png", np.repeat(m[..., None] * 255, 3, axis=2).astype(np.uint8))
        write_png(tmp_path / "masks" / f"{i}.png", m)
    ds = load(tmp_path, classes=["dent"], hflip=True, vflip=True, rot90=True)
    x = ds.batch(32, torch.Generator().manual_seed(1))
    bright, defect = x[:, 0] > 0, x[:, 4] > 0.5
    assert torch.equal(bright, defect)
    assert len({tuple(d.nonzero()[0].tolist()) for d in defect}) > 3  # augmentation did happen


# ---------------------------------------------------------------------------------------
# Few-shot selection


def make_classes(root, per_class=4):
    """per_class single-class images for each of 3 classes, plus 2 empty masks."""
    n = 0
    for cls in (1, 2, 3):
        for _ in range(per_class):
            write_png(root / "images" / f"{n:02d}.png", photo(n))
            write_png(root / "masks" / f"{n:02d}.png", blob(top=cls) * cls)
            n += 1
    for _ in range(2):
        write_png(root / "images" / f"{n:02d}.png", photo(n))
        write_png(root / "masks" / f"{n:02d}.png", np.zeros((S, S), np.uint8))
        n += 1


def test_selection_is_per_class_seeded_and_reproducible(tmp_path):
    make_classes(tmp_path / "d")
    kw = dict(classes=["a", "b", "c"], num_images_per_class=2)
    first, again = load(tmp_path / "d", **kw), load(tmp_path / "d", **kw)
    assert first.records == again.records and len(first) == 6
    assert sorted(int(m.max()) for m in masks_of(first)) == [1, 1, 2, 2, 3, 3]
    others = [load(tmp_path / "d", selection_seed=s, **kw).records for s in range(1, 4)]
    assert any(o != first.records for o in others)
    assert len(load(tmp_path / "d", good_share=0.25, **kw)) == 8  # 2 defect-free of 8 = 0.25

    path = tmp_path / "run" / "selected_files.json"
    first.write_selection(str(path))
    doc = json.loads(path.read_text())
    assert len(doc["selected"]) == 6 and len(doc["rest"]) == 14 - 6
    assert doc["selected"][0]["image"].startswith("images/") and doc["selected"][0]["classes"]
    reused = load(tmp_path / "d", classes=["a", "b", "c"], selection_file=str(path))
    assert reused.records == first.records


# ---------------------------------------------------------------------------------------
# Config values of the data section


@pytest.mark.parametrize("data, message", [
    ({"palette": {"a": [1, 2]}}, "'data.palette.a': expected \\[r, g, b\\]"),
    ({"palette": {"a": "red"}}, "'data.palette.a': expected a list of int"),
    ({"palette": {1: [1, 2, 3]}}, "'data.palette': key 1 is not a string"),
    ({"palette": {"a": [1, 2, 3]}}, "no colour for class 'b'"),
    ({"palette": {"a": [1, 2, 3], "b": [1, 2, 3]}}, "share a colour"),
    ({"folder_classes": {"MT_X": "c"}}, "'data.folder_classes.MT_X': 'c' is not in data.classes"),
    ({"folder_classes": ["MT_X"]}, "'data.folder_classes': expected a mapping of str to str"),
    ({"layout": "coco"}, "'data.layout': expected one of paired, mvtec"),
    ({"mask_threshold": 0}, "'data.mask_threshold': expected 1..255"),
    ({"good_share": 1.0}, "'data.good_share'"),
    ({"load_size": 32}, "'data.load_size': must be >= model.image_size \\(64\\)"),
])
def test_data_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict({"data": {"classes": ["a", "b"], **data}})


# ---------------------------------------------------------------------------------------
# Issue 12 (C): 1-bit masks, EXIF orientation, masks at the model size, defect_spectrum folders


def test_one_bit_masks_are_foreground_not_empty(tmp_path):
    """A PIL mode "1" mask reads 0/1; thresholded at 128 it used to come out empty."""
    write_png(tmp_path / "test" / "crack" / "000.png", photo(0))
    (tmp_path / "ground_truth" / "crack").mkdir(parents=True)
    Image.fromarray(blob() * 255).convert("1").save(tmp_path / "ground_truth" / "crack" / "000_mask.png")
    ds = load(tmp_path, layout="mvtec", classes=["crack"])
    assert torch.equal(masks_of(ds)[0], torch.from_numpy(blob()).long())


def test_exif_orientation_is_applied_to_images(tmp_path):
    """A JPEG stored sideways with Orientation 6 (rotate 90 clockwise to view) meets its mask upright."""
    upright = np.zeros((8, 16, 3), np.uint8)
    upright[:, :8] = 255  # left half white, as seen in a viewer
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    Image.fromarray(np.rot90(upright, 1).copy()).save(tmp_path / "images" / "0.jpg", exif=exif, quality=95)
    mask = np.zeros((8, 16), np.uint8)
    mask[:, :8] = 1
    write_png(tmp_path / "masks" / "0.png", mask)
    ds = load(tmp_path, image_size=16, classes=["a"], resize="bicubic")
    assert ds.records and ds.images.shape[-2:] == (16, 16)
    image = ds.images[0].float().mean(0)
    assert image[:, :8].mean() > 200 and image[:, 8:].mean() < 50  # white where the mask is


def spectrum_pair(cat, folder, name, mask, with_mask=True):
    write_png(cat / "image" / folder / f"{name}.png", photo(len(name)))
    if with_mask:
        write_png(cat / "mask" / folder / f"{name}_mask.png", mask)


def test_defect_spectrum_folder_must_be_a_class_and_its_masks_must_hold_it(tmp_path):
    """Issue 12 item 9: with 'fray' (value 3) left out of data.classes, its masks were read as
    whatever class data.classes put at value 3, silently."""
    from defect_gen.data.check import check_dataset

    cat = tmp_path / "cable"
    spectrum_pair(cat, "crack", "a", blob())
    spectrum_pair(cat, "uneven", "b", blob() * 2)
    spectrum_pair(cat, "fray", "c", blob() * 3)
    spectrum_pair(cat, "combined", "d", blob() + 2 * blob(top=10, left=10))
    spectrum_pair(cat, "good", "e", None, with_mask=False)
    left_out = check_dataset(DataConfig(root=str(tmp_path), layout="defect_spectrum", classes=["crack", "uneven", "x"]))
    assert left_out.problems[0].message == (
        f"folder {cat / 'image' / 'fray'}: 'fray' is not a class in data.classes ['crack', 'uneven', 'x']; "
        f"map it with data.folder_classes or list it in data.good_folders")
    swapped = check_dataset(DataConfig(root=str(tmp_path), layout="defect_spectrum",
                                       classes=["uneven", "crack", "fray"]))
    assert [p.message for p in swapped.problems] == [
        f"mask {cat / 'mask' / 'crack' / 'a_mask.png'} is in folder 'crack' (class 'crack', mask value 2) but holds "
        f"only 1 ('uneven'); data.classes must list the classes in the order of their mask values (value i = the "
        f"i-th class), or map the folder with data.folder_classes", swapped.problems[1].message]
    right = check_dataset(DataConfig(root=str(tmp_path), layout="defect_spectrum", classes=["crack", "uneven", "fray"]))
    assert not right.problems and len(right.pairs) == 5  # combined/ holds several classes, good/ none


def test_defect_photo_with_an_empty_mask_is_noted(tmp_path):
    from defect_gen.data.check import check_dataset

    spectrum_pair(tmp_path / "cat", "crack", "a", blob())
    spectrum_pair(tmp_path / "cat", "crack", "blank", blob() * 0)
    report = check_dataset(DataConfig(root=str(tmp_path), layout="defect_spectrum", classes=["crack"]))
    assert report.notes == [f"mask {tmp_path / 'cat' / 'mask' / 'crack' / 'blank_mask.png'} is empty, but its image "
                            f"is in defect folder 'crack'; it counts as defect-free"]


def test_mvtec_reads_train_good_and_combined_class_index_masks(tmp_path):
    """Issue 12 item 20: MVTec's train/good was ignored; a combined/ folder was 'not a class'."""
    from defect_gen.data.check import check_dataset

    make_mvtec(tmp_path)
    write_png(tmp_path / "train" / "good" / "100.png", photo(7))
    write_png(tmp_path / "test" / "combined" / "000.png", photo(8))
    write_png(tmp_path / "ground_truth" / "combined" / "000_mask.png", blob() + 2 * blob(top=10, left=10))
    cfg = DataConfig(root=str(tmp_path), layout="mvtec", classes=["hole", "crack"])
    report = check_dataset(cfg)
    assert not report.problems
    by_folder = {p.record.image.split("/")[-3] + "/" + p.record.image.split("/")[-2]: p.classes for p in report.pairs}
    assert by_folder["train/good"] == [] and by_folder["test/combined"] == [1, 2]

    write_png(tmp_path / "ground_truth" / "combined" / "000_mask.png", (blob() > 0).astype(np.uint8) * 255)
    (problem,) = check_dataset(cfg).problems
    assert "is in a combined/ folder (several classes) but holds value 255" in problem.message


def test_multi_class_pair_written_in_mvtec_layout_reads_back_with_its_classes(tmp_path):
    """Issue 12 item 20: a pair with several classes went to combined/ as a 0/255 mask and
    could not be read back; it is now written as class indices there."""
    from defect_gen.data.check import check_dataset
    from defect_gen.pipeline.pair_folder import write_pair

    index = (blob() + 2 * blob(top=10, left=10)).astype(np.uint8)
    single = blob().astype(np.uint8)
    rgb = np.full((*index.shape, 3), 120, np.uint8)
    write_pair(str(tmp_path), "mvtec", "two", rgb, index, ["hole", "crack"])
    write_pair(str(tmp_path), "mvtec", "one", rgb, single, ["hole", "crack"])
    assert set(np.unique(np.asarray(Image.open(tmp_path / "ground_truth" / "hole" / "one_mask.png")))) == {0, 255}
    report = check_dataset(DataConfig(root=str(tmp_path), layout="mvtec", classes=["hole", "crack"]))
    assert not report.problems
    assert sorted(p.classes for p in report.pairs) == [[1], [1, 2]]
