"""Checks of a finetuning config that need no model weights: run before any load, scoring or writing.

:func:`check_finetune_settings` refuses, with one :class:`~cpi.errors.CpiError` line naming the
field, every setting that :func:`fullscale.finetune.run_finetune` would otherwise refuse only
after loading the base model, scoring the data or writing into ``output_dir``:

- Trainer names: ``optim`` (``transformers`` optimizer names) and ``report_to`` (reporting
  integrations, ``all`` or ``none``);
- conflict sets: ``tracking.conflicts``, ``augment_sources`` and ``augment_exclude`` must load;
- tables: the IFT ``data`` (a local file) must load, ``filter_scores`` must be a score table;
- tokenizer and model structure: the tokenizer loads, has a pad or EOS token and, for
  ``template: chat``, a chat template; ``lora.target_modules`` and ``qk_only`` must match the
  architecture, and every parameter must be in the checkpoint with the shape of its config
  (transformers would start a missing weight random with a warning, and stops on a shape
  mismatch with a traceback): checked on an empty (meta-device) model built from the config
  file and the safetensors headers, so a 7B model costs no memory and no weight is read. A hub
  name that is not on disk is left to the run (it needs the network).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    from fullscale.finetune_config import FinetuneConfig

__all__ = ["check_checkpoint_weights", "check_finetune_settings"]

log = logging.getLogger(__name__)


def check_finetune_settings(config: "FinetuneConfig") -> None:
    """Raise :class:`CpiError` for the first setting that cannot work; loads no weights, writes nothing."""
    _check_trainer_names(config)
    _check_conflict_sources(config)
    _check_tables(config)
    _check_model_structure(config)


def _check_trainer_names(config: "FinetuneConfig") -> None:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK
    from transformers.training_args import OptimizerNames

    known = [o.value for o in OptimizerNames]
    if config.optim not in known:
        raise CpiError(f"field 'optim': unknown optimizer {config.optim!r} (transformers names, e.g. "
                       f"adamw_torch, adamw_torch_fused, sgd, adafactor; all: {len(known)} in "
                       "transformers.training_args.OptimizerNames)")
    allowed = sorted(INTEGRATION_TO_CALLBACK) + ["all", "none"]
    for name in config.report_to:
        if name not in allowed:
            raise CpiError(f"field 'report_to': unknown integration {name!r} (known: {', '.join(allowed)})")


def _check_conflict_sources(config: "FinetuneConfig") -> None:
    from fullscale.conflicts import load_conflicts

    fields: list[tuple[str, tuple[str, ...]]] = []
    if config.tracking is not None:
        fields.append(("tracking.conflicts", config.tracking.conflicts))
    if config.augment_fraction > 0:
        fields += [("augment_sources", config.augment_sources), ("augment_exclude", config.augment_exclude)]
    for name, sources in fields:
        for src in sources:
            try:
                load_conflicts(src)
            except CpiError as exc:
                raise CpiError(f"field '{name}': {exc}") from None


def _check_tables(config: "FinetuneConfig") -> None:
    from fullscale.ift_data import load_ift_data

    # a hub dataset name is loaded by the run (it needs the network); a resumed run checks first that its
    # data file is the one its checkpoints were trained on (a changed file is refused before it is read)
    if Path(config.data).exists() and not _resumable(config.output_dir):
        load_ift_data(config.data, config.data_format, config.data_split, config.max_examples)
    if config.filter_fraction > 0 and config.filter_scores:
        from fullscale.curation import read_scores

        read_scores(config.filter_scores)


def _resumable(output_dir: str) -> bool:
    from fullscale.run_folder import resume_point

    out = Path(output_dir).expanduser()
    return out.is_dir() and resume_point(out) is not None


def _local(name: str | None) -> Path | None:
    """The folder a model/tokenizer setting names on this machine (a cached registry model), else None.

    Never fetches: a registry model that is not cached yet is left to the run.
    """
    if not name or not name.strip():
        return None
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    from fullscale.models import default_cache_dir, is_model_folder, lookup

    spec = lookup(name.strip())
    if spec is not None and is_model_folder(default_cache_dir() / spec.name):
        return default_cache_dir() / spec.name
    return None


def _check_model_structure(config: "FinetuneConfig") -> None:
    base = _local(config.base_model)
    tok_src = _local(config.tokenizer) if config.tokenizer else base
    if tok_src is not None:
        _check_tokenizer(tok_src, config.template, config.tracking.template if config.tracking else None)
    if base is None:
        return
    model = _empty_model(base, config.base_model)
    check_checkpoint_weights(base, model, f"base_model {config.base_model!r}")
    if config.qk_only:
        from fullscale.qk_only import plan_qk_only

        plan_qk_only(model)  # CpiError for an architecture without separable q/k projections
    if config.lora is not None:
        from fullscale.qk_only import validate_lora_targets

        validate_lora_targets(model, list(config.lora.target_modules))


def _check_tokenizer(src: Path, template: str, tracking_template: str | None) -> None:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src))
    except (OSError, ValueError, TypeError) as exc:
        raise CpiError(f"tokenizer {str(src)!r}: cannot load: {str(exc).splitlines()[0] if str(exc) else exc}") \
            from None
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise CpiError(f"tokenizer {str(src)!r}: has neither a pad nor an EOS token")
    for field, value in (("template", template), ("tracking.template", tracking_template)):
        if value == "chat" and not getattr(tokenizer, "chat_template", None):
            raise CpiError(f"field '{field}': template 'chat' needs a tokenizer with a chat template, and "
                           f"{str(src)!r} has none; use template 'alpaca' or 'plain'")


def _checkpoint_shapes(base: Path) -> dict[str, tuple[int, ...]] | None:
    """Weight name -> shape from the safetensors headers of ``base`` (no tensor is read); None if not safetensors."""
    import json

    from safetensors import SafetensorError, safe_open

    index = base / "model.safetensors.index.json"
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
            (["model.safetensors"] if (base / "model.safetensors").is_file() else [])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # an unreadable index: the run's loader names it
    shapes: dict[str, tuple[int, ...]] = {}
    for name in files:
        try:
            with safe_open(str(base / name), framework="pt") as fh:
                for key in fh.keys():
                    shapes[key] = tuple(fh.get_slice(key).get_shape())
        except (OSError, SafetensorError):
            return None  # truncated or corrupt: the run's loader names it
    return shapes or None


def check_checkpoint_weights(base: Path, model: Any, name: str) -> None:
    """Every parameter of ``model`` is in the safetensors checkpoint ``base`` with its shape, else CpiError.

    A missing weight would start random (transformers only warns, then the run goes on); checked from the
    headers only, when the checkpoint names its weights as the model does. ``model`` may be empty (meta
    device) or loaded; ``name`` is how the message names the checkpoint.
    """
    shapes = _checkpoint_shapes(base)
    if shapes is None:
        return
    params = {k: tuple(p.shape) for k, p in model.named_parameters()}  # tied weights once
    found = [k for k in params if k in shapes]
    if len(found) < 0.9 * len(shapes):
        return  # the checkpoint names its weights otherwise (transformers renames on load): left to the loader
    missing = [k for k in params if k not in shapes]
    spare = [k for k in shapes if k not in params]  # names transformers maps on load (GPT-NeoX embed_out -> lm_head)
    if len(missing) > len(spare):
        spare_shapes = [shapes[k] for k in spare]
        first = next((k for k in missing if params[k] not in spare_shapes), missing[0])
        raise CpiError(f"{name}: the checkpoint lacks {len(missing) - len(spare)} weight(s) of the architecture in "
                       f"its config.json (first: {first}); they would start random")
    for k in found:
        if shapes[k] != params[k]:
            raise CpiError(f"{name}: weight {k} has shape {list(shapes[k])} in the checkpoint but "
                           f"{list(params[k])} in its config.json")


def _empty_model(base: Path, name: str) -> Any:
    """The architecture of ``base`` with no weights (meta device): module names only, no memory."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        cfg = AutoConfig.from_pretrained(str(base))
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(cfg)
        model.tie_weights()  # as loading does: a tied output head is the embedding, not a weight of its own
        return model
    except (OSError, ValueError, KeyError) as exc:
        raise CpiError(f"base_model {name!r}: cannot read its config: {str(exc).splitlines()[0]}") from None
