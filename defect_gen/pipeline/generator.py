"""The generation library: two loaded models in, image + mask pairs out, in memory. No files.

    from defect_gen import DefectGenerator

    gen = DefectGenerator.from_pretrained("runs/demo/large", "runs/demo/small", step_inference=200)
    out = gen.generate(8, seed=0, steps=20, sampler="dpmpp_2m")
    out.images[0], out.masks[0], out.metadata[0]   # (64, 64, 3) uint8, (64, 64) class indices, seed...

A seed's way to a pair, top to bottom in this file:

    make_plan        the chain: timesteps (respaced, with the switch), the two-stage denoiser
    sample_batch     one batch: noise from each row's own seed -> sampler -> uint8 image and
                     class-index mask (specks under min_defect_pixels dropped)
    sample_batches   the generator of batches, fed by a CandidateQueue
    accepted_pairs   rejection sampling around it: each candidate is kept, retried with the
                     next seed, or (good images without masks) queued to be painted in
    DefectGenerator  the public class: loads models, checks arguments, collects the pairs

`defect-gen sample` (sample.py) is built on `DefectGenerator.pairs`: file names, layouts, the
manifest, resume and the preview are its business, not this module's.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from defect_gen.config import Config
from defect_gen.core import guidance as guidance_lib
from defect_gen.core.diffusion import Denoiser, GaussianDiffusion, space_timesteps, split_at, window, with_switch
from defect_gen.core.masks import (
    class_pixel_counts,
    image_to_uint8,
    mask_to_index,
    split_image_mask,
)
from defect_gen.core.postprocess import accept, drop_small_regions
from defect_gen.core.precision import resolve_autocast, time_forward
from defect_gen.core.samplers import (
    SAMPLERS,
    KnownRegion,
    known_region_sampler,
    randn_rows,
    two_stage_denoiser,
)
from defect_gen.core.unet import receptive_field
from defect_gen.errors import ConfigError, DefectGenError, Note
from defect_gen.models.loading import LoadedModel, load_model
from defect_gen.pipeline import inputs

# ---------------------------------------------------------------------------------------
# The two models and the chain they share


def check_pair(large: LoadedModel | None, small: LoadedModel | None) -> Config:
    """The two models must agree on everything the shared chain depends on."""
    models = [m for m in (large, small) if m is not None]
    if not models:
        raise ConfigError.with_params(f"no model given: pass a large-RF ({{large}}) and/or a small-RF "
                          f"({{small}}) model")
    ref = models[0]
    for other in models[1:]:
        for what, a, b in (("image_size", ref.cfg.model.image_size, other.cfg.model.image_size),
                           ("num_defect", ref.cfg.num_defect, other.cfg.num_defect),
                           ("diffusion.num_timesteps", ref.cfg.diffusion.num_timesteps,
                            other.cfg.diffusion.num_timesteps),
                           ("diffusion.schedule", ref.cfg.diffusion.schedule, other.cfg.diffusion.schedule),
                           ("diffusion.clean_mask", ref.cfg.diffusion.clean_mask, other.cfg.diffusion.clean_mask)):
            if a != b:
                raise ConfigError(f"the two models disagree on {what}: {a} in {ref.path}, {b} in {other.path}")
    return ref.cfg


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
    flags = "(pass {allow_model_mismatch} to run anyway)"
    bad_large, bad_small = _outside(large, large_steps), _outside(small, small_steps)
    if bad_large and bad_small and not _outside(large, small_steps) and not _outside(small, large_steps):
        (a, b), (c, d) = _window(large), _window(small)
        raise ConfigError.with_params(f"{{large}} and {{small}} look swapped: {large.path} was trained on t in "
                          f"[{a}, {b}) and {small.path} on [{c}, {d}); exchange them {flags}")
    for role, m, steps, bad in (("large", large, large_steps, bad_large), ("small", small, small_steps, bad_small)):
        if bad:
            lo, hi = _window(m)
            fix = (f"use {{step_inference}} >= {lo}" if role == "large" and lo > min(steps) else
                   f"use {{step_inference}} <= {hi}" if role == "small" and max(steps) >= hi else
                   "it cannot serve this part of the chain")
            raise ConfigError.with_params(f"{{step_inference}} {switch}: the {role}-RF model {m.path} was trained on t in "
                              f"[{lo}, {hi}) (diffusion.t_min/t_max) but would serve t = {min(steps)}..{max(steps)}; "
                              f"{fix} {flags}")
    if large is not None and small is not None and large_steps and small_steps:
        rf_large, rf_small = receptive_field(large.cfg.model), receptive_field(small.cfg.model)
        if rf_small.is_global and not rf_large.is_global:
            raise ConfigError.with_params(f"{{large}} and {{small}} look swapped: {large.path} has a local receptive "
                              f"field ({rf_large.pixels} px, no attention) and {small.path} a global one; "
                              f"exchange them {flags}")


# Sampling precisions by name, as sample_settings.json records the one `auto` chose.
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(large: LoadedModel | None, small: LoadedModel | None, device: torch.device,
                      precision: str) -> str:
    """The precision both networks sample in: `precision` itself, or for `auto` the choice of
    `core.precision.resolve_autocast` for the first model, timed once (so one generator never
    switches, and a run can record what it used)."""
    check_precision(precision)
    if precision != "auto":
        return precision
    model = (large or small).model
    cfg = (large or small).cfg
    probe = torch.randn(2, 3 + cfg.num_defect + 1, cfg.model.image_size, cfg.model.image_size, device=device)
    dtype, _ = resolve_autocast(precision, device, time_forward(model, probe, torch.full((2,), 500, device=device)))
    return next(name for name, d in PRECISION_DTYPES.items() if d == dtype)


def check_precision(precision: str) -> None:
    """Sampling runs in auto, fp32 or bf16 (checked before any network is timed)."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError.with_params(f"{{precision}} must be auto, fp32 or bf16, got {precision!r}")


def _network(model: torch.nn.Module, device: torch.device, precision: str, shape: tuple[int, ...]) -> Callable:
    """The network as the sampler calls it: in the autocast dtype `precision` resolves to
    (precision.py: `auto` is bf16 on GPUs with bf16 and on CPUs with AMX/AVX512-BF16 where a
    timed forward of this network at `shape` confirms it, fp32 elsewhere; a resolved name,
    see `resolve_precision`, is taken as it is), channels_last on CUDA.

    Outputs come back as float32, so the sampler's arithmetic stays in full precision.
    """
    cuda = device.type == "cuda"
    if cuda:
        model.to(memory_format=torch.channels_last)
    if precision in PRECISION_DTYPES:
        dtype = PRECISION_DTYPES[precision]
    else:
        probe = torch.randn(2, *shape, device=device)
        dtype, _ = resolve_autocast(precision, device, time_forward(model, probe, torch.full((2,), 500, device=device)),
                                    what="precision")

    def forward(x: torch.Tensor, t: torch.Tensor, *y: torch.Tensor) -> torch.Tensor:
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
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
    # class-conditional model is guided (defect_gen.core.guidance), unconditional ones ignore y.
    denoise_for: Callable[[torch.Tensor | None], Denoiser] | None = None


def make_plan(large: LoadedModel | None, small: LoadedModel | None, step_inference: int, steps: int | None,
              device: torch.device, precision: str = "auto", allow_mismatch: bool = False,
              guidance: float | None = None) -> Plan:
    """The timesteps (`steps` respaced, S and S-1 added) and the denoiser that hands over at S;
    class-conditional models are guided with weight `guidance` (None: 1, plain conditional)."""
    cfg = check_pair(large, small)
    T = cfg.diffusion.num_timesteps
    if not 0 <= step_inference <= T:
        raise ConfigError.with_params(f"{{step_inference}} must be in [0, {T}], got {step_inference}")
    if steps is not None and steps < 1:
        raise ConfigError.with_params(f"{{steps}} must be >= 1, got {steps}")
    if precision not in PRECISION_DTYPES:
        check_precision(precision)
    timesteps = timesteps_for(T, steps, step_inference)
    large_steps, small_steps = split_at(timesteps, step_inference)
    if (large_steps and large is None) or (small_steps and small is None):
        role = "large" if large is None else "small"
        raise ConfigError.with_params(f"{{step_inference}} {step_inference} needs the {role}-RF model ({{{role}}}), "
                          f"which was not given")
    if not allow_mismatch:
        check_roles(large, small, large_steps, small_steps, step_inference)
    # Each model gets its own parameterisation (x0 / eps / v); check_pair made the schedules equal.
    weight = guidance_lib.check_guidance(guidance, [m.cfg.model.class_cond for m in (large, small) if m])
    shape = (3 + cfg.num_defect + 1, cfg.model.image_size, cfg.model.image_size)
    nets = [m and _network(m.model, device, precision, shape) for m in (large, small)]
    networks = [net for net in nets if net]

    def denoise_for(y: torch.Tensor | None) -> Denoiser:
        denoisers = [m and GaussianDiffusion.from_config(m.cfg.diffusion).denoiser(
            guidance_lib.guided(net, y, weight) if m.cfg.model.class_cond else net) for m, net in zip((large, small), nets)]
        return two_stage_denoiser(denoisers[0], denoisers[1], step_inference)

    denoise = denoise_for(None)
    added = sorted(set(timesteps) - set(space_timesteps(T, steps)), reverse=True)
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


def default_sampler(large: LoadedModel | None, small: LoadedModel | None) -> str:
    """ddim (eta 0) for checkpoints of the published implementation, whose ColdDiffusion step
    x_{t-1} = x_t - D(x0, t) + D(x0, t-1) (x0 clamped) it equals; ddpm for ours."""
    return "ddim" if any(m is not None and m.published for m in (large, small)) else "ddpm"


# ---------------------------------------------------------------------------------------
# Checking the options (one place for the API and the CLI, which renames parameters to flags)

# The pair indices are held in memory; more than this is a typo (1e10) rather than a job.
MAX_SAMPLES = 10_000_000


def check_sampler(sampler: str | None, eta: float | None) -> None:
    """A known sampler (None: the models' default), and `eta` only where it means something:
    DDIM's noise. Shared by `sample` and `paint`."""
    if sampler is not None and sampler not in SAMPLERS:
        raise ConfigError.with_params(f"{{sampler}} must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler in ("ddpm", "dpmpp_2m") and eta is not None:
        raise ConfigError.with_params(f"{{eta}} {eta} applies to {{sampler}} ddim only ({sampler} draws no "
                          f"DDIM noise); drop {{eta}} or use {{sampler}} ddim")
    if eta is not None and not 0.0 <= eta < float("inf"):
        raise ConfigError.with_params(f"{{eta}} must be a finite number >= 0, got {eta}")


def check_options(*, n: int | None, batch_size: int | None, seed: int, steps: int | None, sampler: str | None,
                  eta: float | None, classes: Sequence[str], masks, good, place: str | None, resample: int,
                  jump: int, max_tries: int, min_defect_pixels: int,
                  guidance: float | None = None) -> None:
    """Combinations that cannot work, each as one line naming the value (API keywords, or the
    CLI's flags). `sampler` None is the models' default (`default_sampler`)."""
    if guidance is not None and not (classes or masks is not None or good is not None):
        raise ConfigError.with_params(f"{{guidance}} steers towards a condition: give {{classes}} (or "
                          f"{{masks}} / {{good}}, whose masks are the condition)")
    if classes and masks is not None:
        raise ConfigError.with_params(f"{{classes}} picks among generated masks, but with {{masks}} the masks are "
                          f"given; choose the mask files instead")
    if place not in (None, "as-is", "random"):
        raise ConfigError.with_params(f"{{place}} must be as-is or random, got {place!r}")
    if place is not None and masks is None and good is None:
        raise ConfigError.with_params(f"{{place}} moves given or painted-in masks: use it with {{masks}} or "
                          f"{{good}}")
    if (resample != 1 or jump != 10) and masks is None and good is None:
        raise ConfigError.with_params(f"{{resample}} and {{jump}} apply to {{masks}} and {{good}} "
                          f"(RePaint resampling)")
    for key, value, low in (("max_tries", max_tries, 1), ("resample", resample, 1), ("jump", jump, 1),
                            ("min_defect_pixels", min_defect_pixels, 0), ("n", n, 1), ("batch_size", batch_size, 1),
                            ("steps", steps, 1)):
        if value is not None and value < low:
            raise ConfigError.with_params(f"{{{key}}} must be >= {low}, got {value}")
    check_sampler(sampler, eta)
    if n is not None and n > MAX_SAMPLES:
        raise ConfigError.with_params(f"{{n}} must be at most {MAX_SAMPLES} per run, got {n} "
                          f"(split bigger jobs into runs with {{seed}} offsets)")
    # Candidate seeds reach seed + n * max_tries; torch generators take 64 bits, keep 63.
    top = 2**63 - 1 - (n or MAX_SAMPLES) * max_tries
    if not 0 <= seed <= top:
        raise ConfigError.with_params(f"{{seed}} must be in [0, {top}] (candidate seeds go up to seed + num_samples x "
                          f"max-tries), got {seed}")


def required_classes(names: Sequence[str], classes: list[str]) -> list[int]:
    """Wanted classes (names, or indices 1..K) as class indices."""
    out = []
    for name in names:
        name = str(name)
        if name in classes:
            out.append(classes.index(name) + 1)
        elif name.isdigit() and 1 <= int(name) <= len(classes):
            out.append(int(name))
        else:
            raise ConfigError.with_params(f"{{classes}} {{name}}: not a class of the model; its classes are "
                                          f"{', '.join(classes)} (or 1..{len(classes)})", name=repr(name))
    return out


# ---------------------------------------------------------------------------------------
# Batches: a seed per row, the sampler, uint8 pairs


@dataclass(frozen=True)
class PairOptions:
    """What decides each pair besides the models: the same options and seed give the same pair."""

    num_samples: int  # candidate a of pair i has seed seed + i + a * num_samples
    seed: int = 0
    sampler: str = "ddpm"
    eta: float = 0.0
    required: tuple[int, ...] = ()  # class indices every kept mask must hold (rejection sampling)
    max_tries: int = 20
    min_defect_pixels: int = 0
    keep_empty: bool = False
    resample: int = 1  # RePaint, in the known-region modes
    jump_length: int = 10

    def seed_of(self, index: int, attempt: int) -> int:
        return self.seed + index + attempt * self.num_samples


def pair_name(seed: int, index: int) -> str:
    """Pair i is sample_<seed + i>, whichever candidate, batch or rank made it."""
    return f"sample_{seed + index:06d}"


@dataclass
class Candidate:
    """One sample to draw: pair `index`, its `attempt`-th candidate."""

    index: int
    attempt: int = 0
    paint: torch.Tensor | None = None  # good images without masks, second pass: the mask to paint in


@dataclass
class Batch:
    """Sampled candidates, row by row: uint8 images (B, H, W, 3), class-index masks (B, H, W)
    (0 background, 1..K), the seed of each row and its condition (None when unconditioned)."""

    candidates: list[Candidate]
    seeds: list[int]
    images: np.ndarray
    masks: np.ndarray
    conditions: list[inputs.Condition | None]


def sample_batch(plan: Plan, cond: inputs.Conditioner, options: PairOptions, candidates: list[Candidate],
                 device: torch.device, progress: bool = False) -> Batch:
    """Sample one batch, each row from its own seed; conditioned rows hold their known part."""
    seeds = [options.seed_of(c.index, c.attempt) for c in candidates]
    gens = [torch.Generator(device).manual_seed(seed) for seed in seeds]
    x = randn_rows(torch.empty((len(candidates), *plan.shape), device=device), gens)
    conditions = [None] * len(candidates)
    num_defect = plan.shape[0] - 4
    y = guidance_lib.wanted_condition(list(options.required), num_defect, len(candidates), device) \
        if options.required else None
    if cond.masks is None and candidates[0].paint is None:
        sampler = SAMPLERS[options.sampler]
    else:
        masks = [c.paint if c.paint is not None else cond.given_mask(c.index, seed) for c, seed in zip(candidates, seeds)]
        # a known mask is the condition
        y = guidance_lib.class_condition_of_masks(torch.stack(masks).to(device), num_defect)
        conditions = [cond.condition(c.index, mask) for c, mask in zip(candidates, masks)]
        known = KnownRegion(*(torch.stack([getattr(c, k) for c in conditions]).to(device) for k in ("values", "keep")))
        if plan.diffusion.clean_mask:  # a clean-mask model's mask channels are given as they are at every t
            known.clean = torch.zeros_like(known.keep[:1])
            known.clean[:, 3:] = 1
        sampler = known_region_sampler(options.sampler, known, jump_length=options.jump_length,
                                       resample=options.resample)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)

    def track(t: int, x: torch.Tensor, x0: torch.Tensor) -> None:
        # The first timestep whose x_t holds NaN/Inf, kept on the device: no sync per step.
        first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(x).all(), t, first_bad))

    with torch.inference_mode():  # no autograd graph: sampling only ever reads the weights
        denoise = plan.denoise_for(y) if plan.denoise_for is not None else plan.denoise
        x = sampler(denoise, x, plan.timesteps, plan.diffusion, generator=gens, eta=options.eta,
                    progress=progress, callback=track)
    if int(first_bad) >= 0:
        names = ", ".join(pair_name(options.seed, c.index) for c in candidates)
        raise DefectGenError(f"sampling produced NaN or Inf at timestep {int(first_bad)} for {names}: the "
                             f"checkpoint may hold non-finite weights, or sample in fp32 precision")
    images, masks = [], []
    for row in x.float().cpu():
        image, mask_channels = split_image_mask(row)
        images.append(image_to_uint8(image))
        masks.append(drop_small_regions(mask_to_index(mask_channels).numpy().astype(np.uint8),
                                        options.min_defect_pixels))
    return Batch(candidates, seeds, np.stack(images), np.stack(masks), conditions)


class CandidateQueue:
    """Candidates waiting to be sampled: first draws and retries, and (good images without
    masks) masks waiting to be painted in. A batch never mixes the two passes, so every row
    sees the same sampler whatever batch it lands in."""

    def __init__(self, indices: Sequence[int]):
        self.todo, self.paint = deque(Candidate(i) for i in indices), deque()

    def add(self, candidate: Candidate) -> None:
        (self.todo if candidate.paint is None else self.paint).append(candidate)

    def next_batch(self, size: int) -> list[Candidate]:
        # Painting waits for a full batch while first draws remain, then takes its turn.
        queue = self.paint if self.paint and (len(self.paint) >= size or not self.todo) else self.todo
        return [queue.popleft() for _ in range(min(size, len(queue)))]


def sample_batches(plan: Plan, cond: inputs.Conditioner, options: PairOptions, queue: CandidateQueue,
                   batch_size: int, device: torch.device, progress: bool = False) -> Iterator[Batch]:
    """Batches as the queue hands out candidates; the consumer may add to the queue between
    batches (retries, the painting pass)."""
    while candidates := queue.next_batch(batch_size):
        yield sample_batch(plan, cond, options, candidates, device, progress)


# ---------------------------------------------------------------------------------------
# Rejection sampling


@dataclass
class Pair:
    """A finished pair: pair `index`, made by `seed` at candidate `tries`."""

    index: int
    seed: int
    tries: int
    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8 class indices
    sources: dict  # mask_source, good_source, placement, where given
    good_image: np.ndarray | None  # the defect-free image it was painted into (uint8), if any


@dataclass
class Tally:
    """Candidates drawn, pairs given up (no accepted candidate in max_tries), empty masks rejected."""

    tries: int = 0
    failed: int = 0
    empty: int = 0


def accepted_pairs(plan: Plan, cond: inputs.Conditioner, options: PairOptions, indices: Sequence[int],
                   batch_size: int, device: torch.device, tally: Tally, progress: bool = False,
                   on_batch: Callable[[], None] | None = None) -> Iterator[Pair]:
    """Finished pairs for these indices, as they finish (not in index order).

    A rejected candidate goes back to the queue with its next attempt (next seed) until
    max_tries; with good images but no masks, an accepted first-pass mask is moved
    (`cond.placed`) and queued to be painted into its good image. Given masks (and
    painted-in ones) come out exactly as given: nothing to reject.
    """
    queue = CandidateQueue(indices)
    for batch in sample_batches(plan, cond, options, queue, batch_size, device, progress):
        for cand, seed, image, mask, condition in zip(batch.candidates, batch.seeds, batch.images, batch.masks,
                                                      batch.conditions):
            painted = cand.paint is not None
            tally.tries += 0 if painted else 1
            if painted or cond.masks is not None or accept(mask, list(options.required), options.keep_empty):
                if cond.two_pass and not painted:
                    queue.add(Candidate(cand.index, cand.attempt, cond.placed(torch.from_numpy(mask).long(), seed)))
                    continue
                sources = condition.sources if condition else {}
                good = condition.good_image if condition else None
                yield Pair(cand.index, seed, cand.attempt + 1, image, mask, sources, good)
                continue
            tally.empty += int(not mask.any())
            if cand.attempt + 1 < options.max_tries:
                queue.add(Candidate(cand.index, cand.attempt + 1))
            else:
                tally.failed += 1
        if on_batch is not None:
            on_batch()


# ---------------------------------------------------------------------------------------
# The public class


@dataclass
class Request:
    """One generation request, checked and resolved: the chain, the conditions, the options."""

    plan: Plan
    cond: inputs.Conditioner
    options: PairOptions

    @property
    def num_samples(self) -> int:
        return self.options.num_samples


@dataclass
class GeneratedPairs:
    """What `DefectGenerator.generate` returns, pairs in index order.

    Pairs that found no accepted candidate in `max_tries` are missing (`failed` counts them),
    so there may be fewer than asked for; `metadata[j]["index"]` says which pair row j is.
    """

    images: np.ndarray | list  # (N, H, W, 3) uint8, or N PIL RGB images (output_type="pil")
    masks: np.ndarray | list  # (N, H, W) uint8 class indices 0..K, or N PIL "P" images (same values, palette)
    metadata: list[dict]  # per pair: name, index, seed, tries, classes, defect_pixels, mask/good sources
    classes: list[str]  # mask value k is classes[k - 1]; 0 is background
    weights: dict  # which weights made the pairs: {"large"/"small": {path, step, sha256}}
    good_images: list[np.ndarray | None] = field(default_factory=list)  # per pair, when painted into one
    tries: int = 0  # candidates drawn (rejection sampling)
    failed: int = 0  # pairs given up
    empty: int = 0  # candidates rejected for an empty mask


def _is_folder(value) -> bool:
    return isinstance(value, (str, os.PathLike))


class DefectGenerator:
    """Defect image + pixel-mask pairs from a large- and a small-receptive-field diffusion model.

    The large-RF model denoises from t = T-1 down to `step_inference`, the small-RF one takes
    the same x_t on to 0. Every pair comes from its own seed: pair i of a call with `seed=s`
    is drawn from seed s + i (retries: s + i + a * n), whatever the batch, so it is
    reproducible alone.

    Args:
        large (`LoadedModel`, *optional*): the large-RF model (`models.loading.load_model`); None when
            the small one serves every step (`step_inference` = T).
        small (`LoadedModel`, *optional*): the small-RF model; None when `step_inference` is 0.
        step_inference (`int`): the switch S in original timesteps: large for t >= S, small below.
        device (`str` or `torch.device`, defaults to "cpu"): where sampling runs.
        precision (`str`, defaults to "auto"): "auto" (bf16 on CUDA; timed on CPUs with bf16
            instructions), "fp32" or "bf16". `auto` is decided once, here: `gen.precision` says which.
        allow_model_mismatch (`bool`, defaults to False): let a model serve timesteps outside its
            training window (diffusion.t_min/t_max), or the two models swapped roles.
        warn (`callable`, *optional*): takes each `errors.Note` about the arguments (masks left
            out, regions dropped); default: printed to stderr with the parameters' names.

    Examples:

        >>> gen = DefectGenerator.from_pretrained("runs/demo/large", "runs/demo/small", step_inference=200)
        >>> out = gen.generate(4, seed=0, steps=20, sampler="dpmpp_2m", classes=["scratch"])
        >>> out.images.shape, out.masks.shape, out.metadata[0]["seed"]
        ((4, 64, 64, 3), (4, 64, 64), 0)
    """

    def __init__(self, large: LoadedModel | None, small: LoadedModel | None, step_inference: int, *,
                 device: str | torch.device = "cpu", precision: str = "auto", allow_model_mismatch: bool = False,
                 warn: Callable[[Note], None] | None = None):
        self.large, self.small, self.step_inference = large, small, step_inference
        self.device, self.allow_model_mismatch = torch.device(device), allow_model_mismatch
        self.warn = warn
        self.config = check_pair(large, small)
        self.precision = resolve_precision(large, small, self.device, precision)  # auto: decided here, once
        self.plan(None)  # a switch or a pair of models that cannot work fails here, not at generate()

    @classmethod
    def from_pretrained(cls, large: str | os.PathLike | None = None, small: str | os.PathLike | None = None, *,
                        step_inference: int, large_config: str | None = None, small_config: str | None = None,
                        device: str | torch.device = "cpu", raw_weights: bool = False, precision: str = "auto",
                        allow_model_mismatch: bool = False) -> DefectGenerator:
        """Load the models and build a generator.

        Args:
            large, small (`str`, *optional*): a run folder (its latest checkpoint), a checkpoint
                file of ours (config inside), or a published Defect-Gen checkpoint (then pass its
                YAML as `large_config` / `small_config`).
            step_inference (`int`): the switch step (see the class).
            raw_weights (`bool`, defaults to False): the raw weights instead of the EMA.
            device, precision, allow_model_mismatch: as for the class.
        """

        device = torch.device(device)
        models = [load_model(os.fspath(path), device, raw_weights, config, param) if path is not None else None
                  for path, config, param in ((large, large_config, "large_config"),
                                             (small, small_config, "small_config"))]
        return cls(*models, step_inference, device=device, precision=precision,
                   allow_model_mismatch=allow_model_mismatch)

    @property
    def classes(self) -> list[str]:
        """The defect classes: mask value k is classes[k - 1], 0 is background."""
        return list(self.config.data.classes)

    @property
    def weights(self) -> dict:
        """Which weights this generator samples with: {"large"/"small": {path, step, sha256}}."""
        return {role: m.provenance() for role, m in (("large", self.large), ("small", self.small)) if m is not None}

    def plan(self, steps: int | None, guidance: float | None = None) -> Plan:
        """The chain for `steps` (None: all T), with S and S-1 added for the hand-over;
        class-conditional models guided with weight `guidance` (None: 1)."""
        return make_plan(self.large, self.small, self.step_inference, steps, self.device, self.precision,
                         self.allow_model_mismatch, guidance)

    def prepare(self, n: int | None = None, *, seed: int = 0, classes: Sequence[str] = (), masks=None, good=None,
                place: str | None = None, steps: int | None = None, sampler: str | None = None,
                eta: float | None = None, max_tries: int = 20, min_defect_pixels: int = 0, keep_empty: bool = False,
                resample: int = 1, jump: int = 10, guidance: float | None = None) -> Request:
        """Check and resolve the arguments of `generate` (see there) into a `Request`: the one
        place they are checked (`check_options`) and the sampler decided (`resolve_sampler`)."""
        check_options(n=n, batch_size=None, seed=seed, steps=steps, sampler=sampler, eta=eta, classes=classes,
                      masks=masks, good=good, place=place, resample=resample, jump=jump, max_tries=max_tries,
                      min_defect_pixels=min_defect_pixels, guidance=guidance)
        if self.config.diffusion.clean_mask and masks is None:
            raise ConfigError.with_params(f"{(self.small or self.large).path} draws images for given masks (diffusion.clean_mask: "
                              f"true) and cannot draw masks: pass {{masks}}, or use it with "
                              f"`defect-gen paint`")
        sampler = self.resolve_sampler(sampler, eta)
        required = required_classes(classes, self.classes)
        cond = self._conditioner(masks, good, place, min_defect_pixels, keep_empty)
        num = n or len(cond.masks or cond.goods or [None] * 16)
        options = PairOptions(num, seed, sampler, 0.0 if eta is None else float(eta), tuple(required), max_tries,
                              min_defect_pixels, keep_empty, resample, jump)
        return Request(self.plan(steps, guidance), cond, options)

    def resolve_sampler(self, sampler: str | None, eta: float | None) -> str:
        """`sampler`, or these models' default (`default_sampler`) when None; `eta` is refused
        where the sampler that will run draws no DDIM noise, given or defaulted."""
        if sampler is None and eta is not None and default_sampler(self.large, self.small) != "ddim":
            raise ConfigError.with_params(f"{{eta}} {eta} applies to {{sampler}} ddim only, and these models sample "
                                          f"with ddpm by default; add {{sampler}} ddim or drop {{eta}}")
        return sampler or default_sampler(self.large, self.small)

    def _conditioner(self, masks, good, place: str | None, min_pixels: int, keep_empty: bool):
        size, k, data = self.config.model.image_size, self.config.num_defect, self.config.data
        if masks is None:
            given = None
        elif _is_folder(masks):
            given = inputs.read_masks(os.fspath(masks), size, k, min_pixels, keep_empty, classes=data.classes,
                                            folder_classes=data.folder_classes, log=self.warn)
        else:
            given = inputs.masks_from_arrays(masks, size, k, min_pixels, keep_empty)
        if good is None:
            goods = None
        elif _is_folder(good):
            goods = inputs.list_good_images(os.fspath(good))
        else:
            goods = inputs.good_images_from_arrays(good)
        place = place or ("random" if good is not None and masks is None else "as-is")
        return inputs.Conditioner(given, goods, size, k, place)

    def pairs(self, request: Request, indices: Sequence[int], *, batch_size: int | None = None,
              tally: Tally | None = None, progress: bool = False,
              on_batch: Callable[[], None] | None = None) -> Iterator[Pair]:
        """The pairs `indices` of a request, as they finish (rejection sampling; see
        `accepted_pairs`). `tally` counts candidates; `batch_size` None sizes batches to memory."""
        batch_size = batch_size or auto_batch_size(request.plan, self.device, max(1, len(indices)))
        yield from accepted_pairs(request.plan, request.cond, request.options, indices, batch_size, self.device,
                                  tally if tally is not None else Tally(), progress, on_batch)

    def generate(self, n: int | None = None, *, seed: int = 0, classes: Sequence[str] = (), masks=None, good=None,
                 place: str | None = None, steps: int | None = None, sampler: str | None = None,
                 eta: float | None = None, batch_size: int | None = None, max_tries: int = 20,
                 min_defect_pixels: int = 0, keep_empty: bool = False, resample: int = 1, jump: int = 10,
                 guidance: float | None = None, output_type: str = "np", progress: bool = False) -> GeneratedPairs:
        """Generate pairs in memory; nothing is written.

        Args:
            n (`int`, *optional*): pairs to make; default one per given mask, else one per good
                image, else 16.
            seed (`int`, defaults to 0): pair i is drawn from seed + i.
            classes (`list[str]`, *optional*): class names (or 1..K) every mask must hold;
                candidates are drawn until one does, at most `max_tries` per pair.
            masks (folder or list of `np.ndarray`, *optional*): class-index masks (0 background,
                1..K; binary 0/255 ones in a folder take their folder's class); an image is made
                for each, the mask held exactly.
            good (folder or list of (H, W, 3) uint8 `np.ndarray`, *optional*): defect-free images
                to paint defects into: the defect region comes from `masks`, or from a mask the
                model generates first, moved to a random spot.
            place (`str`, *optional*): "as-is" or "random" placement of given / generated masks.
            steps (`int`, *optional*): respace the chain to this many steps (default: all T).
            sampler (`str`, *optional*): "ddpm", "ddim" or "dpmpp_2m" (DPM-Solver++(2M),
                deterministic, the fast choice at 20 steps). Default: ddim for published
                checkpoints, else ddpm.
            eta (`float`, *optional*): DDIM noise, ddim only; default 0 (deterministic).
            batch_size (`int`, *optional*): rows per batch; default sized to GPU memory, 8 on CPU.
            max_tries (`int`, defaults to 20): candidates per pair before it is given up.
            min_defect_pixels (`int`, defaults to 0): defect regions smaller than this are dropped.
            keep_empty (`bool`, defaults to False): keep pairs whose mask has no defect.
            resample, jump (`int`): RePaint resampling with `masks` / `good`.
            guidance (`float`, *optional*): classifier-free guidance weight for class-conditional
                models (model.class_cond), which are then asked for `classes` (or each given
                mask's classes) instead of only filtering; default 1 (plain conditional).
            output_type (`str`, defaults to "np"): "np" for stacked uint8 arrays, "pil" for PIL images.
            progress (`bool`, defaults to False): per-step progress bars.

        Returns:
            `GeneratedPairs`: images, masks and per-pair metadata, in pair order.
        """
        if output_type not in ("np", "pil"):
            raise ConfigError(f"output_type must be np or pil, got {output_type!r}")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        request = self.prepare(n, seed=seed, classes=classes, masks=masks, good=good, place=place, steps=steps,
                               sampler=sampler, eta=eta, max_tries=max_tries, min_defect_pixels=min_defect_pixels,
                               keep_empty=keep_empty, resample=resample, jump=jump, guidance=guidance)
        tally = Tally()
        done = sorted(self.pairs(request, range(request.num_samples), batch_size=batch_size, tally=tally,
                                 progress=progress), key=lambda p: p.index)
        return _collect(done, request, self.classes, self.weights, tally, output_type)


def pair_metadata(pair: Pair, options: PairOptions, classes: list[str]) -> dict:
    """What a pair is: name, index, seed, tries, classes present, defect pixels per class, sources."""
    counts = class_pixel_counts(pair.mask, len(classes))
    return {"name": pair_name(options.seed, pair.index), "index": pair.index, "seed": pair.seed, "tries": pair.tries,
            "classes": [classes[c - 1] for c in sorted(counts)],
            "defect_pixels": {classes[c - 1]: n for c, n in sorted(counts.items())}, **pair.sources}


def _collect(pairs: list[Pair], request: Request, classes: list[str], weights: dict, tally: Tally,
             output_type: str) -> GeneratedPairs:
    size = request.plan.shape[1:]
    images = np.stack([p.image for p in pairs]) if pairs else np.zeros((0, *size, 3), np.uint8)
    masks = np.stack([p.mask for p in pairs]) if pairs else np.zeros((0, *size), np.uint8)
    if output_type == "pil":
        from PIL import Image

        from defect_gen.core.masks import palette_color

        palette = [v for k in range(256) for v in palette_color(k)]
        images = [Image.fromarray(im) for im in images]
        masks = [Image.frombytes("P", (m.shape[1], m.shape[0]), np.ascontiguousarray(m).tobytes()) for m in masks]
        for m in masks:  # class indices stay the pixel values; the palette only shows them
            m.putpalette(palette)
    metadata = [pair_metadata(p, request.options, classes) for p in pairs]
    return GeneratedPairs(images, masks, metadata, list(classes), weights, [p.good_image for p in pairs],
                          tally.tries, tally.failed, tally.empty)
