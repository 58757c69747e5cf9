"""`defect-gen bench`: training-step and sampling speed against the matmul peak."""

from __future__ import annotations

# The library's parameter names -> this command's flags (see errors.DefectGenError.with_params).
FLAGS = {"num_defect": "--num_defect"}


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="training-step and sampling speed against the measured matmul peak")
    p.add_argument("--config", required=True, help="the model to benchmark (training and sampling)")
    p.add_argument("--small_config", default=None, help="small-RF config for the two-stage sampling figures")
    p.add_argument("--num_defect", type=int, default=None)
    p.add_argument("--image_size", type=int, default=None, help="override model.image_size")
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--iters", type=int, default=5, help="timed repetitions (the best counts)")
    p.add_argument("--compile", action="store_true", help="torch.compile the models")
    p.add_argument("--channels_last", choices=["auto", "on", "off"], default="auto", help="auto: on for CUDA")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where it is faster (GPUs with bf16; CPUs with AMX/AVX512-BF16), else fp32")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from defect_gen.config import load_config, resolve_num_defect
    from defect_gen.errors import ConfigError
    from defect_gen.training.bench import format_table, run_bench, to_json
    from defect_gen.training.loop import resolve_device

    extra = [f"model.image_size={args.image_size}"] if args.image_size else []
    cfg = resolve_num_defect(load_config(args.config, extra), args.num_defect)
    small = resolve_num_defect(load_config(args.small_config, extra), cfg.num_defect) if args.small_config else None
    if args.batch_size < 1 or args.iters < 1:
        raise ConfigError(f"--batch_size and --iters must be >= 1, got {args.batch_size} and {args.iters}")
    channels_last = {"auto": None, "on": True, "off": False}[args.channels_last]
    result = run_bench(cfg, small, resolve_device(args.device), args.batch_size, args.iters, args.compile,
                       channels_last, precision=args.precision)
    print(to_json(result) if args.json else format_table(result))
    return 0
