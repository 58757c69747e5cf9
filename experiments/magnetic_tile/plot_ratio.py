"""Held-out mIoU against the synthetic:real ratio from several `evaluate` results.json files.

    .venv/bin/python experiments/magnetic_tile/plot_ratio.py runs/mt_paint/report_*/results.json --out mt_miou_ratio.png

Evaluations split over several calls (which share their cached segmenters) draw as one plot:
one line per synthetic folder, starting from the real-only score at ratio 0; a folder or
ratio that appears in several files is drawn once. `--label OLD=NEW` renames a folder's line
(repeatable); two folders renamed alike share one line, e.g. the first 80 and all 160 pairs of
one copy-paste run.
"""

import argparse
import json
import os
import sys

from defect_gen.training.plots import errorbar_plot

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labels import parse_renames  # noqa: E402  (beside this file)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--label", action="append", default=[], metavar="OLD=NEW", help="rename a folder's line")
    args = p.parse_args()
    rename = parse_renames(args.label)
    base, points = None, {}
    for path in args.results:
        with open(path, encoding="utf-8") as f:
            for run in json.load(f)["runs"]:
                mean, std = run["summary"]["mIoU"]
                if run["num_synthetic"] == 0:
                    base = (0.0, mean * 100, std * 100)
                else:
                    points.setdefault(rename.get(run["label"], run["label"]), {})[run["ratio"]] = (run["ratio"], mean * 100, std * 100)
    if base is None:
        raise SystemExit("no real-only run in these files")
    series = {}
    for label, by_ratio in points.items():
        xs, ms, ss = zip(base, *[by_ratio[r] for r in sorted(by_ratio)])
        series[label] = (list(xs), list(ms), list(ss))
    errorbar_plot(args.out, series, "held-out mIoU (%) against synthetic:real ratio (0 = real only; mean ± std)",
                  x_label="synthetic pairs per real pair")
    print(args.out)


if __name__ == "__main__":
    main()
