"""Progress bars for long work (tqdm on stderr).

Set ``CPI_PROGRESS=0`` in the environment to silence them (e.g. in logs).
"""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    return os.environ.get("CPI_PROGRESS", "1") not in ("0", "false", "no")


def progress(iterable: Iterable[T], desc: str, total: int | None = None, leave: bool = False) -> Iterable[T]:
    """Wrap ``iterable`` in a progress bar labelled ``desc``."""
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=not progress_enabled(), dynamic_ncols=True)
