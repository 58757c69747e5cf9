"""Generation modes with stand-in networks: known regions, --classes, --mask, --good, filters, layouts."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from defect_gen import distributed
from defect_gen.cli import main
from defect_gen.cli import sample as sample_cli
from defect_gen.config import Config, DataConfig, ModelConfig, to_dict
from defect_gen.core.diffusion import GaussianDiffusion, cosine_betas, space_timesteps
from defect_gen.core.masks import one_hot
from defect_gen.core.postprocess import accept, drop_small_regions
from defect_gen.core.samplers import KnownRegion, known_region_sampler, repaint_path, sample_ddim
from defect_gen.core.unet import build_unet
from defect_gen.errors import ConfigError, DataError, DefectGenError
from defect_gen.models import loading
from defect_gen.pipeline import generator, inputs, pair_folder, sample_to_folder
from defect_gen.pipeline.inputs import place_randomly

CLASSES = ["scratch", "stain", "hole"]
SIZE = 16


class StandIn(nn.Module):
    """A network stand-in that predicts x0: RGB bright (0.8) where its mask has a defect, dark
    (-0.8) elsewhere. `follow`: its mask is the one x_t currently holds (argmax of the mask
    channels). Otherwise a square of one class 0..K (0: empty), the strongest mask channel of
    x_t there: random under pure noise, so picked by the seed, then kept along the chain."""

    def __init__(self, follow: bool = False):
        super().__init__()
        self.follow = follow

    def forward(self, x, t):
        if self.follow:
            index = x[:, 3:].argmax(1)
        else:
            pick = x[:, 3:, 4:12, 4:12].mean(dim=(2, 3)).argmax(1)  # random at t = T, then kept
            index = torch.zeros(x.shape[0], SIZE, SIZE, dtype=torch.long)
            index[:, 4:12, 4:12] = pick[:, None, None]
        rgb = torch.where(index > 0, 0.8, -0.8).float()[:, None].expand(-1, 3, -1, -1)
        return torch.cat([rgb, one_hot(index, len(CLASSES) + 1)], dim=1)


def _model(follow: bool = False) -> loading.LoadedModel:
    cfg = Config(model=ModelConfig(image_size=SIZE), data=DataConfig(classes=list(CLASSES)))
    return loading.LoadedModel(StandIn(follow), cfg, "stand-in")


def _run(tmp_path, follow=False, name="out", **kw) -> sample_to_folder.Summary:
    s = sample_to_folder.SampleSettings(sample_dir=str(tmp_path / name), step_inference=0, steps=kw.pop("steps", 4),
                              **{"num_samples": 4, "batch_size": 3, **kw})
    try:  # errors and notes as `defect-gen sample` words them (the library names parameters)
        return sample_to_folder.generate(_model(follow), None, s, torch.device("cpu"), progress=False,
                                         warn=lambda note: print(note.render(sample_cli.FLAGS), file=sys.stderr))
    except DefectGenError as exc:
        raise type(exc)(exc.render(sample_cli.FLAGS)) from None


def _rows(tmp_path, name="out") -> list[dict]:
    return [json.loads(line) for line in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]


def _png(tmp_path, rel, name="out") -> np.ndarray:
    return np.asarray(Image.open(tmp_path / name / rel)).astype(int)


def _write_masks(folder, masks) -> None:
    folder.mkdir(parents=True)
    for i, m in enumerate(masks):
        Image.fromarray(m.astype(np.uint8)).save(folder / f"m{i}.png")


def _square(cls, top=2, left=3, size=5) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    m[top:top + size, left:left + size] = cls
    return m


# ---------------------------------------------------------------------------------------
# samplers: known regions and RePaint


def test_known_region_is_exact_at_the_end_and_repaint_path_is_followed():
    diffusion = GaussianDiffusion(cosine_betas(1000))
    seen = []

    def denoise(x, t):
        seen.append(t)
        return torch.zeros_like(x)

    values = torch.rand(2, 5, 4, 4) * 2 - 1
    keep = torch.zeros(2, 5, 4, 4)
    keep[:, 3:] = 1  # the "mask" channels are known
    keep[0, :3, :2] = 1  # and some RGB of row 0
    ts = space_timesteps(1000, 12)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    out = known_region_sampler("ddim", KnownRegion(values, keep), jump_length=3, resample=2)(
        denoise, torch.randn(2, 5, 4, 4), ts, diffusion, generator=gens)
    torch.testing.assert_close(out[keep.bool()], values[keep.bool()])
    assert torch.all(out[~keep.bool()] == 0)  # the rest is what the denoiser predicted
    path = repaint_path(len(ts), 3, 2)
    assert seen == [ts[len(ts) - 1 - k] for k, k_next in zip(path, path[1:]) if k_next < k]
    assert len(seen) > len(ts)  # resampling denoised stretches twice


def test_resample_1_is_plain_replacement_over_the_same_timesteps():
    diffusion = GaussianDiffusion(cosine_betas(1000))
    ts = space_timesteps(1000, 10)
    nothing_known = KnownRegion(torch.zeros(1, 5, 4, 4), torch.zeros(1, 5, 4, 4))
    x = torch.randn(1, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = lambda x, t: x.clamp(-1, 1) * 0.9  # noqa: E731
    a = known_region_sampler("ddim", nothing_known)(denoise, x, ts, diffusion, eta=0.0,
                                                     generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, sample_ddim(denoise, x, ts, diffusion, eta=0.0))
    assert repaint_path(4, 10, 5) == [3, 2, 1, 0, -1]


# ---------------------------------------------------------------------------------------
# conditioning and post-processing


def test_random_placement_keeps_the_shape_inside_the_image():
    index = torch.zeros(SIZE, SIZE, dtype=torch.long)
    index[0:3, 0:7] = 2
    index[5, 5] = 1
    a = place_randomly(index, torch.Generator().manual_seed(3))
    b = place_randomly(index, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert [(a == c).sum().item() for c in (1, 2)] == [1, 21]
    moved = [not torch.equal(place_randomly(index, torch.Generator().manual_seed(s)), index) for s in range(5)]
    assert any(moved)


def test_drop_small_regions_and_accept():
    index = np.zeros((8, 8), np.uint8)
    index[0, 0] = 1  # a 1-pixel speck
    index[3:6, 3:6] = 2
    index[7, 6:8] = 3  # 2 pixels
    out = drop_small_regions(index, 3)
    assert out[0, 0] == 0 and out[7, 6] == 0 and (out == 2).sum() == 9
    assert accept(out, [2], keep_empty=False) and not accept(out, [3], keep_empty=False)
    assert not accept(np.zeros((4, 4)), [], keep_empty=False) and accept(np.zeros((4, 4)), [], keep_empty=True)


# ---------------------------------------------------------------------------------------
# generate(): the modes end to end


def test_classes_rejection_records_seeds_and_reproduces_alone(tmp_path):
    summary = _run(tmp_path, num_samples=5, seed=100, classes=["3"], max_tries=60)  # 3 = hole
    rows = _rows(tmp_path)
    assert [r["name"] for r in rows] == [f"sample_{100 + i:06d}" for i in range(5)]
    assert summary.pairs == 5 and summary.failed == 0 and summary.tries > 5  # some were rejected
    assert summary.tries == sum(r["tries"] for r in rows)
    for i, r in enumerate(rows):
        assert r["classes"] == ["hole"]
        # candidate a of pair i has seed --seed + i + a * num_samples
        assert (r["seed"] - 100 - i) % 5 == 0 and r["tries"] == (r["seed"] - 100 - i) // 5 + 1
    retried = max(rows, key=lambda r: r["tries"])
    assert retried["tries"] > 1
    _run(tmp_path, name="alone", num_samples=1, seed=retried["seed"])
    alone = _rows(tmp_path, "alone")[0]
    assert alone["classes"] == ["hole"] and alone["tries"] == 1
    assert np.array_equal(_png(tmp_path, alone["files"]["image"], "alone"), _png(tmp_path, retried["files"]["image"]))


def test_impossible_classes_give_up_after_max_tries(tmp_path):
    summary = _run(tmp_path, num_samples=2, classes=["scratch", "hole"], max_tries=3)
    assert summary.pairs == 0 and summary.failed == 2 and summary.tries == 6
    assert _rows(tmp_path) == []


def test_empty_masks_are_skipped_unless_keep_empty(tmp_path):
    _run(tmp_path, num_samples=6, max_tries=50)
    assert all(r["classes"] for r in _rows(tmp_path))
    summary = _run(tmp_path, name="keep", num_samples=6, keep_empty=True)
    assert summary.tries == 6 and any(not r["classes"] for r in _rows(tmp_path, "keep"))


def test_mask_mode_keeps_the_given_masks_and_drops_specks(tmp_path):
    given = [_square(1), _square(3, top=8, left=8, size=6)]
    given[0][15, 15] = 2  # a speck that --min-defect-pixels removes before sampling
    _write_masks(tmp_path / "given", given + [np.zeros((SIZE, SIZE))])  # the empty one is skipped
    summary = _run(tmp_path, follow=True, mask_dir=str(tmp_path / "given"), num_samples=None,
                   min_defect_pixels=2, resample=2, jump_length=2)
    rows = _rows(tmp_path)
    assert summary.pairs == 2 and [os.path.basename(r["mask_source"]) for r in rows] == ["m0.png", "m1.png"]
    given[0][15, 15] = 0
    for r, m in zip(rows, given):
        assert np.array_equal(_png(tmp_path, r["files"]["mask"]), m)
        image = _png(tmp_path, r["files"]["image"]).mean(axis=2)
        assert image[m > 0].min() > 200 and image[m == 0].max() < 50  # the image follows the given mask


def test_good_mode_paints_into_the_given_image_and_keeps_its_pixels(tmp_path):
    goods = tmp_path / "good"
    goods.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(goods / f"g{i}.png")
    _write_masks(tmp_path / "given", [_square(2), _square(1, top=9)])
    _run(tmp_path, follow=True, good_dir=str(goods), mask_dir=str(tmp_path / "given"), resample=2, jump_length=2)
    for i, r in enumerate(_rows(tmp_path)):  # 4 pairs cycle through 2 images and 2 masks
        good = np.asarray(Image.open(goods / f"g{i % 2}.png")).astype(int)
        mask = _png(tmp_path, r["files"]["mask"])
        image = _png(tmp_path, r["files"]["image"])
        assert np.array_equal(mask, [_square(2), _square(1, top=9)][i % 2])
        assert np.abs(image - good)[mask == 0].max() <= 1  # known pixels kept
        assert image[mask > 0].min() > 200  # the defect painted in
        assert r["good_source"].endswith(f"g{i % 2}.png")
    assert Image.open(tmp_path / "out" / "preview.png").size[0] > 4 * 128  # given | image | mask | overlay


def test_good_mode_reads_a_nested_folder_as_paint_does(tmp_path):
    """`sample --good DIR` lists DIR as `paint --good DIR` does: recursively, leaving out the
    empty mask PNG beside a photo (a dataset's good folder given as it is)."""
    goods = tmp_path / "good"
    (goods / "a").mkdir(parents=True)
    (goods / "b").mkdir()
    Image.fromarray(np.full((SIZE, SIZE, 3), 40, np.uint8)).save(goods / "a" / "g0.png")
    Image.fromarray(np.full((SIZE, SIZE, 3), 160, np.uint8)).save(goods / "b" / "g1.jpg", quality=100)
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(goods / "b" / "g1.png")  # g1.jpg's empty mask
    listed = inputs.list_good_images(str(goods))
    assert [os.path.relpath(p, goods) for p in listed] == [os.path.join("a", "g0.png"), os.path.join("b", "g1.jpg")]
    _write_masks(tmp_path / "given", [_square(2)])
    _run(tmp_path, follow=True, good_dir=str(goods), mask_dir=str(tmp_path / "given"))
    sources = [os.path.relpath(r["good_source"], goods) for r in _rows(tmp_path)]
    assert sources == [os.path.join(*p) for p in (("a", "g0.png"), ("b", "g1.jpg")) * 2]
    image = _png(tmp_path, _rows(tmp_path)[1]["files"]["image"])
    assert abs(image[_square(2) == 0].mean() - 160) < 3  # painted into g1.jpg, not into its mask


def test_good_mode_alone_places_the_models_masks_at_random(tmp_path):
    goods = tmp_path / "good"
    goods.mkdir()
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(goods / "plain.png")  # resized to 16 px
    summary = _run(tmp_path, good_dir=str(goods), num_samples=4, classes=["hole"], max_tries=60)
    rows = _rows(tmp_path)
    assert summary.pairs == 4 and all(r["placement"] == "random" and r["classes"] == ["hole"] for r in rows)
    corners = set()
    for r in rows:
        mask = _png(tmp_path, r["files"]["mask"])
        image = _png(tmp_path, r["files"]["image"])
        assert (mask == 3).sum() == 64 and np.abs(image - 90)[mask == 0].max() <= 1
        ys, xs = np.nonzero(mask)
        corners.add((ys.min(), xs.min()))
    assert len(corners) > 1  # the stand-in always paints at (4, 4): the squares were moved


def test_layouts_write_training_sets_that_read_back(tmp_path):
    from defect_gen.data.layouts import find_records

    for layout in ("mvtec", "defect_spectrum"):
        _run(tmp_path, name=layout, layout=layout, num_samples=4, max_tries=50)
        rows = _rows(tmp_path, layout)
        for r in rows:
            kind = r["classes"][0]
            expect = {"mvtec": f"test/{kind}/{r['name']}.png", "defect_spectrum": f"image/{kind}/{r['name']}.png"}
            assert r["files"]["image"] == expect[layout]
            mask = _png(tmp_path, r["files"]["mask"], layout)
            assert set(np.unique(mask)) <= ({0, 255} if layout == "mvtec" else {0, 1, 2, 3})
        cfg = DataConfig(root=str(tmp_path / layout), layout=layout, classes=list(CLASSES))
        assert len(find_records(cfg).records) == 4


def test_overwrite_removes_only_the_previous_pairs(tmp_path):
    _run(tmp_path, num_samples=2, max_tries=50)
    with pytest.raises(DefectGenError, match="already holds generated pairs"):
        _run(tmp_path, num_samples=2)
    (tmp_path / "out" / "images" / "mine.png").write_bytes(b"not ours")
    _run(tmp_path, num_samples=1, seed=50, overwrite=True, layout="mvtec", max_tries=50)
    assert (tmp_path / "out" / "images" / "mine.png").exists()
    assert sorted(os.listdir(tmp_path / "out" / "images")) == ["mine.png"]
    assert [r["name"] for r in _rows(tmp_path)] == ["sample_000050"]


def test_ranks_split_the_pairs_without_gap_or_duplicate(tmp_path, monkeypatch):
    for rank in (0, 1):
        monkeypatch.setattr(distributed, "info", lambda rank=rank: distributed.DistInfo(rank, 2))
        _run(tmp_path, num_samples=5, classes=["scratch"], max_tries=80)
    pair_folder.sort_manifest(str(tmp_path / "out"))
    rows = _rows(tmp_path)
    assert [r["name"] for r in rows] == [f"sample_{i:06d}" for i in range(5)]
    assert len({r["seed"] for r in rows}) == 5


def test_mode_flags_that_cannot_work_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="--classes 'dent': not a class of the model; its classes are"):
        _run(tmp_path, classes=["dent"])
    with pytest.raises(ConfigError, match="with --mask the masks are given"):
        _run(tmp_path, classes=["hole"], mask_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="--resample and --jump apply to --mask and --good"):
        _run(tmp_path, resample=3)
    _write_masks(tmp_path / "bad", [np.full((SIZE, SIZE), 7)])
    with pytest.raises(DataError, match=r"holds value 7; expected class indices 0\.\.3"):
        _run(tmp_path, mask_dir=str(tmp_path / "bad"))


def test_place_random_moves_given_masks_reproducibly(tmp_path):
    _write_masks(tmp_path / "given", [_square(2, top=0, left=0, size=4)])
    _run(tmp_path, follow=True, mask_dir=str(tmp_path / "given"), num_samples=3, place="random")
    masks = [_png(tmp_path, r["files"]["mask"]) for r in _rows(tmp_path)]
    assert all((m == 2).sum() == 16 and m.max() == 2 for m in masks)
    assert any(m[0, 0] == 0 for m in masks)  # moved away from the corner
    _run(tmp_path, name="again", follow=True, mask_dir=str(tmp_path / "given"), num_samples=3, place="random")
    assert all(np.array_equal(m, _png(tmp_path, r["files"]["mask"], "again"))
               for m, r in zip(masks, _rows(tmp_path, "again")))


def test_cli_with_a_real_tiny_unet_of_ours_in_mask_mode(tmp_path, capsys):
    model_cfg = ModelConfig(image_size=SIZE, model_channels=32, channel_mult=[1], num_res_blocks=1,
                            attention_downsample=[], middle_block=False)
    cfg = Config(model=model_cfg, data=DataConfig(classes=list(CLASSES)))
    net = build_unet(cfg.model, 3)
    torch.manual_seed(0)
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    path = str(tmp_path / "tiny.pt")
    raw = {k: v * 0 for k, v in net.state_dict().items()}
    torch.save({"format": "defect-gen/1", "config": to_dict(cfg), "model": raw, "ema": {str(cfg.train.ema_rate): net.state_dict()}},
               path)
    model = loading.load_model(path, torch.device("cpu"))
    torch.testing.assert_close(model.model.state_dict()["out.2.weight"], net.state_dict()["out.2.weight"])  # EMA
    _write_masks(tmp_path / "given", [_square(2)])
    args = ["sample", "--small_recep", path, "--step_inference", "1000", "--steps", "3", "--num_samples", "2",
            "--mask", str(tmp_path / "given"), "--sampler", "ddim", "--layout", "defect_spectrum",
            "--precision", "bf16", "--sample_dir", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 pairs in" in out and "pairs/s" in out
    for r in _rows(tmp_path):
        assert np.array_equal(_png(tmp_path, r["files"]["mask"]), _square(2))
        assert r["files"]["image"] == f"image/stain/{r['name']}.png"
    config_file = tmp_path / "other.yaml"
    config_file.write_text("model: {image_size: 16, model_channels: 32, channel_mult: [1, 2], num_res_blocks: 1, "
                           "attention_downsample: [], middle_block: false}\ndata: {classes: [a, b, c]}\n")
    with pytest.raises(ConfigError, match="model.channel_mult is"):
        loading.load_model(path, torch.device("cpu"), config_path=str(config_file))
    assert main([*args[:-3], "--batch_size", "many", "--sample_dir", str(tmp_path / "x"), "--no-progress"]) == 2


# ---------------------------------------------------------------------------------------
# issue 12 (C) item 19: --mask reads what the tool reads and writes


@pytest.mark.parametrize("layout", ["mvtec", "defect_spectrum"])
def test_mask_reads_a_sample_folder_of_any_layout(tmp_path, layout):
    """mvtec: ground_truth/<class>/ 0/255 masks, the class from the folder; defect_spectrum:
    mask/<class>/ class indices (a tree); preview.png and the picture folders are not masks."""
    _run(tmp_path, name="src", layout=layout, num_samples=3, max_tries=50)
    sources = {r["files"]["mask"]: r["classes"][0] for r in _rows(tmp_path, "src")}
    _run(tmp_path, follow=True, mask_dir=str(tmp_path / "src"), num_samples=None)
    rows = _rows(tmp_path)
    assert sorted(os.path.relpath(r["mask_source"], tmp_path / "src") for r in rows) == sorted(sources)
    for r in rows:
        given = _png(tmp_path, os.path.relpath(r["mask_source"], tmp_path / "src"), "src")
        cls = CLASSES.index(sources[os.path.relpath(r["mask_source"], tmp_path / "src")]) + 1
        assert np.array_equal(_png(tmp_path, r["files"]["mask"]), (given > 0) * cls)


def test_mask_binary_masks_need_a_class_folder(tmp_path):
    folder = tmp_path / "gt" / "typo"
    _write_masks(folder, [_square(1) * 255])
    with pytest.raises(DataError, match=r"m0.png: a binary 0/255 mask, but its folder 'typo' is none of the "
                                        r"model's 3 classes \(scratch, stain, hole\)"):
        _run(tmp_path, mask_dir=str(tmp_path / "gt"))
    _write_masks(tmp_path / "gt2" / "combined", [_square(1) * 255])
    with pytest.raises(DataError, match=r"m0.png: a binary 0/255 mask in combined/ \(several classes\) cannot say"):
        _run(tmp_path, mask_dir=str(tmp_path / "gt2"))


def test_min_defect_pixels_with_mask_names_the_masks_it_drops(tmp_path):
    speck = np.zeros((SIZE, SIZE), np.uint8)
    speck[1, 1] = 2
    _write_masks(tmp_path / "given", [_square(1), speck, np.zeros((SIZE, SIZE)), _square(3) + speck])
    logged = []
    masks = inputs.read_masks(str(tmp_path / "given"), SIZE, 3, 2, False, classes=list(CLASSES),
                                    log=lambda note: logged.append(note.render(sample_cli.FLAGS)))  # as `sample --mask`
    assert [os.path.basename(m.path) for m in masks] == ["m0.png", "m3.png"]
    folder = tmp_path / "given"
    assert logged == [f"--mask {folder}: 1 empty masks left out (--keep-empty uses them): m2.png",
                      f"--mask {folder}: --min-defect-pixels 2 dropped small regions from 2 masks at 16x16 px, "
                      f"1 of them entirely; left out (empty after it, --keep-empty keeps them): m1.png; "
                      f"2 masks are used, in name order"]


def test_a_local_large_model_and_a_global_small_one_look_swapped():
    # Issue 12 item 1: models trained on every timestep pass the window check; their shapes still tell.
    local = Config(model=ModelConfig(image_size=SIZE, model_channels=32, channel_mult=[1, 2], attention_downsample=[],
                                     middle_block=False), data=DataConfig(classes=list(CLASSES)))
    glob = Config(model=ModelConfig(image_size=SIZE), data=DataConfig(classes=list(CLASSES)))
    small_net, large_net = loading.LoadedModel(None, local, "small.pt"), loading.LoadedModel(None, glob, "large.pt")
    generator.check_roles(large_net, small_net, [999, 500], [499, 0], 500)
    with pytest.raises(ConfigError, match="look swapped: small.pt has a local receptive field"):
        generator.check_roles(small_net, large_net, [999, 500], [499, 0], 500)
    generator.check_roles(small_net, large_net, [], [999, 0], 1000)  # one model alone serves every step


def test_mask_larger_than_the_model_keeps_a_thin_crack(tmp_path):
    """Issue 12 item 7: --mask masks were resized nearest, so a 1 px crack at 4x vanished."""
    big = np.zeros((4 * SIZE, 4 * SIZE), np.uint8)
    big[:, 9] = 2  # nearest at 64 -> 16 samples columns 2, 6, 10, ...: never column 9
    _write_masks(tmp_path / "given", [big])
    (given,) = inputs.read_masks(str(tmp_path / "given"), SIZE, 3, 0, False, classes=list(CLASSES))
    assert given.index[:, 2].tolist() == [2] * SIZE and int((given.index > 0).sum()) == SIZE


def test_mask_binary_masks_take_the_class_their_folder_maps_to(tmp_path):
    """ground_truth/<class>/ by name, or through the model's data.folder_classes (MVTec's broken_small/)."""
    _write_masks(tmp_path / "ground_truth" / "hole", [_square(1) * 255])
    _write_masks(tmp_path / "ground_truth" / "MT_Stain", [_square(1, top=8) * 255])
    masks = inputs.read_masks(str(tmp_path), SIZE, 3, 0, False, classes=list(CLASSES),
                                    folder_classes={"MT_Stain": "stain"})
    assert [(os.path.relpath(m.path, tmp_path), int(m.index.max())) for m in masks] == [
        ("ground_truth/MT_Stain/m0.png", 2), ("ground_truth/hole/m0.png", 3)]


def test_plan_reports_the_steps_added_for_the_hand_over(tmp_path):
    # Issue 12 item 5: `--steps 10` reported 11 steps without saying why
    plan = generator.make_plan(_model(), _model(), 200, 50, torch.device("cpu"))
    assert plan.description == "52 steps (41 large, 11 small; 200, 199 added to the 50-step grid)"
    assert generator.make_plan(_model(), _model(), 200, 1000, torch.device("cpu")).description == \
        "1000 steps (800 large, 200 small)"


def test_a_resumed_auto_run_samples_in_the_precision_its_first_part_chose(tmp_path, monkeypatch):
    """`--precision auto` times bf16 against fp32 where the CPU has bf16 instructions; a --resume
    must not time again and land on the other one (its pairs would differ from an uninterrupted
    run's), so the choice is recorded and kept."""

    _run(tmp_path, num_samples=2, precision="bf16")
    settings = json.loads((tmp_path / "out" / "sample_settings.json").read_text())
    assert settings["precision_used"] == "bf16"
    settings["num_samples"], settings["precision"] = 4, "auto"
    (tmp_path / "out" / "sample_settings.json").write_text(json.dumps(settings))
    chosen = []
    real = generator.DefectGenerator.__init__

    def spy(self, *args, **kwargs):
        real(self, *args, **kwargs)
        chosen.append(self.precision)

    monkeypatch.setattr(generator.DefectGenerator, "__init__", spy)
    monkeypatch.setattr(generator, "resolve_autocast", lambda *a, **k: (None, "fp32 (timed)"))  # auto would say fp32
    _run(tmp_path, num_samples=4, precision="auto", resume=True)
    assert chosen == ["bf16"]
    _run(tmp_path, num_samples=2, precision="auto", name="fresh")  # a new run times afresh
    assert chosen[-1] == "fp32"
