"""`defect-gen filter`: per-pair agreement scores, per-class keeping, and the command end to end
with a stand-in segmenter (bright pixels are defects), so the test knows which pairs must stay."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image

from defect_gen.cli import main
from defect_gen.evaluation import filtering
from defect_gen.evaluation.data import PairSet
from defect_gen.pipeline import pair_folder

CLASSES = ["scratch", "stain", "hole"]  # configs/demo_small.yaml


def test_pair_scores_count_matching_defect_pixels_inside_the_region():
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[0, 0, :2] = 1  # two pixels of class 1
    masks[1, 3, 3] = 2
    pred = torch.zeros_like(masks)
    pred[0, 0, 0] = 1  # one right ...
    pred[0, 0, 1] = 2  # ... one of the wrong class ...
    pred[0, 2, 2] = 1  # ... one false alarm: 1 / 3
    pred[1, 0, 0] = 3  # outside pair 1's region: not counted
    region = torch.ones(2, 4, 4, dtype=torch.bool)
    region[1] = False
    region[1, 2:, 2:] = True
    scores = filtering.pair_scores(pred, masks, region)
    assert scores.tolist() == pytest.approx([1 / 3, 0.0])
    assert filtering.pair_scores(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2, dtype=torch.long),
                                 torch.ones(1, 2, 2, dtype=torch.bool)).tolist() == [0.0]


def test_keep_best_keeps_the_top_share_of_each_class():
    scores = [0.9, 0.1, 0.5, 0.2, 0.8, 0.3, 0.3]
    classes = [1, 1, 1, 1, 2, 2, 2]
    # class 1: round(0.5 * 4) = 2 best (0.9, 0.5); class 2: round(1.5) = 2 (0.8, then the earlier 0.3)
    assert filtering.keep_best(scores, classes, 0.5) == [True, False, True, False, True, True, False]
    assert filtering.keep_best([0.1, 0.2], [3, 3], 0.01) == [False, True]  # at least one per class


def test_regions_map_paints_window_top_left_height_width_onto_the_resized_image(tmp_path):
    os.makedirs(tmp_path / "images")
    Image.new("RGB", (200, 100)).save(tmp_path / "images" / "p.png")  # 200 wide, 100 high
    pairs = PairSet(["images/p.png", "images/q.png"], torch.zeros(2, 3, 10, 10, dtype=torch.uint8),
                    torch.zeros(2, 10, 10, dtype=torch.long))
    rows = {"p": {"window": [50, 100, 50, 60]}}  # rows 50..100, columns 100..160
    region = filtering.regions(str(tmp_path), pairs, rows)
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[5:10, 5:8] = True
    assert torch.equal(region[0], expected)
    assert region[1].all()  # no manifest row: the whole image


def test_pair_classes_name_the_placed_defect_inside_the_region():
    masks = torch.zeros(2, 4, 4, dtype=torch.long)
    masks[0] = 3
    masks[0, :, 0] = 1  # outside the region below
    masks[1, 0, 0] = 2
    region = torch.ones(2, 4, 4, dtype=torch.bool)
    region[0, :, 0] = False
    assert filtering.pair_classes(masks, region, 4) == [3, 2]
    assert filtering.pair_classes(torch.zeros(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.bool),
                                  4) == [0]


class Bright(torch.nn.Module):
    """A stand-in segmenter: class 1 wherever the pixel is bright, background elsewhere."""

    def forward(self, x):
        bright = x.mean(1, keepdim=True)
        return torch.cat([torch.zeros_like(bright), bright, torch.full_like(bright, -9), torch.full_like(bright, -9)], 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Demo data, and a paint-like folder of 6 class-1 pairs: the even ones show their defect
    (a bright square where the mask is), the odd ones do not (the square elsewhere)."""
    root = tmp_path_factory.mktemp("filter")
    assert main(["make-demo-data", str(root / "data"), "--num_images", "12", "--image_size", "32"]) == 0
    syn = root / "syn"
    os.makedirs(syn)
    with open(syn / pair_folder.MANIFEST, "w") as manifest:
        for i in range(6):
            mask = np.zeros((32, 48), np.uint8)
            mask[8:16, 8:16] = 1
            rgb = np.zeros((32, 48, 3), np.uint8)
            if i % 2 == 0:
                rgb[8:16, 8:16] = 255
            else:
                rgb[20:28, 30:38] = 255
            row = pair_folder.write_pair(str(syn), "paired", f"paint_{i:05d}", rgb, mask, CLASSES)
            row.update(source="some/training.png", window=[0, 0, 32, 32])
            manifest.write(json.dumps(row) + "\n")
    (syn / "paint_settings.json").write_text("{}")
    return root


def _filter(data, out, *extra):
    return main(["filter", "--real", "configs/demo_small.yaml", "--set", f"data.root={data / 'data'}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(data / "syn"), "--out", str(out),
                 "--steps", "1", "--image_size", "16", "--no-progress", *extra])


def test_filter_keeps_the_pairs_whose_defect_shows(data, tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(filtering, "train_segmenter",
                        lambda images, masks, *a, **k: trained.append(len(images)) or Bright())
    monkeypatch.setattr(filtering, "build_segmenter", lambda *a: Bright())
    assert _filter(data, tmp_path / "f", "--keep", "0.5") == 0
    assert trained and 2 <= trained[0] <= 6  # one segmenter, on the real few-shot split
    out = tmp_path / "f" / "syn"
    assert sorted(os.listdir(out / "images")) == ["paint_00000.png", "paint_00002.png", "paint_00004.png"]
    assert sorted(os.listdir(out / "masks")) == sorted(os.listdir(out / "images"))
    rows = [json.loads(line) for line in (out / pair_folder.MANIFEST).read_text().splitlines()]
    assert [r["name"] for r in rows] == ["paint_00000", "paint_00002", "paint_00004"]
    assert all(r["source"] == "some/training.png" and r["consistency"] > 0.3 for r in rows)  # the leak check reads it
    scores = [json.loads(line) for line in (out / filtering.SCORES).read_text().splitlines()]
    assert len(scores) == 6 and [s["kept"] for s in scores] == [True, False] * 3
    assert all(s["class"] == "scratch" for s in scores) and scores[1]["score"] == 0.0
    assert json.loads((out / filtering.SETTINGS).read_text())["keep"] == 0.5
    with Image.open(out / "filter_scores.png") as im:
        assert im.size[0] > 100
    with Image.open(out / "filter_preview.png") as im:  # best | worst of the one class: 2 rows of 2 cells
        assert im.size == (2 * (3 * 16 + 2 * 4) + 24, 2 * 16 + 4)
    assert not os.path.exists(str(out) + ".partial")
    # a second folder filtered into the same --out reuses the segmenter
    os.symlink(data / "syn", tmp_path / "again")
    assert main(["filter", "--real", "configs/demo_small.yaml", "--set", f"data.root={data / 'data'}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(tmp_path / "again"),
                 "--out", str(tmp_path / "f"), "--steps", "1", "--image_size", "16", "--no-progress"]) == 0
    assert len(trained) == 1 and sorted(os.listdir(tmp_path / "f" / "again" / "images")) == sorted(os.listdir(out / "images"))
    # the filtered folder reads like any other: evaluate accepts it
    assert main(["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={data / 'data'}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(out), "--out", str(tmp_path / "r"),
                 "--seeds", "1", "--steps", "1", "--image_size", "16", "--ratios", "0.5", "--no-progress"]) == 0


@pytest.mark.parametrize("extra, message", [
    (["--keep", "0"], "--keep must be in (0, 1] (a share of each class's pairs), got 0.0"),
    (["--steps", "0"], "--steps must be >= 1, got 0"),
    (["--synthetic", "/nonexistent/x"], "--synthetic /nonexistent/x: expected a `defect-gen sample` folder"),
])
def test_user_errors_are_one_line_exit_2(data, tmp_path, extra, message):
    args = [sys.executable, "-m", "defect_gen", "filter", "--real", "configs/demo_small.yaml",
            "--set", f"data.root={data / 'data'}", "--set", "data.num_images_per_class=2",
            "--synthetic", str(data / "syn"), "--out", str(tmp_path / "f"), "--steps", "1",
            "--image_size", "16", "--no-progress", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_an_existing_output_is_never_replaced(data, tmp_path, capsys):
    kept = tmp_path / "f" / "syn"
    os.makedirs(kept)
    (kept / "mine.txt").write_text("keep me")
    assert _filter(data, tmp_path / "f") == 2
    assert "already exists" in capsys.readouterr().err
    assert os.listdir(kept) == ["mine.txt"]
