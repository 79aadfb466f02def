"""Processes for the controlled experiment: seeds run ``workers`` at a time, each in a spawned process.

One process per core on ``threads`` torch threads is the fastest use of a small CPU machine; the numbers
do not depend on the number of workers. An interrupt or an error stops every worker at once (what they
finished is on disk, and a rerun resumes from it).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Sequence

from cpi.errors import EXIT_INTERRUPTED


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads (0 = leave as is), restoring them after."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def worker_pool(processes: int, threads: int) -> Iterator[Any]:
    """A pool of ``processes`` spawned workers on ``threads`` torch threads each, stopped at once when
    the block raises or is interrupted (what the workers finished is on disk; a rerun resumes)."""
    import multiprocessing

    pool = multiprocessing.get_context("spawn").Pool(processes, initializer=_init_worker, initargs=(threads,))
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def call(in_worker: bool, threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)``: here, or with ``in_worker`` in one spawned worker process on ``threads`` torch
    threads, so that the parent never holds a model (with ``workers`` seeds running beside it, the
    parent's memory would add to theirs)."""
    if not in_worker:
        return fn(*args)
    with worker_pool(1, threads) as pool:
        return pool.apply(fn, args)


def map_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], workers: int, threads: int) -> list[Any]:
    """``[fn(job) for job in jobs]``, in order (``workers`` <= 1) or ``workers`` at a time in spawned
    processes with ``threads`` torch threads each; results in the order of ``jobs`` either way. ``fn``
    must be a module-level function (it travels to the workers by name). A worker's
    :class:`~cpi.errors.CpiError` reaches the caller unchanged."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    with worker_pool(min(workers, len(jobs)), threads) as pool:
        return list(pool.imap(_quietly, [(fn, job) for job in jobs]))


def _quietly(fn_job: tuple[Callable[[Any], Any], Any]) -> Any:
    """``fn(job)`` in a worker: stopped by the parent (SIGTERM while finetuning: the step is finished
    and saved first), it exits quietly; the parent prints the one line on how to resume."""
    fn, job = fn_job
    try:
        return fn(job)
    except KeyboardInterrupt:
        os._exit(EXIT_INTERRUPTED)


def _init_worker(threads: int) -> None:
    """A worker leaves SIGINT to the parent (which stops the pool) and uses ``threads`` torch threads."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads:
        torch.set_num_threads(threads)


__all__ = ["call", "map_jobs", "torch_threads", "worker_pool"]
