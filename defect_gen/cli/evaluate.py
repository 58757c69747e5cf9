"""`defect-gen evaluate`: do generated pairs help a segmenter?"""

from __future__ import annotations

from defect_gen import fsutil

# The library's parameter names (evaluate, crossvalidate, EvalSettings, SegSettings and the loaders of
# evaluation/data.py) -> this command's flags: the one place they are renamed.
FLAGS = {"out": "--out", "config_path": "--real", "overrides": "--set", "synthetic_dirs": "--synthetic",
         "copy_paste_dir": "--copy-paste", "out_dir": "--out", "ratios": "--ratios", "seeds": "--seeds",
         "steps": "--steps", "batch_size": "--batch_size", "crop": "--crop", "lr": "--lr", "width": "--width",
         "real_finish": "--real_finish", "real_share": "--real_share", "image_size": "--image_size",
         "negatives": "--negatives", "max_heldout": "--max_heldout", "folds": "--folds", "arch": "--segmenter",
         "jobs": "--jobs"}


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="do generated pairs help a segmenter? real only vs real + synthetic, "
                                        "plus generation quality; writes REPORT_DIR/report.md")
    p.add_argument("--real", required=True, metavar="CFG", help="YAML config of the real data; its few-shot "
                   "selection (data.num_images_per_class, selection_seed / selection_file) is the training split, "
                   "the other defect images the held-out split")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a value of the real config, e.g. --set data.root=DIR (repeatable)")
    p.add_argument("--synthetic", nargs="+", action="extend", default=[], metavar="DIR",
                   help="`defect-gen sample` / `paint` folders (paired layout); each is evaluated")
    p.add_argument("--copy-paste", dest="copy_paste", metavar="GOOD_DIR", default=None,
                   help="add the copy-paste baseline: the training split's real defects pasted onto these "
                        "defect-free photos at random spots (what a generator has to beat)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for report.md, results.json, plots")
    p.add_argument("--ratios", default="0.5,1,2", help="synthetic pairs per real training pair, comma-separated")
    p.add_argument("--seeds", type=int, default=3, help="segmenters per training set (seeds 0..N-1)")
    p.add_argument("--steps", type=int, default=1000, help="segmenter training steps")
    p.add_argument("--batch_size", type=int, default=16, help="segmenter batch size")
    p.add_argument("--crop", type=int, default=64, help="segmenter training crops (px of the evaluation size; "
                   "0 or >= --image_size: whole images); half of them centred on a defect")
    p.add_argument("--lr", type=float, default=3e-3, help="segmenter peak learning rate (one-cycle)")
    p.add_argument("--width", type=int, default=16, help="UNet base channels")
    p.add_argument("--real_finish", type=float, default=0.0, metavar="SHARE",
                   help="share of the last segmenter steps trained on the real pairs alone (0: the mix to the end)")
    p.add_argument("--real_share", type=float, default=0.0, metavar="SHARE",
                   help="share of each segmenter batch drawn from the real pairs whatever the ratio "
                        "(0: uniform over real + synthetic, i.e. 1 / (1 + ratio))")
    p.add_argument("--image_size", type=int, default=128, help="evaluation size: real and synthetic pairs are "
                   "resized to it alike")
    p.add_argument("--negatives", type=int, default=0, metavar="N",
                   help="add N defect-free photos of the real config (data.good_folders; all-background masks) "
                        "to every training set, real only included, as a user with spare good photos would; "
                        "ratios still count defect pairs (default 0)")
    p.add_argument("--max_heldout", type=int, default=None,
                   help="at most this many held-out real pairs (seeded pick; default: all)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="no held-out photos needed: K-fold cross-validation over the training pairs themselves "
                        "(generated pairs made from a validation photo are left out of that fold); 0: held-out split")
    p.add_argument("--segmenter", choices=["unet", "deeplabv3"], default="unet",
                   help="unet: built-in small UNet; deeplabv3: torchvision's, from scratch (needs torchvision)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="segmenters trained at once, each in its own process with CPU threads / N threads "
                        "(measure it: experiments/evaluate_jobs/bench_jobs.py); the same runs and cache as one "
                        "at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    import shlex

    from defect_gen.config import load_config
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.crossval import crossvalidate
    from defect_gen.evaluation.report import write_report
    from defect_gen.evaluation.run import EvalSettings, evaluate, parse_ratios
    from defect_gen.evaluation.segmenter import SegSettings

    cfg = load_config(args.real, args.overrides)
    fsutil.check_writable(args.out, "out")  # before minutes of training segmenters
    size = args.image_size
    for flag, value in (("--seeds", args.seeds), ("--steps", args.steps), ("--batch_size", args.batch_size),
                        ("--width", args.width), ("--max_heldout", args.max_heldout or 1), ("--image_size", size),
                        ("--jobs", args.jobs)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if args.negatives < 0:
        raise ConfigError(f"--negatives must be >= 0 (defect-free photos per training set), got {args.negatives}")
    if args.crop < 0:
        raise ConfigError(f"--crop must be >= 0 (0, or at least --image_size: whole images), got {args.crop}")
    if not 0.0 <= args.real_finish < 1.0:
        raise ConfigError(f"--real_finish must be in [0, 1) (a share of the steps), got {args.real_finish}")
    if not 0.0 <= args.real_share < 1.0:
        raise ConfigError(f"--real_share must be in [0, 1) (a share of each batch), got {args.real_share}")
    if not args.synthetic and not args.copy_paste:
        raise ConfigError("evaluate: nothing to compare with real only; give --synthetic DIR... and/or --copy-paste DIR")
    if args.folds < 0 or args.folds == 1:
        raise ConfigError(f"--folds must be 0 (held-out split) or at least 2, got {args.folds}")
    if args.folds and args.max_heldout:
        raise ConfigError("--max_heldout is for the held-out split; with --folds every training pair is validated")
    seg = SegSettings(arch=args.segmenter, steps=args.steps, batch_size=args.batch_size, lr=args.lr, width=args.width,
                      crop=args.crop, real_finish=args.real_finish, real_share=args.real_share)
    settings = EvalSettings(ratios=parse_ratios(args.ratios), seeds=args.seeds, image_size=size,
                            max_heldout=args.max_heldout, copy_paste_dir=args.copy_paste, seg=seg,
                            negatives=args.negatives, jobs=args.jobs, progress=not args.no_progress)
    if args.folds:
        results = crossvalidate(cfg, args.real, args.synthetic, args.out, settings, args.folds)
    else:
        results = evaluate(cfg, args.real, args.synthetic, args.out, settings)
    # The command as it would be typed (with every default spelt out), for the report.
    command = ["defect-gen", "evaluate", "--real", args.real, *[a for o in args.overrides for a in ("--set", o)],
               *(["--synthetic", *args.synthetic] if args.synthetic else []),
               *(["--copy-paste", args.copy_paste] if args.copy_paste else []),
               "--out", args.out, "--ratios", args.ratios, "--seeds", str(args.seeds), "--steps", str(args.steps),
               "--batch_size", str(args.batch_size), "--crop", str(args.crop), "--image_size", str(size),
               *(["--real_finish", f"{args.real_finish:g}"] if args.real_finish else []),
               *(["--real_share", f"{args.real_share:g}"] if args.real_share else []),
               *(["--max_heldout", str(args.max_heldout)] if args.max_heldout else []),
               *(["--negatives", str(args.negatives)] if args.negatives else []),
               *(["--folds", str(args.folds)] if args.folds else []), "--segmenter", args.segmenter,
               *(["--jobs", str(args.jobs)] if args.jobs > 1 else [])]
    command = " ".join(shlex.quote(a) for a in command)
    print(f"report: {write_report(results, args.out, command)}")
    return 0
