"""Process-group set-up that works under torchrun, under mpiexec, or as a single process.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; those are the
launcher's contract, not hidden switches. Under mpiexec (mpi4py installed) rank and size come
from MPI and rank 0 broadcasts a free port, as guided-diffusion did. Otherwise: one process.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from defect_gen.errors import DefectGenError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mpi_env() -> tuple[int, int, int, str, int] | None:
    """(rank, size, local_rank, master_addr, master_port) from MPI, or None if not under mpiexec."""
    if not any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")):
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    comm = MPI.COMM_WORLD
    if comm.Get_size() == 1:
        return None
    addr = comm.bcast(socket.gethostbyname(socket.getfqdn()) if comm.Get_rank() == 0 else None, root=0)
    port = comm.bcast(_free_port() if comm.Get_rank() == 0 else None, root=0)
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    return comm.Get_rank(), comm.Get_size(), local, addr, port


# How long the processes of a launch wait for each other at start-up. A launch with a rank
# missing (WORLD_SIZE=2 but one process started) would otherwise wait as long as a collective
# may (30 min), silently; collectives themselves keep torch's default timeout.
RENDEZVOUS_TIMEOUT_S = 300


def _env_int(name: str, default: int) -> int:
    """An integer launcher variable (torchrun's contract), checked: one line if it is not one."""
    text = os.environ.get(name, str(default))
    if not text.strip().isdigit():
        raise DefectGenError(f"environment variable {name}={text[:40]!r}: expected a non-negative integer "
                             f"(torchrun sets it; unset WORLD_SIZE to run as one process)")
    return int(text)


def _rendezvous(world: int, rank: int):
    """The store every rank of a hand launch (WORLD_SIZE/RANK/MASTER_ADDR/MASTER_PORT set by
    the user) meets at: rank 0 hosts it and waits at most RENDEZVOUS_TIMEOUT_S for the rest.
    (Under torchrun its agent has already gathered every rank before starting them.)"""
    addr = os.environ.get("MASTER_ADDR")
    port = _env_int("MASTER_PORT", 0)
    if not addr or not port:
        raise DefectGenError(f"WORLD_SIZE={world} needs MASTER_ADDR and MASTER_PORT (the address of rank 0); "
                             f"torchrun sets them")
    timeout = datetime.timedelta(seconds=RENDEZVOUS_TIMEOUT_S)
    try:
        return dist.TCPStore(addr, port, world, is_master=rank == 0, timeout=timeout, wait_for_workers=True)
    except RuntimeError as exc:  # DistStoreError / DistNetworkError: a rank that never came
        raise DefectGenError(f"rank {rank} of WORLD_SIZE={world} waited {RENDEZVOUS_TIMEOUT_S} s at "
                             f"{addr}:{port} for the other ranks, which did not all join "
                             f"({' '.join(str(exc).split())[:100]}); start every rank (torchrun does), "
                             f"or unset WORLD_SIZE to run as one process") from None


def init(device_type: str) -> DistInfo:
    """Join (or skip) the process group; NCCL on CUDA, gloo on CPU."""
    if dist.is_available() and dist.is_initialized():
        return info()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if "WORLD_SIZE" in os.environ and _env_int("WORLD_SIZE", 1) > 1:
        world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
        if rank >= world:
            raise DefectGenError(f"environment variable RANK={rank}: expected 0..{world - 1} (WORLD_SIZE={world})")
        if device_type == "cuda":
            torch.cuda.set_device(local)
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
            dist.init_process_group(backend, init_method="env://")  # torchrun gathered every rank already
        else:
            dist.init_process_group(backend, store=_rendezvous(world, rank), rank=rank, world_size=world)
        return DistInfo(dist.get_rank(), dist.get_world_size(), local)
    mpi = _mpi_env()
    if mpi is not None:
        rank, size, local, addr, port = mpi
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=size)
        return DistInfo(rank, size, local)
    return DistInfo()


def info() -> DistInfo:
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def sum_across_ranks(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def max_across_ranks(value: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value


def broadcast_from_main(value: torch.Tensor) -> torch.Tensor:
    """Rank 0's value on every rank (e.g. a choice each rank measured for itself)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.broadcast(value, src=0)
    return value


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
