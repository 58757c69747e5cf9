"""`defect-gen train`: train one model (large- or small-RF, as its config says)."""

from __future__ import annotations

import contextlib
import sys

from defect_gen import fsutil
from defect_gen.cli.common import sigterm_as_interrupt

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"work_dir": "--work_dir", "overrides": "--set", "num_defect": "--num_defect"}


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train one model (large- or small-RF, as its config says)")
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("--work_dir", required=True, help="run folder: config.yaml, checkpoint/, metrics.jsonl")
    p.add_argument("--num_defect", type=int, default=None, help="number of defect classes (checked against data.classes)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set train.max_steps=500 (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from defect_gen import distributed
    from defect_gen.config import load_config, resolve_num_defect, to_yaml
    from defect_gen.training.loop import TrainLoop, build_parts, finished_checkpoint, resolve_device

    cfg = resolve_num_defect(load_config(args.config, args.overrides), args.num_defect)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return 0
    device = resolve_device(cfg.train.device)
    dinfo = distributed.init(device.type)
    # A finished run is said to be finished before the data is loaded (minutes, on a big set).
    finished = finished_checkpoint(args.work_dir, cfg.train.max_steps)
    if finished:
        if dinfo.is_main:
            print(f"{args.work_dir} has already finished: {finished[0]} is at step {finished[1]} "
                  f"(train.max_steps {cfg.train.max_steps}); to train further raise it, e.g. --set "
                  f"train.max_steps={2 * cfg.train.max_steps}")
        distributed.cleanup()
        return 0
    if device.type == "cuda":
        import torch

        device = torch.device("cuda", dinfo.local_rank)
    # One run per WORK_DIR: two would write the same checkpoint names and metrics lines.
    lock = fsutil.lock_dir(args.work_dir, "training run", "work_dir") if dinfo.is_main else contextlib.nullcontext()
    loop = None
    try:
        with lock, sigterm_as_interrupt():
            # As guided-diffusion's image_train.py: build the model, diffusion and data, hand them over.
            model, diffusion, data = build_parts(cfg, args.work_dir, progress=not args.no_progress)
            loop = TrainLoop(cfg, args.work_dir, device, model, diffusion, data, progress=not args.no_progress)
            path = loop.run()
    except KeyboardInterrupt:
        if dinfo.is_main:
            print(f"defect-gen train: {_interrupted(args.work_dir, loop)}", file=sys.stderr)
        return 130
    finally:
        distributed.cleanup()
    if dinfo.is_main:
        print(f"checkpoint: {path}")
    return 0


def _interrupted(work_dir: str, loop) -> str:
    from defect_gen.models import checkpoint as ckpt_lib
    from defect_gen.training.loop import checkpoint_step

    at = f" at step {loop.step}" if loop is not None else ""
    latest = ckpt_lib.latest(work_dir)
    if latest is None:
        return f"interrupted{at}; no checkpoint was saved yet, so re-running the same command starts from step 0"
    return (f"interrupted{at}; re-running the same command resumes from {latest} "
            f"(step {checkpoint_step(latest)})")
