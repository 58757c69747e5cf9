"""`defect-gen paint`: defects painted (or pasted) into photos."""

from __future__ import annotations

import sys

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"good": "--good", "num_samples": "--num_samples", "strength": "--strength", "steps": "--steps",
         "margin": "--margin", "sampler": "--sampler", "eta": "--eta", "place": "--place",
         "backgrounds": "--backgrounds", "match_light": "--match_light", "copy_paste": "--copy-paste",
         "scale": "--scale", "guidance": "--guidance", "classes": "--classes", "sample_dir": "--sample_dir",
         "overwrite": "--overwrite", "overrides": "--set",
         # paint has no --resume, but the output folder's refusal (pair_folder.prepare_dir) names it
         "resume": "--resume"}


def add_parser(sub) -> None:
    p = sub.add_parser("paint", help="paint defects into defect-free photos at their own resolution "
                                     "(small-RF model on a window around each placed training mask)")
    p.add_argument("--model", help="small-RF checkpoint (.pt) or run folder trained on native crops "
                   "(configs/magnetic_tile_paint.yaml); left out with --copy-paste")
    p.add_argument("--config", help="config whose few-shot training split gives the defects "
                   "(default: the model's own training config)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of that config, e.g. --set data.root=DIR (repeatable)")
    p.add_argument("--good", dest="good_dir", help="folder of defect-free photos (searched recursively); "
                   "needed only with --backgrounds good")
    p.add_argument("--backgrounds", choices=["good", "training", "same_class"], default="good",
                   help="good: paint into the --good photos; training: into the training split's own defect "
                        "photos, keeping their defects (a second defect per photo, no defect-free photos needed); "
                        "same_class: only into training photos of the pasted defect's class")
    p.add_argument("--sample_dir", required=True, help="output folder (paired layout, manifest, preview)")
    p.add_argument("--num_samples", type=int, default=80)
    p.add_argument("--seed", type=int, default=0, help="pair i uses seed + i")
    p.add_argument("--steps", type=int, default=50, help="respaced denoising steps")
    p.add_argument("--sampler", choices=["ddpm", "ddim", "dpmpp_2m"], default="ddim",
                   help="ddim (eta 0) by default; dpmpp_2m (DPM-Solver++(2M)) for --steps 20")
    p.add_argument("--eta", type=float, default=None, help="DDIM noise (default 0 = deterministic); ddim only")
    p.add_argument("--strength", type=float, default=1.0,
                   help="1: draw each defect from noise; below 1: redraw the pasted real defect from t = strength*T")
    p.add_argument("--scale", default="0.75,1.25", help="range of the random scale of a placed defect: MIN,MAX")
    p.add_argument("--margin", type=int, default=16, help="photo pixels around the defect in the denoised window")
    p.add_argument("--place", choices=["random", "source"], default="random",
                   help="random: anywhere, with quarter turns; source: where the defect was in its own photo "
                        "(relative, +-5 %%), for defects tied to a place such as breaks at a tile's edge")
    p.add_argument("--match_light", action="store_true",
                   help="scale each pasted defect's pixels by the surface light around its new place over that "
                        "around it in its own photo, so it keeps its own contrast to the surface")
    p.add_argument("--guidance", type=float, default=None, metavar="W",
                   help="class-conditional models: classifier-free guidance towards each window's mask classes "
                        "(default 1 = plain conditional)")
    p.add_argument("--copy-paste", action="store_true", help="no model: paste the real defect pixels (the baseline)")
    p.add_argument("--overwrite", action="store_true", help="replace the pairs of an earlier run in --sample_dir")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.models.loading import load_model
    from defect_gen.pipeline import painting
    from defect_gen.training.loop import resolve_device

    if args.copy_paste == bool(args.model):
        raise ConfigError("paint: give --model (a small-RF model) or --copy-paste (no model), exactly one")
    if args.copy_paste and args.guidance is not None:
        raise ConfigError("paint --copy-paste has no model to guide: drop --guidance")
    if args.copy_paste and not args.config:
        raise ConfigError("paint --copy-paste: --config is needed for the training split the defects come from")
    if (args.backgrounds == "good") != bool(args.good_dir):
        raise ConfigError("paint: give --good DIR (defect-free photos) or --backgrounds training/same_class, "
                          "exactly one")
    scale = _scale_range(args.scale)
    settings = painting.PaintSettings(args.sample_dir, args.num_samples, args.good_dir or "", args.seed, args.steps,
                                   args.sampler, args.eta, 0.0 if args.copy_paste else args.strength,
                                   scale[0], scale[1], args.margin, place=args.place, backgrounds=args.backgrounds,
                                   match_light=args.match_light, overwrite=args.overwrite, progress=not args.no_progress)
    if args.copy_paste:
        painter, cfg = painting.Painter(None, None, 0, 1, 0), load_config(args.config, args.overrides)
    else:
        loaded = load_model(args.model, resolve_device(args.device))
        painter = painting.painter_from_model(loaded, resolve_device(args.device), args.guidance)
        cfg = load_config(args.config, args.overrides) if args.config else loaded.cfg
        if cfg.data.classes != loaded.cfg.data.classes:
            raise ConfigError(f"--config {args.config}: classes {cfg.data.classes} differ from the model's "
                              f"{loaded.cfg.data.classes}")
    sources = painting.training_sources(cfg, progress=not args.no_progress)
    print(f"defects from {len(sources)} training pairs of {cfg.data.root}")
    painting.paint(painter, sources, list(cfg.data.classes), settings,
                   warn=lambda note: print(note.render(FLAGS), file=sys.stderr))
    return 0


def _scale_range(text: str) -> tuple[float, float]:
    from defect_gen.errors import ConfigError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--scale: expected MIN,MAX such as 0.75,1.25, got {text!r}") from None
    return lo, hi
