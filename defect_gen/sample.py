"""Two-stage generation of image + mask pairs, from checkpoints to PNGs and a manifest.

The large-RF model denoises from T-1 down to and including `step_inference`; the small-RF
model continues the same x_t from `step_inference - 1` to 0. With `--steps N` the sequence is
respaced, but the switch stays in original timestep units (it is inserted into the grid).

Per sample NAME, in SAMPLE_DIR:
    images/NAME.png        RGB
    masks/NAME.png         uint8 class index (0 = background, 1..K in data.classes order)
    masks_color/NAME.png   the mask in the fixed palette of defect_gen.masks.PALETTE
    manifest.jsonl         one row: name, seed, classes present, defect pixels per class
and preview.png, a grid of image | colour mask | overlay for the first pairs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from defect_gen import checkpoint as ckpt_lib
from defect_gen import dist_util
from defect_gen.config import Config, from_dict
from defect_gen.errors import ConfigError, DefectGenError
from defect_gen.gaussian_diffusion import GaussianDiffusion
from defect_gen.io import save_pair_grid, write_png
from defect_gen.masks import class_pixel_counts, colorize, image_to_uint8, mask_to_index, split_image_mask
from defect_gen.respace import space_timesteps, split_at, with_switch
from defect_gen.samplers import SAMPLERS, randn_rows, two_stage_denoiser
from defect_gen.unet import build_unet


@dataclass
class SampleSettings:
    sample_dir: str
    step_inference: int
    num_samples: int = 16
    batch_size: int = 8
    seed: int = 0
    steps: int | None = None  # None = every timestep
    sampler: str = "ddpm"
    eta: float = 0.0  # DDIM only
    overwrite: bool = False
    raw_weights: bool = False
    preview: int = 16  # pairs in preview.png


@dataclass
class LoadedModel:
    model: torch.nn.Module
    cfg: Config
    path: str


def load_model(path: str, device: torch.device, raw_weights: bool = False) -> LoadedModel:
    """A model from one of our checkpoints (a .pt file or a run folder), EMA weights by default."""
    path = ckpt_lib.resolve(path)
    ckpt = ckpt_lib.load(path)
    if ckpt.get("format") != ckpt_lib.FORMAT or "config" not in ckpt:
        raise ConfigError(f"{path} is not a defect-gen checkpoint (no 'format'/'config' entries)")
    cfg = from_dict(ckpt["config"])
    model = build_unet(cfg.model, cfg.num_defect)
    weights = ckpt_lib.ema_weights(ckpt, path, raw=raw_weights)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{path}: weights do not fit its config; missing keys: {missing[:5]}, "
                          f"unexpected keys: {unexpected[:5]}")
    return LoadedModel(model.to(device).eval(), cfg, path)


def check_pair(large: LoadedModel | None, small: LoadedModel | None) -> Config:
    """The two models must agree on everything the shared chain depends on."""
    models = [m for m in (large, small) if m is not None]
    ref = models[0]
    for other in models[1:]:
        for what, a, b in (("image_size", ref.cfg.model.image_size, other.cfg.model.image_size),
                           ("num_defect", ref.cfg.num_defect, other.cfg.num_defect),
                           ("diffusion.num_timesteps", ref.cfg.diffusion.num_timesteps,
                            other.cfg.diffusion.num_timesteps),
                           ("diffusion.schedule", ref.cfg.diffusion.schedule, other.cfg.diffusion.schedule)):
            if a != b:
                raise ConfigError(f"the two models disagree on {what}: {a} in {ref.path}, {b} in {other.path}")
    return ref.cfg


def timesteps_for(num_timesteps: int, steps: int | None, switch: int) -> list[int]:
    return with_switch(space_timesteps(num_timesteps, steps), switch, num_timesteps)


def _prepare_dir(sample_dir: str, overwrite: bool) -> None:
    manifest = os.path.join(sample_dir, "manifest.jsonl")
    images = os.path.join(sample_dir, "images")
    if not overwrite and (os.path.exists(manifest) or (os.path.isdir(images) and os.listdir(images))):
        raise DefectGenError(f"{sample_dir} already holds generated pairs; pass --overwrite to replace them "
                             f"or choose another --sample_dir")
    if overwrite:  # asked for explicitly: clear the previous run's pairs so none linger
        for sub in ("images", "masks", "masks_color"):
            folder = os.path.join(sample_dir, sub)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                if name.endswith(".png"):
                    os.remove(os.path.join(folder, name))
        for name in ("manifest.jsonl", "preview.png"):
            if os.path.exists(os.path.join(sample_dir, name)):
                os.remove(os.path.join(sample_dir, name))
    for sub in ("images", "masks", "masks_color"):
        try:
            os.makedirs(os.path.join(sample_dir, sub), exist_ok=True)
        except OSError as exc:
            raise DefectGenError(f"cannot create output folder {os.path.join(sample_dir, sub)}: "
                                 f"{exc.strerror}") from None


def _write_pair(sample_dir: str, name: str, seed: int, x: torch.Tensor, classes: list[str]) -> tuple:
    image, mask_channels = split_image_mask(x)
    rgb = image_to_uint8(image)
    index = mask_to_index(mask_channels).to(torch.uint8).cpu().numpy()
    write_png(os.path.join(sample_dir, "images", f"{name}.png"), rgb)
    write_png(os.path.join(sample_dir, "masks", f"{name}.png"), index)
    write_png(os.path.join(sample_dir, "masks_color", f"{name}.png"), colorize(index))
    counts = class_pixel_counts(index, len(classes))
    row = {"name": name, "seed": seed, "classes": [classes[c - 1] for c in sorted(counts)],
           "defect_pixels": {classes[c - 1]: n for c, n in sorted(counts.items())}}
    return row, rgb, index


def generate(large: LoadedModel | None, small: LoadedModel | None, s: SampleSettings,
             device: torch.device, progress: bool = True) -> list[dict]:
    """Sample s.num_samples pairs into s.sample_dir; returns the manifest rows."""
    cfg = check_pair(large, small)
    diffusion = GaussianDiffusion.from_config(cfg.diffusion)
    T = cfg.diffusion.num_timesteps
    if not 0 <= s.step_inference <= T:
        raise ConfigError(f"--step_inference must be in [0, {T}], got {s.step_inference}")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
    timesteps = timesteps_for(T, s.steps, s.step_inference)
    large_steps, small_steps = split_at(timesteps, s.step_inference)
    if (large_steps and large is None) or (small_steps and small is None):
        raise ConfigError(f"--step_inference {s.step_inference} needs the "
                          f"{'large' if large is None else 'small'}-RF model, which was not given")
    denoise = two_stage_denoiser(large and diffusion.denoiser(large.model),
                                 small and diffusion.denoiser(small.model), s.step_inference)
    dinfo = dist_util.info()
    if dinfo.is_main:
        _prepare_dir(s.sample_dir, s.overwrite)
    dist_util.barrier()
    progress = progress and dinfo.is_main
    # Under torchrun each rank takes a contiguous slice of the sample indices: no duplicate, no gap.
    lo, hi = (s.num_samples * dinfo.rank) // dinfo.world_size, (s.num_samples * (dinfo.rank + 1)) // dinfo.world_size
    shape = (3 + cfg.num_defect + 1, cfg.model.image_size, cfg.model.image_size)
    rows, preview = [], []
    start = time.perf_counter()
    manifest = open(os.path.join(s.sample_dir, "manifest.jsonl"), "a", encoding="utf-8")
    bar = tqdm(total=hi - lo, desc="sampling", unit="pair", disable=not progress)
    with manifest, bar, torch.inference_mode():
        for first in range(lo, hi, s.batch_size):
            seeds = [s.seed + i for i in range(first, min(first + s.batch_size, hi))]
            gens = [torch.Generator(device).manual_seed(seed) for seed in seeds]
            x = randn_rows(torch.empty((len(seeds), *shape), device=device), gens)
            x = SAMPLERS[s.sampler](denoise, x, timesteps, diffusion, generator=gens, eta=s.eta,
                                    progress=progress)
            for seed, xi in zip(seeds, x.float().cpu()):
                row, rgb, index = _write_pair(s.sample_dir, f"sample_{seed:06d}", seed, xi, cfg.data.classes)
                manifest.write(json.dumps(row) + "\n")
                manifest.flush()
                rows.append(row)
                if len(preview) < s.preview:
                    preview.append((rgb, index))
            bar.update(len(seeds))
    dist_util.barrier()
    if preview and dinfo.is_main:
        save_pair_grid(os.path.join(s.sample_dir, "preview.png"), [p[0] for p in preview], [p[1] for p in preview])
    elapsed = time.perf_counter() - start
    if progress:
        tqdm.write(f"{len(rows)} pairs in {elapsed:.1f} s ({len(rows) / elapsed:.2f} pairs/s), "
                   f"{len(timesteps)} steps ({len(large_steps)} large, {len(small_steps)} small)")
    return rows
