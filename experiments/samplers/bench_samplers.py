"""How close few-step samplers come to the 1000-step deterministic chain, on trained models.

    python experiments/samplers/bench_samplers.py --large runs/demo/large --small runs/demo/small --step_inference 200

Every sampler starts from the same noise (pair i: seed + i) and runs the same two-stage
chain (respaced, S and S-1 added); the result is compared with DDIM eta = 0 over all 1000
steps, the probability-flow ODE the deterministic samplers approximate. Printed per sampler:
RMS distance over all channels in model units ([-1, 1]: RGB and one-hot mask), the RGB part
in 8-bit grey levels, the share of mask pixels whose class differs, and the seconds it took.
A benchmark, not a test: it needs trained models and minutes of CPU.
"""

from __future__ import annotations

import argparse
import time

import torch

from defect_gen import DefectGenerator
from defect_gen.core.samplers import SAMPLERS, randn_rows
from defect_gen.training.bench import cpu_name

RUNS = (("dpmpp_2m", 10), ("dpmpp_2m", 20), ("ddim", 20), ("ddim", 50))


def run(gen: DefectGenerator, sampler: str, steps: int | None, noise: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The chain's end for this noise, and the seconds it took."""
    plan = gen.plan(steps)
    start = time.perf_counter()
    with torch.inference_mode():
        x = SAMPLERS[sampler](plan.denoise, noise.clone(), plan.timesteps, plan.diffusion, eta=0.0)
    return x, time.perf_counter() - start


def distances(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, float, float]:
    """(RMS over all channels, RMS of RGB in 8-bit levels, share of mask pixels of another class)."""
    rms = float(((x - ref) ** 2).mean().sqrt())
    rgb = float((((x[:, :3] - ref[:, :3]) * 127.5) ** 2).mean().sqrt())
    classes = float((x[:, 3:].argmax(1) != ref[:, 3:].argmax(1)).float().mean())
    return rms, rgb, classes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--large", required=True)
    p.add_argument("--small", required=True)
    p.add_argument("--step_inference", type=int, default=200)
    p.add_argument("--num", type=int, default=8, help="pairs (one batch)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    gen = DefectGenerator.from_pretrained(args.large, args.small, step_inference=args.step_inference)
    shape = gen.plan(None).shape
    gens = [torch.Generator().manual_seed(args.seed + i) for i in range(args.num)]
    noise = randn_rows(torch.empty(args.num, *shape), gens)
    ref, ref_seconds = run(gen, "ddim", None, noise)
    print(f"{cpu_name()}, {torch.get_num_threads()} torch threads; {args.num} pairs of {shape[1]} px, seeds "
          f"{args.seed}..{args.seed + args.num - 1}, switch {args.step_inference}; reference: ddim eta 0, "
          f"{len(gen.plan(None).timesteps)} steps ({ref_seconds:.1f} s)")
    for role, w in gen.weights.items():
        print(f"{role}: {w['path']} (step {w['step']}, sha256 {str(w['sha256'])[:12]})")
    print("\n| sampler | steps (run) | RMS to reference | RGB RMS (8-bit) | mask pixels of another class | seconds |")
    print("|---|---|---|---|---|---|")
    for sampler, steps in RUNS:
        x, seconds = run(gen, sampler, steps, noise)
        rms, rgb, classes = distances(x, ref)
        ran = len(gen.plan(steps).timesteps)
        print(f"| {sampler} | {steps} ({ran}) | {rms:.4f} | {rgb:.2f} | {classes:.2%} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
