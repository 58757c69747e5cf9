"""`defect-gen mix`: pairs taken class by class from several folders, renamed, their manifest
rows kept (source / background, which cross-validation reads), and bad takes refused before
anything is written."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from defect_gen.cli import main
from defect_gen.cli import mix as mix_cli
from defect_gen.errors import ConfigError, DataError
from defect_gen.evaluation.crossval import made_from
from defect_gen.evaluation.data import load_synthetic
from defect_gen.evaluation.mix import Take, choose_takes, mix_folders, parse_take

CLASSES = ["scratch", "stain", "hole"]


def _folder(root, name: str, classes: list[str]) -> str:
    """A paired-layout folder with one 8x8 pair per entry of `classes`, pixel values unique per pair."""
    folder = os.path.join(root, name)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(folder, sub))
    with open(os.path.join(folder, "manifest.jsonl"), "w") as f:
        for i, cls in enumerate(classes):
            stem = f"pair_{i:03d}"
            Image.fromarray(np.full((8, 8, 3), 10 * i + len(name), np.uint8)).save(f"{folder}/images/{stem}.png")
            mask = np.zeros((8, 8), np.uint8)
            mask[2:5, 2:5] = CLASSES.index(cls) + 1
            Image.fromarray(mask).save(f"{folder}/masks/{stem}.png")
            f.write(json.dumps({"name": stem, "classes": [cls], "source": f"real/{cls}_{i}.png",
                                "files": {"image": f"images/{stem}.png", "mask": f"masks/{stem}.png"}}) + "\n")
    return folder


def test_mix_takes_only_the_named_classes_renamed_with_their_rows(tmp_path):
    painted = _folder(tmp_path, "painted", ["scratch", "stain", "hole", "scratch"])
    pasted = _folder(tmp_path, "pasted", ["scratch", "hole", "hole"])
    out = str(tmp_path / "mix")
    counts = mix_folders([Take(painted, ("scratch", "stain")), Take(pasted, ("hole",))], out, log=lambda _: None)
    assert counts == {"scratch": 2, "stain": 1, "hole": 2}
    rows = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert [r["name"] for r in rows] == ["painted_pair_000", "painted_pair_001", "painted_pair_003",
                                         "pasted_pair_001", "pasted_pair_002"]
    assert [r["from"] for r in rows] == [painted] * 3 + [pasted] * 2
    assert rows[3]["source"] == "real/hole_1.png"  # kept: cross-validation reads it
    for r in rows:  # the very files, under the new name
        origin = os.path.join(r["from"], "images", r["name"].split("_", 1)[1] + ".png")
        assert open(os.path.join(out, r["files"]["image"]), "rb").read() == open(origin, "rb").read()
    pairs = load_synthetic(out, CLASSES, 8)
    assert len(pairs) == 5 and sorted(set(pairs.masks.unique().tolist())) == [0, 1, 2, 3]
    assert json.load(open(os.path.join(out, "mix_settings.json")))["takes"][1] == {
        "folder": pasted, "classes": ["hole"], "pairs": 2}
    assert made_from(out, pairs)[4] == {"real/hole_2.png"}  # what --folds leaves out of a fold
    assert not os.path.exists(out + ".partial")


def test_parse_take_splits_the_class_list_and_refuses_an_empty_one():
    assert parse_take("runs/a") == Take("runs/a", None)
    assert parse_take("runs/a:Crack, Blowhole") == Take("runs/a", ("Crack", "Blowhole"))
    with pytest.raises(ConfigError, match="at least one class"):
        parse_take("runs/a:")


def test_mix_without_class_list_takes_every_pair(tmp_path):
    folder = _folder(tmp_path, "painted", ["scratch", "stain"])
    assert mix_folders([Take(folder, None)], str(tmp_path / "all"), log=lambda _: None) == {"scratch": 1, "stain": 1}


@pytest.mark.parametrize("case, error, match", [
    ("unknown class", DataError, "no pair of class dent.*scratch \\(1\\)"),
    ("twice", ConfigError, "named twice"),
    ("no manifest", DataError, "no manifest.jsonl"),
    ("out exists", DataError, "already exists"),
])
def test_bad_takes_are_refused_before_anything_is_written(tmp_path, case, error, match):
    folder = _folder(tmp_path, "painted", ["scratch", "stain"])
    out = str(tmp_path / "mix")
    takes = {"unknown class": [Take(folder, ("scratch", "dent"))],
             "twice": [Take(folder, ("scratch",)), Take(folder + "/", ("stain",))],
             "no manifest": [Take(str(tmp_path), None)],
             "out exists": [Take(folder, None)]}[case]
    if case == "out exists":
        os.makedirs(out)
    with pytest.raises(error, match=match):
        mix_folders(takes, out, log=lambda _: None)
    assert not os.path.exists(out + ".partial")
    assert os.path.exists(out) == (case == "out exists")


def test_mix_command_reports_a_bad_class_in_one_line(tmp_path, capsys):
    folder = _folder(tmp_path, "painted", ["scratch"])
    assert main(["mix", "--take", f"{folder}:stain", "--out", str(tmp_path / "mix")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "class stain" in err and "scratch (1)" in err
    assert err.startswith(f"defect-gen mix: error: --take {folder}: no pair of class stain")  # the flag, not `takes`
    assert main(["mix", "--take", f"{folder}:scratch", "--out", str(tmp_path / "mix")]) == 0
    assert len(os.listdir(tmp_path / "mix" / "images")) == 1


def _report(tmp_path, folders: dict, runs: list, folds: int = 3) -> str:
    """An `evaluate` results.json with the per-class IoU means given (std 0)."""
    def run(label, ratio, ious):
        return {"label": label, "ratio": ratio, "summary": {f"IoU {c}": [v, 0.0] for c, v in zip(CLASSES, ious)}}
    report = tmp_path / "report"
    report.mkdir()
    (report / "results.json").write_text(json.dumps({
        "classes": CLASSES, "settings": {"folds": folds, "seeds": 2}, "synthetic": folders,
        "runs": [run(*r) for r in runs]}))
    return str(report)


def test_choose_takes_the_best_folder_per_class_only_where_it_beats_real_only(tmp_path):
    painted = _folder(tmp_path, "painted", ["scratch", "stain", "hole"])
    pasted = _folder(tmp_path, "pasted", ["scratch", "stain", "hole"])
    report = _report(tmp_path, {"painted": painted, "pasted": pasted}, [
        ("real only", 0.0, [0.30, 0.50, 0.20]),
        ("painted", 2.0, [0.40, 0.45, 0.22]),  # scratch: best; hole: better than real, worse than pasted
        ("pasted", 2.0, [0.35, 0.49, 0.25]),  # stain: no folder beats real only
        ("painted", 1.0, [0.10, 0.90, 0.10]),  # another ratio: not compared
        ("copy-paste", 2.0, [0.90, 0.90, 0.90])])  # built-in baseline: no folder to take from
    lines = []
    takes = choose_takes(report, ratio=2.0, log=lines.append)
    assert takes == [Take(painted, ("scratch",)), Take(pasted, ("hole",))]
    assert "3-fold cross-validated" in lines[0] and lines[2].endswith("-> no generated pairs")
    out = str(tmp_path / "mix")
    assert main(["mix", "--choose", report, "--ratio", "2", "--out", out]) == 0
    assert sorted(os.listdir(os.path.join(out, "images"))) == ["painted_pair_000.png", "pasted_pair_002.png"]


def test_choose_refuses_reports_it_cannot_choose_from(tmp_path, capsys):
    painted = _folder(tmp_path, "painted", ["scratch"])
    report = _report(tmp_path, {"painted": painted}, [
        ("real only", 0.0, [0.3, 0.3, 0.3]), ("painted", 1.0, [0.1, 0.1, 0.1]), ("painted", 2.0, [0.2, 0.2, 0.2])])
    # The library names its parameters; `mix` renders them as its flags.
    with pytest.raises(ConfigError, match="ratios 1, 2; pick one with ratio$") as exc:
        choose_takes(report, log=lambda _: None)
    results = os.path.join(report, "results.json")
    assert exc.value.render(mix_cli.FLAGS) == f"--choose {results}: runs at ratios 1, 2; pick one with --ratio"
    with pytest.raises(ConfigError, match="^ratio 4: .* has runs at 1, 2") as exc:
        choose_takes(report, ratio=4.0, log=lambda _: None)
    assert exc.value.render(mix_cli.FLAGS) == f"--ratio 4: {results} has runs at 1, 2"
    with pytest.raises(DataError, match="no folder beats real pairs alone"):
        choose_takes(report, ratio=2.0, log=lambda _: None)
    with pytest.raises(DataError, match="cannot read results.json"):
        choose_takes(str(tmp_path), log=lambda _: None)
    (tmp_path / "report" / "results.json").write_text(json.dumps({"synthetic": {}, "runs": [{"ratio": 1}]}))
    with pytest.raises(DataError, match="not an `evaluate` results.json"):
        choose_takes(str(tmp_path / "report"), log=lambda _: None)
    assert main(["mix", "--take", painted, "--ratio", "2", "--out", str(tmp_path / "m")]) == 2
    assert "--ratio goes with --choose" in capsys.readouterr().err


def test_a_listed_file_missing_leaves_no_folder_behind(tmp_path):
    folder = _folder(tmp_path, "painted", ["scratch", "stain"])
    os.remove(os.path.join(folder, "masks", "pair_001.png"))
    out = str(tmp_path / "mix")
    with pytest.raises(DataError, match="masks/pair_001.png .listed for pair pair_001. does not exist"):
        mix_folders([Take(folder, None)], out, log=lambda _: None)
    assert not os.path.exists(out) and not os.path.exists(out + ".partial")


def test_mix_preview_shows_each_class_cropped_around_its_defect(tmp_path):
    painted = _folder(tmp_path, "painted", ["scratch", "stain", "hole", "scratch"])
    out = str(tmp_path / "mix")
    mix_folders([Take(painted, None)], out, log=lambda _: None)
    preview = Image.open(os.path.join(out, "preview.png"))
    # 4 pairs, classes hole | scratch x2 | stain in rows of 3: 96 px crops upscaled x2 to 192,
    # three panels 2 px apart per cell, cells 6 px apart
    assert preview.size == (3 * (3 * 192 + 2 * 2) + 2 * 6, 2 * 192 + 6)
    top_left = np.asarray(preview)[:192, :192]
    assert (top_left[4:10, 4:10] == 10 * 2 + len("painted")).all()  # the hole pair's photo, first
    assert (top_left[-10:, -10:] == 255).all()  # an 8 px photo: the rest of the crop is padding


def test_crop_around_keeps_the_window_inside_the_photo_and_on_the_defect():
    from defect_gen.evaluation.mix import _crop_around
    image = np.arange(200 * 300 * 3, dtype=np.uint32).reshape(200, 300, 3).astype(np.uint8)
    mask = np.zeros((200, 300), np.uint8)
    mask[190:200, 295:300] = 2  # in the bottom-right corner
    crop_img, crop_mask = _crop_around(image, mask, 96)
    assert crop_mask.sum() == mask.sum()  # every defect pixel inside the window
    assert (crop_img == image[104:, 204:]).all()  # pushed back inside, not padded


def test_crop_around_two_far_defects_shows_one_of_them():
    from defect_gen.evaluation.mix import _crop_around
    mask = np.zeros((300, 300), np.uint8)
    mask[10:20, 10:20] = 1
    mask[280:290, 280:300] = 1  # the centroid (~(190, 195)) is on neither
    _, crop_mask = _crop_around(np.zeros((300, 300, 3), np.uint8), mask, 96)
    assert crop_mask.sum() >= 100
