"""One per-checkpoint resume policy, shared by ``cpi evaluate`` and ``cpi probe``.

A trajectory runner writes each checkpoint's rows (``<name>.csv``), then a JSON marker beside them
(``<name>.json``) holding the run fingerprint (settings + item contents) and the checkpoint's weights
fingerprint (:func:`cpi.fingerprint.checkpoint_fingerprint`). On a rerun, :func:`part_done` decides,
the same way for every runner:

- no marker (or no rows): compute;
- the marker matches both fingerprints: skip (said at WARNING level, naming the marker);
- the marker differs (other weights under the same name, other settings or items): with
  ``overwrite``, recompute (WARNING naming what differs); without it, refuse with a one-line
  :class:`~cpi.errors.CpiError` naming what differs. Never reused.

:func:`write_part` writes rows first and the marker last, both atomically, so a run killed in
between leaves no marker and the checkpoint is recomputed as a whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)


def part_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """``(rows, marker)`` of checkpoint ``name`` in ``folder``."""
    return folder / f"{name}.csv", folder / f"{name}.json"


def part_done(folder: Path, name: str, fingerprint: str, weights: str, overwrite: bool, what: str) -> bool:
    """Whether checkpoint ``name``'s stored part in ``folder`` can be reused (see module doc).

    ``what``: the verb of the log line and error (``evaluated``, ``probed``).
    """
    from cpi.fingerprint import marker_differences, read_marker

    rows, marker = part_paths(folder, name)
    meta = read_marker(rows, marker)
    if meta is None:
        return False
    differs = marker_differences(meta, fingerprint, weights)
    if not differs:
        log.warning("checkpoint %s: skipped, already %s from the same weights (%s), settings and items (%s)",
                    name, what, weights, marker)
        return True
    if overwrite:
        log.warning("checkpoint %s: stored results differ in %s; recomputing (--overwrite)", name,
                    " and ".join(differs))
        return False
    raise CpiError(f"{marker}: the stored results of checkpoint {name} differ in {' and '.join(differs)}; "
                   "use a fresh --out or --overwrite")


def write_part(folder: Path, name: str, table: "pd.DataFrame", record: dict[str, Any]) -> None:
    """Rows, then the marker (``record`` + ``n_rows``), each written atomically."""
    from cpi.io import atomic_write_json, atomic_write_table

    rows, marker = part_paths(folder, name)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_table(table, rows)
    atomic_write_json(marker, {**record, "n_rows": len(table)})
