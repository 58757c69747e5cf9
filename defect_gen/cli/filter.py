"""`defect-gen filter`: keep the generated pairs whose masks a segmenter agrees with."""

from __future__ import annotations

from defect_gen import fsutil

# The library's parameter names (filter_folders, FilterSettings, the loaders of evaluation/data.py)
# -> this command's flags: the one place they are renamed.
FLAGS = {"out": "--out", "config_path": "--real", "overrides": "--set", "synthetic_dirs": "--synthetic", "out_dir": "--out",
         "keep": "--keep", "steps": "--steps", "seed": "--seed", "image_size": "--image_size"}


def add_parser(sub) -> None:
    p = sub.add_parser("filter", help="keep the generated pairs whose defect a segmenter trained on the real "
                                      "pairs finds where the mask says (the top share of each class)")
    p.add_argument("--real", required=True, metavar="CFG", help="YAML config of the real data; its training "
                   "split (the few-shot selection, or every pair) trains the segmenter")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the real config, e.g. --set data.selection_file=RUN/selected_files.json")
    p.add_argument("--synthetic", nargs="+", action="extend", required=True, metavar="DIR",
                   help="`defect-gen paint` / `sample` folders; each one's kept pairs go to OUT/<its name>")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the filtered folders")
    p.add_argument("--keep", type=float, default=0.5, help="share of each class's pairs kept, best first")
    p.add_argument("--steps", type=int, default=2000, help="segmenter training steps")
    p.add_argument("--seed", type=int, default=0, help="segmenter seed")
    p.add_argument("--image_size", type=int, default=128, help="size the segmenter sees (as in evaluate)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.filtering import FilterSettings, filter_folders
    from defect_gen.evaluation.segmenter import SegSettings

    cfg = load_config(args.real, args.overrides)
    fsutil.check_writable(args.out, "out")  # before minutes of training a segmenter
    for flag, value in (("--steps", args.steps), ("--image_size", args.image_size)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    settings = FilterSettings(keep=args.keep, image_size=args.image_size, seed=args.seed,
                              seg=SegSettings(steps=args.steps), progress=not args.no_progress)
    filter_folders(cfg, args.real, args.synthetic, args.out, settings)
    return 0
