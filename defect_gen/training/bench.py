"""`defect-gen bench`: training-step and sampling speed against the machine's matmul peak.

Figures (one table, or JSON):
- matmul peak: the best GFLOP/s of large matmuls in the training precision through
  torch.mm and through a 1x1 convolution (oneDNN / cuDNN), measured in
  the same process so the share below is like for like;
- forward GFLOPs per image (torch.utils.flop_counter; one multiply-add = 2 FLOPs);
- training step: `defect-gen train`'s own step (TrainLoop.train_step on random pairs:
  forward, loss, backward, clipping, fused AdamW, EMAs, in train.precision): ms, images/s,
  achieved GFLOP/s counting the step as 3x the forward FLOPs, and that as a share of the
  matmul peak; optionally another step taking turns with it in the same run, and the ratio
  (experiments/published_step/ times the published step re-created this way);
- sampling: ms per denoising step for the batch, and seconds per pair for DDPM 1000 and
  DDIM 50 two-stage chains (large model above the switch, small below);
- parameters and peak memory.
"""

from __future__ import annotations

import copy
import json
import platform
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from defect_gen.config import Config
from defect_gen.core.diffusion import space_timesteps, split_at, with_switch
from defect_gen.core.masks import stack_image_mask
from defect_gen.core.precision import cpu_bf16_instructions, resolve_autocast, time_forward
from defect_gen.core.unet import build_unet, num_channels
from defect_gen.training.loop import TrainLoop


@dataclass
class BenchResult:
    device: str
    bf16_instructions: str | None  # CPU: AMX-BF16 / AVX512-BF16 / None
    torch: str
    precision: str  # training autocast (train.precision resolved)
    sample_precision: str
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
    reference_train_ms: float | None  # another step timed in the same run (run_bench reference=)
    speedup_vs_reference: float | None
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


class RandomPairs:
    """Stand-in training data for timing: random images with random masks, as DefectDataset
    serves them (the step's cost does not depend on what the pixels show)."""

    def __init__(self, size: int, num_defect: int, n: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        image = torch.rand(n, 3, size, size, generator=g) * 2 - 1
        self.data = stack_image_mask(image, torch.randint(num_defect + 1, (n, size, size), generator=g), num_defect)

    def batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        return self.data[torch.randint(len(self.data), (batch_size,), generator=generator)]

    def write_selection(self, path: str) -> None:
        """Nothing was selected from a real dataset."""


def project_step(cfg: Config, device: torch.device, batch_size: int, work_dir: str) -> TrainLoop:
    """The training loop exactly as `defect-gen train` builds it for cfg (EMAs, clipping,
    fused AdamW, train.precision), on random pairs; call its train_step() to time a step."""
    cfg = copy.deepcopy(cfg)
    cfg.train.batch_size, cfg.train.microbatch, cfg.train.warmup_steps = batch_size, 0, 0
    cfg.train.tensorboard, cfg.train.sample_every = False, 0
    data = RandomPairs(cfg.model.image_size, cfg.num_defect)
    return TrainLoop.from_config(cfg, work_dir, device, progress=False, data=data)


def _interleaved_best(fns: dict, device: torch.device, iters: int, warmup: int = 1) -> dict[str, float]:
    """Best wall time of each function, the functions taking turns, so that whatever else the
    machine does in the meantime falls on all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(iters):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


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


def cpu_name() -> str:
    """The processor's model name, as /proc/cpuinfo gives it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _train_times(cfg: Config, device: torch.device, batch_size: int, iters: int, compile_: bool,
                 precision: str, reference: Callable | None) -> dict:
    """Best step times of the project's training step (and the published one, taking turns),
    the training precision, the forward FLOPs per image and the parameter count."""
    run_cfg = copy.deepcopy(cfg)
    run_cfg.train.compile, run_cfg.train.precision = compile_, precision
    with tempfile.TemporaryDirectory() as work:
        loop = project_step(run_cfg, device, batch_size, work)
        x0 = loop.data.batch(batch_size, torch.Generator().manual_seed(0)).to(device)
        out = {"flops": forward_flops(loop.model, x0[:1]), "precision": _dtype_name(loop.amp_dtype),
               "params": sum(p.numel() for p in loop.model.parameters())}
        fns = {"project": loop.train_step}
        if reference:
            g = torch.Generator().manual_seed(1)
            t = torch.randint(0, cfg.diffusion.num_timesteps, (batch_size,), generator=g).to(device)
            fns["reference"] = reference(cfg, x0, t, torch.randn(x0.shape, generator=g).to(device))
        out.update(_interleaved_best(fns, device, iters))
    return out


def _sample_times(cfg: Config, small_cfg: Config | None, device: torch.device, batch_size: int, iters: int,
                  compile_: bool, channels_last: bool, precision: str) -> dict:
    """ms per denoising step of each network (inference mode) and the sampling precision."""
    size, k = cfg.model.image_size, cfg.num_defect
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, num_channels(k), size, size, device=device).contiguous(memory_format=fmt)
    t = torch.randint(0, cfg.diffusion.num_timesteps, (batch_size,), device=device)
    large = _prepare(build_unet(cfg.model, k), device, channels_last, compile_).eval()
    amp_dtype, _ = resolve_autocast(precision, device, time_forward(large, x, t), what="--precision")
    out = {"precision": _dtype_name(amp_dtype), "large": _best_time(_sample_step_fn(large, x, t, amp_dtype), device,
                                                                     iters)}
    out["small"] = out["large"]
    if small_cfg is not None:
        small = _prepare(build_unet(small_cfg.model, k), device, channels_last, compile_).eval()
        out["small"] = _best_time(_sample_step_fn(small, x, t, amp_dtype), device, iters)
    return out


def run_bench(cfg: Config, small_cfg: Config | None, device: torch.device, batch_size: int, iters: int = 5,
              compile_: bool = False, channels_last: bool | None = None, switch: int = 200,
              precision: str = "auto", reference: Callable | None = None) -> BenchResult:
    """Benchmark cfg's model for training (the step `defect-gen train` runs); sampling chains
    use small_cfg below the switch. `reference(cfg, x0, t, noise)`, when given, builds another
    training step (a callable) that takes turns with ours in the same run, and the ratio is
    reported (experiments/published_step times the published step this way)."""
    channels_last = device.type == "cuda" if channels_last is None else channels_last
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train = _train_times(cfg, device, batch_size, iters, compile_, precision, reference)
    sample = _sample_times(cfg, small_cfg, device, batch_size, iters, compile_, channels_last, precision)

    def per_pair(steps):
        T = cfg.diffusion.num_timesteps
        large_ts, small_ts = split_at(with_switch(space_timesteps(T, steps), switch, T), switch)
        return (len(large_ts) * sample["large"] + len(small_ts) * sample["small"]) / batch_size

    with torch.no_grad():
        rates = matmul_peak(device, torch.bfloat16 if train["precision"] == "bf16" else torch.float32)
    train_s, peak = train["project"], rates["peak"]
    achieved = 3 * train["flops"] * batch_size / train_s / 1e9
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    ref_s = train.get("reference")
    return BenchResult(
        device=(torch.cuda.get_device_name(device) if device.type == "cuda"
                else f"{cpu_name()} x{torch.get_num_threads()}"),
        bf16_instructions=cpu_bf16_instructions() if device.type == "cpu" else None, torch=torch.__version__,
        precision=train["precision"], sample_precision=sample["precision"], image_size=cfg.model.image_size,
        batch_size=batch_size, params_m=train["params"] / 1e6, fwd_gflops_per_image=train["flops"] / 1e9,
        matmul_peak_gflops=peak, matmul_mm_gflops=rates["mm"], matmul_conv1x1_gflops=rates["conv1x1"],
        train_ms=train_s * 1e3, train_images_per_s=batch_size / train_s, train_gflops=achieved,
        train_share_of_peak=achieved / peak, reference_train_ms=ref_s and ref_s * 1e3,
        speedup_vs_reference=ref_s and ref_s / train_s, sample_step_ms=sample["large"] * 1e3,
        sample_step_ms_small=sample["small"] * 1e3, ddpm1000_s_per_pair=per_pair(None),
        ddim50_s_per_pair=per_pair(50), peak_memory_mb=memory, compiled=compile_)


def format_table(r: BenchResult) -> str:
    rows = [
        ("device", f"{r.device}" + (f" ({r.bf16_instructions})" if r.bf16_instructions else "") +
                   f", torch {r.torch}" + (" / compiled" if r.compiled else "")),
        ("precision", f"training {r.precision}, sampling {r.sample_precision}"),
        ("image size, batch", f"{r.image_size} px, {r.batch_size}"),
        ("parameters", f"{r.params_m:.2f} M"),
        ("forward GFLOPs / image", f"{r.fwd_gflops_per_image:.2f}"),
        ("matmul peak", f"{r.matmul_peak_gflops:.1f} GFLOP/s (best of torch.mm {r.matmul_mm_gflops:.1f}, "
                        f"1x1-conv GEMM {r.matmul_conv1x1_gflops:.1f})"),
        ("train step", f"{r.train_ms:.1f} ms, {r.train_images_per_s:.2f} images/s"),
        *([("published step", f"{r.reference_train_ms:.1f} ms (re-created, same run): this step is "
                               f"{r.speedup_vs_reference:.2f}x as fast")] if r.reference_train_ms else []),
        ("train achieved", f"{r.train_gflops:.1f} GFLOP/s = {100 * r.train_share_of_peak:.1f} % of matmul peak"),
        ("sampling step (batch)", f"{r.sample_step_ms:.1f} ms large, {r.sample_step_ms_small:.1f} ms small"),
        ("two-stage per pair", f"DDPM 1000: {r.ddpm1000_s_per_pair:.2f} s, DDIM 50: {r.ddim50_s_per_pair:.3f} s"),
        ("peak memory", f"{r.peak_memory_mb:.0f} MiB"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


def to_json(r: BenchResult) -> str:
    return json.dumps(asdict(r), indent=2)
