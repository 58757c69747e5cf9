"""How much faster is `defect-gen train`'s step than the published implementation's?

Times both on the same network, taking turns in one run (`training.bench.run_bench` with the
published step re-created in reference_step.py), and prints bench's table with the ratio.
Results: docs/benchmarks.md. Usage (from the repository root):

    .venv/bin/python experiments/published_step/bench_reference.py --config configs/small.yaml \
        --small_config configs/small.yaml --image_size 64 --batch_size 2 --iters 4
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from reference_step import ReferenceStep  # noqa: E402

from defect_gen.config import load_config, resolve_num_defect  # noqa: E402
from defect_gen.training.bench import format_table, run_bench, to_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--small_config", default=None)
    p.add_argument("--image_size", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    extra = [f"model.image_size={a.image_size}"] if a.image_size else []
    cfg = resolve_num_defect(load_config(a.config, extra), None)
    small = resolve_num_defect(load_config(a.small_config, extra), cfg.num_defect) if a.small_config else None
    r = run_bench(cfg, small, torch.device("cpu"), a.batch_size, a.iters, precision="fp32", reference=ReferenceStep)
    print(to_json(r) if a.json else format_table(r))


if __name__ == "__main__":
    main()
