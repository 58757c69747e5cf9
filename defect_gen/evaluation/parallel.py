"""Several segmenters at once: `defect-gen evaluate --jobs N`.

A segmenter is a small UNet on 64 px crops, too small a workload to keep many threads busy,
so training several at once, each in its own process with (CPU threads / N) threads, can
finish more per hour. How much depends on the machine (docs/results.md has measured figures);
experiments/evaluate_jobs/bench_jobs.py measures it: run it before relying on it.

Each task runs in a fresh spawned process, at most N at a time. Spawned, not forked: a forked
child inherits torch's thread pool in whatever state the parent left it, which can hang. A
process per task rather than a multiprocessing.Pool: the start-up (about a second, importing
torch) is nothing beside minutes of training, and the parent waits on the processes
themselves, so a worker killed from outside (out of memory) is an error naming its exit
code, where a Pool would wait forever for the result it lost. Tasks are handed out as workers
free up, so only about N training sets are in memory at once; the first error (or Ctrl-C)
stops every worker, and what finished is already on disk.
"""

from __future__ import annotations

import multiprocessing
import signal
import traceback
from multiprocessing.connection import wait
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from defect_gen.errors import WorkerDied


def run_parallel(fn: Callable, tasks: Iterable[tuple], total: int, workers: int, desc: str,
                 progress: bool = True) -> None:
    """Call `fn(*task)` for every task, `workers` at a time, each in its own spawned process
    (fn and its arguments must pickle; what fn returns is dropped: it is expected to write its
    result). A worker's exception is raised here; a worker that dies without one (killed) is
    a WorkerDied error."""
    threads = max(1, torch.get_num_threads() // workers)
    context = multiprocessing.get_context("spawn")
    running: dict = {}  # process sentinel -> (process, receiving end of its error pipe)
    bar = tqdm(total=total, desc=f"{desc} ({workers} at a time)", disable=not progress, leave=False)
    try:
        for task in tasks:
            if len(running) == workers:
                _reap(running, bar)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(target=_work, args=(fn, task, threads, send), daemon=True)
            process.start()
            send.close()  # the child has its own copy; the parent only reads
            running[process.sentinel] = (process, receive)
        while running:
            _reap(running, bar)
    finally:
        # An error here or in a worker, or Ctrl-C: nothing keeps training.
        for process, _ in running.values():
            process.terminate()
        for process, receive in running.values():
            process.join()
            receive.close()
        bar.close()


def _reap(running: dict, bar) -> None:
    """Wait until at least one worker ends; count each that finished, raise what went wrong."""
    for sentinel in wait(list(running)):
        process, receive = running.pop(sentinel)
        process.join()
        error = _received(receive)
        if error is not None:
            raise error
        if process.exitcode != 0:
            raise WorkerDied(f"a worker process died without an error ({_exit_reason(process.exitcode)}); "
                             "finished runs are saved: run the same command again to go on")
        bar.update()


def _received(receive):
    """The exception a worker sent, or None: a worker that succeeded (or was killed) sent nothing
    and closed its end, which reads as end-of-file."""
    try:
        return receive.recv() if receive.poll() else None
    except EOFError:
        return None
    finally:
        receive.close()


def _exit_reason(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:  # a signal number Python has no name for (a real-time signal)
        return f"killed by signal {-code}"
    return f"killed by {name}" + (", out of memory?" if name == "SIGKILL" else "")


def _work(fn: Callable, task: tuple, threads: int, send) -> None:
    """A worker process: run one task; an exception goes to the parent, with this traceback."""
    torch.set_num_threads(threads)
    try:
        fn(*task)
    except BaseException as exc:
        exc.add_note("in the worker process:\n" + traceback.format_exc().rstrip())
        try:
            send.send(exc)
        except Exception:  # an exception that does not pickle: its text will do
            send.send(RuntimeError(f"{type(exc).__name__}: {exc}"))
        raise SystemExit(1) from None
    finally:
        send.close()
