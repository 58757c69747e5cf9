"""`defect-gen make-demo-data`: a small synthetic data set to try everything on."""

from __future__ import annotations

from defect_gen import fsutil

# The library's parameter names -> this command's arguments (see errors.DefectGenError.with_params).
FLAGS = {"out_dir": "make-demo-data DIR"}


def add_parser(sub) -> None:
    p = sub.add_parser("make-demo-data", help="write the built-in procedural demo dataset (paired layout)")
    p.add_argument("dir")
    p.add_argument("--num_images", type=int, default=48)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


def run(args) -> int:
    from defect_gen.data.demo import make_demo_data

    fsutil.check_writable(args.dir, "out_dir")
    try:
        summary = make_demo_data(args.dir, num_images=args.num_images, image_size=args.image_size,
                                 seed=args.seed, overwrite=args.overwrite)
    except OSError as exc:  # a full disk, a file in the way, a folder made read-only
        raise fsutil.output_error(args.dir, exc, "out_dir") from None
    print(f"wrote {summary['num_images']} demo pairs to {args.dir}")
    return 0
