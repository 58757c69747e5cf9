"""Several segmenters at once: `defect-gen evaluate --jobs N`.

A 2000-step segmenter keeps one CPU core busy for minutes, and one training uses a second
core poorly: on the 2-core AMD EPYC of docs/results.md two one-thread trainings side by
side finished two segmenters per 9 min where one two-thread training took 6 min for one.
So `--jobs N` trains N at a time, each in its own process with (CPU threads / N) threads.

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
