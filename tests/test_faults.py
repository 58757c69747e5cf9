"""kill -9 at random points of training never corrupts the latest checkpoint, and resuming continues."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest

from defect_gen import checkpoint as ckpt_lib
from defect_gen.datasets.demo import make_demo_data


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
