"""`defect-gen export` and `convert-published`: sampling-only model folders."""

from __future__ import annotations

from defect_gen import fsutil

# The library's parameter names -> the flags of `export` and `convert-published`
# (see errors.DefectGenError.with_params).
FLAGS = {"out": "--out", "force": "--force", "report": "--report", "config": "--config"}


def add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="write an export folder for sharing and sampling: model.safetensors (the "
                                      "sampling EMA), config.yaml, export.json, MODEL_CARD.md")
    p.add_argument("src", help="training checkpoint (.pt) or run folder (its latest checkpoint)")
    p.add_argument("--out", required=True, help="export folder to create (replaced only with --force)")
    p.add_argument("--rate", default=None, help="which EMA (default: train.ema_rate, the one sampling uses)")
    p.add_argument("--report", default=None, help="a `defect-gen evaluate --out` folder whose results go into "
                                                  "the model card (without it the card says: not evaluated)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder at --out")


def add_convert_parser(sub) -> None:
    p = sub.add_parser("convert-published", help="turn a published Defect-Gen checkpoint + its YAML into an export "
                                                 "folder (as `export` writes), once")
    p.add_argument("checkpoint", help="the published implementation's .pt ({model, ema, optimizer})")
    p.add_argument("--config", required=True, help="its YAML (model.target, model.params, diffusion)")
    p.add_argument("--out", required=True, help="export folder to create (replaced only with --force)")
    p.add_argument("--force", action="store_true", help="replace an existing export folder at --out")


def run_export(args) -> int:
    from defect_gen.models.export import export_run, refuse_existing

    fsutil.check_writable(args.out, "out")
    refuse_existing(args.out, args.force)  # before the checkpoint is read: a refusal costs nothing
    print(f"wrote {export_run(args.src, args.out, args.rate, force=args.force, report=args.report)}")
    return 0


def run_convert(args) -> int:
    from defect_gen.models.export import refuse_existing
    from defect_gen.models.published import convert

    fsutil.check_writable(args.out, "out")
    refuse_existing(args.out, args.force)
    print(f"wrote {convert(args.checkpoint, args.config, args.out, force=args.force)}")
    return 0
