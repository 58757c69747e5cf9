"""Which dtype autocast runs the networks in, for training and sampling.

`auto` (the default) picks bf16 where the hardware computes it faster and fp32 elsewhere:
- CUDA: bf16 where the GPU supports it (Ampere and later), else fp32;
- CPU: bf16 only where the processor has bf16 matrix instructions (AMX-BF16 or
  AVX512-BF16) and, when a timer is given, a measurement on the actual network confirms it.
  Without those instructions oneDNN converts bf16 to fp32 and back around every
  operation, which is slower than plain fp32, so such CPUs stay in fp32.
Weights, gradients, optimizer state and EMAs stay fp32 either way: autocast only casts the
inputs of matmuls and convolutions, so bf16 changes speed, not what is stored.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from defect_gen.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# bf16 must beat fp32 by this factor to be chosen: a tie is not worth the rounding.
MIN_SPEEDUP = 1.1


def cpu_bf16_instructions() -> str | None:
    """'AMX-BF16', 'AVX512-BF16' or None: the processor's bf16 matrix instructions."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is not None and amx():
        return "AMX-BF16"
    if avx is not None and avx():
        return "AVX512-BF16"
    return None


def resolve_autocast(name: str, device: torch.device,
                     timer: Callable[[torch.dtype | None], float] | None = None,
                     what: str = "train.precision") -> tuple[torch.dtype | None, str]:
    """(autocast dtype or None for fp32, a line saying why) for precision `name` on `device`.

    timer(dtype) -> seconds of a representative piece of work in that dtype (None = fp32);
    with `auto` on a CPU with bf16 instructions, bf16 is kept only if it is at least
    MIN_SPEEDUP times faster there.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"{what}: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "fp32":
        return None, "fp32 (asked for)"
    if device.type == "cuda":
        return _cuda(name, what)
    if name == "fp16":
        raise ConfigError(f"{what} fp16 is for CUDA GPUs; on a CPU use bf16 or fp32")
    instructions = cpu_bf16_instructions()
    if name == "bf16":
        note = f"this CPU has {instructions}" if instructions else "this CPU has no bf16 instructions: slower than fp32"
        return torch.bfloat16, f"bf16 (asked for; {note})"
    if instructions is None:
        return None, "fp32 (auto: this CPU has no bf16 matrix instructions)"
    if timer is None:
        return torch.bfloat16, f"bf16 (auto: this CPU has {instructions})"
    fp32_s, bf16_s = timer(None), timer(torch.bfloat16)
    speedup = fp32_s / max(bf16_s, 1e-12)
    measured = f"{bf16_s * 1e3:.0f} ms in bf16 against {fp32_s * 1e3:.0f} ms in fp32"
    if speedup >= MIN_SPEEDUP:
        return torch.bfloat16, f"bf16 (auto: this CPU has {instructions}; {measured})"
    return None, f"fp32 (auto: this CPU has {instructions}, but {measured})"


def _cuda(name: str, what: str) -> tuple[torch.dtype | None, str]:
    bf16_ok = torch.cuda.is_bf16_supported()
    if name == "fp16":
        return torch.float16, "fp16 (asked for; with a gradient scaler)"
    if name == "bf16" and not bf16_ok:
        raise ConfigError(f"{what} bf16 was asked for, but this GPU does not support bfloat16 (use fp16)")
    if bf16_ok:
        return torch.bfloat16, "bf16 (" + ("asked for" if name == "bf16" else "auto: the GPU supports it") + ")"
    return None, "fp32 (auto: the GPU does not support bf16)"


def _best_time(run: Callable[[], None], device: torch.device, repeats: int) -> float:
    """Best wall time of `repeats` calls of run() after one warm-up call (which builds the
    kernels for the dtype), with the global RNG restored afterwards (dropout draws from it)."""
    best = float("inf")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for i in range(repeats + 1):
            start = time.perf_counter()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:
                best = min(best, time.perf_counter() - start)
    return best


def time_forward_backward(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int = 2,
                          ) -> Callable[[torch.dtype | None], float]:
    """A timer for resolve_autocast: the best of `repeats` forward + backward passes of
    `model` on (x, t) in the given autocast dtype. Leaves no gradients behind and the global
    RNG as it found it."""
    def timer(dtype: torch.dtype | None) -> float:
        def run() -> None:
            with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = model(x, t)
            out.float().square().mean().backward()

        best = _best_time(run, x.device, repeats)
        model.zero_grad(set_to_none=True)
        return best

    return timer


def time_forward(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int = 2,
                 ) -> Callable[[torch.dtype | None], float]:
    """A timer for resolve_autocast at sampling: the best of `repeats` forward passes in
    inference mode (the global RNG left as it was)."""
    @torch.inference_mode()
    def timer(dtype: torch.dtype | None) -> float:
        def run() -> None:
            with torch.autocast(x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x, t)

        return _best_time(run, x.device, repeats)

    return timer
