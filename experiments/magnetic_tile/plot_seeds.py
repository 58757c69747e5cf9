"""Held-out mIoU of each segmenter seed, one line per training set, from `evaluate` results.json files.

    .venv/bin/python experiments/magnetic_tile/plot_seeds.py runs/mt_paint/report_seeds5*/results.json \\
        --ratio 2 --out seeds.png

A mean ± std hides whether a mix beats real only seed by seed (each seed starts from the same
initial weights and draws the same crops in every training set) or only on average; this shows
it. Runs at `--ratio` (repeatable) and real only are drawn; a run found in several files is
drawn once, with the most seeds any of them has.
`--label OLD=NEW` renames a folder's line (repeatable).
"""

import argparse
import json
import os
import sys

from defect_gen.training.plots import line_plot

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from labels import parse_renames  # noqa: E402  (beside this file)


def seed_series(paths: list[str], ratios: list[float], rename: dict[str, str]) -> dict[str, list[float]]:
    """Line name -> mIoU (%) per seed: real only, and each folder's runs at `ratios`."""
    series: dict[str, list[float]] = {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for run in json.load(f)["runs"]:
                if run["num_synthetic"] == 0:
                    name = "real only"
                elif run["ratio"] in ratios:
                    name = f"+ {rename.get(run['label'], run['label'])} x{run['ratio']:g}"
                else:
                    continue
                values = [s["mIoU"] * 100 for s in run["per_seed"]]
                if len(values) > len(series.get(name, [])):
                    series[name] = values
    return series


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+")
    p.add_argument("--ratio", type=float, action="append", required=True,
                   help="a synthetic:real ratio whose runs are drawn (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--label", action="append", default=[], metavar="OLD=NEW", help="rename a folder's line")
    args = p.parse_args()
    series = seed_series(args.results, args.ratio, parse_renames(args.label))
    if "real only" not in series:
        raise SystemExit("no real-only run in these files")
    seeds = max(len(v) for v in series.values())
    series = {k: v + [None] * (seeds - len(v)) for k, v in series.items()}
    line_plot(args.out, list(range(seeds)), series, "held-out mIoU (%) per segmenter seed", log_y=False,
              x_label="segmenter seed", ticks_at_xs=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
