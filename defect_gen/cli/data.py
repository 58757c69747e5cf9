"""`defect-gen data check`: what a data folder holds and what is wrong with it."""

from __future__ import annotations

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"overrides": "--set", "num_defect": "--num_defect"}


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="dataset tools: `data check` validates a dataset before training")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    c = data_sub.add_parser("check", help="per-class counts, defect-pixel shares, image sizes and every problem")
    c.add_argument("--config", required=True, help="YAML config whose data section to check")
    c.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against data.classes)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set data.root=DIR (repeatable)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """`data check`: print the report; exit 1 when it found problems (training would refuse)."""
    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.data.check import check_dataset, format_report
    from defect_gen.data.dataset import select_pairs

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    # masks are also resized as training will, to name those that lose most of a class there
    size = cfg.data.load_size or cfg.model.image_size
    report = check_dataset(cfg.data, progress=not args.no_progress, size=size)
    for line in format_report(report):
        print(line)
    if report.pairs and not report.refusable:
        suffix = " (after leaving out the bad pairs, as data.skip_bad would)" if report.problems else ""
        print(f"training set: {select_pairs(report).how}{suffix}")
    return 1 if report.problems else 0
