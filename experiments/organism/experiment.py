"""The organism pipeline: world -> pretrain -> finetune with checkpoints -> evaluate -> probe -> figures.

Every stage writes into one run folder and is skipped when its output is
already there (a run interrupted anywhere resumes):

``data/``      ``ift.jsonl`` (Alpaca records), ``ift_meta.csv`` (kind/subject per record),
               ``eval.jsonl`` (held-out counterfactual ``ConflictItem`` JSONL), ``world.json``
``base/checkpoint-0/``  the pretrained model + tokenizer (step 0 of the trajectory);
               ``pretrain/`` its loss curve, closed-book recall (``recall.csv``) and
               in-context reading (``reading.csv``, ``pretrain.context_reading``) tables
``finetune/``  ``fullscale.finetune.run_finetune`` output (``checkpoint-<step>/``)
``eval/``      ``fullscale.evaluate.evaluate_trajectory`` output (``items.csv``, ``summary.csv``)
``probe/``     ``mechinterp.probe_trajectory`` output (``probe.csv``)
``timings.csv`` wall time and peak resident memory of each stage, one block of rows per invocation

Finetuning, evaluation and probing use exactly the code a user runs on a 7B
model (``cpi finetune``, ``cpi evaluate``, ``cpi probe``).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
import torch
from transformers import AutoModelForCausalLM

from cpi.config import Config, check_at_least
from cpi.errors import ConfigError, CpiError
from cpi.io import atomic_write_json, atomic_write_table, save_run
from cpi.timing import StageTimer
from experiments.organism.ift import IFTConfig, make_eval_items, make_ift_records, write_eval_jsonl, write_ift_jsonl
from experiments.organism.pretrain import closed_book_recall, context_reading, pretrain_organism, PretrainConfig, save_model
from experiments.organism.world import build_tokenizer, build_world, WorldConfig
from fullscale import prompts
from fullscale.checkpoints import discover_checkpoints
from fullscale.evaluate import EvalConfig, evaluate_trajectory, load_results
from fullscale.finetune import CONFIG_FILE, FinetuneConfig, input_fingerprints, resume_differences, run_finetune
from fullscale.finetune_config import FinetuneSettings, Method
from fullscale.run_folder import finished
from mechinterp.trajectory import load_items, probe_trajectory


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrganismFinetune(FinetuneSettings):
    """The organism's finetuning: :class:`~fullscale.finetune_config.FinetuneSettings` (the same knobs,
    checks and driver mapping as the controlled experiment) with the organism's own defaults: full
    finetuning of the tiny Llama-style model (no LoRA: it has about a million weights), 300 steps of 16
    records at a constant 1e-3 (a from-scratch model this small needs a large rate; measured in
    docs/organism.md), a checkpoint every 25, 256 tokens, and the paper's filter criterion."""

    method: Method = "full"
    steps: int = 300
    save_steps: int = 25
    batch_size: int = 16
    learning_rate: float = 1e-3
    lr_scheduler: str = "constant"
    max_seq_length: int = 256
    filter_criterion: Literal["gap", "loss_without_context"] = "loss_without_context"


#: the flat fields of earlier versions -> their place in the ``finetune`` block
FLAT_FINETUNE = {"ft_lr": "learning_rate", "ft_steps": "steps", "ft_batch_size": "batch_size",
                 "ft_scheduler": "lr_scheduler", "save_steps": "save_steps", "qk_only": "method",
                 "filter_fraction": "filter_fraction", "filter_criterion": "filter_criterion"}


def _nest_flat_finetune(data: Any) -> Any:
    """A stored config with flat finetuning fields -> the same settings as a ``finetune`` block."""
    if not isinstance(data, dict) or not set(data) & set(FLAT_FINETUNE):
        return data
    data = dict(data)
    block = dict(OrganismFinetune().to_dict(), **(data.get("finetune") or {}))
    for old, new in FLAT_FINETUNE.items():
        if old in data:
            value = data.pop(old)
            block[new] = ("qk_only" if value else "full") if old == "qk_only" else value
    data["finetune"] = block
    return data


@dataclass(frozen=True)
class OrganismConfig(Config):
    """One organism run: nested world / pretraining / IFT-data configs, then finetuning and evaluation.

    ``world`` (:class:`WorldConfig`): ``n_known_*`` subjects with facts in pretraining, ``n_new_*``
    subjects only seen in context-critical finetuning contexts, ``eval_fraction`` of known subjects
    held out for the counterfactual evaluation.
    ``pretrain`` (:class:`PretrainConfig`): the Llama-style decoder's shape and its pretraining
    schedule; ``copy_fraction`` of documents state a throw-away fact twice (with up to
    ``copy_filler`` unrelated statements between) and ``qa_fraction`` are short question-answer
    documents: these give the base model in-context reading.
    ``ift`` (:class:`IFTConfig`): ``n_examples`` records, ``rho`` = fraction context-critical among
    context-bearing ones, ``recall_fraction`` no-context recall records, ``augment_fraction``
    counterfactual records (mitigation).
    ``finetune`` (:class:`OrganismFinetune`, the shared
    :class:`~fullscale.finetune_config.FinetuneSettings` with the organism's defaults): full finetuning
    (or ``finetune.method: qk_only``), ``finetune.learning_rate``, ``finetune.steps`` optimizer steps of
    ``finetune.batch_size``, a checkpoint every ``finetune.save_steps``, ``finetune.filter_fraction`` =
    the paper's filter (base-model loss without context, driver's rule).
    Evaluation: ``eval_modes`` of ``cpi evaluate``; probing on ``probe_items`` items (0 = all).
    ``out``: the run folder (where, not what: left out of the check that a folder holds this run).

    ``seed`` seeds every stage and ``threads`` sets torch's intra-op threads for the whole run: the
    nested configs' own ``seed`` (and ``pretrain.threads``) are set from them, so give ``seed``, not
    ``world.seed``. Nested fields are reached with dotted keys: ``--set ift.rho=0.5``,
    ``cfg.replace(**{"pretrain.steps": 3000})``.

    >>> cfg = OrganismConfig().replace(**{"ift.rho": 0.5, "finetune.learning_rate": 3e-3}, seed=2)
    >>> cfg.ift.rho, cfg.ift.seed, cfg.world.seed, cfg.pretrain.copy_fraction, cfg.finetune.learning_rate
    (0.5, 2, 2, 0.3, 0.003)
    """
    world: WorldConfig = field(default_factory=WorldConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    ift: IFTConfig = field(default_factory=IFTConfig)
    finetune: OrganismFinetune = field(default_factory=OrganismFinetune)
    # evaluation / probing
    eval_modes: tuple[str, ...] = ("generate", "logprob", "closed_book")
    eval_batch_size: int = 64
    probe_items: int = 0
    probe_batch_size: int = 32
    seed: int = 0
    threads: int = 1  # torch intra-op threads; 1 is robust on a shared machine, 2 is 1.7x faster on an idle one
    out: str = "runs/organism"
    "run folder (resumable; quick(): runs/organism_quick); not part of the run's content"

    #: where the run goes, not what it computes: a moved folder, or a sweep cell, is the same run
    NOT_CONTENT = ("out",)
    #: the flat finetuning fields of earlier versions, refused with their key in the ``finetune`` block
    RENAMED = {old: f"moved into the finetune block: finetune.{'method: qk_only' if old == 'qk_only' else new}"
               for old, new in FLAT_FINETUNE.items()}
    #: nested fields that follow the run's own field (name in the nested config -> field here)
    SHARED: ClassVar[dict[str, tuple[str, ...]]] = {"seed": ("world", "pretrain", "ift"), "threads": ("pretrain",)}

    def __post_init__(self) -> None:
        for name, subs in self.SHARED.items():
            for sub in subs:
                if getattr(getattr(self, sub), name) != getattr(self, name):
                    object.__setattr__(self, sub, getattr(self, sub).replace(**{name: getattr(self, name)}))
        super().__post_init__()

    def replace(self, **changes: Any) -> "OrganismConfig":
        for name, subs in self.SHARED.items():
            for sub in subs:
                if f"{sub}.{name}" in changes:
                    raise ConfigError(f"field '{sub}.{name}': set by the run's '{name}'; set '{name}' instead")
        return super().replace(**changes)

    @classmethod
    def from_stored(cls, data: Any, source: str = "config") -> "OrganismConfig":
        """:meth:`from_dict` of a run folder's stored config, also one stored before the ``finetune`` block
        (flat ``ft_lr``, ``ft_steps``, ... fields: read as that block)."""
        return cls.from_dict(_nest_flat_finetune(data), source=source)

    @classmethod
    def content_of(cls, data: Any) -> dict[str, Any]:
        """As :meth:`Config.content_of`; a config stored before the ``finetune`` block (flat ``ft_lr``,
        ``ft_steps``, ... fields) reads as that block, so such a folder still compares as the same run."""
        return super().content_of(_nest_flat_finetune(data))

    def validate(self) -> None:
        check_at_least(self, probe_items=0, eval_batch_size=1, probe_batch_size=1)
        from fullscale.prompts import MODES

        bad = [m for m in self.eval_modes if m not in MODES]
        if bad or not self.eval_modes:
            raise ConfigError(f"field 'eval_modes': {bad[0] if bad else '(none)'!r} is not a mode "
                              f"(choose from: {', '.join(MODES)})")
        try:  # every stage's settings are checked before the first stage runs
            self.finetune_config(Path("base"), Path("data.jsonl"), Path("finetune"))
        except ConfigError as exc:
            raise ConfigError(f"{exc} (from this run's finetune settings)") from None

    @classmethod
    def quick(cls, **changes: Any) -> "OrganismConfig":
        """The ``--quick`` variant (< 2 min on 2 cores): a smaller world, fewer steps.

        Its base model knows its facts but cannot read its context (no QA / filler-free copy
        documents; see docs/organism.md): a smoke test of the pipeline, not of the science.
        ``changes`` (dotted keys for nested fields) are applied on top.
        """
        base = {
            "world": WorldConfig(n_known_countries=16, n_known_people=24, n_new_countries=16, n_new_people=24,
                                 n_cities=40, n_throwaway=60),
            # fewer non-fact documents than the default so that 500 steps reach full recall
            # (measured: 100 % here; with the default's 30 % copy + 30 % QA documents only 44 %)
            "pretrain": PretrainConfig(steps=500, warmup=50, copy_fraction=0.2, qa_fraction=0.0, copy_filler=2),
            "ift": IFTConfig(n_examples=600),
            "finetune": OrganismFinetune(steps=120, save_steps=20), "eval_modes": ("generate", "logprob"), "out": "runs/organism_quick",
        }
        return cls(**base).replace(**changes)

    def finetune_config(self, base_model: Path, data: Path, output_dir: Path, filter_scores: Path | None = None):
        """The ``fullscale.finetune`` config of this run (``filter_scores``: a ``score-context`` table)."""
        return self.finetune.finetune_config(base_model, data, output_dir, self.seed, dtype="float32",
                                             filter_scores=filter_scores)


@dataclass
class OrganismRun:
    """Paths and headline tables of one finished run."""
    out: Path
    config: OrganismConfig
    recall: "pd.DataFrame"
    reading: "pd.DataFrame"  # the base's in-context reading (pretrain.context_reading)
    eval_summary: "pd.DataFrame"
    eval_items: "pd.DataFrame"
    probe: "pd.DataFrame | None"
    timings: "pd.DataFrame"
    pretrain_tokens_per_s: float | None

    @property
    def closed_book_recall(self) -> float:
        return float(self.recall["correct"].mean())

    def base_reading(self) -> dict[str, float]:
        """The base model's reading in its pretraining format: ``novel_context`` (answers a new subject
        from the context), ``conflict_context`` / ``conflict_memory`` (a known subject with a
        contradicting context: which answer it gives)."""
        by = self.reading.groupby("kind")
        return {"novel_context": float(by.get_group("novel")["follows_context"].mean()),
                "conflict_context": float(by.get_group("conflict")["follows_context"].mean()),
                "conflict_memory": float(by.get_group("conflict")["follows_memory"].mean())}

    def trajectory(self) -> "pd.DataFrame":
        """One row per step: ``cf_acc``, ``param_acc``, ``mean_margin`` over all evaluation items."""
        s = self.eval_summary
        s = s[s["category"].astype(str).str.upper() == "ALL"] if "category" in s.columns else s
        cols = [c for c in ("cf_acc", "param_acc", "mean_margin", "mean_reliance") if c in s.columns]
        return s.groupby("step")[cols].mean().reset_index().sort_values("step")


# ---------------------------------------------------------------------------------------------
# stages


def _stage_data(cfg: OrganismConfig, out: Path) -> tuple[Any, Any]:
    """World, tokenizer, IFT mixture and evaluation items (always regenerated: cheap and deterministic)."""
    world = build_world(cfg.world)
    tokenizer = build_tokenizer(world, extra_texts=template_texts())
    data = out / "data"
    records = make_ift_records(world, cfg.ift)
    write_ift_jsonl(records, data / "ift.jsonl")
    atomic_write_table(
        pd.DataFrame([{k: r[k] for k in ("kind", "subject", "relation", "output")} for r in records]),
        data / "ift_meta.csv",
    )
    write_eval_jsonl(make_eval_items(world, seed=cfg.seed), data / "eval.jsonl")
    atomic_write_json(
        data / "world.json",
        {
            "known_facts": [[f.subject, f.relation, f.obj] for f in world.known_facts],
            "new_facts": [[f.subject, f.relation, f.obj] for f in world.new_facts],
            "eval_subjects": sorted(world.eval_subjects),
        },
    )
    return world, tokenizer


def template_texts() -> list[str]:
    """The fixed words of ``fullscale.prompts``' templates, so the word-level vocab covers them."""
    return [
        prompts.ALPACA_HEADER_INPUT, prompts.ALPACA_HEADER_NO_INPUT, prompts.QA_INSTRUCTION,
        prompts.QA_INSTRUCTION_CLOSED, prompts.QUOTE_INSTRUCTION_CLOSED,
        "### Instruction: ### Input: ### Response: Background: Question: Answer:",
    ]


def _stage_pretrain(cfg: OrganismConfig, out: Path, world: Any,
                    tokenizer: Any) -> tuple[Path, "pd.DataFrame", "pd.DataFrame", float | None]:
    """Pretrain (or reuse) the base model at ``base/checkpoint-0``.

    Returns (path, closed-book recall table, in-context reading table, tokens/s); both tables
    are measured on the base model every time (cheap) and written to ``pretrain/``.
    """
    base = out / "base" / "checkpoint-0"
    stamp = out / "pretrain" / "done.json"
    want = {"pretrain": cfg.pretrain.to_dict(), "world": cfg.world.to_dict()}
    done = None
    if stamp.is_file() and (base / "config.json").is_file():
        done = json.loads(stamp.read_text())
        if done.get("config") != want:
            raise CpiError(f"{stamp}: the base model was pretrained with a different config; use a fresh --out folder")

        model = AutoModelForCausalLM.from_pretrained(base)
        log.warning("stage pretrain: reusing %s (same content: pretrain and world config)", base)
    else:
        result = pretrain_organism(world, tokenizer, cfg.pretrain)
        model = result.model
        tmp = out / "base" / ".tmp-checkpoint-0"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(model, tokenizer, tmp)
        if base.exists():
            shutil.rmtree(base)
        tmp.rename(base)
        atomic_write_table(pd.DataFrame({"step": range(len(result.losses)), "loss": result.losses}),
                           out / "pretrain" / "loss.csv")
    recall = closed_book_recall(model, tokenizer, world.known_facts)
    reading = context_reading(model, tokenizer, world, seed=cfg.seed)
    atomic_write_table(recall, out / "pretrain" / "recall.csv")
    atomic_write_table(reading, out / "pretrain" / "reading.csv")
    if done is None:
        done = {"config": want, "tokens_per_s": result.tokens_per_s, "tokens": result.tokens,
                "seconds": result.seconds, "recall": float(recall["correct"].mean())}
        atomic_write_json(stamp, done)
    return base, recall, reading, done.get("tokens_per_s")


def _stage_finetune(cfg: OrganismConfig, out: Path, base: Path) -> Path:
    scores = out / "data" / "filter_scores.csv"
    ft_cfg = cfg.finetune_config(base, out / "data" / "ift.jsonl", out / "finetune",
                                 filter_scores=scores if scores.is_file() else None)
    if finished(out / "finetune", cfg.finetune.steps) and _same_finetune(ft_cfg):
        # finished with the same settings and inputs: the driver would do nothing either, but only
        # after loading the model and data
        log.warning("stage finetune: reusing %s (same content: %d steps, settings and input contents)",
                    out / "finetune", cfg.finetune.steps)
        return out / "finetune"
    return Path(run_finetune(ft_cfg))  # resumes, or refuses a finished run made with other settings


def _same_finetune(ft_cfg: FinetuneConfig) -> bool:
    """Whether the last recorded segment of ``ft_cfg.output_dir`` had these settings and input contents."""
    record_file = Path(ft_cfg.output_dir) / CONFIG_FILE
    try:
        segments = json.loads(record_file.read_text()).get("segments") or []
    except (OSError, ValueError, AttributeError):
        return False
    return bool(segments) and not resume_differences(segments[-1], ft_cfg, input_fingerprints(ft_cfg))


def _stage_evaluate(cfg: OrganismConfig, out: Path, base: Path, ft_dir: Path) -> tuple["pd.DataFrame", "pd.DataFrame"]:
    ev = EvalConfig(
        checkpoints=(str(base), str(ft_dir)), datasets=(str(out / "data" / "eval.jsonl"),), out=str(out / "eval"),
        template="alpaca", modes=cfg.eval_modes, batch_size=cfg.eval_batch_size, max_new_tokens=4,
        n_boot=200, seed=cfg.seed, plot=True, dtype="float32",  # as it trains: auto would mean bf16 on a bf16 CPU
    )
    evaluate_trajectory(ev)
    return load_results(out / "eval")


def _stage_probe(cfg: OrganismConfig, out: Path, base: Path, ft_dir: Path) -> "pd.DataFrame":
    items = load_items(str(out / "data" / "eval.jsonl"), cfg.probe_items or None)
    ckpts = discover_checkpoints([str(base), str(ft_dir)])
    return probe_trajectory(ckpts, items, out / "probe", template="alpaca", batch_size=cfg.probe_batch_size,
                            dtype="float32")


STAGES = ("data", "pretrain", "finetune", "evaluate", "probe")


def run_organism(config: OrganismConfig, *, probe: bool = True, stages: tuple[str, ...] = STAGES,
                 timer: StageTimer | None = None) -> OrganismRun:
    """Run (or resume) the pipeline into ``config.out``; returns the headline tables.

    ``probe=False`` skips the probe stage; ``stages`` stops early (e.g. ``("data", "pretrain")``
    to make a base model only); the returned tables of stages not run are empty. ``timer``: a
    :class:`StageTimer` that already holds earlier stages of this invocation; its rows are
    appended to ``<out>/timings.csv``, which keeps the rows of earlier invocations (a resumed
    run's near-zero stage times do not overwrite the first run's measurements).
    """
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _run_stages(config, Path(config.out), probe, stages, timer or StageTimer())
    finally:
        torch.set_num_threads(old_threads)


def _run_stages(cfg: OrganismConfig, out: Path, probe: bool, stages: tuple[str, ...],
                timer: StageTimer) -> OrganismRun:
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise CpiError(f"unknown stage {bad[0]!r} (stages: {', '.join(STAGES)})")
    # a stage left out is read from the run folder when a later stage needs it (checked before writing)
    base, ft_dir = out / "base" / "checkpoint-0", out / "finetune"
    later = set(stages)
    if "pretrain" not in later and later & {"finetune", "evaluate", "probe"} and not (base / "config.json").is_file():
        raise CpiError(f"{base}: no pretrained base model; run the 'pretrain' stage first")
    if "finetune" not in later and later & {"evaluate", "probe"} and not finished(ft_dir, cfg.finetune.steps):
        raise CpiError(f"{ft_dir}: no finished finetuning ({cfg.finetune.steps} steps); run the 'finetune' stage first")
    out.mkdir(parents=True, exist_ok=True)
    prev = out / "organism_config.json"
    if prev.is_file():  # the same run: the same content (not the same folder name: `out` is not content)
        old, new = OrganismConfig.content_of(json.loads(prev.read_text()).get("config", {})), cfg.content_dict()
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise CpiError(f"{prev}: this folder holds a run with a different config (fields {', '.join(diff)}); "
                           "use a fresh --out folder")
    save_run(out, cfg)
    (out / "config.json").rename(prev)
    empty = pd.DataFrame()
    recall, reading, items, summary, probe_table, tps = empty, empty, empty, empty, None, None
    world, tokenizer = timer.run("data", _stage_data, cfg, out)
    if "pretrain" in stages:
        base, recall, reading, tps = timer.run("pretrain", _stage_pretrain, cfg, out, world, tokenizer)
    if "finetune" in stages:
        ft_dir = timer.run("finetune", _stage_finetune, cfg, out, base)
    if "evaluate" in stages:
        items, summary = timer.run("evaluate", _stage_evaluate, cfg, out, base, ft_dir)
    if probe and "probe" in stages:
        probe_table = timer.run("probe", _stage_probe, cfg, out, base, ft_dir)
    timings = timer.table()
    _append_timings(out / "timings.csv", timings)
    return OrganismRun(out=out, config=cfg, recall=recall, reading=reading, eval_summary=summary, eval_items=items,
                       probe=probe_table, timings=timings, pretrain_tokens_per_s=tps)


def _append_timings(path: Path, timings: "pd.DataFrame") -> None:
    """Add this invocation's stage rows to ``path``, keeping the rows of earlier invocations."""
    if path.is_file():
        timings = pd.concat([pd.read_csv(path), timings], ignore_index=True)
    atomic_write_table(timings, path)


__all__ = ["OrganismConfig", "OrganismRun", "run_organism", "StageTimer", "STAGES"]
