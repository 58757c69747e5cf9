"""Samplers: ancestral DDPM, DDIM and DPM-Solver++(2M) over any descending sequence of timesteps.

Every sampler has the same signature (k-diffusion style)

    sampler(denoise, x, timesteps, diffusion, *, generator=None, eta=..., callback=None, progress=False)

where `denoise(x_t, t) -> x0` is a network wrapped by `GaussianDiffusion.denoiser` (or any
stand-in), `x` is x_t at `timesteps[0]` (pure noise when that is T-1, or a partly denoised
sample to continue from), and the result is x at "t = -1", the clean sample. Because the
sequence is in original timestep units, respacing is just a shorter sequence, and
two-stage sampling is a denoiser that picks a network by t.

Which to use: `dpmpp_2m` at 20 steps for quick, deterministic results (closer to the
1000-step DDIM chain than DDIM at 20 steps; README has the figures), `ddim` at eta 0 to match the
published checkpoints' own step, `ddpm` (ancestral, the default for our checkpoints) over
the full chain for the most faithful samples.

Conditioning builds on the same pieces: `known_region_sampler` returns a sampler with that
signature which holds part of x to given clean values (replacement, as in RePaint): after
every step the known part is replaced by a fresh draw of q(x_t' | known). It serves both
"generate an image for this mask" (the mask channels are known) and inpainting (the mask
channels and the RGB outside the defect are known), with RePaint's resampling (jump back up
`jump_length` steps, `resample` times) to harmonise the generated part with the known one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from defect_gen.core.diffusion import Denoiser, GaussianDiffusion

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


def _check_descending(timesteps: Sequence[int]) -> list[int]:
    ts = [int(t) for t in timesteps]
    if any(a <= b for a, b in zip(ts, ts[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {ts[:5]}...")
    return ts


def _steps(timesteps: Sequence[int], progress: bool, desc: str):
    """Pairs (t, t_prev) along the sequence, the last one going to -1 (clean data)."""
    ts = _check_descending(timesteps)
    pairs = list(zip(ts, ts[1:] + [-1]))
    return tqdm(pairs, desc=desc, disable=not progress, leave=False)


def ddpm_step(denoise: Denoiser, x: torch.Tensor, t: int, t_prev: int, diffusion: GaussianDiffusion,
              generator: Generator = None, eta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One ancestral step t -> t_prev: x_{t'} ~ q(x_{t'} | x_t, x0_hat). Returns (x_{t'}, x0_hat).

    Over a respaced sequence the step uses beta = 1 - alpha_bar_t / alpha_bar_t', as in
    Nichol & Dhariwal's respacing; t_prev = -1 (clean data) adds no noise. `eta` is ignored.
    """
    x0 = denoise(x, t)
    ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t_prev)
    beta = 1.0 - ab / ab_prev
    coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab)
    coef_xt = math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab)
    x = coef_x0 * x0 + coef_xt * x
    if t_prev >= 0:
        var = beta * (1.0 - ab_prev) / (1.0 - ab)
        x = x + math.sqrt(var) * randn_rows(x, generator)
    return x, x0


def ddim_step(denoise: Denoiser, x: torch.Tensor, t: int, t_prev: int, diffusion: GaussianDiffusion,
              generator: Generator = None, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One DDIM step t -> t_prev: x_{t'} = sqrt(ab') x0 + sqrt(1 - ab' - s^2) eps + s z.

    s = eta * sqrt((1 - ab') / (1 - ab) * (1 - ab / ab')). Returns (x_{t'}, x0_hat).
    """
    x0 = denoise(x, t)
    ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t_prev)
    eps = (x - math.sqrt(ab) * x0) / math.sqrt(1.0 - ab)
    sigma = eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev))
    x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0)) * eps
    if sigma > 0 and t_prev >= 0:
        x = x + sigma * randn_rows(x, generator)
    return x, x0


def _log_snr(ab: float) -> float:
    """lambda = log(alpha / sigma) for alpha_bar = ab."""
    return 0.5 * (math.log(ab) - math.log1p(-ab))


class DPMSolverPP2MStep:
    """DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095, Algorithm 2) as a step t -> t_prev.

    Data prediction in log-SNR time lambda = log(alpha / sigma), alpha = sqrt(ab),
    sigma = sqrt(1 - ab), h = lambda_t' - lambda_t:

        x_{t'} = (sigma_t' / sigma_t) x_t - alpha_t' (e^{-h} - 1) D
        D = x0_t                                          first order (= DDIM, eta 0)
        D = (1 + 1/(2r)) x0_t - 1/(2r) x0_{t_last},  r = h_last / h      second order

    It is multistep: one network call per step, the previous step's x0 supplying the second
    order. So it keeps state, and one instance serves one chain. The first step is first
    order, and so is any step that does not continue from where the previous one ended
    (after a RePaint jump back up the chain, the history belongs to another x), any step
    more than twice as long in lambda as the one before (the step after the two-stage
    switch's one-timestep S -> S-1, whose two x0 come from different networks), the step
    into t = 0 (the reference implementation's `lower_order_final`) and the step from t = 0
    to clean data (lambda = inf), which returns x0 (its `denoise_to_zero`). Otherwise the
    history runs straight through the switch: the denoiser changes networks, the chain of
    x does not.
    """

    def __init__(self) -> None:
        self._last: tuple[int, float, torch.Tensor] | None = None  # (t_prev, h, x0) of the previous step

    def __call__(self, denoise: Denoiser, x: torch.Tensor, t: int, t_prev: int, diffusion: GaussianDiffusion,
                 generator: Generator = None, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        if eta != 0:
            raise ValueError(f"dpmpp_2m is deterministic: eta must be 0, got {eta}")
        x0 = denoise(x, t)
        last, self._last = self._last, None
        if t_prev < 0:  # to clean data: alpha = 1, sigma = 0, e^{-h} = 0
            return x0, x0
        ab, ab_prev = diffusion.alpha_bar_at(t), diffusion.alpha_bar_at(t_prev)
        h = _log_snr(ab_prev) - _log_snr(ab)
        d = x0
        # Second order where the previous step ended here, with one exception each way:
        # - not into t = 0: that step crosses a long stretch of lambda (2.3 -> 5 at 20 steps,
        #   cosine), over which the extrapolated x0 overshoots; it is the reference code's
        #   lower_order_final (its last step goes to t_eps, our t = 0, whose x0 our final
        #   step to clean data returns);
        # - not after a step much shorter than this one (r < 1/2): the correction scales the
        #   x0 difference by 1/(2r). That is the step after the switch: S -> S-1 is one
        #   timestep, its two x0 come from the two networks, and their disagreement,
        #   amplified 25-fold at 20 steps, swamped the result.
        r = last[1] / h if last is not None and last[0] == t else 0.0
        if t_prev > 0 and r >= 0.5:
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * last[2]
        x = math.sqrt((1 - ab_prev) / (1 - ab)) * x - math.sqrt(ab_prev) * math.expm1(-h) * d
        self._last = (t_prev, h, x0)
        return x, x0


STEP_NAMES = ("ddpm", "ddim", "dpmpp_2m")


def make_step(name: str) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """A fresh step function for one chain: ddpm_step, ddim_step, or a DPMSolverPP2MStep
    (which keeps the previous x0, so it is never shared between chains)."""
    if name not in STEP_NAMES:
        raise ValueError(f"unknown sampler {name!r}; expected one of {', '.join(STEP_NAMES)}")
    return DPMSolverPP2MStep() if name == "dpmpp_2m" else {"ddpm": ddpm_step, "ddim": ddim_step}[name]


@torch.no_grad()
def run_chain(step: Callable[..., tuple[torch.Tensor, torch.Tensor]], denoise: Denoiser, x: torch.Tensor,
              timesteps: Sequence[int], diffusion: GaussianDiffusion, *, generator: Generator = None,
              eta: float = 0.0, callback: Callable | None = None, progress: bool = False,
              desc: str = "sampling") -> torch.Tensor:
    """The one chain runner behind every sampler: `step` from each t to the next, down to
    clean data; `callback(t=, x=, x0=)` after each step."""
    for t, t_prev in _steps(timesteps, progress, desc):
        x, x0 = step(denoise, x, t, t_prev, diffusion, generator, eta)
        if callback is not None:
            callback(t=t, x=x, x0=x0)
    return x


def sample_ddpm(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
                *, generator: Generator = None, eta: float = 1.0, callback: Callable | None = None,
                progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020): x_{t'} ~ q(x_{t'} | x_t, x0_hat), the true posterior.

    Over a respaced sequence the step t -> t' uses beta = 1 - alpha_bar_t / alpha_bar_t', as in
    Nichol & Dhariwal's respacing. `eta` is accepted for a uniform signature and ignored.
    """
    def step(d, x_t, t, t_prev, diff, g, _eta):  # the true posterior: no eta
        return ddpm_step(d, x_t, t, t_prev, diff, g)

    return run_chain(step, denoise, x, timesteps, diffusion, generator=generator,
                     callback=callback, progress=progress, desc="ddpm")


def sample_ddim(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
                *, generator: Generator = None, eta: float = 0.0, callback: Callable | None = None,
                progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021): x_{t'} = sqrt(ab') x0 + sqrt(1 - ab' - s^2) eps + s z.

    s = eta * sqrt((1 - ab') / (1 - ab) * (1 - ab / ab')); eta = 0 is deterministic, eta = 1
    has the same marginals as ancestral DDPM.
    """
    return run_chain(ddim_step, denoise, x, timesteps, diffusion, generator=generator, eta=eta, callback=callback,
                     progress=progress, desc="ddim")


def sample_dpmpp_2m(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
                    *, generator: Generator = None, eta: float = 0.0, callback: Callable | None = None,
                    progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): deterministic, second-order multistep,
    one network call per timestep; see `DPMSolverPP2MStep`. Closer to the 1000-step DDIM
    chain than DDIM at equal steps (README). `eta` must be 0; `generator` is unused.
    """
    outside = [t for t in timesteps if not 0 <= int(t) < diffusion.num_timesteps]
    if outside:
        raise ValueError(f"timestep {outside[0]} is outside [0, {diffusion.num_timesteps})")
    return run_chain(DPMSolverPP2MStep(), denoise, x, timesteps, diffusion, generator=generator, eta=eta,
                     callback=callback, progress=progress, desc="dpmpp_2m")


SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}


def two_stage_denoiser(large: Denoiser, small: Denoiser, switch: int) -> Denoiser:
    """Defect-Gen's hand-over: the large-RF model for t >= switch, the small-RF one below.

    Both continue the same chain x_t. (The published code instead let the large model finish
    a whole sample and re-noised/denoised it with the small one.) switch = 0: large only;
    switch = T: small only.
    """

    def denoise(x: torch.Tensor, t: int) -> torch.Tensor:
        return large(x, t) if t >= switch else small(x, t)

    return denoise


# ---------------------------------------------------------------------------------------
# Known regions: mask-conditioned generation and inpainting (replacement + RePaint)


@dataclass
class KnownRegion:
    """Part of the clean sample that is given: `values` (B, C, H, W) in model space, and
    `keep` (same shape, or broadcastable) = 1 where the value is known, 0 where it is generated.
    `clean` (like `keep`, optional) = 1 where a known value is imposed as it is at every t
    instead of noised to t: the mask channels of a clean-mask model, which were never noised
    in training."""

    values: torch.Tensor
    keep: torch.Tensor
    clean: torch.Tensor | None = None

    def impose(self, x: torch.Tensor, t: int, diffusion: GaussianDiffusion, generator: Generator) -> torch.Tensor:
        """x with its known part replaced by a fresh draw of q(x_t | values); t = -1: the values."""
        if t < 0:
            noisy = self.values
        else:
            ab = diffusion.alpha_bar_at(t)
            noisy = math.sqrt(ab) * self.values + math.sqrt(1.0 - ab) * randn_rows(x, generator)
            if self.clean is not None:
                noisy = self.clean * self.values + (1.0 - self.clean) * noisy
        return self.keep * noisy + (1.0 - self.keep) * x


def q_jump(x: torch.Tensor, t: int, t_next: int, diffusion: GaussianDiffusion, generator: Generator) -> torch.Tensor:
    """Forward diffusion from t up to t_next > t: x_{t_next} ~ q(x_{t_next} | x_t) (RePaint's jump back)."""
    ratio = diffusion.alpha_bar_at(t_next) / diffusion.alpha_bar_at(t)
    return math.sqrt(ratio) * x + math.sqrt(1.0 - ratio) * randn_rows(x, generator)


def repaint_path(n: int, jump_length: int = 10, resample: int = 1) -> list[int]:
    """RePaint's time schedule (Lugmayr et al. 2022) over positions in a sequence of n timesteps.

    Position n-1 is the first (noisiest) timestep, 0 the last, -1 the clean sample. Going down
    is a denoising step; going up is a forward jump. At every `jump_length`-th position the
    chain jumps back up `jump_length` positions, `resample - 1` times, before moving on, so
    each stretch is denoised `resample` times. resample = 1 is plain replacement: n-1 ... -1.
    """
    if jump_length < 1 or resample < 1:
        raise ValueError(f"jump_length and resample must be >= 1, got {jump_length}, {resample}")
    jumps = {k: resample - 1 for k in range(0, n - jump_length, jump_length)}
    k, path = n - 1, [n - 1]
    while k >= 0:
        k -= 1
        path.append(k)
        if jumps.get(k, 0) > 0:
            jumps[k] -= 1
            for _ in range(jump_length):
                k += 1
                path.append(k)
    return path


def known_region_sampler(step: str, known: KnownRegion, *, jump_length: int = 10, resample: int = 1):
    """A sampler with the uniform signature that keeps `known` (replacement, RePaint resampling).

    `step` names the update (ddpm, ddim or dpmpp_2m, see `make_step`). The known part starts as q(x_T | known)
    and is replaced after every denoising step, so at t = -1 it equals the given values
    exactly; the rest is generated in harmony with it. Forward jumps (resample > 1) noise the
    whole sample, as in RePaint. Every row draws the same amount of noise from its own
    generator whatever the batch, so a row still depends only on its own seed.
    """
    make_step(step)  # an unknown name fails here, not at the first batch

    @torch.no_grad()
    def sample(denoise: Denoiser, x: torch.Tensor, timesteps: Sequence[int], diffusion: GaussianDiffusion,
               *, generator: Generator = None, eta: float = 0.0, callback: Callable | None = None,
               progress: bool = False) -> torch.Tensor:
        ts = _check_descending(timesteps)
        n = len(ts)

        def time(k: int) -> int:  # position -> timestep (-1 = clean)
            return ts[n - 1 - k] if k >= 0 else -1

        path = repaint_path(n, jump_length, resample)
        step_fn = make_step(step)  # per chain: a multistep solver's history is this chain's
        x = known.impose(x, ts[0], diffusion, generator)
        moves = tqdm(list(zip(path, path[1:])), desc=f"{step}+known", disable=not progress, leave=False)
        for k, k_next in moves:
            t, t_next = time(k), time(k_next)
            if k_next > k:  # jump back up: re-noise, then denoise that stretch again
                x = q_jump(x, t, t_next, diffusion, generator)
                continue
            x, x0 = step_fn(denoise, x, t, t_next, diffusion, generator, eta)
            x = known.impose(x, t_next, diffusion, generator)
            if callback is not None:
                callback(t=t, x=x, x0=x0)
        return x

    return sample
