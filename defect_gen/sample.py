"""Two-stage generation of image + mask pairs, from checkpoints to PNGs and a manifest.

The large-RF model denoises from T-1 down to and including `step_inference`; the small-RF
model continues the same x_t from `step_inference - 1` to 0. With `--steps N` the sequence is
respaced, but the switch stays in original timestep units: S and S-1 are inserted into the
grid, so the small model starts from x_{S-1} as in the full chain (`respace.with_switch`).

Modes (they share the sampler, the seeds and the outputs):

    plain           image and mask generated together
    --classes a,b   rejection sampling: candidates are drawn until the mask holds every
                    listed class, at most --max-tries per pair
    --mask DIR      an image for each given mask: the mask channels are held to it
    --good DIR      defects painted into defect-free images: the RGB inside the defect
                    region is inpainted (RePaint resampling: --resample, --jump). The region
                    comes from --mask DIR, or from a mask the model generates first, moved to
                    a random spot (--place random, the default without --mask)

Seeds: candidate a of pair i uses seed --seed + i + a * num_samples, so the first candidate
of pair i has seed --seed + i and no two candidates of one run share a seed. The manifest
records the seed that made each pair; with the same mode and files it reproduces the pair
alone. Pair i is always named sample_<--seed + i>, whatever rank or retry made it.

Outputs: see `defect_gen.writers` (layouts, manifest.jsonl, preview.png).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from defect_gen import checkpoint as ckpt_lib
from defect_gen import conditioning, dist_util, fsutil, guidance, logs, writers
from defect_gen.config import Config, from_dict, from_published_yaml, load_config, read_yaml
from defect_gen.errors import CheckpointError, ConfigError, DefectGenError, short_repr
from defect_gen.gaussian_diffusion import Denoiser, GaussianDiffusion
from defect_gen.masks import image_to_uint8, mask_to_index, split_image_mask
from defect_gen.postprocess import accept, drop_small_regions
from defect_gen.respace import space_timesteps, split_at, window, with_switch
from defect_gen.samplers import SAMPLERS, KnownRegion, known_region_sampler, randn_rows, two_stage_denoiser
from defect_gen.unet import build_unet, receptive_field


@dataclass
class SampleSettings:
    sample_dir: str
    step_inference: int
    num_samples: int | None = 16  # None: one pair per --mask file (or --good image), else 16
    batch_size: int | None = 8  # None: sized to memory (CUDA), 8 elsewhere
    seed: int = 0
    steps: int | None = None  # None = every timestep
    sampler: str | None = None  # None: ddim for published checkpoints (their ColdDiffusion step), else ddpm
    eta: float | None = None  # DDIM only; None = 0 (deterministic)
    allow_mismatch: bool = False  # let a model serve steps outside its training window, or swapped roles
    overwrite: bool = False
    raw_weights: bool = False
    preview: int = 16  # pairs in preview.png
    classes: list[str] = field(default_factory=list)  # every pair must hold these (names or 1-based indices)
    max_tries: int = 20  # candidates per pair before giving up on it
    mask_dir: str | None = None
    good_dir: str | None = None
    place: str | None = None  # as-is | random; None: random for --good without --mask, else as-is
    resample: int = 1  # RePaint: each stretch of `jump_length` steps is denoised this many times
    jump_length: int = 10
    min_defect_pixels: int = 0
    keep_empty: bool = False
    layout: str = "paired"
    precision: str = "auto"  # auto (bf16 on CUDA) | fp32 | bf16
    resume: bool = False  # finish a killed run in sample_dir: only the pairs its manifest lacks
    # Classifier-free guidance weight for class-conditional models (None: 1, plain conditional).
    # Such models are conditioned on --classes, or on each pair's mask with --mask / --good.
    guidance: float | None = None


@dataclass
class LoadedModel:
    model: torch.nn.Module
    cfg: Config
    path: str
    published: bool = False  # a checkpoint of the published implementation (sampled with its step)


@dataclass
class Summary:
    """What a run did, summed over ranks except `rows` (this rank's manifest rows)."""

    rows: list[dict]
    pairs: int
    tries: int
    failed: int
    seconds: float
    steps: str
    empty: int = 0  # candidates rejected for an empty mask
    wanted: int = 0  # pairs this run set out to make (those not already done)
    preview: str | None = None  # preview.png, if one was written

    @property
    def acceptance(self) -> float:
        return self.pairs / self.tries if self.tries else 1.0


# ---------------------------------------------------------------------------------------
# Models


# The fields that decide whether weights fit a network (dropout and checkpointing do not).
ARCHITECTURE = ("image_size", "model_channels", "channel_mult", "num_res_blocks", "attention_downsample",
                "middle_block", "use_scale_shift_norm", "class_cond")


def read_any_config(path: str) -> Config:
    """Our YAML config, or the published implementation's (recognised by its model.target)."""
    model = read_yaml(path).get("model")
    if isinstance(model, dict) and "target" in model:
        return from_published_yaml(path)
    return load_config(path)


def _same_architecture(inside: Config, given: Config, path: str, config_path: str) -> None:
    pairs = [(f"model.{k}", getattr(inside.model, k), getattr(given.model, k)) for k in ARCHITECTURE]
    pairs.append(("number of defect classes", inside.num_defect, given.num_defect))
    for what, a, b in pairs:
        if a != b:
            raise ConfigError(f"{config_path}: {what} is {b}, but {path} was trained with {a}; our checkpoints "
                              f"carry their config, so the config flag can be left out")


def _checkpoint_config(ckpt: dict, path: str, config_path: str | None, flag: str) -> Config:
    if ckpt.get("format") == ckpt_lib.FORMAT and "config" in ckpt:
        try:  # the config inside is data like any other (class names become output folders)
            cfg = from_dict(ckpt["config"])
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        if config_path:
            _same_architecture(cfg, read_any_config(config_path), path, config_path)
        return cfg
    if ckpt_lib.is_published(ckpt):
        if not config_path:
            raise ConfigError(f"{path} is a published-implementation checkpoint, which holds no config: pass its "
                              f"YAML with {flag}")
        return read_any_config(config_path)
    keys = ", ".join(map(str, list(ckpt)[:6]))
    raise CheckpointError(f"{path} is neither a defect-gen checkpoint nor a published Defect-Gen one "
                          f"(top-level keys: {keys})")


def load_model(path: str, device: torch.device, raw_weights: bool = False, config_path: str | None = None,
               flag: str = "--large_recep_config") -> LoadedModel:
    """A model from our checkpoint (a .pt file or run folder; config inside) or the published
    implementation's ({"model", "ema", "optimizer"} with its YAML as `config_path`).

    EMA weights unless `raw_weights`; keys and shapes must match exactly.
    """
    path = ckpt_lib.resolve(path)
    ckpt = ckpt_lib.load(path)
    cfg = _checkpoint_config(ckpt, path, config_path, flag)
    model = build_unet(cfg.model, cfg.num_defect)
    ckpt_lib.load_weights(model, ckpt_lib.sampling_weights(ckpt, path, raw=raw_weights), path)
    return LoadedModel(model.to(device).eval(), cfg, path, ckpt_lib.is_published(ckpt))


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


def _network(model: torch.nn.Module, device: torch.device, precision: str) -> Callable:
    """The network as the sampler calls it: bf16 autocast and channels_last on CUDA.

    Outputs come back as float32, so the sampler's arithmetic stays in full precision.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"--precision must be auto, fp32 or bf16, got {precision!r}")
    cuda = device.type == "cuda"
    bf16 = precision == "bf16" or (precision == "auto" and cuda and torch.cuda.is_bf16_supported())
    if cuda:
        model.to(memory_format=torch.channels_last)

    def forward(x: torch.Tensor, t: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return model(x, t, *y).float()

    return forward


def timesteps_for(num_timesteps: int, steps: int | None, switch: int) -> list[int]:
    return with_switch(space_timesteps(num_timesteps, steps), switch, num_timesteps)


@dataclass
class Plan:
    """The chain every pair follows: timesteps, the two-stage denoiser, the sample shape."""

    diffusion: GaussianDiffusion
    timesteps: list[int]
    denoise: Denoiser
    networks: list[Callable]
    shape: tuple[int, int, int]
    description: str
    # The denoiser held to a class condition y (B, K + 1) (None: unconditional): each
    # class-conditional model is guided (defect_gen.guidance), unconditional ones ignore y.
    denoise_for: Callable[[torch.Tensor | None], Denoiser] | None = None


def _window(m: LoadedModel) -> tuple[int, int]:
    d = m.cfg.diffusion
    return window(d.num_timesteps, d.t_min, d.t_max)


def _outside(m: LoadedModel | None, steps: list[int]) -> bool:
    if m is None or not steps:
        return False
    lo, hi = _window(m)
    return min(steps) < lo or max(steps) >= hi


def check_roles(large: LoadedModel | None, small: LoadedModel | None, large_steps: list[int],
                small_steps: list[int], switch: int) -> None:
    """Each model must serve only timesteps it was trained on, and the two must not be swapped.

    A model trained on a window (diffusion.t_min / t_max) has never seen the other steps: its
    output there is noise, and sampling would run to the end without a word.
    """
    flags = "(--allow-model-mismatch to run anyway)"
    bad_large, bad_small = _outside(large, large_steps), _outside(small, small_steps)
    if bad_large and bad_small and not _outside(large, small_steps) and not _outside(small, large_steps):
        (a, b), (c, d) = _window(large), _window(small)
        raise ConfigError(f"--large_recep and --small_recep look swapped: {large.path} was trained on t in "
                          f"[{a}, {b}) and {small.path} on [{c}, {d}); exchange them {flags}")
    for role, m, steps, bad in (("large", large, large_steps, bad_large), ("small", small, small_steps, bad_small)):
        if bad:
            lo, hi = _window(m)
            fix = (f"use --step_inference >= {lo}" if role == "large" and lo > min(steps) else
                   f"use --step_inference <= {hi}" if role == "small" and max(steps) >= hi else
                   "it cannot serve this part of the chain")
            raise ConfigError(f"--step_inference {switch}: the {role}-RF model {m.path} was trained on t in "
                              f"[{lo}, {hi}) (diffusion.t_min/t_max) but would serve t = {min(steps)}..{max(steps)}; "
                              f"{fix} {flags}")
    if large is not None and small is not None and large_steps and small_steps:
        rf_large, rf_small = receptive_field(large.cfg.model), receptive_field(small.cfg.model)
        if rf_small.is_global and not rf_large.is_global:
            raise ConfigError(f"--large_recep and --small_recep look swapped: {large.path} has a local receptive "
                              f"field ({rf_large.pixels} px, no attention) and {small.path} a global one; "
                              f"exchange them {flags}")


def make_plan(large: LoadedModel | None, small: LoadedModel | None, s: SampleSettings,
              device: torch.device) -> Plan:
    cfg = check_pair(large, small)
    T = cfg.diffusion.num_timesteps
    if not 0 <= s.step_inference <= T:
        raise ConfigError(f"--step_inference must be in [0, {T}], got {s.step_inference}")
    if s.sampler not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {s.sampler!r}")
    if s.steps is not None and s.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {s.steps}")
    timesteps = timesteps_for(T, s.steps, s.step_inference)
    large_steps, small_steps = split_at(timesteps, s.step_inference)
    if (large_steps and large is None) or (small_steps and small is None):
        raise ConfigError(f"--step_inference {s.step_inference} needs the "
                          f"{'large' if large is None else 'small'}-RF model, which was not given")
    if not s.allow_mismatch:
        check_roles(large, small, large_steps, small_steps, s.step_inference)
    # Each model gets its own parameterisation (x0 / eps / v); check_pair made the schedules equal.
    models = [m for m in (large, small) if m is not None]
    weight = guidance.check_guidance(s.guidance, [m.cfg.model.class_cond for m in models])
    nets = [m and _network(m.model, device, s.precision) for m in (large, small)]
    networks = [net for net in nets if net]

    def denoise_for(y: torch.Tensor | None) -> Denoiser:
        denoisers = [m and GaussianDiffusion.from_config(m.cfg.diffusion).denoiser(
            guidance.guided(net, y, weight) if m.cfg.model.class_cond else net) for m, net in zip((large, small), nets)]
        return two_stage_denoiser(denoisers[0], denoisers[1], s.step_inference)

    denoise = denoise_for(None)
    shape = (3 + cfg.num_defect + 1, cfg.model.image_size, cfg.model.image_size)
    added = sorted(set(timesteps) - set(space_timesteps(T, s.steps)), reverse=True)
    extra = f"; {', '.join(map(str, added))} added to the {len(timesteps) - len(added)}-step grid" if added else ""
    return Plan(GaussianDiffusion.from_config(cfg.diffusion), timesteps, denoise, networks, shape,
                f"{len(timesteps)} steps ({len(large_steps)} large, {len(small_steps)} small{extra})", denoise_for)


def auto_batch_size(plan: Plan, device: torch.device, limit: int) -> int:
    """The largest batch that fits: on CUDA, a trial forward of each network measures the
    memory one sample takes, and batches fill 80 % of the free memory; 8 elsewhere."""
    if device.type != "cuda":
        return max(1, min(8, limit))
    per_sample = 12 * int(np.prod(plan.shape)) * 4  # the sampler's own tensors (x, x0, noise, known...)
    for net in plan.networks:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():  # as in sampling: no activations kept for a backward pass
            net(torch.zeros((2, *plan.shape), device=device), torch.zeros(2, dtype=torch.long, device=device))
        per_sample = max(per_sample, (torch.cuda.max_memory_allocated(device) - base) // 2)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(limit, int(0.8 * free) // per_sample))


# ---------------------------------------------------------------------------------------
# Settings


def required_classes(names: list[str], classes: list[str]) -> list[int]:
    """--classes entries (names, or indices 1..K) as class indices."""
    out = []
    for name in names:
        if name in classes:
            out.append(classes.index(name) + 1)
        elif name.isdigit() and 1 <= int(name) <= len(classes):
            out.append(int(name))
        else:
            raise ConfigError(f"--classes {name!r}: not a class of the model; its classes are "
                              f"{', '.join(classes)} (or 1..{len(classes)})")
    return out


# The pair indices are held in memory; more than this is a typo (1e10) rather than a job.
MAX_SAMPLES = 10_000_000


def check_settings(s: SampleSettings) -> None:
    """Combinations of the mode flags that cannot work, each as one line."""
    if s.classes and s.mask_dir:
        raise ConfigError("--classes picks among generated masks, but with --mask the masks are given; "
                          "choose the mask files instead")
    if s.guidance is not None and not (s.classes or s.mask_dir or s.good_dir):
        raise ConfigError("--guidance steers towards a condition: give --classes (or --mask / --good, whose masks "
                          "are the condition)")
    if s.place not in (None, "as-is", "random"):
        raise ConfigError(f"--place must be as-is or random, got {s.place!r}")
    if s.place is not None and not (s.mask_dir or s.good_dir):
        raise ConfigError("--place moves given or painted-in masks: use it with --mask or --good")
    if (s.resample != 1 or s.jump_length != 10) and not (s.mask_dir or s.good_dir):
        raise ConfigError("--resample and --jump apply to --mask and --good (RePaint resampling)")
    for flag, value, low in (("--max-tries", s.max_tries, 1), ("--resample", s.resample, 1),
                             ("--jump", s.jump_length, 1), ("--min-defect-pixels", s.min_defect_pixels, 0)):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if s.sampler == "ddpm" and s.eta is not None:
        raise ConfigError(f"--eta {s.eta} applies to --sampler ddim only (ddpm always draws the posterior's noise); "
                          f"drop --eta or use --sampler ddim")
    if s.eta is not None and not 0.0 <= s.eta < float("inf"):
        raise ConfigError(f"--eta must be a finite number >= 0, got {s.eta}")
    if s.layout not in writers.LAYOUTS:
        raise ConfigError(f"--layout must be one of {', '.join(writers.LAYOUTS)}, got {s.layout!r}")
    for flag, value in (("--num_samples", s.num_samples), ("--batch_size", s.batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if s.num_samples is not None and s.num_samples > MAX_SAMPLES:
        raise ConfigError(f"--num_samples must be at most {MAX_SAMPLES} per run, got {s.num_samples} "
                          f"(split bigger jobs into runs with --seed offsets)")
    # Candidate seeds reach seed + num_samples * max_tries; torch generators take 64 bits, keep 63.
    top = 2**63 - 1 - (s.num_samples or MAX_SAMPLES) * s.max_tries
    if not 0 <= s.seed <= top:
        raise ConfigError(f"--seed must be in [0, {top}] (candidate seeds go up to seed + num_samples x "
                          f"max-tries), got {s.seed}")


def resolve_sampler(s: SampleSettings, large: LoadedModel | None, small: LoadedModel | None) -> SampleSettings:
    """The sampler the models get unless --sampler says otherwise.

    The published implementation samples with its ColdDiffusion step x_{t-1} = x_t - D(x0, t)
    + D(x0, t-1) (x0 clamped), which is DDIM with eta = 0: its checkpoints get that, ours DDPM.
    """
    published = any(m is not None and m.published for m in (large, small))
    sampler = s.sampler or ("ddim" if published else "ddpm")
    if sampler == "ddpm" and s.eta is not None:
        raise ConfigError(f"--eta {s.eta} applies to --sampler ddim only, and these checkpoints sample with ddpm; "
                          f"add --sampler ddim or drop --eta")
    return dataclasses.replace(s, sampler=sampler, eta=0.0 if s.eta is None else s.eta)


def make_conditioner(s: SampleSettings, cfg: Config) -> conditioning.Conditioner:
    size, k = cfg.model.image_size, cfg.num_defect
    masks = s.mask_dir and conditioning.read_masks(s.mask_dir, size, k, s.min_defect_pixels, s.keep_empty,
                                                   classes=cfg.data.classes, folder_classes=cfg.data.folder_classes)
    goods = s.good_dir and conditioning.list_good_images(s.good_dir)
    place = s.place or ("random" if s.good_dir and not s.mask_dir else "as-is")
    return conditioning.Conditioner(masks or None, goods or None, size, k, place)


# ---------------------------------------------------------------------------------------
# Sampling with retries


@dataclass
class _Run:
    """Everything one rank's sampling loop needs."""

    plan: Plan
    cond: conditioning.Conditioner
    s: SampleSettings
    num_samples: int
    required: list[int]
    batch_size: int
    device: torch.device
    progress: bool
    on_batch: Callable[[], None] | None = None  # called after each batch (the progress display)


@dataclass
class _Task:
    index: int  # pair i, named sample_<seed + i>
    attempt: int = 0
    paint: torch.Tensor | None = None  # --good without --mask, second pass: the mask to paint in


@dataclass
class _Pair:
    index: int
    seed: int
    tries: int
    rgb: np.ndarray
    mask: np.ndarray
    sources: dict
    given: np.ndarray | None


def _sample_batch(run: _Run, tasks: list[_Task], seeds: list[int]) -> tuple[torch.Tensor, list]:
    """Sample one batch, each row from its own seed; conditioned rows hold their known part."""
    s, cond, device = run.s, run.cond, run.device
    gens = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    x = randn_rows(torch.empty((len(tasks), *run.plan.shape), device=device), gens)
    extras = [({}, None)] * len(tasks)
    y = (guidance.wanted_condition(run.required, run.plan.shape[0] - 4, len(tasks), device)
         if run.required else None)
    if cond.masks is None and tasks[0].paint is None:
        sampler = SAMPLERS[s.sampler]
    else:
        masks = [t.paint if t.paint is not None else cond.given_mask(t.index, seed) for t, seed in zip(tasks, seeds)]
        # A known mask is the condition: the classes it holds.
        y = guidance.mask_condition(torch.stack(masks).to(device), run.plan.shape[0] - 4)
        conds = [cond.condition(t.index, mask) for t, mask in zip(tasks, masks)]
        values, keep = (torch.stack([c[j] for c in conds]).to(device) for j in (0, 1))
        sampler = known_region_sampler(s.sampler, KnownRegion(values, keep), jump_length=s.jump_length,
                                       resample=s.resample)
        extras = [(c[2], c[3]) for c in conds]
    first_bad = torch.full((), -1, device=device, dtype=torch.long)

    def track(t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        # The first timestep whose x_t holds NaN/Inf, kept on the device: no sync per step.
        first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(x).all(), t, first_bad))

    denoise = run.plan.denoise_for(y) if run.plan.denoise_for is not None else run.plan.denoise
    x = sampler(denoise, x, run.plan.timesteps, run.plan.diffusion, generator=gens, eta=s.eta,
                progress=run.progress, callback=track)
    if int(first_bad) >= 0:
        names = ", ".join(_name(s, t.index) for t in tasks)
        raise DefectGenError(f"sampling produced NaN or Inf at timestep {int(first_bad)} for {names}: the "
                             f"checkpoint may hold non-finite weights, or try --precision fp32")
    return x.float().cpu(), extras


def _pairs(run: _Run, indices: range, stats: dict) -> Iterator[_Pair]:
    """Finished pairs for these indices, as they finish.

    Rejected candidates go back to the queue with the next attempt (next seed) until
    --max-tries; with --good alone, accepted first-pass masks queue for the painting pass.
    Batches never mix the two passes, so every row sees the same sampler whatever its batch.
    """
    s, cond = run.s, run.cond
    todo, paint = deque(_Task(i) for i in indices), deque()
    while todo or paint:
        queue = paint if paint and (len(paint) >= run.batch_size or not todo) else todo
        batch = [queue.popleft() for _ in range(min(run.batch_size, len(queue)))]
        seeds = [s.seed + t.index + t.attempt * run.num_samples for t in batch]
        x, extras = _sample_batch(run, batch, seeds)
        for task, seed, xi, (sources, given) in zip(batch, seeds, x, extras):
            image, mask_channels = split_image_mask(xi)
            index = drop_small_regions(mask_to_index(mask_channels).numpy(), s.min_defect_pixels)
            painted = task.paint is not None
            stats["tries"] += 0 if painted else 1
            # Given masks (and painted-in ones) come out exactly as given: nothing to reject.
            if painted or cond.masks is not None or accept(index, run.required, s.keep_empty):
                if cond.two_pass and not painted:
                    paint.append(_Task(task.index, task.attempt, cond.placed(torch.from_numpy(index).long(), seed)))
                    continue
                yield _Pair(task.index, seed, task.attempt + 1, image_to_uint8(image), index, sources, given)
            elif task.attempt + 1 < s.max_tries:
                stats["empty"] += int(not index.any())
                todo.append(_Task(task.index, task.attempt + 1))
            else:
                stats["empty"] += int(not index.any())
                stats["failed"] += 1
        if run.on_batch is not None:
            run.on_batch()


# ---------------------------------------------------------------------------------------
# The job


def _name(s: SampleSettings, index: int) -> str:
    return f"sample_{s.seed + index:06d}"


# Settings that decide which pair a name stands for: a resumed run must keep them.
RESUME_KEYS = ("step_inference", "seed", "steps", "sampler", "eta", "raw_weights", "classes", "max_tries",
               "mask_dir", "good_dir", "place", "resample", "jump_length", "min_defect_pixels", "keep_empty",
               "layout", "guidance")


def _check_resumable(s: SampleSettings, num: int, models: str) -> None:
    """Record this run's settings; with --resume, refuse settings that differ from the recorded ones."""
    path = os.path.join(s.sample_dir, "sample_settings.json")
    current = {"num_samples": num, "models": models, **{k: getattr(s, k) for k in RESUME_KEYS}}
    if s.resume and os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                recorded = json.load(f)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"--resume: {path} is unreadable or cut short ({type(exc).__name__}); it records "
                              f"the settings the pairs were made with: restore it, or start again with --overwrite"
                              ) from None
        if not isinstance(recorded, dict):
            raise ConfigError(f"--resume: {path}: expected a JSON object of settings, got {short_repr(recorded)}")
        changed = [f"{k} ({recorded.get(k)!r} -> {v!r})" for k, v in current.items() if recorded.get(k) != v]
        if changed:
            raise ConfigError(f"--resume: these settings differ from the run in {s.sample_dir}: "
                              f"{'; '.join(changed)}")
        return
    fsutil.atomic_write_json(path, current)  # a kill mid-write must not leave half a settings file


def _write(s: SampleSettings, pair: _Pair, classes: list[str], manifest) -> dict:
    try:
        row = writers.write_pair(s.sample_dir, s.layout, _name(s, pair.index), pair.rgb, pair.mask, classes)
        row = {"name": row.pop("name"), "seed": pair.seed, "tries": pair.tries, **row, **pair.sources}
        manifest.write(json.dumps(row) + "\n")
        manifest.flush()
    except OSError as exc:  # a full disk or a folder made read-only mid-run; --resume finishes later
        raise fsutil.output_error(os.path.join(s.sample_dir, writers.MANIFEST), exc, "--sample_dir") from None
    return row


def _total(device: torch.device, *values: int) -> list[int]:
    summed = dist_util.sum_across_ranks(torch.tensor(values, dtype=torch.float64, device=device))
    return [int(v) for v in summed.tolist()]


def generate(large: LoadedModel | None, small: LoadedModel | None, s: SampleSettings,
             device: torch.device, progress: bool = True) -> Summary:
    """Sample the pairs into s.sample_dir; returns what was done (see Summary)."""
    check_settings(s)
    s = resolve_sampler(s, large, small)
    plan = make_plan(large, small, s, device)
    cfg = check_pair(large, small)
    required = required_classes(s.classes, cfg.data.classes)
    cond = make_conditioner(s, cfg)
    num = s.num_samples or len(cond.masks or cond.goods or [None] * 16)
    # One run per SAMPLE_DIR: a second one (say a --resume while the first still runs) would
    # make the same names twice. Rank 0 holds the lock for all ranks.
    main = dist_util.info().is_main
    with fsutil.lock_dir(s.sample_dir, "sampling run", "--sample_dir") if main else contextlib.nullcontext():
        return _generate_locked(plan, cfg, cond, required, num, s, device, progress)


def _generate_locked(plan: Plan, cfg: Config, cond: conditioning.Conditioner, required: list[int], num: int,
                     s: SampleSettings, device: torch.device, progress: bool) -> Summary:
    dinfo = dist_util.info()
    if dinfo.is_main:
        writers.prepare_dir(s.sample_dir, s.layout, s.overwrite, s.resume)
        _check_resumable(s, num, plan.description)
    dist_util.barrier()
    done = writers.done_names(s.sample_dir) if s.resume else set()
    progress = progress and dinfo.is_main
    # Under torchrun each rank takes a contiguous slice of the pair indices: no duplicate, no gap.
    lo, hi = (num * dinfo.rank) // dinfo.world_size, (num * (dinfo.rank + 1)) // dinfo.world_size
    todo = [i for i in range(lo, hi) if _name(s, i) not in done]
    batch_size = s.batch_size or auto_batch_size(plan, device, max(1, len(todo)))
    bar = logs.bar(hi - lo, hi - lo - len(todo), "sampling", "pair", enabled=progress)
    rows, preview, stats = [], [], {"tries": 0, "failed": 0, "empty": 0}

    def show_candidates() -> None:  # after every batch: rejected candidates move nothing else
        bar.set_postfix_str(f"{stats['tries']} candidates, {len(rows)} kept")

    # The per-step bars inside the sampler only make sense redrawn on a terminal.
    run = _Run(plan, cond, s, num, required, batch_size, device, progress and logs.live(), show_candidates)
    start = time.perf_counter()
    manifest = open(os.path.join(s.sample_dir, writers.MANIFEST), "a", encoding="utf-8")
    with manifest, bar, torch.inference_mode():
        for pair in _pairs(run, todo, stats):
            rows.append(_write(s, pair, cfg.data.classes, manifest))
            if pair.index < lo + s.preview:  # the first pairs by name, whichever finished first
                preview.append((pair.index, pair.rgb, pair.mask, pair.given))
            show_candidates()
            bar.update(1)
    pairs, tries, failed, empty, wanted = _total(device, len(rows), stats["tries"], stats["failed"], stats["empty"],
                                                 len(todo))
    dist_util.barrier()
    wrote_preview = False
    if dinfo.is_main:
        writers.sort_manifest(s.sample_dir)
        items = _preview_items(s, cfg, {_name(s, p[0]): p[1:] for p in preview})
        writers.save_preview(s.sample_dir, items)
        wrote_preview = bool(items)
    return Summary(rows, pairs, tries, failed, time.perf_counter() - start, plan.description, empty=empty,
                   wanted=wanted, preview=os.path.join(s.sample_dir, writers.PREVIEW) if wrote_preview else None)


def _read_back(s: SampleSettings, cfg: Config, row: dict) -> tuple | None:
    """(rgb, class index, given rgb or None) of a pair an earlier run wrote, for the preview."""
    from defect_gen.io import read_image, read_mask

    files = row.get("files") or writers.pair_files("paired", row["name"], "")
    try:
        # Only regular files inside SAMPLE_DIR, whatever the manifest names.
        inside = {what: fsutil.removable_file(s.sample_dir, rel) for what, rel in files.items()}
        rgb = read_image(inside["image"])
        index = np.zeros(rgb.shape[:2], np.uint8)
        if "mask" in files:
            index = read_mask(inside["mask"])
        if s.layout == "mvtec":  # binary on disk: the row's (first) class names the defect pixels
            names = row.get("classes") or []
            label = cfg.data.classes.index(names[0]) + 1 if names and names[0] in cfg.data.classes else 1
            index = np.where(index > 0, label, 0).astype(np.uint8)
        given = None
        if row.get("good_source"):
            given = image_to_uint8(conditioning.read_good_image(row["good_source"], rgb.shape[0]))
    except (DefectGenError, KeyError, OSError, TypeError, ValueError, AttributeError):
        return None  # a pair that cannot be read back is left out of the picture, not an error
    return rgb, index, given


def _preview_items(s: SampleSettings, cfg: Config, made: dict) -> list[tuple]:
    """The first s.preview pairs by name: this run's, and (after --resume) those written before."""
    items = []
    for row in writers.manifest_rows(s.sample_dir)[: s.preview]:
        item = made.get(row["name"]) or _read_back(s, cfg, row)
        if item is not None:
            items.append(item)
    return items
