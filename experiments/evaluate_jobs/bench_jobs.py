"""Segmenters per hour with `defect-gen evaluate --jobs 1` and `--jobs N` on this machine.

    python experiments/evaluate_jobs/bench_jobs.py       # magnetic tile, 2 seeds x 500 steps, --jobs 1 then 2
    python experiments/evaluate_jobs/bench_jobs.py --steps 2000 --jobs 1,2

The same evaluation (real only and one copy-paste folder, --seeds seeds, so 2 x seeds
segmenters at 128 px) runs once per --jobs value, each into a fresh report folder so that
nothing is cached, and the wall time, segmenters per hour and the mIoU of each run are
printed. Run it on an otherwise idle machine: other work on the cores changes the answer.
A benchmark, not a test: it takes minutes, and needs ../shared/data/magnetic-tile.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from defect_gen.training.bench import cpu_name

# this file is experiments/evaluate_jobs/bench_jobs.py: three folders up is the repository
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data", "magnetic-tile")
CONFIG = "configs/magnetic_tile_paint.yaml"


def defect_gen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "defect_gen", *args], cwd=ROOT, check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jobs", default="1,2", help="comma-separated --jobs values to time")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=500, help="segmenter steps (the study uses 2000)")
    args = p.parse_args()
    if not os.path.isdir(DATA):
        sys.exit(f"bench_jobs: needs the magnetic-tile photos at {DATA}")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical cores")
    with tempfile.TemporaryDirectory() as tmp:
        cp = os.path.join(tmp, "copy_paste")
        defect_gen("paint", "--copy-paste", "--config", CONFIG, "--set", f"data.root={DATA}",
                   "--backgrounds", "same_class", "--sample_dir", cp, "--num_samples", "60", "--no-progress")
        for jobs in args.jobs.split(","):
            out = os.path.join(tmp, f"report_jobs{jobs}")
            start = time.perf_counter()
            defect_gen("evaluate", "--real", CONFIG, "--set", f"data.root={DATA}", "--synthetic", cp,
                       "--out", out, "--ratios", "1", "--seeds", str(args.seeds), "--steps", str(args.steps),
                       "--jobs", jobs, "--no-progress")
            seconds = time.perf_counter() - start
            runs = json.load(open(os.path.join(out, "results.json")))["runs"]
            n = sum(len(r["per_seed"]) for r in runs)
            miou = ", ".join(f"{r['label']} {100 * r['summary']['mIoU'][0]:.1f}" for r in runs)
            print(f"--jobs {jobs}: {n} segmenters of {args.steps} steps in {seconds:.0f} s "
                  f"({3600 * n / seconds:.1f} per hour; mIoU {miou})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
