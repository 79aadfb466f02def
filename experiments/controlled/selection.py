"""Non-context-critical records selected by their measured regime parameters (``mixture.delta_c_band``).

The theory's simulator predicts a rise and then a fall of context reliance only where the C+S records'
``delta_C`` lies in a band below ``delta_M / 2`` (about 0.25-0.45 at ``delta_M`` ~ 0.95 and ``n_CS >= n_C``;
``docs/controlled.md``, "An arm the theory predicts to fall"). A template passage does not land there
by design: its distractors, their order and the template's wording move ``delta_C`` from ~0 to ~1 on
the same fact. So the band arm draws ``band_pool`` candidate records per record it needs, measures each
on the base (:func:`~experiments.controlled.regime.measure_regime`) and keeps, in the drawn order, those
with ``delta_C`` in the band and ``delta_M > 2 delta_C``.

The selection's nonce names are a draw of their own (:data:`SELECTION_NONCE_OFFSET`): the regime stage
re-measures the selected records with other names, so the parameters the run reports (and the
prediction stated before training) are not the measurement the records were selected on (selecting on
one noisy measurement and reporting it would overstate how far inside the band they are).

A measurement is cached by content (the candidates' text, the base's fingerprint, the precision, the
nonce draw) under ``<knowledge cache>/selection/``: the main job's regime stage and its experiment select
the same records once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from cpi.io import atomic_write_table
from experiments.controlled.keys import content_key

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from experiments.controlled.config import ControlledConfig

log = logging.getLogger(__name__)

#: added to the mixture's seed for the selection's nonce names (the regime stage draws with the seed itself)
SELECTION_NONCE_OFFSET = 1_000_003


def in_band(table: "pd.DataFrame", band: Sequence[float]) -> "pd.Series":
    """Rows of a :func:`~experiments.controlled.regime.measure_regime` table with ``delta_c`` in
    ``[band[0], band[1]]`` and ``delta_m > 2 delta_c`` (inside the theory's regime)."""
    lo, hi = band
    return table["delta_c"].between(lo, hi) & (table["delta_m"] > 2 * table["delta_c"])


@dataclass
class BandSelector:
    """The ``select`` of :func:`~experiments.controlled.mixture.build_mixture` for a band arm: measures the
    candidate records on the base ``model_dir`` (``dtype``; log-probs in float32) and says which lie in
    ``band``. ``identity`` goes into the mixture folder's key (the selection depends on the base and the
    precision); ``table`` holds the last measurement with a ``selected`` column."""

    model_dir: Path
    model_fp: str
    dtype: str
    items: Sequence[Any]
    band: tuple[float, float]
    seed: int
    cache: Path
    n_candidates: int = 8
    batch_size: int = 16
    table: Optional["pd.DataFrame"] = None

    @property
    def identity(self) -> dict[str, Any]:
        return {"selection_base": self.model_fp, "selection_nonce_seed": SELECTION_NONCE_OFFSET + self.seed,
                "selection_candidates": self.n_candidates, "selection_dtype": self.dtype}

    def __call__(self, records: Sequence[dict[str, Any]]) -> list[bool]:
        import pandas as pd

        from experiments.controlled.regime import measure_regime, record_probes

        records = [{**r, "id": f"candidate-{i:05d}"} for i, r in enumerate(records)]
        texts = [[r["instruction"], r["input"], r["output"], r.get("subject"), r.get("distractors")] for r in records]
        path = self.cache / "selection" / f"{content_key(self.identity, texts)}.csv"
        if path.is_file():
            log.info("%s: candidate records already measured; reading them back", path)
            table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        else:
            from fullscale.checkpoints import load_checkpoint

            probes = record_probes(records, self.items, self.n_candidates)
            model, tok = load_checkpoint(self.model_dir, dtype=self.dtype)
            try:
                table = measure_regime(model, tok, probes, self.batch_size, seed=SELECTION_NONCE_OFFSET + self.seed)
            finally:
                del model
            atomic_write_table(table, path)
        self.table = table.assign(selected=in_band(table, self.band))
        return [bool(v) for v in self.table["selected"]]


def mixture_selector(cfg: "ControlledConfig", seed: int, items: Sequence[Any], model_dir: Path, model_fp: str,
                     cache: Path) -> Optional[BandSelector]:
    """The selector ``cfg``'s mixture needs for ``seed`` (None without ``mixture.delta_c_band``)."""
    band = cfg.mixture.delta_c_band
    if band is None:
        return None
    return BandSelector(model_dir=Path(model_dir), model_fp=model_fp, dtype=cfg.resolved_dtype(), items=items,
                        band=(float(band[0]), float(band[1])), seed=seed, cache=Path(cache))


__all__ = ["SELECTION_NONCE_OFFSET", "BandSelector", "in_band", "mixture_selector"]
