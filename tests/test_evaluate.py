"""`defect-gen evaluate`: metrics, quality measures, the real split, and the command end to end."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT
from PIL import Image
from tqdm.auto import tqdm

from defect_gen.cli import evaluate as evaluate_cli
from defect_gen.cli import main
from defect_gen.config import load_config
from defect_gen.errors import ConfigError
from defect_gen.evaluation import crossval, quality
from defect_gen.evaluation.crossval import fold_groups, fold_sets, made_from
from defect_gen.evaluation.data import PairSet, export_train_masks, load_real
from defect_gen.evaluation.metrics import confusion, fmt, mean_std, scores
from defect_gen.evaluation.run import EvalSettings, Results, parse_ratios
from defect_gen.evaluation.segmenter import SegSettings, build_segmenter, predict, train_segmenter

TINY_MODEL = ["--set", "model.image_size=32", "--set", "model.model_channels=32", "--set", "train.batch_size=4",
              "--set", "train.max_steps=2", "--set", "train.save_every=2", "--set", "train.sample_every=0"]

# ---------------------------------------------------------------------------------------
# Metrics


def test_scores_match_hand_counts():
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 2]])
    conf = confusion(pred, target, 3)
    assert conf.sum() == 8 and conf[1, 1] == 2 and conf[0, 1] == 1 and conf[2, 1] == 1 and conf[2, 2] == 1
    s = scores(conf, ["a", "b"])
    assert s["IoU a"] == pytest.approx(2 / 4)  # tp 2, fp 2 (one background, one b), fn 0
    assert s["IoU b"] == pytest.approx(1 / 2)  # tp 1, fn 1
    assert s["mIoU"] == pytest.approx(0.5)
    assert s["IoU background"] == pytest.approx(3 / 4)
    # defect vs background: 5 predicted defect pixels, 4 of them on defects (class aside); all 4 found
    assert s["precision"] == pytest.approx(4 / 5) and s["recall"] == pytest.approx(1.0)
    assert s["F1"] == pytest.approx(8 / 9)


def test_absent_class_is_left_out_of_miou_and_empty_prediction_scores_zero():
    target = torch.tensor([[0, 1], [0, 1]])
    s = scores(confusion(torch.zeros_like(target), target, 3), ["a", "b"])
    assert math.isnan(s["IoU b"]) and s["IoU a"] == 0.0 and s["mIoU"] == 0.0
    assert math.isnan(s["precision"]) and s["recall"] == 0.0 and s["F1"] == 0.0  # nothing predicted
    s = scores(confusion(torch.tensor([[2, 0], [0, 0]]), target, 3), ["a", "b"])
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["F1"] == 0.0
    s = scores(confusion(torch.tensor([[0, 2], [0, 0]]), target, 3), ["a", "b"])  # found, wrong class
    assert s["precision"] == 1.0 and s["recall"] == 0.5 and s["mIoU"] == 0.0


def test_mean_std_over_seeds_ignores_nan():
    ms = mean_std([{"m": 0.2, "x": math.nan}, {"m": 0.4, "x": 1.0}, {"m": 0.6, "x": math.nan}])
    assert ms["m"][0] == pytest.approx(0.4) and ms["m"][1] == pytest.approx(0.2)
    assert ms["x"] == (1.0, 0.0)
    assert fmt(ms["m"]) == "40.0 ± 20.0" and fmt((math.nan, math.nan)) == "n/a"


def test_parse_ratios():
    assert parse_ratios("2, 0.5,1,1") == [0.5, 1.0, 2.0]
    for bad in ("", "a,1", "0", "-1", "nan"):
        with pytest.raises(ConfigError, match="^ratios: expected") as exc:  # the parameter; the command's flag:
            parse_ratios(bad)
        assert exc.value.render(evaluate_cli.FLAGS) == "--" + str(exc.value)


# ---------------------------------------------------------------------------------------
# Segmenter and quality measures


def test_tiny_unet_learns_a_square():
    images = torch.full((4, 3, 16, 16), 40, dtype=torch.uint8)
    masks = torch.zeros(4, 16, 16, dtype=torch.uint8)
    images[:, :, 4:10, 5:11] = 220
    masks[:, 4:10, 5:11] = 1
    model = train_segmenter(images, masks, 2, SegSettings(steps=40, batch_size=4, lr=1e-2, width=8), seed=0)
    s = scores(confusion(predict(model, images), masks, 2), ["square"])
    assert s["mIoU"] > 0.8
    assert build_segmenter("unet", 5, 8)(torch.zeros(1, 3, 20, 20)).shape == (1, 5, 20, 20)  # any size


@pytest.mark.parametrize("steps", [1, 2, 10])
def test_short_smoke_runs_train(steps):
    # torch's one-cycle schedule divided by zero at exactly 10 steps (a tenth of them warming up)
    images = torch.randint(0, 255, (2, 3, 16, 16), dtype=torch.uint8)
    masks = torch.randint(0, 2, (2, 16, 16), dtype=torch.uint8)
    model = train_segmenter(images, masks, 2, SegSettings(steps=steps, batch_size=2, width=4, crop=0), seed=0)
    torch.manual_seed(0)  # train_segmenter's own seeding: the weights it started from
    before = build_segmenter("unet", 2, 4)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), before.state_dict().values()))


def _recorded_draws(monkeypatch, n: int):
    """n random 16 px pairs, and the list each training batch's pair indices are appended to."""
    from defect_gen.evaluation import segmenter
    images = torch.randint(0, 255, (n, 3, 16, 16), dtype=torch.uint8)
    masks = torch.randint(0, 2, (n, 16, 16), dtype=torch.uint8)
    drawn, crops = [], segmenter._crops
    monkeypatch.setattr(segmenter, "_crops", lambda im, m, idx, *a: drawn.append(idx.tolist()) or crops(im, m, idx, *a))
    return images, masks, drawn


def test_real_finish_draws_only_real_pairs_at_the_end(monkeypatch):
    images, masks, drawn = _recorded_draws(monkeypatch, 12)
    settings = SegSettings(steps=8, batch_size=6, width=4, crop=0, real_finish=0.25)
    train_segmenter(images, masks, 2, settings, seed=0, num_real=4)
    assert len(drawn) == 8
    assert any(i >= 4 for idx in drawn[:6] for i in idx)  # the mix, synthetic pairs 4..11 included
    assert all(i < 4 for idx in drawn[6:] for i in idx)  # the last quarter: the 4 real pairs alone
    # on a real-only set it changes nothing: the same draws, the same weights
    a = train_segmenter(images[:4], masks[:4], 2, settings, seed=0, num_real=4)
    b = train_segmenter(images[:4], masks[:4], 2, SegSettings(steps=8, batch_size=6, width=4, crop=0), seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_deeplabv3_is_optional():
    try:
        import torchvision  # noqa: F401
    except Exception:
        with pytest.raises(ConfigError, match="^arch deeplabv3 needs torchvision.*use arch unet$") as exc:
            build_segmenter("deeplabv3", 3)
        assert exc.value.render(evaluate_cli.FLAGS).startswith("--segmenter deeplabv3 needs torchvision")
        assert exc.value.render(evaluate_cli.FLAGS).endswith("; use --segmenter unet")
    else:
        assert build_segmenter("deeplabv3", 3).eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_memorisation_flags_copies_and_not_new_images():
    g = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    held = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    f_train, f_held = quality.features(train), quality.features(held)
    copies = quality.memorisation(quality.features(train[[2, 0, 5]]), f_train, f_held)
    assert copies["ratio"] == pytest.approx(0.0, abs=1e-6) and copies["copies"] == 1.0
    assert copies["index"].tolist() == [2, 0, 5]
    fresh = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    new = quality.memorisation(quality.features(fresh), f_train, f_held)
    assert 0.8 < new["ratio"] < 1.2
    assert quality.diversity(quality.features(train[[1, 1, 1]])) == pytest.approx(0.0, abs=1e-6)
    assert quality.diversity(f_train) > 0.3  # uniform noise: RMS distance about 0.41


def test_areas_per_class():
    masks = torch.zeros(3, 10, 10, dtype=torch.uint8)
    masks[0, :2] = 1  # 20 % class 1
    masks[1, :5, :2] = 2  # 10 % class 2
    masks[1, 9, 9] = 1  # 1 % class 1
    a = quality.areas(masks, 3)
    assert sorted(a[1].tolist()) == pytest.approx([0.01, 0.2]) and a[2].tolist() == pytest.approx([0.1])
    assert len(a[3]) == 0


# ---------------------------------------------------------------------------------------
# The command end to end on the demo data


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Demo data (32 px) and pairs sampled from two barely trained models."""
    root = tmp_path_factory.mktemp("eval")
    data = str(root / "data")
    assert main(["make-demo-data", data, "--num_images", "24", "--image_size", "32"]) == 0
    for name in ("large", "small"):
        args = ["train", "--config", f"configs/demo_{name}.yaml", "--work_dir", str(root / name), "--num_defect", "3",
                "--set", f"data.root={data}", "--set", "data.num_images_per_class=2", "--no-progress", *TINY_MODEL]
        if name == "large":
            args += ["--set", "model.channel_mult=[1,2]", "--set", "model.attention_downsample=[2]"]
        assert main(args) == 0
    assert main(["sample", "--large_recep", str(root / "large"), "--small_recep", str(root / "small"),
                 "--step_inference", "200", "--num_defect", "3", "--sample_dir", str(root / "syn"),
                 "--num_samples", "6", "--batch_size", "6", "--steps", "4", "--keep-empty", "--no-progress"]) == 0
    return root


def _evaluate(demo, out, *extra):
    return main(["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={demo / 'data'}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(demo / "syn"), "--out", str(out),
                 "--seeds", "2", "--steps", "4", "--image_size", "16", "--max_heldout", "8", "--no-progress", *extra])


def test_evaluate_end_to_end(demo, tmp_path, capsys):
    out = tmp_path / "report"
    assert _evaluate(demo, out, "--ratios", "0.5,1,5") == 0
    assert "report:" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    n_train, n_syn = res["num_train"], len(os.listdir(demo / "syn" / "images"))
    assert 2 <= n_train <= 6 and res["num_heldout"] == 8
    assert res["synthetic"] == {"syn": str(demo / "syn")}  # label -> folder, what `mix --choose` takes from
    # real only + each ratio that fits in the 6 synthetic pairs; the one that does not is noted
    assert [(r["label"], r["ratio"]) for r in res["runs"]] == [("real only", 0.0), ("syn", 0.5), ("syn", 1.0)]
    assert [r["num_synthetic"] for r in res["runs"]] == [0, round(0.5 * n_train), n_train]
    assert res["skipped"] == [f"syn x5: needs {5 * n_train} synthetic pairs, the folder has {n_syn}"]
    for r in res["runs"]:
        assert len(r["per_seed"]) == 2
        assert set(r["per_seed"][0]) >= {"mIoU", "IoU scratch", "IoU stain", "IoU hole", "precision", "recall", "F1"}
        m = r["per_seed"][0]["mIoU"]
        assert 0.0 <= m <= 1.0
    q = res["quality"]["syn"]
    assert q["memorisation"]["ratio"] > 0 and 0 <= q["memorisation"]["copies"] <= 1
    assert "mIoU" in q["consistency"] and q["kid_fid"]
    assert sum(len(v) for v in q["areas"].values()) > 0
    report = (out / "report.md").read_text()
    for text in ("| real only | 0 |", "| real + syn x0.5 |", "mIoU", "skipped: syn x5", "eval_miou_ratio.png",
                 "eval_nn_syn.png", "--ratios 0.5,1,5"):
        assert text in report
    for png in ("eval_miou_ratio.png", "eval_nn_syn.png", "eval_areas_scratch.png"):
        with Image.open(out / png) as im:
            assert im.size[0] > 100 and im.size[1] > 50


def test_real_finish_reuses_the_real_only_runs_and_is_reported(demo, tmp_path):
    out = tmp_path / "report"
    assert _evaluate(demo, out, "--ratios", "1") == 0
    cached = set(os.listdir(out / "segmenters"))
    assert _evaluate(demo, out, "--ratios", "1", "--real_finish", "0.5") == 0
    new = set(os.listdir(out / "segmenters")) - cached
    assert len(new) == 2  # the two mixed runs are trained again; real only (2 seeds) is reused
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["segmenter"]["real_finish"] == 0.5
    report = (out / "report.md").read_text()
    assert "the last 50% of them on the real pairs alone" in report and "--real_finish 0.5" in report


def test_real_split_is_the_training_selection_and_disjoint(demo):
    cfg = load_config("configs/demo_small.yaml", [f"data.root={demo / 'data'}", "data.num_images_per_class=2"])
    train, held, how = load_real(cfg, "cfg", 16, max_heldout=100)
    assert not set(train.names) & set(held.names)
    assert len(train) + len(held) == 24  # every demo image has a defect
    assert train.images.shape[1:] == (3, 16, 16) and train.masks.shape[1:] == (16, 16)
    # the same pairs the diffusion training (same few-shot settings) wrote to selected_files.json
    selected = json.loads((demo / "small" / "selected_files.json").read_text())
    assert sorted(train.names) == sorted(row["image"] for row in selected["selected"])
    cfg2 = load_config("configs/demo_small.yaml", [f"data.root={demo / 'data'}",
                                                   f"data.selection_file={demo / 'small' / 'selected_files.json'}"])
    train2, _, _ = load_real(cfg2, "cfg", 16, max_heldout=100)
    assert sorted(train2.names) == sorted(row["image"] for row in selected["selected"])


def test_export_train_masks_for_sample_mask(demo, tmp_path):
    n = export_train_masks("configs/demo_small.yaml", [f"data.root={demo / 'data'}", "data.num_images_per_class=2"],
                           str(tmp_path / "m"), 16)
    files = sorted(os.listdir(tmp_path / "m"))
    assert n == len(files) >= 2
    masks = [np.asarray(Image.open(tmp_path / "m" / f)) for f in files]
    assert all(m.shape == (16, 16) and m.max() <= 3 for m in masks) and any(m.max() > 0 for m in masks)


@pytest.mark.parametrize("extra, message", [
    (["--synthetic", "/nonexistent/x"], "--synthetic /nonexistent/x: expected a `defect-gen sample` folder"),
    (["--ratios", "1,x"], "--ratios: expected comma-separated numbers"),
    (["--seeds", "0"], "--seeds must be >= 1, got 0"),
    (["--real_finish", "1"], "--real_finish must be in [0, 1) (a share of the steps), got 1.0"),
    (["--real_share", "-0.1"], "--real_share must be in [0, 1) (a share of each batch), got -0.1"),
    (["--set", "data.num_images_per_class=null"], "data.num_images_per_class is not set"),
])
def test_user_errors_are_one_line_exit_2(demo, tmp_path, extra, message):
    _assert_one_line_error(demo, tmp_path, extra, message)


def _assert_one_line_error(demo, tmp_path, extra, message):
    args = [sys.executable, "-m", "defect_gen", "evaluate", "--real", "configs/demo_small.yaml",
            "--set", f"data.root={demo / 'data'}", "--set", "data.num_images_per_class=2",
            "--synthetic", str(demo / "syn"), "--out", str(tmp_path / "r"), "--steps", "1", "--seeds", "1",
            "--image_size", "16", "--no-progress", *extra]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr


def test_magnetic_tile_split():
    root = os.path.join(os.path.dirname(ROOT), "shared", "data", "magnetic-tile")
    if not os.path.isdir(root):
        pytest.skip(f"{root} is absent: the magnetic-tile data lives in ../shared, which only the project's "
                    f"own machines have")
    cfg = load_config(os.path.join(ROOT, "configs", "magnetic_tile_small.yaml"), [f"data.root={root}"])
    train, held, _ = load_real(cfg, "cfg", 64, max_heldout=30)
    assert 10 <= len(train) <= 40 and len(held) == 30  # 10 per class, 4 classes
    assert not set(train.names) & set(held.names)
    # held-out pairs are defect images (a tiny blowhole may vanish in the 64 px resize)
    assert sum(bool((m > 0).any()) for m in held.masks) >= 27


# ---------------------------------------------------------------------------------------
# Cross-validation over the training pairs (--folds)


def _pairs(classes_of: list[int], size: int = 8) -> PairSet:
    """One pair per entry, its mask a square of that class (0: no defect)."""
    masks = torch.zeros(len(classes_of), size, size, dtype=torch.uint8)
    for i, c in enumerate(classes_of):
        masks[i, 2:5, 2:5] = c
    return PairSet([f"real/{i}.png" for i in range(len(classes_of))],
                   torch.zeros(len(classes_of), 3, size, size, dtype=torch.uint8), masks)


def test_fold_groups_cover_every_pair_once_and_spread_each_class():
    pairs = _pairs([1] * 10 + [2] * 10 + [3] * 7 + [4] * 3)
    groups = fold_groups(pairs, 5, 3)
    assert sorted(i for g in groups for i in g) == list(range(30))
    for c in (1, 2, 3, 4):
        per_group = [sum(int(pairs.masks[i].max()) == c for i in g) for g in groups]
        assert max(per_group) - min(per_group) <= 1, (c, per_group)
    assert groups == fold_groups(pairs, 5, 3) and groups != fold_groups(pairs, 5, 3, seed=1)
    for bad in (1, 31):
        with pytest.raises(ConfigError, match="^folds: expected 2 to 30") as exc:
            fold_groups(pairs, 5, bad)
        flags = exc.value.render(evaluate_cli.FLAGS)
        assert flags == f"--folds: expected 2 to 30 (the real training pairs), got {bad}"


def test_fold_sets_leave_out_pairs_made_from_a_validation_photo(tmp_path):
    real = _pairs([1, 1, 2, 2])
    rows = [{"name": "a", "files": {"image": "images/a.png"}, "source": "real/0.png", "background": "real/2.png"},
            {"name": "b", "files": {"image": "images/b.png"}, "source": "real/1.png", "background": None},
            {"name": "c", "files": {"image": "images/c.png"}}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    syn = PairSet(["images/a.png", "images/b.png", "images/c.png", "images/d.png"], real.images, real.masks)
    made = made_from(str(tmp_path), syn)
    assert made == [{"real/0.png", "real/2.png"}, {"real/1.png"}, set(), set()]
    sets = fold_sets(real, [[0, 3], [1, 2]], made)
    (train0, val0, pool0), (train1, val1, pool1) = sets
    assert val0.names == ["real/0.png", "real/3.png"] and train0.names == ["real/1.png", "real/2.png"]
    assert pool0 == [1, 2, 3]  # a was made from real/0, a validation photo of fold 0
    assert pool1 == [2, 3]  # fold 1 holds a's background (real/2) and b's source (real/1)


def test_cross_validated_scores_add_the_folds_confusions(monkeypatch):
    real = _pairs([1, 1, 2, 2])
    settings = EvalSettings(ratios=[1.0], seeds=2, image_size=8)
    results = Results("cfg", "", ["a", "b"], settings, real, real, {}, cache_dir=None, folds=2)
    # a stand-in segmenter: fold 0 gets every pixel right, fold 1 predicts background everywhere
    def fake(train, num_real, val, res, seed):
        pred = val.masks.long() if val.names[0] == "real/0.png" else torch.zeros_like(val.masks).long()
        return confusion(pred, val.masks, 3), None
    monkeypatch.setattr(crossval, "score_run", fake)
    folds = fold_sets(real, [[0, 2], [1, 3]], [])
    run = crossval._cv_run(results, "real only", 0.0, folds, tqdm(disable=True))
    assert len(run.per_seed) == 2
    assert run.per_seed[0]["IoU a"] == pytest.approx(0.5) and run.per_seed[0]["recall"] == pytest.approx(0.5)


def test_cached_runs_without_a_confusion_matrix_are_scored_again(demo, tmp_path):
    out = tmp_path / "report"
    assert _evaluate(demo, out, "--ratios", "1") == 0
    first = json.loads((out / "results.json").read_text())["runs"]
    for f in os.listdir(out / "segmenters"):  # as runs cached before the confusion was kept
        saved = torch.load(out / "segmenters" / f, weights_only=True)
        torch.save({"scores": saved["scores"], "model": saved["model"]}, out / "segmenters" / f)
    assert _evaluate(demo, out, "--ratios", "1") == 0
    assert json.loads((out / "results.json").read_text())["runs"] == first


def test_folds_end_to_end(demo, tmp_path):
    out = tmp_path / "cv"
    args = ["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={demo / 'data'}",
            "--set", "data.num_images_per_class=2", "--synthetic", str(demo / "syn"), "--out", str(out),
            "--seeds", "1", "--steps", "3", "--image_size", "16", "--no-progress", "--ratios", "1,9", "--folds", "2"]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["folds"] == 2 and res["num_heldout"] == res["num_train"] >= 4
    assert res["synthetic"] == {"syn": str(demo / "syn")}
    assert [(r["label"], r["ratio"]) for r in res["runs"]] == [("real only", 0.0), ("syn", 1.0)]
    assert res["skipped"] and res["skipped"][0].startswith("syn x9: fold 0 needs")
    assert len(os.listdir(out / "segmenters")) == 4  # 2 folds x (real only, x1)
    report = (out / "report.md").read_text()
    assert "2-fold cross-validation" in report and "--folds 2" in report and "Generation quality" not in report
    assert not (out / "eval_nn_syn.png").exists() and (out / "eval_miou_ratio.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--folds", "1"], "--folds must be 0 (held-out split) or at least 2, got 1"),
    (["--folds", "2", "--max_heldout", "3"], "--max_heldout is for the held-out split"),
    (["--folds", "2", "--copy-paste", "x"], "--folds: the built-in --copy-paste baseline"),
    (["--folds", "99"], "--folds: expected 2 to"),
])
def test_folds_user_errors(demo, tmp_path, extra, message):
    _assert_one_line_error(demo, tmp_path, extra, message)


def test_synthetic_given_twice_evaluates_both():
    from defect_gen.cli import build_parser

    args = build_parser().parse_args(["evaluate", "--real", "c", "--out", "o", "--synthetic", "a", "--synthetic", "b", "c"])
    assert args.synthetic == ["a", "b", "c"]
    args = build_parser().parse_args(["filter", "--real", "c", "--out", "o", "--synthetic", "a", "--synthetic", "b"])
    assert args.synthetic == ["a", "b"]


def test_real_share_keeps_the_real_part_of_each_batch(monkeypatch):
    images, masks, drawn = _recorded_draws(monkeypatch, 44)
    settings = SegSettings(steps=20, batch_size=10, width=4, crop=0, real_share=0.5)
    train_segmenter(images, masks, 2, settings, seed=0, num_real=4)
    real = sum(i < 4 for idx in drawn for i in idx) / 200
    assert 0.4 < real < 0.6  # uniform would give 4 / 44 = 9 %
    assert any(i >= 4 for idx in drawn for i in idx)
    drawn.clear()  # real only: the share changes nothing, the same draws as without it
    a = train_segmenter(images[:4], masks[:4], 2, settings, seed=0, num_real=4)
    b = train_segmenter(images[:4], masks[:4], 2, SegSettings(steps=20, batch_size=10, width=4, crop=0), seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_real_share_reuses_the_real_only_runs_and_is_reported(demo, tmp_path):
    out = tmp_path / "report"
    assert _evaluate(demo, out, "--ratios", "1") == 0
    cached = set(os.listdir(out / "segmenters"))
    assert _evaluate(demo, out, "--ratios", "1", "--real_share", "0.5") == 0
    assert len(set(os.listdir(out / "segmenters")) - cached) == 2  # only the two mixed runs are new
    report = (out / "report.md").read_text()
    assert "50% of each mixed batch real" in report and "--real_share 0.5" in report


# ---------------------------------------------------------------------------------------
# --negatives: defect-free photos in every training set


@pytest.fixture(scope="module")
def demo_with_good(demo, tmp_path_factory):
    """The demo data plus three defect-free pairs (empty masks), as a user's good photos."""
    import shutil

    data = tmp_path_factory.mktemp("good") / "data"
    shutil.copytree(demo / "data", data)
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 90 + 10 * i, np.uint8)).save(data / "images" / f"good_{i}.png")
        Image.fromarray(np.zeros((32, 32), np.uint8)).save(data / "masks" / f"good_{i}.png")
    return data


def _record_training(monkeypatch, module):
    """Stand in for train_segmenter in `module`: record (pairs, num_real, defect-free pairs) of each run."""
    seen = []

    def fake(images, masks, num_classes, settings, seed, num_real=None):
        empty = int((masks.reshape(len(masks), -1).amax(1) == 0).sum())
        seen.append((len(images), num_real, empty))
        return build_segmenter("unet", num_classes, 4).eval()
    monkeypatch.setattr(module, "train_segmenter", fake)
    return seen


def test_negatives_join_every_training_set_and_ratios_count_defect_pairs(demo, demo_with_good, tmp_path,
                                                                         monkeypatch):
    from defect_gen.evaluation import run

    seen = _record_training(monkeypatch, run)
    args = ["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={demo_with_good}",
            "--set", "data.num_images_per_class=2", "--synthetic", str(demo / "syn"), "--seeds", "1", "--steps", "1",
            "--image_size", "16", "--max_heldout", "8", "--no-progress", "--ratios", "1"]
    assert main([*args, "--out", str(tmp_path / "plain")]) == 0
    assert main([*args, "--out", str(tmp_path / "neg"), "--negatives", "2"]) == 0
    res = json.loads((tmp_path / "neg" / "results.json").read_text())
    n = res["num_train"]  # defect pairs only
    # real only, then real + n synthetic pairs (ratio 1 of the defect pairs, not of defect + negatives)
    (plain_real, plain_mix), (neg_real, neg_mix) = seen[:2], seen[2:]
    assert plain_real == (n, n, 0) and plain_mix[:2] == (2 * n, n)
    assert neg_real == (n + 2, n + 2, 2) and neg_mix[:2] == (2 * n + 2, n + 2) and neg_mix[2] >= 2
    assert [r["num_synthetic"] for r in res["runs"]] == [0, n]
    assert res["settings"]["negatives"] == 2 and "+ 2 defect-free photos" in res["split"]
    report = (tmp_path / "neg" / "report.md").read_text()
    assert "--negatives 2" in report and "+ 2 defect-free photos (empty masks) in every training set" in report
    # different training sets, different cache keys: nothing of the plain report is reused
    assert not set(os.listdir(tmp_path / "plain" / "segmenters")) & set(os.listdir(tmp_path / "neg" / "segmenters"))


def test_negatives_in_every_cross_validation_fold(demo, demo_with_good, tmp_path, monkeypatch):
    from defect_gen.evaluation import run

    seen = _record_training(monkeypatch, run)
    assert main(["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={demo_with_good}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(demo / "syn"), "--seeds", "1",
                 "--steps", "1", "--image_size", "16", "--no-progress", "--ratios", "1", "--folds", "2",
                 "--negatives", "3", "--out", str(tmp_path / "cv")]) == 0
    res = json.loads((tmp_path / "cv" / "results.json").read_text())
    n = res["num_train"]
    real_runs, mixed_runs = seen[:2], seen[2:]
    assert len(mixed_runs) == 2 and sum(r[0] - 3 for r in real_runs) == n  # each fold trains on the others
    for (size, num_real, empty), (msize, mreal, _) in zip(real_runs, mixed_runs):
        assert num_real == size and empty == 3  # the negatives, never validated on
        assert mreal == num_real and msize == 2 * size - 3  # x1 of the fold's defect pairs


def test_held_out_split_holds_no_negative(demo_with_good):
    from defect_gen.evaluation.data import load_negatives

    cfg = load_config("configs/demo_small.yaml", [f"data.root={demo_with_good}", "data.num_images_per_class=2"])
    _, held, _ = load_real(cfg, "cfg", 16)
    negs = load_negatives(cfg, "cfg", 3, 16)
    assert sorted(negs.names) == [f"images/good_{i}.png" for i in range(3)] and int(negs.masks.max()) == 0
    assert not set(negs.names) & set(held.names)
    assert load_negatives(cfg, "cfg", 2, 16).names == load_negatives(cfg, "cfg", 2, 16).names  # a fixed pick


@pytest.mark.parametrize("extra, message", [
    (["--negatives", "-1"], "--negatives must be >= 0"),
    (["--negatives", "4"], "--negatives 4: the real config configs/demo_small.yaml has 0 defect-free image(s)"),
])
def test_negatives_user_errors(demo, tmp_path, extra, message):
    _assert_one_line_error(demo, tmp_path, extra, message)


# ---------------------------------------------------------------------------------------
# Several segmenters at once (--jobs)


def _runs(out) -> list:
    return [(r["label"], r["ratio"], r["per_seed"]) for r in json.loads((out / "results.json").read_text())["runs"]]


def _evaluate_any(demo, out, folds, *extra):
    """_evaluate, or with --folds (which has no --max_heldout) when `folds`."""
    if not folds:
        return _evaluate(demo, out, *extra)
    return main(["evaluate", "--real", "configs/demo_small.yaml", "--set", f"data.root={demo / 'data'}",
                 "--set", "data.num_images_per_class=2", "--synthetic", str(demo / "syn"), "--out", str(out),
                 "--seeds", "1", "--steps", "4", "--image_size", "16", "--no-progress", "--folds", "2", *extra])


@pytest.mark.parametrize("folds, extra", [(False, ["--ratios", "0.5,1"]), (True, ["--ratios", "1,2"])])
def test_jobs_give_the_serial_scores_and_fill_the_same_cache(demo, tmp_path, folds, extra):
    # Workers get half the threads; the serial run is given as many, so the sums run in the same order.
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        assert _evaluate_any(demo, tmp_path / "serial", folds, *extra) == 0
    finally:
        torch.set_num_threads(threads)
    assert _evaluate_any(demo, tmp_path / "jobs", folds, *extra, "--jobs", "2") == 0
    serial, jobs = _runs(tmp_path / "serial"), _runs(tmp_path / "jobs")
    assert len(serial) == 3 and jobs == serial
    cached = sorted(os.listdir(tmp_path / "serial" / "segmenters"))
    assert sorted(os.listdir(tmp_path / "jobs" / "segmenters")) == cached and len(cached) == 6
    assert "--jobs 2" in (tmp_path / "jobs" / "report.md").read_text()


def test_run_parallel_runs_every_task_and_reraises_a_workers_error(tmp_path):
    import math

    from defect_gen.evaluation.parallel import run_parallel

    dirs = [str(tmp_path / f"d{i}") for i in range(3)]
    run_parallel(os.makedirs, [(d,) for d in dirs], 3, 2, "dirs", progress=False)
    assert all(os.path.isdir(d) for d in dirs)
    with pytest.raises(ValueError, match="math domain error"):
        run_parallel(math.sqrt, [(4.0,), (-1.0,), (9.0,)], 3, 2, "roots", progress=False)


def test_run_parallel_reports_a_worker_killed_from_outside():
    # A worker killed without raising (the kernel's OOM killer sends SIGKILL) must end the run
    # with its reason, not leave the parent waiting for a result that will never come.
    import signal

    from defect_gen.errors import WorkerDied
    from defect_gen.evaluation.parallel import _exit_reason, run_parallel

    with pytest.raises(WorkerDied, match="killed by SIGKILL, out of memory"):
        run_parallel(signal.raise_signal, [(signal.SIGKILL,)], 1, 1, "killed", progress=False)
    with pytest.raises(WorkerDied, match="died without an error \\(exit code 3\\)"):
        run_parallel(os._exit, [(3,)], 1, 2, "exits", progress=False)
    assert _exit_reason(-40) == "killed by signal 40"  # a real-time signal has no name


def test_jobs_must_be_positive(demo, tmp_path):
    _assert_one_line_error(demo, tmp_path, ["--jobs", "0"], "--jobs must be >= 1, got 0")
