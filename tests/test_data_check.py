"""`defect-gen data check` and training's refusal: each kind of broken dataset, named by file."""

import os

import numpy as np
import pytest
from conftest import ROOT, SHARED

from defect_gen.cli import main
from defect_gen.config import DataConfig
from defect_gen.data.check import check_dataset, format_report
from defect_gen.data.dataset import DefectDataset
from defect_gen.data.image_io import write_png
from defect_gen.errors import DataError

S = 16
CLASSES = ["scratch", "stain"]
MAGNETIC_TILE = os.path.join(SHARED, "data", "magnetic-tile")


def mask(cls=1):
    m = np.zeros((S, S), np.uint8)
    m[3:9, 4:7] = cls
    m[10:13, 10:14] = 2
    return m


def image(size=S):
    return np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)


def good_pairs(root, n=3):
    for i in range(n):
        write_png(root / "images" / f"ok{i}.png", image())
        write_png(root / "masks" / f"ok{i}.png", mask())


def break_missing_mask(root):
    write_png(root / "images" / "lonely.png", image())
    return "images/lonely.png"


def break_extra_mask(root):
    write_png(root / "masks" / "orphan.png", mask())
    return "masks/orphan.png"


def break_size_mismatch(root):
    write_png(root / "images" / "big.png", image(20))
    write_png(root / "masks" / "big.png", mask())
    return "masks/big.png"


def break_class_value(root):
    write_png(root / "images" / "seven.png", image())
    write_png(root / "masks" / "seven.png", mask(7))
    return "masks/seven.png"


def break_unreadable_image(root):
    (root / "images" / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_png(root / "masks" / "cut.png", mask())
    return "images/cut.png"


def break_unreadable_mask(root):
    write_png(root / "images" / "text.png", image())
    (root / "masks" / "text.png").write_text("not a picture")
    return "masks/text.png"


def break_colour_mask(root):
    write_png(root / "images" / "colour.png", image())
    write_png(root / "masks" / "colour.png", np.dstack([mask() * 100, mask(), mask()]).astype(np.uint8))
    return "masks/colour.png"


BREAKS = [break_missing_mask, break_extra_mask, break_size_mismatch, break_class_value,
          break_unreadable_image, break_unreadable_mask, break_colour_mask]


def cfg_for(root, **kw):
    return DataConfig(root=str(root), classes=CLASSES, **kw)


@pytest.mark.parametrize("damage", BREAKS, ids=lambda f: f.__name__[6:])
def test_each_broken_file_is_named_by_check_and_refused_by_training(tmp_path, damage):
    good_pairs(tmp_path)
    culprit = str(tmp_path / damage(tmp_path))
    report = check_dataset(cfg_for(tmp_path))
    assert len(report.problems) == 1 and culprit in report.problems[0].message
    assert "\n" not in report.problems[0].message
    logged = []
    with pytest.raises(DataError, match="refusing to train") as exc:
        DefectDataset(cfg_for(tmp_path), S, progress=False, log=logged.append)
    assert culprit in str(exc.value) and "data.skip_bad" in str(exc.value)
    # training says what the check says: one problem is named by the error line itself (not
    # printed twice); several are listed first (see the multi-problem test)
    assert report.problems[0].message in str(exc.value) and logged == []

    skipping = DefectDataset(cfg_for(tmp_path, skip_bad=True), S, progress=False, log=logged.append)
    assert len(skipping) == 3 and culprit in skipping.selection.skipped[0].message


def test_several_problems_are_all_listed_before_the_refusal(tmp_path):
    good_pairs(tmp_path)
    culprits = [str(tmp_path / b(tmp_path)) for b in (break_missing_mask, break_extra_mask)]
    logged = []
    with pytest.raises(DataError, match=r"2 problems \(listed above\)"):
        DefectDataset(cfg_for(tmp_path), S, progress=False, log=logged.append)
    assert len(logged) == 2 and all(any(c in line for line in logged) for c in culprits)


def test_value_outside_classes_explains_binary_masks(tmp_path):
    good_pairs(tmp_path)
    write_png(tmp_path / "images" / "bin.png", image())
    write_png(tmp_path / "masks" / "bin.png", (mask() > 0).astype(np.uint8) * 255)
    (problem,) = check_dataset(cfg_for(tmp_path)).problems
    assert "values 255 outside the classes" in problem.message and "data.mask_type: binary" in problem.message


def test_unknown_palette_colour_is_named(tmp_path):
    write_png(tmp_path / "images" / "a.png", image())
    rgb = np.zeros((S, S, 3), np.uint8)
    rgb[mask() == 1], rgb[mask() == 2], rgb[0, 0] = (255, 0, 0), (0, 255, 0), (1, 2, 3)
    write_png(tmp_path / "masks" / "a.png", rgb)
    palette = {"scratch": [255, 0, 0], "stain": [0, 255, 0]}
    (problem,) = check_dataset(cfg_for(tmp_path, palette=palette)).problems
    assert str(tmp_path / "masks" / "a.png") in problem.message and "(1, 2, 3)" in problem.message


def test_empty_class_is_refused_even_with_skip_bad(tmp_path):
    good_pairs(tmp_path)
    cfg = DataConfig(root=str(tmp_path), classes=[*CLASSES, "hole"], skip_bad=True)
    assert "class 'hole' (mask value 3) is empty" in check_dataset(cfg).problems[0].message
    with pytest.raises(DataError, match="class 'hole'.*data.skip_bad cannot skip this"):
        DefectDataset(cfg, S, progress=False, log=lambda line: None)


def test_unknown_class_folder_is_named(tmp_path):
    for folder in ("MT_Crack", "MT_Typo"):
        write_png(tmp_path / folder / "a.png", image())
        write_png(tmp_path / folder / "a_mask.png", mask(1) * 255)
    cfg = DataConfig(root=str(tmp_path), layout="class_folders", classes=["Crack"],
                     folder_classes={"MT_Crack": "Crack"})
    (problem,) = check_dataset(cfg).problems
    assert str(tmp_path / "MT_Typo") in problem.message and "data.folder_classes" in problem.message


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=f"dataset folder not found: {tmp_path / 'nope'}"):
        check_dataset(cfg_for(tmp_path / "nope"))


def write_config(tmp_path, root):
    path = tmp_path / "data.yaml"
    path.write_text(f"model: {{image_size: {S}, channel_mult: [1]}}\n"
                    f"data: {{root: {root}, classes: [scratch, stain]}}\n")
    return str(path)


def test_cli_check_prints_table_and_problems(tmp_path, capsys):
    good_pairs(tmp_path / "d")
    config = write_config(tmp_path, tmp_path / "d")
    assert main(["data", "check", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pairs: 3 readable, 0 bad" in out and "image sizes: all 16x16" in out
    assert "problems: none" in out and "training set: 3 defect images (all)" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("scratch"))
    assert row.split()[1] == "3"  # three images contain class 1

    break_missing_mask(tmp_path / "d")
    assert main(["data", "check", "--config", config, "--no-progress"]) == 1
    assert str(tmp_path / "d" / "images" / "lonely.png") in capsys.readouterr().out

    assert main(["data", "check", "--config", config, "--num_defect", "3"]) == 2
    assert "--num_defect 3 disagrees with data.classes, which lists 2" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.isdir(MAGNETIC_TILE), reason=f"{MAGNETIC_TILE} is absent: the magnetic-tile "
                    "data lives in ../shared, which only the project's own machines have")
def test_magnetic_tile_config_checks_clean(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's data.root is relative to the repository
    assert main(["data", "check", "--config", "configs/magnetic_tile_small.yaml", "--no-progress"]) == 0
    out = capsys.readouterr().out
    for name in ("Blowhole", "Break", "Crack", "Uneven", "(defect-free)"):
        assert any(line.strip().startswith(name) for line in out.splitlines()), name
    assert "problems: none" in out and "training set: 40 defect images (10 per class, seed 0)" in out


def test_report_lines_are_single_lines(tmp_path):
    good_pairs(tmp_path)
    break_size_mismatch(tmp_path)
    assert all("\n" not in line for line in format_report(check_dataset(cfg_for(tmp_path))))


# --- issue 12 (C): masks at the training size, counts that agree ---------------------------


def test_masks_that_lose_a_class_at_the_model_size_are_named(tmp_path, capsys):
    """A 1 px scratch inside a stain block at 2x reduction: the stain takes the pixel."""
    big = np.zeros((2 * S, 2 * S), np.uint8)
    big[4:12, 4:12] = 2
    big[6, 6] = 1
    rng = np.random.default_rng(0)
    write_png(tmp_path / "d" / "images" / "lost.png", rng.integers(0, 256, (2 * S, 2 * S, 3), dtype=np.uint8))
    write_png(tmp_path / "d" / "masks" / "lost.png", big)
    good_pairs(tmp_path / "d")
    culprit = str(tmp_path / "d" / "masks" / "lost.png")
    report = check_dataset(cfg_for(tmp_path / "d"), size=S)
    (lost,) = report.shrunk
    assert lost.message == f"mask {culprit}: class 'scratch' (1 px) vanishes at 16x16 px (from 32x32)"
    assert not report.problems  # a finding, not a reason to refuse

    config = write_config(tmp_path, tmp_path / "d")
    assert main(["data", "check", "--config", config, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "masks at the training size 16x16: 1 lose most of a class" in out and lost.message in out
    logged = []
    DefectDataset(cfg_for(tmp_path / "d"), S, progress=False, log=logged.append)
    assert "data: 1 training masks lose most of a class at 16x16 px" in logged[0] and lost.message in logged[1]


def test_report_counts_agree_when_the_listing_has_problems(tmp_path):
    """Issue 12 item 20: "3 readable, 1 bad" beside "problems: 2" left the second unexplained."""
    good_pairs(tmp_path)
    break_unreadable_image(tmp_path)
    break_missing_mask(tmp_path)
    lines = format_report(check_dataset(cfg_for(tmp_path)))
    assert "pairs: 3 readable, 1 bad" in lines
    assert ("problems: 2 (1 bad pair; 1 in the listing: missing or extra files, unknown folders, empty classes)"
            in lines)
