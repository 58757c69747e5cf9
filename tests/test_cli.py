"""The main job end to end at toy size: demo data -> train large -> train small -> sample."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from defect_gen.cli import main
from defect_gen.models import checkpoint as ckpt_lib

TINY = ["--set", "model.image_size=32", "--set", "model.model_channels=32", "--set", "train.batch_size=4",
        "--set", "train.max_steps=3", "--set", "train.save_every=2", "--set", "train.log_every=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = str(root / "data")
    assert main(["make-demo-data", data, "--num_images", "6", "--image_size", "32"]) == 0
    for name in ("large", "small"):
        args = ["train", "--config", f"configs/demo_{name}.yaml", "--work_dir", str(root / name), "--num_defect", "3",
                "--set", f"data.root={data}", "--no-progress", *TINY]
        if name == "large":
            args += ["--set", "model.channel_mult=[1,2]", "--set", "model.attention_downsample=[2]"]
        args += ["--set", "train.sample_every=2"]
        assert main(args) == 0
    return root


def test_training_writes_config_metrics_and_checkpoints(run):
    work = run / "large"
    assert (work / "config.yaml").is_file()
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    state = ckpt_lib.load(ckpt_lib.latest(str(work)))
    assert state["step"] == 3 and state["format"] == ckpt_lib.FORMAT
    assert state["config"]["model"]["image_size"] == 32 and set(state) >= {"model", "ema", "optimizer", "rng"}
    assert not torch.equal(state["model"]["out.2.weight"], torch.zeros_like(state["model"]["out.2.weight"]))
    # preview grids of the EMA model every 2 steps and at the end, for both window kinds
    for name in ("large", "small"):
        grids = sorted(p.name for p in (run / name / "samples").iterdir())
        assert grids == ["step_00000002.png", "step_00000003.png"]
        assert Image.open(run / name / "samples" / grids[-1]).size[0] > 128


def test_rerun_resumes_from_latest(run, capsys):
    args = ["train", "--config", "configs/demo_small.yaml", "--work_dir", str(run / "small"), "--num_defect", "3",
            "--set", f"data.root={run / 'data'}", *TINY, "--set", "train.max_steps=4"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "resumed from" in captured.out + captured.err
    assert ckpt_lib.load(ckpt_lib.latest(str(run / "small")))["step"] == 4


def test_two_stage_sampling_writes_pairs_and_manifest(run):
    out = run / "samples"
    args = ["sample", "--large_recep", str(run / "large"), "--small_recep", str(run / "small"),
            "--step_inference", "300", "--num_defect", "3", "--sample_dir", str(out), "--num_samples", "3",
            "--batch_size", "2", "--steps", "5", "--seed", "10", "--no-progress"]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["sample_000010", "sample_000011", "sample_000012"]
    assert [r["seed"] for r in rows] == [10, 11, 12]
    for r in rows:
        image = np.asarray(Image.open(out / "images" / f"{r['name']}.png"))
        mask = np.asarray(Image.open(out / "masks" / f"{r['name']}.png"))
        assert image.shape == (32, 32, 3) and mask.shape == (32, 32) and mask.max() <= 3
        assert (out / "masks_color" / f"{r['name']}.png").is_file()
        present = {["scratch", "stain", "hole"][c - 1] for c in np.unique(mask) if c > 0}
        assert set(r["classes"]) == present
        assert sum(r["defect_pixels"].values()) == int((mask > 0).sum())
    assert (out / "preview.png").is_file()
    # the same seed alone reproduces the same pair, whatever batch it was in
    alone = run / "alone"
    assert main([*args[:-9], "--sample_dir", str(alone), "--num_samples", "1", "--batch_size", "1",
                 "--steps", "5", "--seed", "11", "--no-progress"]) == 0
    a = np.asarray(Image.open(alone / "images" / "sample_000011.png")).astype(int)
    b = np.asarray(Image.open(out / "images" / "sample_000011.png")).astype(int)
    assert np.abs(a - b).max() <= 1
    # existing pairs are never overwritten silently
    assert main(args) == 2


def test_cli_errors_are_one_line_with_nonzero_exit(run, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "sample", "--large_recep", str(run / "large"),
                           "--step_inference", "1001", "--sample_dir", str(tmp_path / "s"), "--no-progress"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "defect-gen sample: error: --step_inference must be in [0, 1000], got 1001"
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "sample", "--large_recep", str(run / "large"),
                           "--step_inference", "0", "--num_defect", "2", "--sample_dir", str(tmp_path / "s")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "--num_defect 2 disagrees with" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "train", "--config", "nope.yaml", "--work_dir",
                           str(tmp_path / "w")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "defect-gen train: error: config file not found: nope.yaml"


def test_small_only_needs_no_large_model(run, tmp_path):
    # demo_small trains on t < 400: serving every step takes the override (issue 12 item 1)
    assert main(["sample", "--small_recep", str(run / "small"), "--step_inference", "1000", "--sample_dir",
                 str(tmp_path / "s"), "--num_samples", "1", "--steps", "3", "--no-progress"]) == 2
    assert main(["sample", "--small_recep", str(run / "small"), "--step_inference", "1000", "--sample_dir",
                 str(tmp_path / "s"), "--num_samples", "1", "--steps", "3", "--no-progress",
                 "--allow-model-mismatch"]) == 0
    assert main(["sample", "--small_recep", str(run / "small"), "--step_inference", "500", "--sample_dir",
                 str(tmp_path / "t"), "--num_samples", "1", "--steps", "3", "--no-progress"]) == 2


def test_info_prints_receptive_field(capsys):
    assert main(["info", "--config", "configs/demo_small.yaml", "--num_defect", "3"]) == 0
    out = capsys.readouterr().out
    assert "receptive field:  45 px" in out and "parameters:" in out and "forward GFLOPs:" in out


def test_info_at_the_largest_size_allocates_nothing(capsys):
    # Issue 12 (A): info ran a real forward pass (2 GB per feature map at 4096 px); now on the meta device.
    assert main(["info", "--config", "configs/demo_large.yaml", "--num_defect", "3",
                 "--set", "model.image_size=4096"]) == 0
    out = capsys.readouterr().out
    assert "image size:       4096 px" in out and "forward GFLOPs:" in out
