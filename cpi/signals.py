"""One way for every long ``cpi`` command to stop on SIGINT or SIGTERM.

:func:`stop_on_signals` makes SIGTERM behave like SIGINT for the duration of a
command: either signal raises :class:`cpi.errors.Interrupted` (a
``KeyboardInterrupt``) in the main thread. The unit of work in progress (one
checkpoint of ``cpi evaluate``/``cpi probe``, the scoring of ``cpi data
score-context``) is abandoned: every file is written through a temporary name
and a rename, so nothing half-written becomes visible, and finished units are
kept for the rerun. ``cpi finetune`` instead finishes the optimizer step in
progress and saves a resume point (see :mod:`fullscale.finetune`). The CLI
prints one line saying how to resume and exits with
:data:`cpi.errors.EXIT_INTERRUPTED` (130) whichever the signal.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from cpi.errors import Interrupted

RESUME_HINT = "finished work is kept; run the same command again to resume"


def _raise(signum: int, frame: Any) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}; {RESUME_HINT}", signum=signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`; the old handlers come back after.

    Outside the main thread (where handlers cannot be set) it does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {sig: signal.signal(sig, _raise) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
