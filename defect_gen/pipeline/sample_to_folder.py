"""`defect-gen sample`: checkpoints in, PNGs and a manifest out.

This module loads the models (`load_model`) and runs the file job: which pairs to make
(this rank's slice, less those a resumed run wrote), their files, the manifest, the
preview. The pairs themselves come from the library, `generator.DefectGenerator.pairs`:
the plan, one generator of batches, and rejection sampling around it.

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

Outputs: see `defect_gen.pipeline.pair_folder` (layouts, manifest.jsonl, preview.png). Provenance: the
weights that made the pairs ({path, step, sha256} per model) are recorded in
sample_settings.json and in every manifest row (rows get copied between folders and merged;
each must say what made it). A --resume with other weights is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field

import torch

from defect_gen import distributed, fsutil, logs
from defect_gen.config import Config
from defect_gen.core.masks import image_to_uint8
from defect_gen.errors import ConfigError, DefectGenError, short_repr
from defect_gen.models.loading import LoadedModel
from defect_gen.pipeline import inputs, pair_folder
from defect_gen.pipeline.generator import (
    PRECISION_DTYPES,  # noqa: F401  check_pair, check_roles, make_plan: as before, from here too
    DefectGenerator,
    Pair,
    Request,
    Tally,
    check_options,
    pair_name,
)


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
# Settings

def check_settings(s: SampleSettings) -> None:
    """Combinations of the settings that cannot work, each as one line, before any model loads
    (the generator's own check, `check_options`, plus the folder layout)."""
    check_options(n=s.num_samples, batch_size=s.batch_size, seed=s.seed, steps=s.steps, sampler=s.sampler,
                  eta=s.eta, classes=s.classes, masks=s.mask_dir, good=s.good_dir, place=s.place,
                  resample=s.resample, jump=s.jump_length, max_tries=s.max_tries,
                  min_defect_pixels=s.min_defect_pixels, guidance=s.guidance)
    if s.layout not in pair_folder.LAYOUTS:
        raise ConfigError.with_params(f"{{layout}} must be one of {', '.join(pair_folder.LAYOUTS)}, got {{value}}",
                                      value=repr(s.layout))


def resolve_sampler(s: SampleSettings, gen: DefectGenerator) -> SampleSettings:
    """The settings with the sampler the generator decides (`DefectGenerator.resolve_sampler`)
    and eta filled in, as the run records them."""
    sampler = gen.resolve_sampler(s.sampler, s.eta)
    return dataclasses.replace(s, sampler=sampler, eta=0.0 if s.eta is None else s.eta)


def prepare(gen: DefectGenerator, s: SampleSettings) -> Request:
    """The settings as a generator request."""
    return gen.prepare(s.num_samples, seed=s.seed, classes=s.classes, masks=s.mask_dir, good=s.good_dir,
                       place=s.place, steps=s.steps, sampler=s.sampler, eta=s.eta if s.sampler == "ddim" else None,
                       max_tries=s.max_tries, min_defect_pixels=s.min_defect_pixels, keep_empty=s.keep_empty,
                       resample=s.resample, jump=s.jump_length, guidance=s.guidance)


# ---------------------------------------------------------------------------------------
# The job


def _name(s: SampleSettings, index: int) -> str:
    return pair_name(s.seed, index)


# Settings that decide which pair a name stands for: a resumed run must keep them.
PAIR_DEFINING_SETTINGS = ("step_inference", "seed", "steps", "sampler", "eta", "raw_weights", "classes",
                          "max_tries", "mask_dir", "good_dir", "place", "resample", "jump_length",
                          "min_defect_pixels", "keep_empty", "layout", "guidance")


def _hashes(weights) -> dict | None:
    """The part of the recorded weights that says whether they are the same: each model's
    sha256 (a run folder moved elsewhere, or a relative path given from elsewhere, is not a change)."""
    if not isinstance(weights, dict):
        return None
    return {role: w.get("sha256") if isinstance(w, dict) else w for role, w in weights.items()}


def _precision(s: SampleSettings) -> str:
    """--precision, except that a resumed `auto` run goes on in the precision its first part
    chose (recorded as precision_used): `auto` times the choice, and a timing that went the
    other way would make the rest of the pairs differ from an uninterrupted run's."""
    path = os.path.join(s.sample_dir, "sample_settings.json")
    if not (s.resume and s.precision == "auto" and os.path.isfile(path)):
        return s.precision
    try:
        used = _read_recorded(path).get("precision_used")
    except ConfigError:
        return s.precision  # _check_resumable refuses the file with this error, under the run's lock
    return used if used in PRECISION_DTYPES else s.precision


def _read_recorded(path: str) -> dict:
    """The settings a run recorded in sample_settings.json (a --resume must keep them)."""
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except (ValueError, OSError) as exc:
        raise ConfigError.with_params(f"{{resume}}: {{path}} is unreadable or cut short ({type(exc).__name__}); "
                                      f"it records the settings the pairs were made with: restore it, or start "
                                      f"again with {{overwrite}}", path=path) from None
    if not isinstance(recorded, dict):
        raise ConfigError.with_params("{resume}: {path}: expected a JSON object of settings, got {got}",
                                      path=path, got=short_repr(recorded))
    return recorded


def _check_resumable(s: SampleSettings, num: int, models: str, weights: dict, precision: str) -> None:
    """Record this run's settings and weights; with --resume, refuse settings or weights that
    differ from the recorded ones (a run recorded before weights were recorded: settings only)."""
    path = os.path.join(s.sample_dir, "sample_settings.json")
    current = {"num_samples": num, "models": models, **{k: getattr(s, k) for k in PAIR_DEFINING_SETTINGS},
               "weights": weights}
    if s.resume and os.path.exists(path):
        recorded = _read_recorded(path)
        # Runs recorded before weights were recorded are checked on their settings alone.
        changed = [f"{k} ({recorded.get(k)!r} -> {v!r})" for k, v in current.items()
                   if (k == "weights" and k in recorded and _hashes(recorded[k]) != _hashes(v))
                   or (k != "weights" and recorded.get(k) != v)]
        if changed:
            raise ConfigError.with_params("{resume}: these settings differ from the run in {folder}: {changed}",
                                          folder=s.sample_dir, changed="; ".join(changed))
        return
    # precision_used: what --precision auto chose, kept by a --resume (see _precision); not compared
    fsutil.atomic_write_json(path, {**current, "precision_used": precision})  # never half a file after a kill


def _write(s: SampleSettings, pair: Pair, classes: list[str], weights: dict,
           manifest: pair_folder.ManifestWriter) -> dict:
    """Write one pair's files and its manifest row (which records the weights that made it)."""
    try:
        row = pair_folder.write_pair(s.sample_dir, s.layout, _name(s, pair.index), pair.image, pair.mask, classes)
        row = {"name": row.pop("name"), "seed": pair.seed, "tries": pair.tries, **row, **pair.sources,
               "weights": weights}
        manifest.append(row)
    except OSError as exc:  # a full disk or a folder made read-only mid-run; --resume finishes later
        raise fsutil.output_error(manifest.path, exc, "sample_dir") from None
    return row


def _total(device: torch.device, *values: int) -> list[int]:
    summed = distributed.sum_across_ranks(torch.tensor(values, dtype=torch.float64, device=device))
    return [int(v) for v in summed.tolist()]


def generate(large: LoadedModel | None, small: LoadedModel | None, s: SampleSettings,
             device: torch.device, progress: bool = True, warn=None) -> Summary:
    """Sample the pairs into s.sample_dir; returns what was done (see Summary).

    The pairs come from `DefectGenerator.pairs`; this function decides which ones (this
    rank's slice, less those a resumed run already wrote) and writes them. `warn` takes the
    notes about the arguments (`errors.Note`) of the generator (`DefectGenerator`) and of the
    output folder (`pair_folder.prepare_dir`).
    """
    check_settings(s)
    gen = DefectGenerator(large, small, s.step_inference, device=device, precision=_precision(s),
                          allow_model_mismatch=s.allow_mismatch, warn=warn)
    s = resolve_sampler(s, gen)
    request = prepare(gen, s)
    # One run per SAMPLE_DIR: a second one (say a --resume while the first still runs) would
    # make the same names twice. Rank 0 holds the lock for all ranks.
    main = distributed.info().is_main
    with fsutil.lock_dir(s.sample_dir, "sampling run", "sample_dir") if main else contextlib.nullcontext():
        return _generate_locked(gen, request, s, progress, warn)


def _generate_locked(gen: DefectGenerator, request: Request, s: SampleSettings, progress: bool, warn) -> Summary:
    dinfo, num, weights = distributed.info(), request.num_samples, gen.weights
    if dinfo.is_main:
        pair_folder.prepare_dir(s.sample_dir, s.layout, s.overwrite, s.resume, warn=warn)
        _check_resumable(s, num, request.plan.description, weights, gen.precision)
    distributed.barrier()
    done = pair_folder.done_names(s.sample_dir) if s.resume else set()
    progress = progress and dinfo.is_main
    # Under torchrun each rank takes a contiguous slice of the pair indices: no duplicate, no gap.
    lo, hi = (num * dinfo.rank) // dinfo.world_size, (num * (dinfo.rank + 1)) // dinfo.world_size
    todo = [i for i in range(lo, hi) if _name(s, i) not in done]
    bar = logs.bar(hi - lo, hi - lo - len(todo), "sampling", "pair", enabled=progress)
    rows, preview, tally = [], [], Tally()

    def show_candidates() -> None:  # after every batch: rejected candidates move nothing else
        bar.set_postfix_str(f"{tally.tries} candidates, {len(rows)} kept")

    start = time.perf_counter()
    manifest = pair_folder.ManifestWriter(s.sample_dir)
    # The per-step bars inside the sampler only make sense redrawn on a terminal.
    pairs = gen.pairs(request, todo, batch_size=s.batch_size, tally=tally, progress=progress and logs.live(),
                      on_batch=show_candidates)
    with manifest, bar:
        for pair in pairs:
            rows.append(_write(s, pair, gen.classes, weights, manifest))
            if pair.index < lo + s.preview:  # the first pairs by name, whichever finished first
                preview.append((pair.index, pair.image, pair.mask, pair.good_image))
            show_candidates()
            bar.update(1)
    made, tries, failed, empty, wanted = _total(gen.device, len(rows), tally.tries, tally.failed, tally.empty,
                                                len(todo))
    distributed.barrier()
    wrote_preview = False
    if dinfo.is_main:
        pair_folder.sort_manifest(s.sample_dir)
        items = _preview_items(s, gen.config, {_name(s, p[0]): p[1:] for p in preview})
        pair_folder.save_preview(s.sample_dir, items)
        wrote_preview = bool(items)
    return Summary(rows, made, tries, failed, time.perf_counter() - start, request.plan.description, empty=empty,
                   wanted=wanted, preview=os.path.join(s.sample_dir, pair_folder.PREVIEW) if wrote_preview else None)


def _read_back(s: SampleSettings, cfg: Config, row: dict) -> tuple | None:
    """(rgb, class index, given rgb or None) of a pair an earlier run wrote, for the preview."""
    try:
        rgb, index = pair_folder.read_pair(s.sample_dir, row, s.layout, cfg.data.classes)
        given = None
        if row.get("good_source"):
            given = image_to_uint8(inputs.read_good_image(row["good_source"], rgb.shape[0]))
    except (DefectGenError, KeyError, OSError, TypeError, ValueError, AttributeError):
        return None  # a pair that cannot be read back is left out of the picture, not an error
    return rgb, index, given


def _preview_items(s: SampleSettings, cfg: Config, made: dict) -> list[tuple]:
    """The first s.preview pairs by name: this run's, and (after --resume) those written before."""
    items = []
    for row in pair_folder.manifest_rows(s.sample_dir)[: s.preview]:
        item = made.get(row["name"]) or _read_back(s, cfg, row)
        if item is not None:
            items.append(item)
    return items
