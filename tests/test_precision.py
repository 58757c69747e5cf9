"""Precision choice (train.precision / --precision) and the published step that
experiments/published_step/bench_reference.py times: auto picks bf16 only where the CPU has
bf16 instructions and a timing confirms it; the re-created published network computes what
the project's network does."""

import pytest
import torch

from defect_gen.config import from_dict
from defect_gen.core import precision
from defect_gen.core.unet import AttentionBlock, build_unet
from defect_gen.errors import ConfigError
from experiments.published_step.reference_step import PublishedAttention, ReferenceStep, published_network

CPU = torch.device("cpu")


def _cfg(**model):
    return from_dict({"model": {"image_size": 16, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
                                "attention_downsample": [2], "num_head_channels": 16, "dropout": 0.1, **model},
                      "diffusion": {"num_timesteps": 100}, "data": {"classes": ["a", "b"]}})


def test_fp32_and_bad_names():
    assert precision.resolve_autocast("fp32", CPU)[0] is None
    with pytest.raises(ConfigError, match="train.precision: expected one of auto, fp32, bf16, fp16, got 'half'"):
        precision.resolve_autocast("half", CPU)
    with pytest.raises(ConfigError, match="fp16 is for CUDA GPUs"):
        precision.resolve_autocast("fp16", CPU)
    assert precision.resolve_autocast("bf16", CPU)[0] is torch.bfloat16  # asked for: honoured, even if slow


def test_auto_on_cpu_follows_instructions_and_timing(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)
    timed = []
    dtype, why = precision.resolve_autocast("auto", CPU, timer=lambda d: timed.append(d) or 1.0)
    assert dtype is None and "no bf16" in why and timed == []  # nothing to measure without the instructions

    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: "AMX-BF16")
    fast = {None: 1.0, torch.bfloat16: 0.4}
    dtype, why = precision.resolve_autocast("auto", CPU, timer=fast.__getitem__)
    assert dtype is torch.bfloat16 and "400 ms in bf16 against 1000 ms in fp32" in why
    slow = {None: 1.0, torch.bfloat16: 0.95}  # faster, but by less than MIN_SPEEDUP
    assert precision.resolve_autocast("auto", CPU, timer=slow.__getitem__)[0] is None
    assert precision.resolve_autocast("auto", CPU)[0] is torch.bfloat16  # no timer: trust the instructions


def test_timer_leaves_no_gradients_and_the_rng_alone():
    model = build_unet(_cfg().model, 2).train()  # dropout 0.1 draws from the global RNG
    x, t = torch.randn(2, 6, 16, 16), torch.tensor([3, 50])
    before = torch.get_rng_state()
    for timer in (precision.time_forward_backward(model, x, t, repeats=1), precision.time_forward(model, x, t, 1)):
        assert timer(None) > 0 and timer(torch.bfloat16) > 0
    assert torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in model.parameters())


def test_published_attention_computes_the_same_function():
    torch.manual_seed(0)
    block = AttentionBlock(32, 1, 16, use_checkpoint=False)
    torch.nn.init.normal_(block.proj_out.weight, std=0.2)  # zero-initialised: would hide the attention
    legacy = PublishedAttention(32, block.num_heads, -1, use_checkpoint=False)
    legacy.load_state_dict(block.state_dict())
    x = torch.randn(2, 32, 4, 4, requires_grad=True)
    torch.testing.assert_close(legacy(x), block(x), rtol=1e-5, atol=1e-5)
    legacy(x).sum().backward()  # through the recomputation in the backward pass
    assert x.grad is not None and legacy.qkv.weight.grad is not None


def test_published_network_has_the_same_weights_and_output():
    cfg = _cfg(dropout=0.0)
    torch.manual_seed(1)
    ours = build_unet(cfg.model, 2)
    torch.manual_seed(1)
    theirs = published_network(cfg)
    n_attention = sum(type(m) is AttentionBlock for m in ours.modules())
    assert n_attention > 0 and sum(isinstance(m, PublishedAttention) for m in theirs.modules()) == n_attention
    assert not any(type(m) is AttentionBlock for m in theirs.modules())
    for p in ours.parameters():
        torch.nn.init.normal_(p, std=0.05)
    theirs.load_state_dict(ours.state_dict())
    x, t = torch.randn(2, 6, 16, 16), torch.tensor([3, 50])
    torch.testing.assert_close(theirs(x, t), ours(x, t), rtol=1e-4, atol=1e-4)


def test_reference_step_trains():
    cfg = _cfg(dropout=0.0)
    x0 = torch.rand(2, 6, 16, 16) * 2 - 1
    step = ReferenceStep(cfg, x0, torch.tensor([3, 50]), torch.randn_like(x0))
    before = [p.detach().clone() for p in step.model.parameters()]
    step()
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
    assert not step.opt.defaults["fused"] and not step.opt.defaults["foreach"]  # per-parameter AdamW


class _Recorder(torch.nn.Module):
    """Stand-in network that records whether it ran under bf16 autocast."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x, t, *y):
        self.seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return x


@pytest.mark.parametrize("bf16_time, expect_bf16", [(0.3, True), (1.2, False)])
def test_sampling_auto_uses_bf16_only_where_measured_faster(monkeypatch, bf16_time, expect_bf16):
    from defect_gen.pipeline import generator

    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: "AVX512-BF16")
    monkeypatch.setattr(generator, "time_forward", lambda *a: {None: 1.0, torch.bfloat16: bf16_time}.__getitem__)
    net = _Recorder()
    forward = generator._network(net, CPU, "auto", (6, 8, 8))
    out = forward(torch.zeros(1, 6, 8, 8), torch.zeros(1))
    assert net.seen == [expect_bf16] and out.dtype == torch.float32
    monkeypatch.setattr(precision, "cpu_bf16_instructions", lambda: None)  # no instructions: never bf16
    generator._network(net, CPU, "auto", (6, 8, 8))(torch.zeros(1, 6, 8, 8), torch.zeros(1))
    assert net.seen[-1] is False
