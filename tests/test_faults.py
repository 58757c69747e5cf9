"""kill -9 at random points of training never corrupts the latest checkpoint, and resuming continues."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import train_tiny_models

from defect_gen.data.demo import make_demo_data
from defect_gen.models import checkpoint as ckpt_lib


def _train_args(data, work, max_steps):
    return [sys.executable, "-m", "defect_gen", "train", "--config", "configs/demo_small.yaml", "--work_dir", work,
            "--num_defect", "3", "--no-progress", "--set", f"data.root={data}", "--set", "model.image_size=16",
            "--set", "train.batch_size=2", "--set", f"train.max_steps={max_steps}", "--set", "train.save_every=1",
            "--set", "train.log_every=1", "--set", "train.keep_last=2", "--set", "train.sample_every=0"]


@pytest.mark.parametrize("trial", range(3))
def test_kill_during_training_keeps_a_loadable_latest(tmp_path, trial):
    data, work = str(tmp_path / "data"), str(tmp_path / "run")
    make_demo_data(data, num_images=4, image_size=16, seed=trial)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_train_args(data, work, 100000), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # wait until it is saving every step, then kill at a random moment (often mid-save)
    deadline = time.time() + 60
    while ckpt_lib.latest(work) is None and time.time() < deadline:
        time.sleep(0.05)
    assert ckpt_lib.latest(work) is not None, "training never saved"
    time.sleep(random.Random(trial).uniform(0.2, 1.5))
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    latest = ckpt_lib.latest(work)
    state = ckpt_lib.load(latest)  # raises on a truncated or corrupt file
    step = state["step"]
    assert step >= 1 and latest.endswith(f"ckpt_{step:08d}.pt")
    done = subprocess.run(_train_args(data, work, step + 2), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-1500:]
    assert f"resumed from {latest} at step {step}" in done.stdout + done.stderr
    assert ckpt_lib.load(ckpt_lib.latest(work))["step"] == step + 2
    # no temp files of the killed save linger
    assert not [n for n in os.listdir(ckpt_lib.ckpt_dir(work)) if n.startswith(".")]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 1-step-trained large and small model at 16 px (quality is irrelevant here)."""
    return train_tiny_models(tmp_path_factory.mktemp("fault_models"), num_timesteps=100)


def _sample_args(models, out, *extra):
    return [sys.executable, "-m", "defect_gen", "sample", "--large_recep", str(models / "large"),
            "--small_recep", str(models / "small"), "--step_inference", "30", "--sample_dir", out,
            "--num_samples", "24", "--batch_size", "1", "--steps", "10", "--keep-empty", "--no-progress",
            "--precision", "fp32", *extra]  # runs compared bit for bit: not `auto`'s timed choice


def _manifest(out):
    with open(os.path.join(out, "manifest.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_kill_during_sampling_then_resume_completes_without_duplicates(tiny_models, tmp_path):
    out, ref = str(tmp_path / "killed"), str(tmp_path / "straight")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_sample_args(tiny_models, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(os.path.join(out, "manifest.jsonl")) and len(open(os.path.join(out, "manifest.jsonl")).readlines()) >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["name"]: open(os.path.join(out, r["files"]["image"]), "rb").read() for r in _manifest(out)}
    assert 3 <= len(before) < 24, "the kill should land mid-run"
    # without --resume the folder is refused; with it only the missing pairs are made
    assert subprocess.run(_sample_args(tiny_models, out), env=env, capture_output=True).returncode == 2
    done = subprocess.run(_sample_args(tiny_models, out, "--resume"), env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    rows = _manifest(out)
    names = [r["name"] for r in rows]
    assert names == [f"sample_{i:06d}" for i in range(24)]  # all there, once each, in order
    for name, data in before.items():  # finished pairs untouched
        row = next(r for r in rows if r["name"] == name)
        assert open(os.path.join(out, row["files"]["image"]), "rb").read() == data
    # and the resumed run made exactly what an uninterrupted run makes
    subprocess.run(_sample_args(tiny_models, ref), env=env, check=True, capture_output=True)
    for r in _manifest(ref):
        assert open(os.path.join(ref, r["files"]["image"]), "rb").read() == \
            open(os.path.join(out, r["files"]["image"]), "rb").read(), r["name"]
    # settings that change what a name means are refused on resume
    changed = subprocess.run(_sample_args(tiny_models, out, "--resume", "--seed", "5"), env=env,
                             capture_output=True, text=True)
    assert changed.returncode == 2 and "settings differ" in changed.stderr and "seed (0 -> 5)" in changed.stderr


def test_nan_weights_are_caught_in_sampling_naming_the_step(tiny_models, tmp_path):
    import torch

    state = ckpt_lib.load(ckpt_lib.latest(str(tiny_models / "large")))
    for sd in [state["model"], *state["ema"].values()]:
        sd["out.2.bias"] = torch.full_like(sd["out.2.bias"], float("nan"))
    bad = str(tmp_path / "nan.pt")
    ckpt_lib.atomic_save(state, bad)
    proc = subprocess.run([sys.executable, "-m", "defect_gen", "sample", "--large_recep", bad, "--step_inference",
                           "0", "--sample_dir", str(tmp_path / "s"), "--num_samples", "2", "--steps", "5",
                           "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "defect-gen sample: error: sampling produced NaN or Inf at timestep 99 for sample_000000, sample_000001")
