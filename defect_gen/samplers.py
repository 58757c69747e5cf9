"""Samplers: ancestral DDPM and DDIM over any descending sequence of timesteps.

Every sampler has the same signature

    sampler(denoise, x, timesteps, diffusion, *, generator=None, eta=..., callback=None, progress=False)

where `denoise(x_t, t) -> x0` is a network wrapped by `GaussianDiffusion.denoiser` (or any
stand-in), `x` is x_t at `timesteps[0]` (pure noise when that is T-1, or a partly denoised
sample to continue from), and the result is x at "t = -1", the clean sample. Because the
sequence is in original timestep units, respacing is just a shorter sequence, and
two-stage sampling is a denoiser that picks a network by t.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from defect_gen.gaussian_diffusion import Denoiser, GaussianDiffusion

Generator = torch.Generator | Sequence[torch.Generator] | None


def randn_rows(like: torch.Tensor, generator: Generator) -> torch.Tensor:
    """Standard normal noise shaped like `like`.

    With a list of generators, row i draws from generator i alone, so a sample depends only
    on its own seed and not on which batch it shared or its position in it.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)
    if len(generator) != like.shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {like.shape[0]}")
    return torch.stack([torch.randn(like.shape[1:], generator=g, device=like.device, dtype=like.dtype)
                        for g in generator])


def _steps(timesteps: Sequence[int], progress: bool, desc: str):
    """Pairs (t, t_prev) along the sequence, the last one going to -1 (clean data)."""
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {ts[:5]}...")
    pairs = list(zip(ts, ts[1:] + [-1]))
    return tqdm(pairs, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def sample_ddpm(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
                *, generator: Generator = None, eta: float = 1.0, callback: Callable | None = None,
                progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020): x_{t'} ~ q(x_{t'} | x_t, x0_hat), the true posterior.

    Over a respaced sequence the step t -> t' uses beta = 1 - alpha_bar_t / alpha_bar_t', as in
    Nichol & Dhariwal's respacing. `eta` is accepted for a uniform signature and ignored.
    """
    for t, t_prev in _steps(timesteps, progress, "ddpm"):
        x0 = denoise(x, t)
        ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t_prev)
        beta = 1.0 - ab / ab_prev
        coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab)
        coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
        x = coef_x0 * x0 + coef_xt * x
        if t_prev >= 0:
            var = beta * (1.0 - ab_prev) / (1.0 - ab)
            x = x + math.sqrt(var) * randn_rows(x, generator)
        if callback is not None:
            callback(t=t, x=x, x0=x0)
    return x


@torch.no_grad()
def sample_ddim(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
                *, generator: Generator = None, eta: float = 0.0, callback: Callable | None = None,
                progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021): x_{t'} = sqrt(ab') x0 + sqrt(1 - ab' - s^2) eps + s z.

    s = eta * sqrt((1 - ab') / (1 - ab) * (1 - ab / ab')); eta = 0 is deterministic, eta = 1
    has the same marginals as ancestral DDPM.
    """
    for t, t_prev in _steps(timesteps, progress, "ddim"):
        x0 = denoise(x, t)
        ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t_prev)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
        sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0 and t_prev >= 0:
            x = x + sigma * randn_rows(x, generator)
        if callback is not None:
            callback(t=t, x=x, x0=x0)
    return x


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim}


def two_stage_denoiser(large: Denoiser, small: Denoiser, switch: int) -> Denoiser:
    """Defect-Gen's hand-over: the large-RF model for t >= switch, the small-RF one below.

    Both continue the same chain x_t. (The published code instead let the large model finish
    a whole sample and re-noised/denoised it with the small one.) switch = 0: large only;
    switch = T: small only.
    """

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return large(x, t) if t >= switch else small(x, t)

    return denoise
