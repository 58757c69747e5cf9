"""`defect-gen mix`: one training folder from chosen classes of several pair folders."""

from __future__ import annotations

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"out": "--out"}


def add_parser(sub) -> None:
    p = sub.add_parser("mix", help="combine generated pair folders class by class (e.g. painted blowholes, "
                                   "copy-pasted uneven surfaces) into one folder")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--take", dest="takes", action="append", metavar="DIR[:CLASS,...]",
                     help="a `sample` / `paint` folder (paired layout) and, after ':', the classes to take from it "
                          "(a pair is taken when all its classes are listed; no list: every pair); repeatable")
    how.add_argument("--choose", metavar="REPORT_DIR", help="take, for each class, the --synthetic folder that "
                     "scored best on it in this `evaluate` report (best: an `evaluate --folds` one), where it "
                     "beats real only")
    p.add_argument("--ratio", type=float, help="with --choose: the report's ratio to compare at (needed when it "
                   "has several)")
    p.add_argument("--out", required=True, metavar="DIR", help="the new folder (must not exist)")


def run(args) -> int:
    from defect_gen.errors import ConfigError
    from defect_gen.evaluation.mix import choose_takes, mix_folders, parse_take

    if args.ratio is not None and not args.choose:
        raise ConfigError("--ratio goes with --choose (which report ratio to compare at)")
    takes = choose_takes(args.choose, args.ratio) if args.choose else [parse_take(t) for t in args.takes]
    mix_folders(takes, args.out)
    return 0
