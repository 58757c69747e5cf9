"""The processes scripts/gpu_check.py starts, one per check (not meant to be run by hand).

    gpu_check_probe.py env          one JSON line: torch, CUDA, cuDNN and NCCL versions, the device
    gpu_check_probe.py nccl         under torchrun: an NCCL process group, one all-reduce, checked
    gpu_check_probe.py cli ARGS...  `defect-gen ARGS...` in this process, then one line with the
                                    process's peak memory: "gpu_check peak memory: N MiB (how)"

Each runs in its own process so that a check that crashes, hangs or runs out of memory takes
only itself down. The driver reads what these print; everything else goes to its log files.
"""

from __future__ import annotations

import json
import os
import resource
import sys

import torch

PEAK_PREFIX = "gpu_check peak memory:"


def env() -> int:
    from defect_gen.training.bench import cpu_name

    cuda = torch.cuda.is_available()
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
            "cudnn": torch.backends.cudnn.version() if cuda else None,
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
            "device": torch.cuda.get_device_name(0) if cuda else None,
            "device_count": torch.cuda.device_count() if cuda else 0,
            "cpu": cpu_name(), "threads": torch.get_num_threads()}
    print(json.dumps(info))
    return 0


def nccl() -> int:
    """One all-reduce over NCCL among torchrun's processes: each adds its rank + 1."""
    import torch.distributed as dist

    if not torch.cuda.is_available():
        print("nccl: no CUDA device", file=sys.stderr)
        return 1
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", init_method="env://")
    try:
        x = torch.tensor([dist.get_rank() + 1.0], device="cuda")
        dist.all_reduce(x)
        world = dist.get_world_size()
        want = world * (world + 1) / 2
        if x.item() != want:
            print(f"nccl: all-reduce gave {x.item()}, expected {want}", file=sys.stderr)
            return 1
        print(f"nccl all-reduce ok over {world} process(es), NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    finally:
        dist.destroy_process_group()
    return 0


def peak_memory_line() -> str:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        mib = torch.cuda.max_memory_allocated(torch.cuda.current_device()) / 2**20
        return f"{PEAK_PREFIX} {mib:.0f} MiB (CUDA, max allocated)"
    mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return f"{PEAK_PREFIX} {mib:.0f} MiB (CPU, max resident set)"


def cli(argv: list[str]) -> int:
    from defect_gen.cli import main

    code = main(argv)
    if code == 0:
        print(peak_memory_line(), flush=True)
    return code


if __name__ == "__main__":
    mode, rest = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if mode == "env" and not rest:
        raise SystemExit(env())
    if mode == "nccl" and not rest:
        raise SystemExit(nccl())
    if mode == "cli":
        raise SystemExit(cli(rest))
    raise SystemExit("usage: gpu_check_probe.py env | nccl | cli DEFECT_GEN_ARGS...")
