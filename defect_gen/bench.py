"""`defect-gen bench`: training-step and sampling speed against the machine's matmul peak.

Figures (one table, or JSON):
- matmul peak: the best GFLOP/s of large matmuls in the run's precision (fp32 on CPU, bf16
  on CUDA) through torch.mm and through a 1x1 convolution (oneDNN / cuDNN), measured in
  the same process so the share below is like for like;
- forward GFLOPs per image (torch.utils.flop_counter; one multiply-add = 2 FLOPs);
- training step (forward + backward + AdamW): ms, images/s, achieved GFLOP/s counting the
  step as 3x the forward FLOPs, and that as a share of the matmul peak;
- sampling: ms per denoising step for the batch, and seconds per pair for DDPM 1000 and
  DDIM 50 two-stage chains (large model above the switch, small below);
- parameters and peak memory.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from defect_gen.config import Config
from defect_gen.respace import space_timesteps, split_at, with_switch
from defect_gen.train_util import make_optimizer
from defect_gen.unet import build_unet, num_channels


@dataclass
class BenchResult:
    device: str
    precision: str
    image_size: int
    batch_size: int
    params_m: float
    fwd_gflops_per_image: float
    matmul_peak_gflops: float
    matmul_mm_gflops: float
    matmul_conv1x1_gflops: float
    train_ms: float
    train_images_per_s: float
    train_gflops: float
    train_share_of_peak: float
    sample_step_ms: float
    sample_step_ms_small: float
    ddpm1000_s_per_pair: float
    ddim50_s_per_pair: float
    peak_memory_mb: float
    compiled: bool


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(fn, device: torch.device, iters: int, warmup: int = 2) -> float:
    """Best wall time of fn() over iters runs, after warm-up (the least disturbed run)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def _gemm_rate(fn, flops: float, device: torch.device, iters: int) -> float:
    return flops / _best_time(fn, device, iters) / 1e9


def matmul_peak(device: torch.device, dtype: torch.dtype, iters: int = 5) -> dict[str, float]:
    """GFLOP/s of large matmuls through each GEMM library torch uses, and the best of them.

    On CPU torch.mm goes to MKL's sgemm, which takes a slow code path on AMD processors,
    while convolutions go to oneDNN; a 1x1 convolution is exactly a matmul through oneDNN.
    Taking the best of both keeps "share of peak" from flattering the convolutions.
    """
    rates = {}
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    rates["mm"] = _gemm_rate(lambda: torch.mm(a, b), 2 * n**3, device, iters)
    c, side = (4096, 64) if device.type == "cuda" else (2048, 16)
    x = torch.randn(1, c, side, side, device=device, dtype=dtype)
    w = torch.randn(c, c, 1, 1, device=device, dtype=dtype)
    rates["conv1x1"] = _gemm_rate(lambda: torch.nn.functional.conv2d(x, w), 2 * c * c * side * side, device, iters)
    rates["peak"] = max(rates.values())
    return rates


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    return float(counter.get_total_flops())


def _train_step_fn(model, x, t, opt, amp_dtype):
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = (model(x, t).float() - x).square().mean()
        loss.backward()
        opt.step()

    return step


def _sample_step_fn(model, x, t, amp_dtype):
    def step():
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model(x, t)

    return step


def _prepare(model: torch.nn.Module, device: torch.device, channels_last: bool, compile_: bool):
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compile_ else model


def run_bench(cfg: Config, small_cfg: Config | None, device: torch.device, batch_size: int, iters: int = 5,
              compile_: bool = False, channels_last: bool | None = None, switch: int = 200) -> BenchResult:
    """Benchmark cfg's model for training; sampling chains use small_cfg below the switch."""
    amp_dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    peak_dtype = amp_dtype or torch.float32
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    size, k = cfg.model.image_size, cfg.num_defect
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, num_channels(k), size, size, device=device).contiguous(memory_format=fmt)
    t = torch.randint(0, cfg.diffusion.num_timesteps, (batch_size,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    model = build_unet(cfg.model, k)
    params = sum(p.numel() for p in model.parameters())
    flops = forward_flops(model.to(device), x[:1])
    model = _prepare(model, device, channels_last, compile_).train()
    opt = make_optimizer(model, 1e-4, 0.0, device)  # exactly what training uses
    train_s = _best_time(_train_step_fn(model, x, t, opt, amp_dtype), device, iters)
    model.eval()
    step_s = _best_time(_sample_step_fn(model, x, t, amp_dtype), device, iters)
    step_small_s = step_s
    if small_cfg is not None:
        small = _prepare(build_unet(small_cfg.model, k), device, channels_last, compile_).eval()
        step_small_s = _best_time(_sample_step_fn(small, x, t, amp_dtype), device, iters)

    def per_pair(steps):
        T = cfg.diffusion.num_timesteps
        large_ts, small_ts = split_at(with_switch(space_timesteps(T, steps), switch, T), switch)
        return (len(large_ts) * step_s + len(small_ts) * step_small_s) / batch_size

    with torch.no_grad():
        rates = matmul_peak(device, peak_dtype)
    peak = rates["peak"]
    achieved = 3 * flops * batch_size / train_s / 1e9
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return BenchResult(
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        precision="bf16" if amp_dtype is not None else "fp32", image_size=size, batch_size=batch_size,
        params_m=params / 1e6, fwd_gflops_per_image=flops / 1e9, matmul_peak_gflops=peak,
        matmul_mm_gflops=rates["mm"], matmul_conv1x1_gflops=rates["conv1x1"],
        train_ms=train_s * 1e3, train_images_per_s=batch_size / train_s, train_gflops=achieved,
        train_share_of_peak=achieved / peak, sample_step_ms=step_s * 1e3, sample_step_ms_small=step_small_s * 1e3,
        ddpm1000_s_per_pair=per_pair(None), ddim50_s_per_pair=per_pair(50), peak_memory_mb=memory,
        compiled=compile_)


def format_table(r: BenchResult) -> str:
    rows = [
        ("device / precision", f"{r.device} / {r.precision}" + (" / compiled" if r.compiled else "")),
        ("image size, batch", f"{r.image_size} px, {r.batch_size}"),
        ("parameters", f"{r.params_m:.2f} M"),
        ("forward GFLOPs / image", f"{r.fwd_gflops_per_image:.2f}"),
        ("matmul peak", f"{r.matmul_peak_gflops:.1f} GFLOP/s (best of torch.mm {r.matmul_mm_gflops:.1f}, "
                        f"1x1-conv GEMM {r.matmul_conv1x1_gflops:.1f})"),
        ("train step", f"{r.train_ms:.1f} ms, {r.train_images_per_s:.2f} images/s"),
        ("train achieved", f"{r.train_gflops:.1f} GFLOP/s = {100 * r.train_share_of_peak:.1f} % of matmul peak"),
        ("sampling step (batch)", f"{r.sample_step_ms:.1f} ms large, {r.sample_step_ms_small:.1f} ms small"),
        ("two-stage per pair", f"DDPM 1000: {r.ddpm1000_s_per_pair:.2f} s, DDIM 50: {r.ddim50_s_per_pair:.3f} s"),
        ("peak memory", f"{r.peak_memory_mb:.0f} MiB"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def to_json(r: BenchResult) -> str:
    return json.dumps(asdict(r), indent=2)
