"""Gaussian diffusion: noise schedules, the forward process, parameterisations and the loss.

Notation (Ho et al. 2020): alpha_bar_t = prod_{s<=t} (1 - beta_s);
x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps. Timesteps are integers 0..T-1.
The network may predict x0 (Defect-Gen's choice), eps, or v = sqrt(ab) eps - sqrt(1-ab) x0;
samplers only ever see x0 through `GaussianDiffusion.denoiser`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from defect_gen.config import DiffusionConfig

# (x_t, t) -> predicted x0. t is a plain int shared by the whole batch: samplers step all rows
# together, and choosing a network by t (two-stage sampling) then needs no device sync.
Denoiser = Callable[[torch.Tensor, int], torch.Tensor]


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Nichol & Dhariwal (2021) cosine schedule, in float64, betas clipped at max_beta."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
             for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """Ho et al. (2020) linear schedule, rescaled so any T spans the same noise range as T=1000."""
    scale = 1000 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def make_betas(schedule: str, num_timesteps: int) -> torch.Tensor:
    if schedule == "cosine":
        return cosine_betas(num_timesteps)
    if schedule == "linear":
        return linear_betas(num_timesteps)
    raise ValueError(f"unknown schedule {schedule!r}; expected cosine or linear")


class GaussianDiffusion:
    """The forward process and the conversions between x0, eps and v for one schedule."""

    def __init__(self, betas: torch.Tensor, predict: str = "x0", mask_loss_weight: float = 1.0,
                 clean_mask: bool = False):
        if predict not in ("x0", "eps", "v"):
            raise ValueError(f"predict must be x0, eps or v, got {predict!r}")
        self.betas = betas.to(torch.float64)
        self.num_timesteps = len(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0)
        self.predict = predict
        self.mask_loss_weight = mask_loss_weight
        self.clean_mask = clean_mask  # mask channels given clean, never noised (see DiffusionConfig)

    @classmethod
    def from_config(cls, cfg: DiffusionConfig) -> "GaussianDiffusion":
        return cls(make_betas(cfg.schedule, cfg.num_timesteps), cfg.predict, cfg.mask_loss_weight, cfg.clean_mask)

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """alpha_bar at integer timesteps t (B,), shaped to broadcast against `like`.

        t = -1 means "before step 0", i.e. clean data: alpha_bar = 1.
        """
        ab = torch.cat([self.alphas_cumprod.new_ones(1), self.alphas_cumprod]).to(like.device)
        out = ab[t.long() + 1].to(like.dtype)
        return out.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def x0_from_output(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.predict == "x0":
            return out
        ab = self.alpha_bar(t, x_t)
        if self.predict == "eps":
            return (x_t - (1 - ab).sqrt() * out) / ab.sqrt()
        return ab.sqrt() * x_t - (1 - ab).sqrt() * out  # v

    def eps_from_x0(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alpha_bar(t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.predict == "x0":
            return x0
        if self.predict == "eps":
            return noise
        ab = self.alpha_bar(t, x0)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def denoiser(self, model: torch.nn.Module, clip: bool = True) -> Denoiser:
        """Wrap a network as (x_t, t) -> x0, clipped to [-1, 1] (images and masks both live there)."""

        def denoise(x_t: torch.Tensor, t: int) -> torch.Tensor:
            t_batch = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
            x0 = self.x0_from_output(model(x_t, t_batch), x_t, t_batch)
            return x0.clamp(-1, 1) if clip else x0

        return denoise

    def alpha_bar_at(self, t: int) -> float:
        """alpha_bar at one integer timestep as a Python float; t = -1 gives 1 (clean data)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def sample_t(self, batch: int, t_min: int, t_max: int, device, generator=None) -> torch.Tensor:
        """Uniform integer timesteps in the training window [t_min, t_max)."""
        return torch.randint(t_min, t_max, (batch,), device=device, generator=generator)

    def training_losses(self, model: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-sample MSE between the network output and its target (y: a class condition,
        for class-conditional networks; see `unet.class_condition`).

        The first three channels are RGB, the rest the one-hot mask; the mask's squared
        error is weighted by `mask_loss_weight` (1.0 = plain MSE over all channels, as published).
        With `clean_mask` the mask channels go in clean and are the condition, not a target:
        the loss is the RGB error alone (`mse_mask` reads 0).
        """
        if noise is None:
            noise = torch.randn_like(x0)
        x_t = self.q_sample(x0, t, noise)
        if self.clean_mask:
            x_t = torch.cat([x_t[:, :3], x0[:, 3:]], dim=1)
        out = model(x_t, t) if y is None else model(x_t, t, y)
        sq = (out.float() - self.target(x0, noise, t).float()) ** 2
        mse_rgb = sq[:, :3].mean(dim=(1, 2, 3))
        if self.clean_mask:
            return {"loss": mse_rgb, "mse_rgb": mse_rgb, "mse_mask": torch.zeros_like(mse_rgb)}
        mse_mask = sq[:, 3:].mean(dim=(1, 2, 3))
        n_rgb, n_mask = 3, x0.shape[1] - 3
        loss = (n_rgb * mse_rgb + self.mask_loss_weight * n_mask * mse_mask) / (n_rgb + n_mask)
        return {"loss": loss, "mse_rgb": mse_rgb, "mse_mask": mse_mask}


# Timestep sequences (respacing) and training windows
def space_timesteps(num_timesteps: int, steps: int | None = None) -> list[int]:
    """`steps` evenly spaced timesteps from T-1 down to 0 (both included), descending.

    None or steps >= T gives every timestep.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if steps is None or steps >= num_timesteps:
        return list(range(num_timesteps - 1, -1, -1))
    if steps == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (steps - 1)
    return sorted({round(i * stride) for i in range(steps)}, reverse=True)


def with_switch(timesteps: list[int], switch: int, num_timesteps: int) -> list[int]:
    """Add S and S-1 to the grid so that the hand-over is the full chain's.

    The large model serves t >= S and the small one t < S. In the full chain the large
    model's last step goes from x_S to x_{S-1} and the small model continues from x_{S-1}.
    A respaced grid rarely holds both; without them the large model would stop above S or
    hand over a state further down (x_183 for 50 steps and S = 200). So both are inserted
    where missing: a grid of N steps becomes N, N+1 or N+2 (`sample` reports the count).
    S = 0 (large only) and S = T (small only) change nothing.
    """
    if 0 < switch < num_timesteps:
        timesteps = sorted(set(timesteps) | {switch, switch - 1}, reverse=True)
    return timesteps


def split_at(timesteps: list[int], switch: int) -> tuple[list[int], list[int]]:
    """(steps for the large model: t >= switch, steps for the small one: t < switch)."""
    return [t for t in timesteps if t >= switch], [t for t in timesteps if t < switch]


def window(num_timesteps: int, t_min: int = 0, t_max: int | None = None) -> tuple[int, int]:
    """The training window [t_min, t_max) with None meaning T."""
    t_max = num_timesteps if t_max is None else t_max
    if not 0 <= t_min < t_max <= num_timesteps:
        raise ValueError(f"need 0 <= t_min < t_max <= {num_timesteps}, got [{t_min}, {t_max})")
    return t_min, t_max
