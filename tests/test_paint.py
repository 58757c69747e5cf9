"""Native-resolution crops for training, `defect-gen paint` (model and copy-paste), and the
evaluation's copy-paste baseline and leak check, on a tiny dataset of non-square photos."""

import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from defect_gen.cli import main
from defect_gen.cli import paint as paint_cli
from defect_gen.config import load_config
from defect_gen.data.dataset import DefectDataset, resize_pair
from defect_gen.errors import ConfigError
from defect_gen.evaluation.data import check_no_leak, copy_paste_pairs, load_real
from defect_gen.pipeline import inputs, painting

H, W = 40, 56  # photos are not square: nothing may squash them


def _config(tmp, data: str, **data_extra) -> str:
    lines = ["model: {image_size: 16, model_channels: 32, channel_mult: [1, 2], num_res_blocks: 1, "
             "attention_downsample: [], middle_block: false}",
             "diffusion: {num_timesteps: 50, schedule: cosine, predict: x0}",
             f"data: {{root: {data}, layout: paired, classes: [scratch, hole], num_images_per_class: 2, "
             + "".join(f"{k}: {v}, " for k, v in data_extra.items()) + "vflip: true}",
             "train: {batch_size: 4, lr: 1.0e-3, max_steps: 2, save_every: 2, sample_every: 0, log_every: 1}"]
    path = os.path.join(tmp, "paint.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """6 defect photos (H x W) with scratch / hole masks and 3 defect-free photos (48 x 64)."""
    root = tmp_path_factory.mktemp("paint")
    rng = np.random.default_rng(0)
    for sub in ("data/images", "data/masks", "good"):
        os.makedirs(root / sub)
    for i in range(6):
        image = rng.integers(90, 140, (H, W, 3), dtype=np.uint8)
        mask = np.zeros((H, W), np.uint8)
        if i % 2:
            mask[10:13, 5 + i:30 + i] = 1  # a thin scratch
        else:
            mask[20 + i:26 + i, 30:36] = 2  # a hole
        image[mask > 0] = 30
        Image.fromarray(image).save(root / "data" / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "data" / "masks" / f"p{i}.png")
    for i in range(3):
        Image.fromarray(rng.integers(150, 200, (48, 64, 3), dtype=np.uint8)).save(root / "good" / f"g{i}.jpg")
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(root / "good" / f"g{i}.png")  # its empty mask: skipped
    return root


# ---------------------------------------------------------------------------------------
# Training on native-resolution crops


def test_native_crops_keep_photo_size_and_centre_on_defects(tiny, tmp_path):
    cfg = load_config(_config(str(tmp_path), str(tiny / "data"), native_scale=1.0, defect_crop_share=1.0))
    ds = DefectDataset(cfg.data, cfg.model.image_size, progress=False, log=lambda s: None, info=lambda s: None)
    assert [tuple(im.shape) for im in ds.images] == [(3, H, W)] * len(ds)  # stored as the photos are
    x = ds.batch(16, torch.Generator().manual_seed(0))
    assert x.shape == (16, 3 + 2 + 1, 16, 16)
    assert bool((x[:, 4:].amax((1, 2, 3)) > 0).all())  # every crop holds a defect pixel (share 1.0)
    assert ds.data.shape == (len(ds), 6, 16, 16) and bool((ds.data[:, 4:].amax((1, 2, 3)) > 0).all())
    cfg = load_config(_config(str(tmp_path), str(tiny / "data"), native_scale=1.0, defect_crop_share=0.0))
    ds = DefectDataset(cfg.data, cfg.model.image_size, progress=False, log=lambda s: None, info=lambda s: None)
    empty = (ds.batch(64, torch.Generator().manual_seed(0))[:, 4:].amax((1, 2, 3)) == 0).float().mean()
    assert empty > 0.3  # uniform crops mostly miss a defect this small


@pytest.mark.parametrize("extra, message", [
    ({"native_scale": 0}, "'data.native_scale': expected a scale in \\(0, 4\\]"),
    ({"native_scale": 1.0, "load_size": 32}, "exclude each other"),
    ({"defect_crop_share": 1.5}, "'data.defect_crop_share': expected a share in \\[0, 1\\]"),
])
def test_native_crop_settings_are_checked(tiny, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_config(str(tmp_path), str(tiny / "data"), **extra))


# ---------------------------------------------------------------------------------------
# Placement


def test_window_holds_the_defect_inside_the_photo():
    rng = np.random.default_rng(1)
    src = painting.Source("s", np.zeros((30, 30, 3), np.uint8), np.pad(np.ones((9, 4), np.uint8), 10))
    for _ in range(50):
        p = painting.place(src, (40, 56), rng, (0.5, 2.0))
        rows, cols = painting.window(p, (40, 56), 16, 4, 4)
        h, w = p.mask.shape
        assert rows.start <= p.top and p.top + h <= rows.stop <= 40 and rows.start >= 0
        assert cols.start <= p.left and p.left + w <= cols.stop <= 56 and cols.start >= 0
        assert (rows.stop - rows.start) % 4 == 0 and (cols.stop - cols.start) % 4 == 0
        assert rows.stop - rows.start >= 16 and cols.stop - cols.start >= 16


def test_good_images_skip_the_masks_beside_them(tiny):
    assert [os.path.basename(p) for p in inputs.list_good_images(str(tiny / "good"))] == ["g0.jpg", "g1.jpg", "g2.jpg"]


# ---------------------------------------------------------------------------------------
# The command


def _read(folder, name):
    return np.asarray(Image.open(os.path.join(folder, name)))


def test_copy_paste_writes_pairs_at_the_photo_size(tiny, tmp_path):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    out = str(tmp_path / "cp")
    assert main(["paint", "--copy-paste", "--config", cfg, "--good", str(tiny / "good"), "--sample_dir", out,
                 "--num_samples", "4", "--no-progress"]) == 0
    rows = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert len(rows) == 4 and all(r["source"].startswith("images/") for r in rows)
    for r in rows:
        image, mask = _read(out, r["files"]["image"]), _read(out, r["files"]["mask"])
        photo = np.asarray(Image.open(r["good"]).convert("RGB"))
        assert image.shape == (48, 64, 3) and mask.shape == (48, 64) and mask.any()
        assert np.array_equal(image[mask == 0], photo[mask == 0])  # only defect pixels change
        assert (image[mask > 0] == 30).all()  # the real defect's own pixels
    assert os.path.exists(os.path.join(out, "preview.png"))
    # the same command again refuses to mix with the finished run
    assert main(["paint", "--copy-paste", "--config", cfg, "--good", str(tiny / "good"), "--sample_dir", out,
                 "--num_samples", "4", "--no-progress"]) == 2


def test_match_light_keeps_the_defects_contrast_to_the_surface():
    # a defect at half its surface's light, from a photo lit at 100, pasted into one lit at 180
    mask = np.zeros((30, 30), np.uint8)
    mask[12:18, 12:18] = 1
    image = np.full((30, 30, 3), 100, np.uint8)
    image[mask > 0] = 50
    src = painting.Source("s", image, mask)
    p = painting.Placement(5, 7, mask[12:18, 12:18], image[12:18, 12:18])
    photo = np.full((40, 50, 3), 180, np.uint8)
    surround = painting.surround_mean(src.image, src.mask > 0)
    assert np.allclose(surround, 100)
    matched = painting.copy_paste(photo, p, surround)
    assert (matched[5:11, 7:13] == 90).all() and (matched[11:, :] == 180).all()  # 50 * 180 / 100
    assert (painting.copy_paste(photo, p)[5:11, 7:13] == 50).all()  # plain copy-paste: the pixels as they were
    # the photo's own defects are left out of its surface light
    existing = np.zeros((40, 50), np.uint8)
    existing[5:11, 14:20] = 2
    photo[existing > 0] = 0
    assert (painting.copy_paste(photo, p, surround, existing)[5:11, 7:13] == 90).all()
    # a gain past LIGHT_GAIN is clipped; a defect that leaves no ring is pasted as it is
    assert (painting.copy_paste(np.full((40, 50, 3), 250, np.uint8), painting.Placement(5, 7, p.mask, p.pixels),
                             np.full(3, 20.0))[5:11, 7:13] == 200).all()  # 50 * 4, not 50 * 12.5
    assert painting.surround_mean(image, np.ones((30, 30), bool)) is None


def test_copy_paste_with_match_light_moves_only_the_defect_pixels(tiny, tmp_path):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    runs = {}
    for flag in ([], ["--match_light"]):
        out = str(tmp_path / f"cp{len(flag)}")
        assert main(["paint", "--copy-paste", "--config", cfg, "--good", str(tiny / "good"), "--sample_dir", out,
                     "--num_samples", "3", "--no-progress", *flag]) == 0
        runs[bool(flag)] = out
    assert json.loads(open(os.path.join(runs[True], "paint_settings.json")).read())["match_light"] is True
    rows = [json.loads(line) for line in open(os.path.join(runs[True], "manifest.jsonl"))]
    for r in rows:
        plain, matched = (_read(runs[m], r["files"]["image"]) for m in (False, True))
        mask = _read(runs[True], r["files"]["mask"])
        assert np.array_equal(mask, _read(runs[False], r["files"]["mask"]))  # the same placements
        assert np.array_equal(plain[mask == 0], matched[mask == 0])
        # defect pixels 30 on a surface of 90-140 (mean ~115), pasted on 150-200 (mean ~175): brighter
        assert (plain[mask > 0] == 30).all() and 40 < matched[mask > 0].mean() < 52


@pytest.fixture(scope="module")
def model(tiny, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("model")
    cfg = _config(str(tmp), str(tiny / "data"), native_scale=1.0, defect_crop_share=0.8)
    assert main(["train", "--config", cfg, "--work_dir", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


def test_paint_generates_only_the_defect_region(tiny, model, tmp_path):
    out = str(tmp_path / "painted")
    assert main(["paint", "--model", str(model), "--good", str(tiny / "good"), "--sample_dir", out,
                 "--num_samples", "3", "--steps", "3", "--margin", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))]
    assert len(rows) == 3
    for r in rows:
        image, mask = _read(out, r["files"]["image"]), _read(out, r["files"]["mask"])
        photo = np.asarray(Image.open(r["good"]).convert("RGB"))
        assert image.shape == photo.shape and mask.shape == photo.shape[:2]
        region = painting.dilate(mask > 0, 2)  # the default blend
        assert np.array_equal(image[~region], photo[~region])  # every other pixel as stored
        assert not np.array_equal(image[region], photo[region])  # the defect was drawn
        top, left, h, w = r["window"]
        assert h >= 16 and w >= 16 and top + h <= photo.shape[0] and left + w <= photo.shape[1]
    # pair i depends on its seed alone
    again = str(tmp_path / "again")
    assert main(["paint", "--model", str(model), "--good", str(tiny / "good"), "--sample_dir", again,
                 "--num_samples", "2", "--steps", "3", "--margin", "2", "--no-progress"]) == 0
    assert np.array_equal(_read(out, "images/paint_00001.png"), _read(again, "images/paint_00001.png"))


def test_match_light_needs_a_pasted_defect(tiny, model, tmp_path, capsys):
    args = ["paint", "--model", str(model), "--good", str(tiny / "good"), "--num_samples", "1", "--no-progress",
            "--match_light"]
    assert main([*args, "--sample_dir", str(tmp_path / "s1")]) == 2  # strength 1: nothing pasted to scale
    assert "--match_light scales the pasted real defect" in capsys.readouterr().err
    assert main([*args, "--sample_dir", str(tmp_path / "s05"), "--strength", "0.5", "--steps", "2"]) == 0


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "ddpm"])
def test_paint_with_other_samplers_keeps_the_photo_and_the_seed(tiny, model, tmp_path, sampler):
    """DPM-Solver++(2M) and DDPM run the same known-region loop as DDIM: the photo is kept
    outside the defect, and a pair depends on its seed alone."""
    outs = [str(tmp_path / name) for name in ("a", "b")]
    for out, n in zip(outs, (2, 1)):
        assert main(["paint", "--model", str(model), "--good", str(tiny / "good"), "--sample_dir", out,
                     "--num_samples", str(n), "--steps", "4", "--margin", "2", "--sampler", sampler,
                     "--no-progress"]) == 0
    row = json.loads(open(os.path.join(outs[0], "manifest.jsonl")).readline())
    image, mask = _read(outs[0], row["files"]["image"]), _read(outs[0], row["files"]["mask"])
    photo = np.asarray(Image.open(row["good"]).convert("RGB"))
    region = painting.dilate(mask > 0, 2)
    assert np.array_equal(image[~region], photo[~region]) and not np.array_equal(image[region], photo[region])
    assert np.array_equal(image, _read(outs[1], row["files"]["image"]))
    with open(os.path.join(outs[0], "paint_settings.json")) as f:
        assert json.load(f)["sampler"] == sampler


def test_paint_refuses_models_it_cannot_use(tiny, model, tmp_path):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    loaded = type("Loaded", (), {})()  # a stand-in for sample.load_model's result
    loaded.cfg, loaded.path = load_config(cfg, ["diffusion.t_max=20"]), "run"
    with pytest.raises(ConfigError, match="trained on t < 20"):
        painting.painter_from_model(loaded, torch.device("cpu"))
    loaded.cfg = load_config(cfg, ["model.attention_downsample=[2]"])
    with pytest.raises(ConfigError, match="without attention"):
        painting.painter_from_model(loaded, torch.device("cpu"))
    assert main(["paint", "--good", str(tiny / "good"), "--sample_dir", str(tmp_path / "x")]) == 2  # no model


# ---------------------------------------------------------------------------------------
# Evaluation: the copy-paste baseline and the leak check


def test_copy_paste_baseline_pairs(tiny, tmp_path):
    cfg = load_config(_config(str(tmp_path), str(tiny / "data")))
    pairs = copy_paste_pairs(cfg, str(tiny / "good"), 5, 16)
    assert pairs.images.shape == (5, 3, 16, 16) and pairs.masks.shape == (5, 16, 16)
    assert all(bool(m.any()) for m in pairs.masks)
    again = copy_paste_pairs(cfg, str(tiny / "good"), 5, 16)
    assert torch.equal(pairs.images, again.images)  # seeded
    # the same pairs `paint --copy-paste` writes with the same seed, resized alike
    out = str(tmp_path / "cp")
    assert main(["paint", "--copy-paste", "--config", _config(str(tmp_path), str(tiny / "data")), "--good",
                 str(tiny / "good"), "--sample_dir", out, "--num_samples", "5", "--no-progress"]) == 0
    written = [resize_pair(_read(out, f"images/paint_{i:05d}.png"), _read(out, f"masks/paint_{i:05d}.png"), 16,
                           "area") for i in range(5)]
    assert np.array_equal(pairs.masks.numpy(), np.stack([m for _, m in written]))
    assert np.array_equal(pairs.images.permute(0, 2, 3, 1).numpy(), np.stack([im for im, _ in written]))


@pytest.mark.parametrize("flags, message", [(["--steps", "0"], "--steps must be >= 1"),
                                            (["--margin", "-1"], "--margin >= 0"),
                                            (["--num_samples", "0"], "--num_samples must be >= 1"),
                                            (["--scale", "2,1"], "--scale must be two factors"),
                                            (["--sampler", "dpmpp_2m", "--eta", "0.5"],
                                             r"--eta 0.5 applies to --sampler ddim only \(dpmpp_2m"),
                                            (["--eta", "-1"], "--eta must be a finite number >= 0")])
def test_paint_bad_settings_are_one_line_errors(tiny, tmp_path, capsys, flags, message):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    assert main(["paint", "--copy-paste", "--config", cfg, "--good", str(tiny / "good"), "--sample_dir",
                 str(tmp_path / "o"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0])


def test_evaluate_refuses_held_out_pairs_the_generator_used(tiny, tmp_path):
    cfg = load_config(_config(str(tmp_path), str(tiny / "data")))
    _, held, _ = load_real(cfg, "cfg.yaml", 16)
    folder = tmp_path / "syn"
    os.makedirs(folder)
    (folder / "manifest.jsonl").write_text(json.dumps({"name": "a", "source": held.names[0]}) + "\n{cut")
    with pytest.raises(ConfigError, match="1 held-out pair.*data.selection_file=RUN/selected_files.json"):
        check_no_leak(held, [str(folder)], "cfg.yaml")
    (folder / "manifest.jsonl").write_text(json.dumps({"name": "a", "source": "images/elsewhere.png"}) + "\n")
    check_no_leak(held, [str(folder)], "cfg.yaml")  # no overlap: fine


def test_evaluate_with_copy_paste_reuses_finished_runs(tiny, tmp_path, capsys):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    args = ["evaluate", "--real", cfg, "--copy-paste", str(tiny / "good"), "--out", str(tmp_path / "r"),
            "--ratios", "1", "--seeds", "1", "--steps", "2", "--image_size", "16", "--no-progress"]
    assert main(args) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [(r["label"], r["ratio"]) for r in res["runs"]] == [("real only", 0.0), ("copy-paste", 1.0)]
    assert "held out per class: scratch" in capsys.readouterr().out
    cached = sorted(os.listdir(tmp_path / "r" / "segmenters"))
    assert len(cached) == 2
    stamp = {f: os.path.getmtime(tmp_path / "r" / "segmenters" / f) for f in cached}
    assert main(args) == 0  # the second time every run comes from the cache
    assert {f: os.path.getmtime(tmp_path / "r" / "segmenters" / f) for f in cached} == stamp
    assert json.loads((tmp_path / "r" / "results.json").read_text())["runs"][1]["per_seed"] == res["runs"][1]["per_seed"]


def test_source_placement_keeps_the_defect_where_it_was():
    rng = np.random.default_rng(0)
    mask = np.zeros((40, 60), np.uint8)
    mask[:6, 20:30] = 1  # a break on the top edge of its photo
    src = painting.Source("s", np.zeros((40, 60, 3), np.uint8), mask)
    for _ in range(20):
        p = painting.place(src, (80, 120), rng, (1.0, 1.0), at="source")
        assert p.mask.shape == (6, 10)  # no quarter turns
        assert p.top in (0, 80 - 6)  # still on an edge: the top one, or the bottom one after a flip
        # left at 20/60 of the width, or at (60 - 30)/60 after a mirror, give or take 5 % of 120
        assert abs(p.left - 40) <= 6 or abs(p.left - 60) <= 6
    with pytest.raises(ConfigError, match="^place must be one of random, source") as info:
        painting.paint(painting.Painter(None, None, 0, 1, 1), [src], ["a"],
                    painting.PaintSettings("/nonexistent", 1, "/nonexistent", place="edge"))
    assert info.value.render(paint_cli.FLAGS).startswith("--place must be one of random, source")


# ---------------------------------------------------------------------------------------
# Painting into the training split's own photos (--backgrounds training)


def test_paint_into_training_photos_keeps_their_defects(tiny, model, tmp_path):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    sources = {s.name: s for s in painting.training_sources(load_config(cfg))}
    for flags in (["--copy-paste", "--config", cfg], ["--model", str(model), "--steps", "2", "--margin", "2"]):
        out = str(tmp_path / flags[0].strip("-"))
        assert main(["paint", *flags, "--backgrounds", "training", "--sample_dir", out, "--num_samples", "6",
                     "--no-progress"]) == 0
        for r in (json.loads(line) for line in open(os.path.join(out, "manifest.jsonl"))):
            image, mask = _read(out, r["files"]["image"]), _read(out, r["files"]["mask"])
            bg = sources[r["background"]]
            assert r["background"] != r["source"]  # never back into its own photo
            assert image.shape == bg.image.shape and mask.shape == bg.mask.shape
            own = bg.mask > 0
            assert np.array_equal(mask[own], bg.mask[own]) and np.array_equal(image[own], bg.image[own])
            new = (mask > 0) & ~own
            assert new.any() and not r["overlap"]  # a second defect, clear of the first
            assert not (painting.dilate(own, 2) & new).any()
            untouched = ~painting.dilate(new, 2)  # the default blend
            assert np.array_equal(image[untouched], bg.image[untouched])


def test_paint_needs_good_photos_or_training_backgrounds(tiny, tmp_path, capsys):
    cfg = _config(str(tmp_path), str(tiny / "data"))
    for extra in ([], ["--good", str(tiny / "good"), "--backgrounds", "training"]):
        assert main(["paint", "--copy-paste", "--config", cfg, "--sample_dir", str(tmp_path / "o"),
                     "--no-progress", *extra]) == 2
        assert "--good DIR (defect-free photos) or --backgrounds training" in capsys.readouterr().err


def test_leak_check_reads_the_background_too(tiny, tmp_path):
    cfg = load_config(_config(str(tmp_path), str(tiny / "data")))
    _, held, _ = load_real(cfg, "cfg.yaml", 16)
    folder = tmp_path / "syn"
    os.makedirs(folder)
    row = {"name": "a", "source": "images/elsewhere.png", "background": held.names[0]}
    (folder / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ConfigError, match="1 held-out pair"):
        check_no_leak(held, [str(folder)], "cfg.yaml")


def test_clean_mask_model_paints_and_sample_asks_for_masks(tiny, tmp_path, capsys):
    cfg = _config(str(tmp_path), str(tiny / "data"), native_scale=1.0)
    text = open(cfg).read().replace("predict: x0}", "predict: x0, clean_mask: true}")
    open(cfg, "w").write(text)
    run = str(tmp_path / "run")
    assert main(["train", "--config", cfg, "--work_dir", run, "--no-progress"]) == 0
    out = str(tmp_path / "painted")
    assert main(["paint", "--model", run, "--good", str(tiny / "good"), "--sample_dir", out,
                 "--num_samples", "2", "--steps", "2", "--margin", "2", "--no-progress"]) == 0
    assert len(open(os.path.join(out, "manifest.jsonl")).readlines()) == 2
    capsys.readouterr()
    assert main(["sample", "--small_recep", run, "--step_inference", "50", "--sample_dir", str(tmp_path / "s"),
                 "--num_samples", "1", "--steps", "2", "--no-progress"]) == 2
    assert "cannot draw masks: pass --mask," in capsys.readouterr().err


def test_same_class_backgrounds_hold_a_defect_of_the_pasted_class():
    def src(name, cls):
        mask = np.zeros((8, 8), np.uint8)
        mask[2:4, 2:4] = cls
        return painting.Source(name, np.zeros((8, 8, 3), np.uint8), mask)

    photos = [src("a1", 1), src("a2", 1), src("b1", 2), src("c1", 3)]
    assert [p.name for p in painting.background_choices(photos[0], photos, same_class=True)] == ["a2"]
    assert [p.name for p in painting.background_choices(photos[0], photos, same_class=False)] == ["a2", "b1", "c1"]
    # no other photo of class 3: every other photo rather than none
    assert [p.name for p in painting.background_choices(photos[3], photos, same_class=True)] == ["a1", "a2", "b1"]


def test_preview_crop_follows_the_new_defect_not_the_photos_own():
    photo = np.full((300, 300, 3), 100, np.uint8)
    mask = np.zeros((300, 300), np.uint8)
    mask[10:20, 10:20] = 1  # the training photo's own defect, kept in the mask
    mask[250:260, 250:260] = 2  # the placed one ...
    rgb = photo.copy()
    rgb[250:260, 250:260] = 30  # ... is where the result differs from the photo
    result, crop_mask, given = painting._preview_cell(photo, rgb, mask, size=96)
    assert result.shape == (96, 96, 3) and (crop_mask == 2).sum() == 100 and (crop_mask == 1).sum() == 0
    # nothing changed (copy-paste of an identical patch): the mask still places the crop
    _, crop_mask, _ = painting._preview_cell(photo, photo, mask, size=96)
    assert crop_mask.any()
