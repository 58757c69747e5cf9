"""Several segmenters at once: `defect-gen evaluate --jobs N`.

A segmenter is a small UNet on 64 px crops, too small a workload to keep many threads busy,
so training several at once, each in its own process with (CPU threads / N) threads, can
finish more per hour. How much depends on the machine: on a 2-core AMD EPYC,
scripts/bench_jobs.py measured 44.9 segmenters per hour with --jobs 2 against 42.1 with
--jobs 1 (docs/results.md, round 12); measure before relying on it.

Workers are spawned, not forked: a forked child inherits torch's thread pool in whatever
state the parent left it, which can hang. Tasks are handed out as workers free up, so only
about N training sets are in memory at once however many runs there are; the first error
(or Ctrl-C) stops every worker, and what finished is already on disk.
"""

from __future__ import annotations

import multiprocessing
import queue
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_parallel(fn: Callable, tasks: Iterable[tuple], total: int, workers: int, desc: str,
                 progress: bool = True) -> None:
    """Call `fn(*task)` for every task, `workers` at a time in spawned processes (fn and its
    arguments must pickle; what fn returns is dropped: it is expected to write its result)."""
    threads = max(1, torch.get_num_threads() // workers)
    done: queue.SimpleQueue = queue.SimpleQueue()
    bar = tqdm(total=total, desc=f"{desc} ({workers} at a time)", disable=not progress, leave=False)
    # Pool.__exit__ terminates the workers: on an error or Ctrl-C nothing keeps training.
    with multiprocessing.get_context("spawn").Pool(workers, _init_worker, (threads,)) as pool:
        in_flight = 0
        for task in tasks:
            if in_flight == workers:
                _finished(done.get(), bar)
                in_flight -= 1
            pool.apply_async(fn, task, callback=done.put, error_callback=done.put)
            in_flight += 1
        for _ in range(in_flight):
            _finished(done.get(), bar)
    bar.close()


def _finished(outcome, bar) -> None:
    """A task's outcome from the queue: re-raise a worker's exception here, else count it."""
    if isinstance(outcome, BaseException):
        raise outcome
    bar.update()
