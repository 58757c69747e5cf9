import json

import pytest

from defect_gen.cli import main
from defect_gen.config import from_dict
from defect_gen.training.bench import format_table, run_bench


def _cfg(**model):
    return from_dict({"model": {"image_size": 16, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                "attention_downsample": [2], "num_head_channels": 32, **model},
                      "diffusion": {"num_timesteps": 1000}, "data": {"classes": ["a", "b"]}})


def test_bench_fields_are_consistent():
    import torch

    # fp32 asked for: `auto` times bf16 against fp32 on CPUs with bf16 instructions
    r = run_bench(_cfg(), _cfg(attention_downsample=[], middle_block=False), torch.device("cpu"), batch_size=2,
                  iters=1, precision="fp32")
    assert r.params_m > 0 and r.fwd_gflops_per_image > 0 and r.matmul_peak_gflops > 0
    assert r.train_ms > 0 and r.train_images_per_s == pytest.approx(2 / (r.train_ms / 1e3))
    assert r.train_gflops == pytest.approx(3 * r.fwd_gflops_per_image * 2 / (r.train_ms / 1e3))
    assert r.train_share_of_peak == pytest.approx(r.train_gflops / r.matmul_peak_gflops)
    # DDPM 1000 with the switch at 200: 800 large steps + 200 small steps, for a batch of 2
    expect = (800 * r.sample_step_ms + 200 * r.sample_step_ms_small) / 1e3 / 2
    assert r.ddpm1000_s_per_pair == pytest.approx(expect)
    assert r.ddim50_s_per_pair < r.ddpm1000_s_per_pair
    assert "% of matmul peak" in format_table(r)
    assert r.reference_train_ms is None and r.speedup_vs_reference is None and r.precision == "fp32"


def test_bench_reference_times_the_published_step_in_the_same_run():
    import torch

    from experiments.published_step.reference_step import ReferenceStep

    r = run_bench(_cfg(), None, torch.device("cpu"), batch_size=2, iters=1, reference=ReferenceStep)
    assert r.reference_train_ms > 0
    assert r.speedup_vs_reference == pytest.approx(r.reference_train_ms / r.train_ms)
    assert "published step" in format_table(r) and f"{r.speedup_vs_reference:.2f}x" in format_table(r)


def test_bench_cli_json(capsys):
    assert main(["bench", "--config", "configs/demo_small.yaml", "--num_defect", "3", "--image_size", "16",
                 "--batch_size", "1", "--iters", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image_size"] == 16 and out["precision"] == "fp32" and 0 < out["train_share_of_peak"]
