"""The Python API: DefectGenerator.generate returns pairs in memory, the same pairs the CLI writes."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_sample_modes import CLASSES, SIZE, _model, _square

from defect_gen import DefectGenerator, DefectGenError
from defect_gen.models import loading
from defect_gen.pipeline import sample_to_folder


def _gen(follow: bool = False, **kw) -> DefectGenerator:
    return DefectGenerator(_model(follow), None, 0, **kw)


def test_generate_returns_pairs_in_memory_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = _gen().generate(4, seed=3, steps=4, batch_size=3)
    assert out.images.shape == (4, SIZE, SIZE, 3) and out.images.dtype == np.uint8
    assert out.masks.shape == (4, SIZE, SIZE) and out.masks.max() <= len(CLASSES)
    assert [m["seed"] for m in out.metadata] == [3, 4, 5, 6] and out.metadata[0]["name"] == "sample_000003"
    assert out.classes == CLASSES and out.weights == {"large": {"path": "stand-in", "step": None, "sha256": None}}
    for mask, meta in zip(out.masks, out.metadata):
        assert meta["classes"] == [CLASSES[c - 1] for c in np.unique(mask) if c]
    assert list(tmp_path.iterdir()) == []


def test_a_pair_is_its_seed_alone_and_the_cli_job_writes_the_same_pairs(tmp_path):
    out = _gen().generate(4, seed=2, steps=4, batch_size=3, keep_empty=True)
    alone = _gen().generate(1, seed=5, steps=4, keep_empty=True)
    assert np.array_equal(alone.images[0], out.images[3]) and np.array_equal(alone.masks[0], out.masks[3])
    s = sample_to_folder.SampleSettings(sample_dir=str(tmp_path / "s"), step_inference=0, steps=4, num_samples=4, seed=2,
                              batch_size=2, keep_empty=True)
    sample_to_folder.generate(_model(), None, s, torch.device("cpu"), progress=False)
    for image, mask, meta in zip(out.images, out.masks, out.metadata):
        name = meta["name"]
        assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "images" / f"{name}.png")), image)
        assert np.array_equal(np.asarray(Image.open(tmp_path / "s" / "masks" / f"{name}.png")), mask)


def test_classes_masks_and_good_images_in_memory():
    out = _gen().generate(3, classes=["stain"], steps=3, max_tries=40)
    assert all(2 in np.unique(m) for m in out.masks) and out.tries >= 3
    given = [_square(3), _square(1, top=8)]
    held = _gen(follow=True).generate(masks=given, steps=3, sampler="dpmpp_2m")
    assert np.array_equal(held.masks, np.stack(given)) and held.metadata[1]["mask_source"] == "masks[1]"
    photo = np.full((2 * SIZE, 2 * SIZE, 3), 40, np.uint8)  # resized to the model's size
    painted = _gen(follow=True).generate(masks=given[:1], good=[photo], steps=3)
    outside = given[0] == 0
    assert np.abs(painted.images[0][outside].astype(int) - 40).max() <= 1
    assert painted.metadata[0]["good_source"] == "good[0]" and painted.good_images[0].shape == (SIZE, SIZE, 3)


def test_pil_output_keeps_class_indices_under_a_palette():
    out = _gen().generate(2, steps=3, output_type="pil", keep_empty=True)
    assert out.images[0].mode == "RGB" and out.masks[0].mode == "P"
    arrays = _gen().generate(2, steps=3, keep_empty=True)
    assert np.array_equal(np.asarray(out.masks[1]), arrays.masks[1])


@pytest.mark.parametrize("kwargs,needle", [
    ({"sampler": "dpm"}, "sampler must be one of ddpm, ddim, dpmpp_2m, got 'dpm'"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"n": 0}, "n must be >= 1, got 0"),
    ({"eta": 0.5, "sampler": "dpmpp_2m"}, "eta 0.5 applies to sampler ddim only"),
    ({"classes": ["crack"]}, "classes 'crack': not a class of the model"),
    ({"output_type": "tensor"}, "output_type must be np or pil, got 'tensor'"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"masks": [np.full((SIZE, SIZE), 7)]}, "masks[0]: holds value 7; expected class indices 0..3"),
    ({"good": [np.zeros((SIZE, SIZE), np.uint8)]}, "good[0]: expected an (H, W, 3) uint8 RGB array"),
    ({"place": "random"}, "place moves given or painted-in masks"),
])
def test_bad_arguments_raise_one_line_errors(kwargs, needle):
    with pytest.raises(DefectGenError) as info:
        _gen().generate(**{"steps": 2, **kwargs})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_models_and_switch_raise_at_construction():
    with pytest.raises(DefectGenError, match="step_inference must be in"):
        DefectGenerator(_model(), None, 5000)
    with pytest.raises(DefectGenError, match="needs the small-RF model"):
        DefectGenerator(_model(), None, 500)
    with pytest.raises(DefectGenError, match="no model given"):
        DefectGenerator(None, None, 0)


def test_from_pretrained_records_which_weights_made_the_pairs(tmp_path):
    from conftest import train_tiny_models

    train_tiny_models(tmp_path, num_timesteps=20)
    gen = DefectGenerator.from_pretrained(tmp_path / "large", tmp_path / "small", step_inference=10)
    out = gen.generate(2, steps=4, sampler="dpmpp_2m", keep_empty=True)
    large = gen.weights["large"]
    assert large["step"] == 1 and large["path"].endswith(".pt") and large["path"].startswith("/")
    assert large["sha256"] == hashlib.sha256(open(large["path"], "rb").read()).hexdigest()
    assert out.weights == gen.weights and out.images.shape == (2, 16, 16, 3)
    s = sample_to_folder.SampleSettings(sample_dir=str(tmp_path / "s"), step_inference=10, steps=4, num_samples=2,
                              keep_empty=True, sampler="dpmpp_2m")
    sample_to_folder.generate(gen.large, gen.small, s, torch.device("cpu"), progress=False)
    settings = json.loads((tmp_path / "s" / "sample_settings.json").read_text())
    rows = [json.loads(line) for line in (tmp_path / "s" / "manifest.jsonl").read_text().splitlines()]
    assert settings["weights"] == gen.weights and all(r["weights"] == gen.weights for r in rows)
    s.resume = True  # the same weights: nothing left to do
    assert sample_to_folder.generate(gen.large, gen.small, s, torch.device("cpu"), progress=False).wanted == 0
    settings["weights"]["large"]["sha256"] = "0" * 64  # pairs made by other weights must not be mixed in
    (tmp_path / "s" / "sample_settings.json").write_text(json.dumps(settings))
    with pytest.raises(DefectGenError, match="differ from the run .*weights"):
        sample_to_folder.generate(gen.large, gen.small, s, torch.device("cpu"), progress=False)


def _trained_on(t_min: int = 0, t_max: int | None = None) -> loading.LoadedModel:
    model = _model()
    model.cfg.diffusion.t_min, model.cfg.diffusion.t_max = t_min, t_max
    return model


@pytest.mark.parametrize("make,needle", [
    (lambda: DefectGenerator(_model(), None, 5000), "step_inference must be in [0, 1000], got 5000"),
    (lambda: DefectGenerator(_model(), None, 500), "step_inference 500 needs the small-RF model (small)"),
    (lambda: DefectGenerator(None, None, 0), "pass a large-RF (large) and/or a small-RF (small) model"),
    (lambda: DefectGenerator(_model(), None, 0, precision="fp16"), "precision must be auto, fp32 or bf16"),
    (lambda: DefectGenerator(_trained_on(t_min=600), _model(), 200),
     "step_inference 200: the large-RF model stand-in was trained on t in [600, 1000)"),
    (lambda: DefectGenerator(_trained_on(t_max=400), _trained_on(t_min=100), 200), "large and small look swapped"),
])
def test_construction_errors_name_the_api_parameters_not_cli_flags(make, needle):
    with pytest.raises(DefectGenError) as info:
        make()
    message = str(info.value)
    assert needle in message and "--" not in message, message


@pytest.mark.parametrize("kwargs,needle", [
    ({"guidance": 2.0, "classes": ["stain"]}, "guidance needs a class-conditional model"),
    ({"masks": "MISSING"}, "masks MISSING: folder not found"),
    ({"good": "MISSING"}, "good MISSING: folder not found"),
    ({"masks": "EMPTY", "min_defect_pixels": 2}, "every mask is empty (after min_defect_pixels 2); pass keep_empty"),
    ({"steps": 0}, "steps must be >= 1, got 0"),
    ({"sampler": "euler"}, "sampler must be one of"),
])
def test_generate_errors_name_the_api_parameters_not_cli_flags(kwargs, needle, tmp_path):
    (tmp_path / "empty").mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(tmp_path / "empty" / "m0.png")
    folders = {"MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty")}
    kwargs = {k: folders.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(DefectGenError) as info:
        _gen().generate(2, **kwargs)
    message = str(info.value)
    assert needle.replace("MISSING", folders["MISSING"]) in message and "--" not in message, message


def test_the_library_names_parameters_and_the_cli_renames_them_to_flags(tmp_path):
    from defect_gen.cli import sample as sample_cli

    s = sample_to_folder.SampleSettings(sample_dir=str(tmp_path / "s"), step_inference=500, steps=2)
    with pytest.raises(DefectGenError, match=r"^step_inference 500 needs the small-RF model \(small\)") as info:
        sample_to_folder.generate(_model(), None, s, torch.device("cpu"), progress=False)
    assert info.value.render(sample_cli.FLAGS).startswith("--step_inference 500 needs the small-RF model "
                                                          "(--small_recep)")
    s = sample_to_folder.SampleSettings(sample_dir=str(tmp_path / "s"), step_inference=0, steps=2,
                              mask_dir=str(tmp_path / "missing"))
    with pytest.raises(DefectGenError, match=f"^masks {tmp_path / 'missing'}: folder not found") as info:
        sample_to_folder.generate(_model(), None, s, torch.device("cpu"), progress=False)
    assert info.value.render(sample_cli.FLAGS) == f"--mask {tmp_path / 'missing'}: folder not found"


@pytest.mark.parametrize("api_kwargs, cli_flags, needle", [
    ({"eta": 0.5}, ["--eta", "0.5"], "{eta} 0.5 applies to {sampler} ddim only"),  # eta without ddim (default ddpm)
    ({"sampler": "dpmpp_2m", "eta": 0.5}, ["--sampler", "dpmpp_2m", "--eta", "0.5"], "{eta} 0.5 applies to {sampler}"),
    ({"guidance": 2.0, "classes": ["stain"]}, ["--guidance", "2", "--classes", "stain"],
     "{guidance} needs a class-conditional model"),  # guidance on an unconditional model
    ({"steps": 0}, ["--steps", "0"], "{steps} must be >= 1, got 0"),  # steps out of range
    ({"classes": ["dent"]}, ["--classes", "dent"], "{classes} 'dent': not a class of the model"),
])
def test_the_api_and_the_cli_give_the_same_error_for_the_same_mistake(api_kwargs, cli_flags, needle, tmp_path,
                                                                      capsys):
    """One check, one message: the API names the parameter, the CLI the flag, nothing else differs."""
    from conftest import train_tiny_models

    from defect_gen.cli import main
    from defect_gen.cli import sample as sample_cli

    train_tiny_models(tmp_path, num_timesteps=20)
    gen = DefectGenerator.from_pretrained(tmp_path / "large", tmp_path / "small", step_inference=10)
    with pytest.raises(DefectGenError) as info:
        gen.generate(2, **api_kwargs)
    api = str(info.value)
    code = main(["sample", "--large_recep", str(tmp_path / "large"), "--small_recep", str(tmp_path / "small"),
                 "--step_inference", "10", "--sample_dir", str(tmp_path / "s"), "--num_samples", "2", "--no-progress",
                 *cli_flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    as_flag = {k: v for k, v in sample_cli.FLAGS.items()}
    assert api.startswith(needle.format(**{k: k for k in as_flag}))
    assert err[0] == f"defect-gen sample: error: {info.value.render(sample_cli.FLAGS)}"
    assert err[0].startswith(f"defect-gen sample: error: {needle.format(**as_flag)}")
    assert not (tmp_path / "s").exists()  # refused before anything was written
