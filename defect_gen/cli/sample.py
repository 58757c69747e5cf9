"""`defect-gen sample`: image + mask pairs from the two models into a folder."""

from __future__ import annotations

import sys

from defect_gen import logs
from defect_gen.cli.common import sigterm_as_interrupt

# The library's parameter names (DefectGenerator, SampleSettings) -> this command's flags: the
# one place they are renamed (errors and notes are worded with the parameters).
FLAGS = {"n": "--num_samples", "batch_size": "--batch_size", "seed": "--seed", "steps": "--steps",
         "sampler": "--sampler", "eta": "--eta", "classes": "--classes", "masks": "--mask", "good": "--good",
         "place": "--place", "resample": "--resample", "jump": "--jump", "max_tries": "--max-tries",
         "min_defect_pixels": "--min-defect-pixels", "keep_empty": "--keep-empty", "guidance": "--guidance",
         "large": "--large_recep", "small": "--small_recep", "step_inference": "--step_inference",
         "precision": "--precision", "allow_model_mismatch": "--allow-model-mismatch", "layout": "--layout",
         "large_config": "--large_recep_config", "small_config": "--small_recep_config",
         "sample_dir": "--sample_dir", "overwrite": "--overwrite", "resume": "--resume"}
from defect_gen.errors import DefectGenError


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate image + mask pairs with the large and small models")
    p.add_argument("--large_recep", help="large-RF export folder, .pt checkpoint or run folder; ours or published")
    p.add_argument("--small_recep", help="small-RF export folder, .pt checkpoint or run folder; ours or published")
    p.add_argument("--large_recep_config", help="YAML for a published checkpoint (optional for ours, which carry one)")
    p.add_argument("--small_recep_config", help="YAML for a published checkpoint (optional for ours, which carry one)")
    p.add_argument("--step_inference", type=int, required=True,
                   help="switch step: large model for t >= S, small model for t < S (0 = large only, T = small only)")
    p.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against the checkpoints)")
    p.add_argument("--sample_dir", required=True, help="output folder")
    p.add_argument("--num_samples", type=int, default=None,
                   help="pairs to write (default: one per --mask file, else one per --good image, else 16)")
    p.add_argument("--batch_size", default="auto", help="pairs per batch, or auto: sized to GPU memory (8 on CPU)")
    p.add_argument("--seed", type=int, default=0, help="pair i uses seed + i (retries: + num_samples each)")
    p.add_argument("--steps", type=int, default=None, help="respace to N steps (default: all T)")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], default=None,
                   help="default: ddim (eta 0) for published checkpoints, as their ColdDiffusion step; else ddpm. "
                        "dpmpp_2m (DPM-Solver++(2M), deterministic) with --steps 20 is the fast choice")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (default 0 = deterministic); ddim only")
    p.add_argument("--allow-model-mismatch", action="store_true",
                   help="let a model serve timesteps outside its training window (diffusion.t_min/t_max), "
                        "or the two models swapped roles")
    g = p.add_argument_group("control")
    g.add_argument("--classes", default="", help="comma-separated classes (names or 1..K) every pair must contain: "
                   "class-conditional models are asked for them; candidates without them are rejected")
    g.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="classifier-free guidance weight for class-conditional models (default 1 = plain "
                        "conditional; 2-4 hold the asked-for classes more often, at twice the compute)")
    g.add_argument("--max-tries", type=int, default=20, help="candidates per pair before it is given up (--classes)")
    g.add_argument("--mask", dest="mask_dir", help="folder of class-index masks: generate an image for each")
    g.add_argument("--good", dest="good_dir", help="folder of defect-free images to paint defects into")
    g.add_argument("--place", choices=["as-is", "random"], default=None,
                   help="where masks go (default: random for --good without --mask, else as-is)")
    g.add_argument("--resample", type=int, default=1, help="RePaint: denoise each stretch this many times")
    g.add_argument("--jump", type=int, default=10, help="RePaint: steps jumped back up per resampling")
    g = p.add_argument_group("output")
    g.add_argument("--min-defect-pixels", type=int, default=0, help="drop defect regions smaller than this")
    g.add_argument("--keep-empty", action="store_true", help="also write pairs whose mask has no defect")
    g.add_argument("--layout", choices=["paired", "mvtec", "defect_spectrum"], default="paired",
                   help="folder structure of the pairs (reads back with the same data.layout)")
    g.add_argument("--resume", action="store_true",
                   help="finish a run that was stopped: write only the pairs its manifest lacks (same settings)")
    g.add_argument("--overwrite", action="store_true", help="replace the pairs a previous run wrote to --sample_dir")
    p.add_argument("--raw-weights", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto", help="auto: bf16 on CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import torch

    from defect_gen import distributed
    from defect_gen.errors import ConfigError
    from defect_gen.models.loading import load_model
    from defect_gen.pipeline.sample_to_folder import SampleSettings, check_settings, generate
    from defect_gen.training.loop import resolve_device

    if args.batch_size != "auto" and not args.batch_size.isdigit():
        raise ConfigError(f"--batch_size must be a positive integer or auto, got {args.batch_size!r}")
    settings = SampleSettings(
        sample_dir=args.sample_dir, step_inference=args.step_inference, num_samples=args.num_samples,
        batch_size=None if args.batch_size == "auto" else int(args.batch_size), seed=args.seed, steps=args.steps,
        sampler=args.sampler, eta=args.eta, overwrite=args.overwrite, raw_weights=args.raw_weights,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()], max_tries=args.max_tries,
        mask_dir=args.mask_dir, good_dir=args.good_dir, place=args.place, resample=args.resample,
        jump_length=args.jump, min_defect_pixels=args.min_defect_pixels, keep_empty=args.keep_empty,
        layout=args.layout, precision=args.precision, resume=args.resume,
        allow_mismatch=args.allow_model_mismatch, guidance=args.guidance)
    check_settings(settings)
    device = resolve_device(args.device)
    dinfo = distributed.init(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", dinfo.local_rank)
    large = small = None
    if args.large_recep:
        large = load_model(args.large_recep, device, args.raw_weights, args.large_recep_config, "large_config")
    if args.small_recep:
        small = load_model(args.small_recep, device, args.raw_weights, args.small_recep_config, "small_config")
    if large is None and small is None:
        raise ConfigError("give --large_recep and/or --small_recep")
    for m in (large, small):
        if m is not None and args.num_defect is not None and m.cfg.num_defect != args.num_defect:
            raise ConfigError(f"--num_defect {args.num_defect} disagrees with {m.path}, "
                              f"which was trained with {m.cfg.num_defect} defect classes")
    try:
        with sigterm_as_interrupt():  # a stopped job says, like Ctrl-C, how to finish it
            summary = generate(large, small, settings, device, progress=not args.no_progress,
                               warn=lambda note: logs.warn(note.render(FLAGS)))
    finally:
        distributed.cleanup()
    if dinfo.world_size > 1:
        print(f"rank {dinfo.rank}: {len(summary.rows)} pairs")
    if summary.wanted and not summary.pairs:
        raise DefectGenError(_nothing_written(summary, settings))
    if dinfo.is_main:
        rate = summary.pairs / max(summary.seconds, 1e-9)
        shown = f"; preview: {summary.preview}" if summary.preview else ""
        print(f"{summary.pairs} pairs in {args.sample_dir} in {summary.seconds:.1f} s ({rate:.2f} pairs/s, "
              f"{summary.steps}){shown}")
        if summary.tries != summary.pairs or summary.failed:
            print(f"acceptance: {summary.pairs} of {summary.tries} candidates kept ({summary.acceptance:.1%})")
        if summary.failed:
            print(f"warning: {summary.failed} pair(s) had no accepted candidate in --max-tries {settings.max_tries}; "
                  f"their names are missing (raise --max-tries or relax --classes)", file=sys.stderr)
    return 0


def _nothing_written(summary, settings) -> str:
    """Why a sampling run that set out to make pairs wrote none, and what to change."""
    what = f"no pair written to {settings.sample_dir}: {summary.tries} candidates"
    if summary.empty == summary.tries:
        return (f"{what}, all with empty masks (nothing left after --min-defect-pixels "
                f"{settings.min_defect_pixels})" if settings.min_defect_pixels > 1 else f"{what}, all with empty "
                f"masks") + "; pass --keep-empty to keep them, or train the models longer"
    need = f"held every class of --classes {','.join(settings.classes)}" if settings.classes else "was accepted"
    return (f"{what} ({summary.empty} with empty masks), none {need} within --max-tries {settings.max_tries}; "
            f"raise --max-tries, relax --classes, or train the models longer")
