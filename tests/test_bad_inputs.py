"""The bad-input matrix: every case ends in ONE line on stderr that names the culprit, and a
non-zero exit, with no traceback (docs/reliability.md lists the messages)."""

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from defect_gen.cli import main
from defect_gen.data.demo import make_demo_data


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    data = root / "data"
    make_demo_data(str(data), num_images=4, image_size=16, seed=1)
    cfg = root / "ok.yaml"
    cfg.write_text(
        "model: {image_size: 16, model_channels: 32, channel_mult: [1], num_res_blocks: 1,\n"
        "        attention_downsample: [], middle_block: false}\n"
        "diffusion: {num_timesteps: 50}\n"
        f"data: {{root: {data}, classes: [scratch, stain, hole]}}\n"
        "train: {batch_size: 2, max_steps: 1, sample_every: 0}\n")
    assert main(["train", "--config", str(cfg), "--work_dir", str(root / "run"), "--no-progress"]) == 0
    # Issue 12 (A): models trained on a timestep window, large ([10, 50)) and small ([0, 20)).
    for name, window in (("large_w", "diffusion.t_min=10"), ("small_w", "diffusion.t_max=20")):
        assert main(["train", "--config", str(cfg), "--work_dir", str(root / name), "--no-progress",
                     "--set", window]) == 0
    return root


def _run(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _write(path, text):
    path.write_text(text)
    return str(path)


def _train(env, cfg, *extra):
    return ["train", "--config", cfg, "--work_dir", str(env / "w"), "--no-progress", *extra]


def _sample(env, *extra):
    return ["sample", "--large_recep", str(env / "run"), "--step_inference", "0", "--sample_dir",
            str(env / "s"), "--num_samples", "1", "--steps", "2", "--no-progress", *extra]


def _broken_data(env, name, damage):
    data = env / name
    make_demo_data(str(data), num_images=8, image_size=16, seed=2)
    damage(data)
    return ["--set", f"data.root={data}"]


def _truncate(data):
    p = data / "images" / "demo_0001.png"
    p.write_bytes(p.read_bytes()[:40])


def _resize_mask(data):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(data / "masks" / "demo_0001.png")


def _bad_values(data):
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(data / "masks" / "demo_0001.png")


def _empty(data):
    for folder in ("images", "masks"):
        for p in (data / folder).iterdir():
            p.unlink()


CASES = {
    "missing config file": (lambda e: _train(e, "nope.yaml"), "config file not found: nope.yaml"),
    "unknown key": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "model.chanel_mult=[1]"),
                    "unknown config key 'model.chanel_mult'"),
    "wrong type": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "train.lr=fast"),
                   "'train.lr': expected float, got 'fast'"),
    "zero size": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "train.batch_size=0"),
                  "'train.batch_size': must be > 0, got 0"),
    "fp16 on a CPU": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "train.precision=fp16",
                                       "--set", "train.device=cpu"),
                      "train.precision fp16 is for CUDA GPUs; on a CPU use bf16 or fp32"),
    "negative size": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "model.image_size=-16"),
                      "'model.image_size': must be > 0, got -16"),
    "step_inference above T": (lambda e: _sample(e, "--step_inference", "51"),
                               "--step_inference must be in [0, 50], got 51"),
    "step_inference negative": (lambda e: _sample(e, "--step_inference", "-1"),
                                "--step_inference must be in [0, 50], got -1"),
    "num_defect vs config": (lambda e: _train(e, str(e / "ok.yaml"), "--num_defect", "2"),
                             "--num_defect 2 disagrees with data.classes, which lists 3"),
    "num_defect vs checkpoint": (lambda e: _sample(e, "--num_defect", "5"), "--num_defect 5 disagrees with"),
    "checkpoint vs config channels": (
        lambda e: _sample(e, "--large_recep_config", _write(e / "two.yaml", (e / "ok.yaml").read_text().replace(
            "classes: [scratch, stain, hole]", "classes: [a, b]"))), "number of defect classes"),
    "missing checkpoint": (lambda e: ["sample", "--large_recep", str(e / "nope.pt"), "--step_inference", "0",
                                      "--sample_dir", str(e / "s")], "checkpoint not found"),
    "truncated checkpoint": (lambda e: ["sample", "--large_recep", _cut(e), "--step_inference", "0",
                                        "--sample_dir", str(e / "s")], "is truncated or corrupt"),
    "corrupt checkpoint": (lambda e: ["sample", "--large_recep", _garbage(e), "--step_inference", "0",
                                      "--sample_dir", str(e / "s")], "is truncated or corrupt"),
    "truncated image": (lambda e: _train(e, str(e / "ok.yaml"), *_broken_data(e, "d1", _truncate)), "demo_0001.png"),
    "mask of another size": (lambda e: _train(e, str(e / "ok.yaml"), *_broken_data(e, "d2", _resize_mask)),
                             "demo_0001.png"),
    "mask values beyond classes": (lambda e: _train(e, str(e / "ok.yaml"), *_broken_data(e, "d3", _bad_values)),
                                   "demo_0001.png"),
    "empty dataset": (lambda e: _train(e, str(e / "ok.yaml"), *_broken_data(e, "d4", _empty)), "d4"),
    "unwritable sample_dir": (lambda e: _sample(e, "--sample_dir", str(e / "ok.yaml" / "out")), "ok.yaml"),
    "CUDA without a GPU (train)": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "train.device=cuda"),
                                   "no CUDA GPU is available"),
    "CUDA without a GPU (sample)": (lambda e: _sample(e, "--device", "cuda"), "no CUDA GPU is available"),
}


def _two(env, large, small, switch, *extra):
    return ["sample", "--large_recep", str(env / large), "--small_recep", str(env / small), "--step_inference",
            str(switch), "--sample_dir", str(env / "s2"), "--num_samples", "1", "--steps", "2", "--no-progress",
            *extra]


# Issue 12 (A): sampling, config and resume
CASES_12A = {
    "large model below its window": (lambda e: _two(e, "large_w", "small_w", 5),
                                     "the large-RF model"),
    "small model above its window": (lambda e: _two(e, "large_w", "small_w", 30),
                                     "use --step_inference <= 20"),
    "large and small swapped": (lambda e: _two(e, "small_w", "large_w", 15), "look swapped"),
    "eta with ddpm": (lambda e: _sample(e, "--sampler", "ddpm", "--eta", "0.5"),
                      "--eta 0.5 applies to --sampler ddim only"),
    "eta with the default ddpm": (lambda e: _sample(e, "--eta", "0.5"), "add --sampler ddim or drop --eta"),
    "seed beyond 64 bits": (lambda e: _sample(e, "--seed", "18446744073709551615"), "--seed must be in [0, "),
    "num_samples 1e10": (lambda e: _sample(e, "--num_samples", "10000000000"),
                         "--num_samples must be at most 10000000"),
    "lr .nan": (lambda e: _train(e, _write(e / "nan.yaml", (e / "ok.yaml").read_text().replace(
        "batch_size: 2", "batch_size: 2, lr: .nan"))), "'train.lr': expected a finite number, got nan"),
    "num_head_channels 48": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "model.middle_block=true",
                                              "--set", "model.num_head_channels=48"),
                             "'model.num_head_channels': 48 does not divide the [32] channels"),
    "model_channels 16 (GroupNorm 32)": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "model.model_channels=16"),
                                         "'model.model_channels': 16 x channel_mult [1] gives [16] channels"),
    "attention at a rate the net lacks": (lambda e: _train(e, str(e / "ok.yaml"), "--set",
                                                           "model.attention_downsample=[3, 64]"),
                                          "'model.attention_downsample': [3, 64] not among"),
    "duplicate YAML key": (lambda e: _train(e, _write(e / "dup.yaml", (e / "ok.yaml").read_text() + "train: {}\n")),
                           "dup.yaml: key 'train' is given twice (lines 5 and 6)"),
    "train.device=mps": (lambda e: _train(e, str(e / "ok.yaml"), "--set", "train.device=mps"),
                         "unknown device 'mps'; expected auto, cpu, cuda or cuda:N"),
    "info at 65536 px": (lambda e: ["info", "--config", str(e / "ok.yaml"), "--set", "model.image_size=65536"],
                         "'model.image_size': at most 4096 px, got 65536"),
    "resume with another objective": (lambda e: _resume(e, "diffusion.predict=eps"),
                                      "diffusion.predict ('x0' -> 'eps')"),
    "resume with 2 classes instead of 3": (lambda e: _resume(e, "data.classes=[scratch, stain]"),
                                           "data.classes (['scratch', 'stain', 'hole'] -> ['scratch', 'stain'])"),
    "checkpoint config without train, 2 EMAs": (lambda e: _sample(e, "--large_recep", _no_train(e)),
                                                "its config has no train.ema_rate to choose among its EMAs"),
}


def _resume(env, change):
    """Re-run the training of env/run (one step further, so it is not finished) with one change."""
    return _train(env, str(env / "ok.yaml"), "--work_dir", str(env / "run"), "--set", change,
                  "--set", "train.max_steps=2")


def _no_train(env):
    ckpt = torch.load(sorted((env / "run" / "checkpoint").glob("ckpt_*.pt"))[-1], weights_only=True)
    del ckpt["config"]["train"]
    ckpt["ema"]["0.5"] = ckpt["ema"][next(iter(ckpt["ema"]))]
    torch.save(ckpt, env / "no_train.pt")
    return str(env / "no_train.pt")
CASES.update(CASES_12A)

DATA_CASES = {"truncated image", "mask of another size", "mask values beyond classes", "empty dataset"}


# Issue 12 (C): data, masks and first use
def _self_link(data):
    (data / "images" / "demo_0001.png").unlink()
    os.symlink("demo_0001.png", data / "images" / "demo_0001.png")  # a loop: blobfile's listing raised


CASES.update({
    "image symlinked to itself": (lambda e: _train(e, str(e / "ok.yaml"), *_broken_data(e, "d5", _self_link)),
                                  "demo_0001.png: cannot read file ("),
    "make-demo-data --image_size 60000": (lambda e: ["make-demo-data", str(e / "huge"), "--image_size", "60000"],
                                          "image_size must be at most 4096 (the largest model.image_size), "
                                          "got 60000"),
})
DATA_CASES.add("image symlinked to itself")


def _cut(env):
    src = sorted((env / "run" / "checkpoint").glob("ckpt_*.pt"))[-1]
    dst = env / "cut.pt"
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return str(dst)


def _garbage(env):
    dst = env / "garbage.pt"
    dst.write_bytes(os.urandom(4096))
    return str(dst)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CUDA cases need a machine without a GPU")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_line_error(env, capsys, case):
    argv, needle = CASES[case]
    code, err = _run(capsys, argv(env))
    assert code == 2, err
    assert not any("Traceback" in line for line in err)
    if case in DATA_CASES:  # every problem found is listed first, as `data check` lists them
        assert all(str(env) in line for line in err[:-1]), err
    else:
        assert len(err) == 1, err
    assert err[-1].startswith("defect-gen ") and ": error: " in err[-1]
    assert needle in err[-1]


def test_checkpoint_config_without_train_samples_with_its_only_ema(env, capsys):
    ckpt = torch.load(sorted((env / "run" / "checkpoint").glob("ckpt_*.pt"))[-1], weights_only=True)
    del ckpt["config"]["train"]  # a KeyError traceback before
    torch.save(ckpt, env / "one_ema.pt")
    assert main(_sample(env, "--large_recep", str(env / "one_ema.pt"), "--sample_dir", str(env / "s3"))) == 0


def test_windowed_models_run_where_trained_or_with_the_override(env, capsys):
    assert main(_two(env, "large_w", "small_w", 15)) == 0  # large serves [15, 50), small [0, 15)
    assert main(_two(env, "large_w", "small_w", 5, "--allow-model-mismatch", "--overwrite")) == 0


def test_existing_pairs_are_refused_without_overwrite(env, capsys):
    out = str(env / "pairs")
    argv = _sample(env, "--sample_dir", out)
    assert main(argv) == 0
    code, err = _run(capsys, argv)
    assert code == 2 and len(err) == 1 and "already holds generated pairs" in err[0] and "--overwrite" in err[0]
    assert main([*argv, "--overwrite"]) == 0


def test_disk_full_while_writing_a_checkpoint(env, capsys, monkeypatch):
    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    code, err = _run(capsys, _train(env, str(env / "ok.yaml"), "--work_dir", str(env / "full")))
    assert code == 2 and len(err) == 1
    assert "could not write checkpoint" in err[0] and "No space left on device" in err[0]
    assert not [p for p in (env / "full" / "checkpoint").iterdir() if p.name.startswith("ckpt_")]


def test_process_exit_status_and_debug_traceback(env):
    args = [sys.executable, "-m", "defect_gen", "train", "--config", "nope.yaml", "--work_dir", str(env / "x")]
    plain = subprocess.run(args, capture_output=True, text=True)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = subprocess.run([*args[:3], "--debug", *args[3:]], capture_output=True, text=True)
    assert debug.returncode != 0 and "Traceback" in debug.stderr
