"""The training loop: batch -> loss -> AdamW step -> EMA, with checkpoints and auto-resume.

A run lives in one folder (WORK_DIR): `config.yaml` (the resolved config), `checkpoint/`,
`metrics.jsonl`. Running the same command again resumes from the latest checkpoint with the
model, EMA, optimizer, step and every RNG state restored, so the continuation draws the same
batches, timesteps and noise an uninterrupted run would have.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from defect_gen import checkpoint as ckpt_lib
from defect_gen import dist_util
from defect_gen.config import Config, to_dict, to_yaml
from defect_gen.datasets.dataset import DefectDataset
from defect_gen.errors import CheckpointError, DefectGenError
from defect_gen.gaussian_diffusion import GaussianDiffusion
from defect_gen.io import save_pair_grid
from defect_gen.masks import image_to_uint8, mask_to_index, split_image_mask
from defect_gen.respace import space_timesteps, window
from defect_gen.samplers import sample_ddim
from defect_gen.unet import build_unet


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DefectGenError(f"device {name!r} was asked for, but no CUDA GPU is available (use cpu or auto)")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DefectGenError(f"unknown device {name!r}; expected auto, cpu, cuda or cuda:N") from None


class TrainLoop:
    def __init__(self, cfg: Config, work_dir: str, device: torch.device, progress: bool = True):
        self.cfg, self.work_dir, self.device = cfg, work_dir, device
        self.dist = dist_util.info()
        self.progress = progress and self.dist.is_main
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model = build_unet(cfg.model, cfg.num_defect).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False).eval()
        self.ddp = (DistributedDataParallel(self.model, device_ids=[device.index] if device.type == "cuda" else None)
                    if self.dist.world_size > 1 else self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.diffusion = GaussianDiffusion.from_config(cfg.diffusion)
        self.t_window = window(cfg.diffusion.num_timesteps, cfg.diffusion.t_min, cfg.diffusion.t_max)
        self.data = DefectDataset(cfg.data, cfg.model.image_size, progress=self.progress)
        # Separate streams, offset per rank so that ranks see different batches.
        self.data_gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + self.dist.rank)
        self.noise_gen = torch.Generator(device).manual_seed(cfg.train.seed * 1000 + 500 + self.dist.rank)
        self.step = 0
        self._resume()

    # -- checkpoints -------------------------------------------------------------------

    def _state(self) -> dict:
        return {
            "config": to_dict(self.cfg), "step": self.step, "model": self.model.state_dict(),
            "ema": {str(self.cfg.train.ema_rate): self.ema.state_dict()}, "optimizer": self.opt.state_dict(),
            "scaler": None, "rng": {"data": self.data_gen.get_state(), "noise": self.noise_gen.get_state()},
        }

    def _resume(self) -> None:
        path = ckpt_lib.latest(self.work_dir)
        if path is None:
            return
        state = ckpt_lib.load(path)
        if state.get("config", {}).get("model") != to_dict(self.cfg)["model"]:
            raise CheckpointError(f"{path} was trained with a different model config than "
                                  f"{os.path.join(self.work_dir, 'config.yaml')}; use a new --work_dir")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(next(iter(state["ema"].values())))
        self.opt.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["rng"]["data"])
        self.noise_gen.set_state(state["rng"]["noise"])
        self.step = int(state["step"])
        if self.progress:
            tqdm.write(f"resumed from {path} at step {self.step}")

    def save(self) -> str | None:
        path = None
        if self.dist.is_main:
            path = ckpt_lib.save_training(self.work_dir, self._state(), self.cfg.train.keep_last)
        dist_util.barrier()
        return path

    # -- one step ------------------------------------------------------------------------

    def _lr(self) -> float:
        warm = self.cfg.train.warmup_steps
        return self.cfg.train.lr * min(1.0, (self.step + 1) / warm) if warm > 0 else self.cfg.train.lr

    def train_step(self) -> dict[str, float]:
        tcfg = self.cfg.train
        x0 = self.data.batch(tcfg.batch_size, self.data_gen).to(self.device, non_blocking=True)
        t = self.diffusion.sample_t(x0.shape[0], *self.t_window, self.device, generator=self.noise_gen)
        noise = torch.randn(x0.shape, generator=self.noise_gen, device=self.device)
        losses = self.diffusion.training_losses(self.ddp, x0, t, noise)
        loss = losses["loss"].mean()
        for group in self.opt.param_groups:
            group["lr"] = self._lr()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        stats = torch.stack([loss.detach(), losses["mse_rgb"].mean().detach(),
                             losses["mse_mask"].mean().detach(), grad_norm])
        stats = dist_util.mean_across_ranks(stats).tolist()
        if not all(math.isfinite(v) for v in stats[:1]):
            raise DefectGenError(f"training loss is {stats[0]} at step {self.step + 1}: stopped without "
                                 f"updating; the last good checkpoint is {ckpt_lib.latest(self.work_dir)}")
        self.opt.step()
        self._update_ema()
        self.step += 1
        return dict(zip(("loss", "mse_rgb", "mse_mask", "grad_norm"), stats))

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, list(self.model.parameters()), 1.0 - self.cfg.train.ema_rate)

    # -- preview grids -------------------------------------------------------------------

    @torch.no_grad()
    def preview(self, n: int = 8, steps: int = 50) -> str:
        """Grid of what the EMA model makes over its own timestep window [t_min, t_max).

        A model trained on the whole range samples from pure noise; one trained on a window
        that stops short of T (a small-RF model) starts from real pairs noised to t_max - 1,
        exactly the kind of input it will get from the large model. The sampler's output after
        the step at t_min is the model's x0 prediction there.
        """
        t_min, t_max = self.t_window
        T = self.cfg.diffusion.num_timesteps
        ts = [t for t in space_timesteps(T, steps) if t_min <= t < t_max] or [t_max - 1]
        gen = torch.Generator(self.device).manual_seed(self.cfg.train.seed)
        noise = torch.randn((n, *self.data.data.shape[1:]), generator=gen, device=self.device)
        if ts[0] == T - 1:
            x = noise
        else:
            real = self.data.data[:n].to(self.device)
            noise = noise[: len(real)]
            x = self.diffusion.q_sample(real, torch.full((len(real),), ts[0], device=self.device), noise)
        out = sample_ddim(self.diffusion.denoiser(self.ema), x, ts, self.diffusion, eta=0.0)
        image, mask = split_image_mask(out.float().cpu())
        path = os.path.join(self.work_dir, "samples", f"step_{self.step:08d}.png")
        save_pair_grid(path, list(image_to_uint8(image)), list(mask_to_index(mask).to(torch.uint8).numpy()))
        return path

    # -- the loop --------------------------------------------------------------------------

    def _log(self, row: dict) -> None:
        if self.dist.is_main:
            with open(os.path.join(self.work_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def run(self) -> str | None:
        tcfg = self.cfg.train
        if self.dist.is_main:
            os.makedirs(self.work_dir, exist_ok=True)
            with open(os.path.join(self.work_dir, "config.yaml"), "w", encoding="utf-8") as f:
                f.write(to_yaml(self.cfg))
        bar = tqdm(total=tcfg.max_steps, initial=self.step, desc="train", disable=not self.progress, unit="step")
        last = None
        tick, tick_step = time.perf_counter(), self.step
        while self.step < tcfg.max_steps:
            stats = self.train_step()
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}")
            if self.step % tcfg.log_every == 0 or self.step == tcfg.max_steps:
                now = time.perf_counter()
                ips = (self.step - tick_step) * tcfg.batch_size * self.dist.world_size / max(now - tick, 1e-9)
                self._log({"step": self.step, **stats, "lr": self._lr(), "images_per_s": ips})
                tick, tick_step = now, self.step
            if self.step % tcfg.save_every == 0 or self.step == tcfg.max_steps:
                last = self.save() or last
            if tcfg.sample_every and self.dist.is_main and (
                    self.step % tcfg.sample_every == 0 or self.step == tcfg.max_steps):
                bar.set_postfix_str(f"preview {self.preview()}")
        bar.close()
        return last or ckpt_lib.latest(self.work_dir)
