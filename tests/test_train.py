"""Training: exact resume, micro-batching, NaN handling, metrics, and 2-process equivalence."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

from defect_gen.config import from_dict
from defect_gen.data.demo import make_demo_data
from defect_gen.errors import DefectGenError
from defect_gen.models import checkpoint as ckpt_lib
from defect_gen.training.loop import TrainLoop


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("train_data") / "data")
    make_demo_data(root, num_images=6, image_size=16, seed=3)
    return root


def tiny_cfg(data_dir: str, **train):
    # fp32: `auto` times bf16 against fp32 on CPUs with bf16 instructions, and two runs compared
    # bit for bit must not each pick their own.
    t = {"batch_size": 4, "lr": 1e-3, "max_steps": 6, "save_every": 3, "log_every": 3, "ema_rate": 0.9,
         "extra_ema_rates": [0.5], "precision": "fp32", **train}
    return from_dict({
        "model": {"image_size": 16, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attention_downsample": [2], "num_head_channels": 32, "dropout": 0.1},
        "diffusion": {"num_timesteps": 100},
        "data": {"root": data_dir, "classes": ["scratch", "stain", "hole"]},
        "train": t,
    })


def _tensors(obj, prefix=""):
    """Flatten every tensor in a nested checkpoint dict, keyed by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_tensors(v, f"{prefix}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_tensors(v, f"{prefix}/{i}"))
        return out
    return {}


def test_resume_is_bit_identical_to_uninterrupted_run(data_dir, tmp_path):
    straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=6), straight, torch.device("cpu"), progress=False).run()
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=3), split, torch.device("cpu"), progress=False).run()
    resumed = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=6), split, torch.device("cpu"), progress=False)
    assert resumed.step == 3
    resumed.run()
    a = ckpt_lib.load(ckpt_lib.latest(straight))
    b = ckpt_lib.load(ckpt_lib.latest(split))
    ta, tb = _tensors(a), _tensors(b)
    assert a["step"] == b["step"] == 6 and ta.keys() == tb.keys()
    assert {"/ema/0.9/out.2.weight", "/ema/0.5/out.2.weight", "/rng/noise", "/optimizer/state/0/exp_avg"} <= ta.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert different == []
    # metrics of the resumed run continue the straight run's, row for row
    rows = [json.loads(x) for x in open(os.path.join(split, "metrics.jsonl"))]
    ref = [json.loads(x) for x in open(os.path.join(straight, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [3, 6] and rows[1]["loss"] == ref[1]["loss"]


def test_a_resumed_auto_run_keeps_the_precision_its_checkpoint_was_trained_in(data_dir, tmp_path, monkeypatch):
    from defect_gen.core import precision

    work = str(tmp_path / "w")
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=1, precision="bf16"), work, torch.device("cpu"), progress=False).run()
    assert ckpt_lib.load(ckpt_lib.latest(work))["precision"] == "bf16"
    # `auto` on this CPU would choose fp32 now (no bf16 instructions, or a timing that went that way) ...
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)
    fresh = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=2, precision="auto"), str(tmp_path / "new"), torch.device("cpu"),
                      progress=False)
    assert fresh.amp_dtype is None
    # ... but the resumed run goes on in the precision its first part ran in
    resumed = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=2, precision="auto"), work, torch.device("cpu"), progress=False)
    assert resumed.step == 1 and resumed.amp_dtype == torch.bfloat16


def test_microbatching_gives_the_same_update(data_dir, tmp_path):
    whole = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=1), str(tmp_path / "a"), torch.device("cpu"), progress=False)
    whole.model.eval()  # dropout off: the RNG draws differ with chunking, the maths must not
    whole.train_step()
    parts = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=1, microbatch=2), str(tmp_path / "b"), torch.device("cpu"),
                      progress=False)
    parts.model.eval()
    parts.train_step()
    _assert_same_training({k: v.detach() for k, v in whole.model.named_parameters()},
                          {k: v.detach() for k, v in parts.model.named_parameters()})


def test_nan_loss_stops_before_saving_and_keeps_last_good_checkpoint(data_dir, tmp_path):
    work = str(tmp_path / "nan")
    loop = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=3), work, torch.device("cpu"), progress=False)
    loop.run()
    good = ckpt_lib.latest(work)
    loop = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=9), work, torch.device("cpu"), progress=False)
    real_batch = loop.data.batch
    loop.data.batch = lambda n, g: real_batch(n, g) * float("nan") if loop.step >= 4 else real_batch(n, g)
    with pytest.raises(DefectGenError, match=r"NaN or Inf at step 5: stopped before saving; the last good "
                                             r"checkpoint is .*ckpt_00000003.pt"):
        loop.run()
    assert ckpt_lib.latest(work) == good
    state = ckpt_lib.load(good)
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_metrics_quartiles_loss_plot_and_config(data_dir, tmp_path):
    work = str(tmp_path / "m")
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=6, log_every=2), work, torch.device("cpu"), progress=False).run()
    rows = [json.loads(x) for x in open(os.path.join(work, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [2, 4, 6]
    keys = {"loss", "mse_rgb", "mse_mask", "grad_norm", "lr", "images_per_s", "loss_q0", "loss_q3"}
    assert keys <= rows[0].keys()
    quartiles = [r[f"loss_q{i}"] for r in rows for i in range(4) if r[f"loss_q{i}"] is not None]
    assert quartiles and all(q > 0 for q in quartiles)
    assert os.path.getsize(os.path.join(work, "loss.png")) > 1000
    assert from_dict(yaml.safe_load(open(os.path.join(work, "config.yaml")))).train.max_steps == 6


def _final_weights(work):
    return ckpt_lib.load(ckpt_lib.latest(work))["model"]


def _assert_same_training(a: dict, b: dict) -> None:
    """Two runs took the same steps: the weights agree to reduction-order rounding. Adam's first
    steps move a weight by about lr * sign(gradient), so where a gradient is ~0 the order of a
    sum (one batch of 4 vs 2 + 2 all-reduced) can flip a sign: on a 2-core AMD EPYC 142 of 428k
    weights of 3 steps differed by up to 4.8e-5 (mean 1.8e-7). Ranks that did not average their
    gradients differ almost everywhere (a batch of 2 against the batch of 4: 45 % of the weights
    outside, mean 2.7e-5), which these bounds catch."""
    assert a.keys() == b.keys()
    diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in a])
    outside = torch.cat([((a[k] - b[k]).abs() > 1e-5 + 1e-4 * b[k].abs()).flatten() for k in a])
    assert diff.mean() < 2e-6 and outside.float().mean() < 0.02, (diff.mean().item(), outside.float().mean().item())


def _train_cmd(data_dir, work, batch):
    return ["-m", "defect_gen", "train", "--config", "configs/demo_small.yaml", "--work_dir", work,
            "--num_defect", "3", "--no-progress",
            "--set", f"data.root={data_dir}", "--set", "model.image_size=16", "--set", "diffusion.num_timesteps=100",
            "--set", "diffusion.t_max=null", "--set", f"train.batch_size={batch}", "--set", "train.max_steps=3",
            "--set", "train.save_every=3", "--set", "train.log_every=1", "--set", "train.sample_every=0"]


def test_two_processes_under_torchrun_equal_one_process_with_double_batch(data_dir, tmp_path):
    ref, ddp = str(tmp_path / "ref"), str(tmp_path / "ddp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *_train_cmd(data_dir, ref, 4)], check=True, env=env, capture_output=True)
    # --standalone: a local rendezvous on a free port
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *_train_cmd(data_dir, ddp, 2)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same_training(_final_weights(ref), _final_weights(ddp))


def test_two_processes_under_mpiexec_equal_one_process(data_dir, tmp_path):
    mpiexec = shutil.which("mpiexec") or os.path.join(os.path.dirname(sys.executable), "mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install mpich mpi4py)")
    if not os.path.exists(mpiexec):
        pytest.skip("no mpiexec on PATH (pip install mpich)")
    ref, mpi = str(tmp_path / "ref"), str(tmp_path / "mpi")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, *_train_cmd(data_dir, ref, 4)], check=True, env=env, capture_output=True)
    proc = subprocess.run([mpiexec, "-n", "2", sys.executable, *_train_cmd(data_dir, mpi, 2)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_same_training(_final_weights(ref), _final_weights(mpi))


def test_resume_refuses_another_objective_schedule_window_or_classes(data_dir, tmp_path):
    # Issue 12 item 10: only `model` was compared, so x0-trained weights resumed on an eps loss.
    from defect_gen.training.loop import resume_differences

    work = str(tmp_path / "run")
    TrainLoop.from_config(tiny_cfg(data_dir, max_steps=3), work, torch.device("cpu"), progress=False).run()
    changed = tiny_cfg(data_dir, max_steps=6)
    changed.diffusion.predict, changed.diffusion.t_min = "eps", 10
    changed.data.classes = ["scratch", "stain", "dent"]
    with pytest.raises(DefectGenError) as err:
        TrainLoop.from_config(changed, work, torch.device("cpu"), progress=False)
    message = str(err.value)
    assert "diffusion.predict ('x0' -> 'eps')" in message and "window ([0, 100] -> [10, 100])" in message
    assert "data.classes (['scratch', 'stain', 'hole'] -> ['scratch', 'stain', 'dent'])" in message
    assert "\n" not in message and "model." not in message
    from defect_gen.cli import train as train_cli

    assert message.endswith("(use a new work_dir)")
    assert err.value.render(train_cli.FLAGS).endswith("(use a new --work_dir)")
    saved = ckpt_lib.load(ckpt_lib.latest(work))["config"]
    two = tiny_cfg(data_dir)
    two.data.classes = ["scratch", "stain"]
    assert resume_differences(saved, two) == ["data.classes (['scratch', 'stain', 'hole'] -> ['scratch', 'stain'])"]
    other = tiny_cfg(data_dir)
    other.diffusion.schedule, other.model.use_checkpoint = "linear", True  # checkpointing may change
    assert resume_differences(saved, other) == ["diffusion.schedule ('cosine' -> 'linear')"]
    saved["model"].pop("num_heads_upsample")  # a field added since: its default compares equal
    assert resume_differences(saved, tiny_cfg(data_dir)) == []


def test_ema_decay_warms_up_then_settles_at_its_rate():
    from defect_gen.training.loop import ema_decay
    assert ema_decay(0.999, 1) == pytest.approx(2 / 11)
    assert ema_decay(0.999, 1000) == pytest.approx(1001 / 1010)  # a short run: about its last tenth
    assert ema_decay(0.999, 100_000) == 0.999
    assert ema_decay(0.999, 1, warmup=False) == 0.999
    # what the warm-up is for: the share of the initial weights left in the average after 1000 steps
    plain = 0.999 ** 1000
    warm = 1.0
    for n in range(1, 1001):
        warm *= ema_decay(0.999, n)
    assert plain > 0.36 and warm < 1e-3


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_update_uses_the_warmed_up_decay(data_dir, tmp_path, warmup):
    loop = TrainLoop.from_config(tiny_cfg(data_dir, max_steps=2, ema_warmup=warmup), str(tmp_path / "r"), torch.device("cpu"),
                     progress=False)
    name = "out.2.weight"
    ema = dict(loop.emas[0.9].named_parameters())[name]
    for n in (1, 2):
        before = ema.detach().clone()
        loop.train_step()
        weights = dict(loop.model.named_parameters())[name].detach()
        decay = min(0.9, (1 + n) / (10 + n)) if warmup else 0.9
        assert not torch.equal(weights, before)
        torch.testing.assert_close(ema.detach(), before + (1 - decay) * (weights - before))
