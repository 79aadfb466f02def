"""Load a checkpoint into a TransformerLens 4.x ``TransformerBridge``.

The bridge wraps the Hugging Face model itself (raw HF weights, *not*
``enable_compatibility_mode()``), so the probe's per-head numbers are the
heads of the model as it was trained. Compatibility mode rewrites weights in
place and, on models with a value bias, folds that bias out of the heads,
which changes per-head contributions; it is available (``compatibility_mode=
True``) but off by default, and every probe result records which one was used
(column/metadata ``weights = "raw_hf" | "compatibility_mode"``).

LoRA adapters are merged onto their base model first by
:func:`fullscale.checkpoints.load_checkpoint`; the merged model is handed to
``TransformerBridge.boot_transformers(path, hf_model=...)`` so nothing is
downloaded (everything works offline). Over a trajectory, :func:`iter_bridges`
loads a LoRA trajectory's base once and builds one bridge over it; each adapter
is applied in place (:func:`fullscale.adapters.checkpoint_models`), so the
bridge sees the new weights without being rebuilt.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cpi.errors import CpiError
from fullscale.architectures import probe_verified_architectures

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

#: Architectures on which the probe's decomposition (embedding + heads x spans +
#: attention-output bias + MLPs + final-norm/unembedding biases = logit
#: difference) is verified by the test-suite (GPT-2: Conv1D weights read as [in, out];
#: Gemma-3: (1 + w) RMSNorm, sandwich norms, scaled embeddings, QK-norm). Others supported
#: by TransformerLens are attempted with a warning; in float32 a reconciliation gap
#: above 1e-3 then stops the probe (:func:`mechinterp.probe.check_reconciliation`).
#: (read from the per-architecture facts table, ``fullscale/data/architectures.csv``: its ``probe_verified`` column)
PROBE_VERIFIED_ARCHITECTURES: tuple[str, ...] = tuple(probe_verified_architectures())


def supported_architectures() -> list[str]:
    """Architectures that the installed TransformerLens bridge can wrap (sorted)."""
    from transformer_lens.factories import architecture_adapter_factory as factory

    return sorted(factory.SUPPORTED_ARCHITECTURES)


def check_architecture(hf_config: Any, name: str = "model", model_class: str | None = None) -> str:
    """Return the HF architecture name of ``hf_config``; CpiError if TransformerLens 4.x cannot wrap it.

    ``model_class``: the loaded model's class name, used when the config declares no
    ``architectures`` (a model built in memory from a config)."""
    from transformer_lens.model_bridge.sources._hf_format import determine_architecture_from_hf_config

    supported = supported_architectures()
    declared = list(getattr(hf_config, "architectures", None) or []) or [getattr(hf_config, "model_type", "?")]
    try:
        arch = determine_architecture_from_hf_config(hf_config)
    except ValueError:
        arch = None
    if (arch is None or arch not in supported) and model_class in supported \
            and not getattr(hf_config, "architectures", None):
        arch = model_class
        hf_config.architectures = [model_class]  # the bridge reads it too
    if arch is None or arch not in supported:
        raise CpiError(
            f"{name}: architecture {arch or declared[0]!r} is not supported by TransformerLens "
            f"{_tl_version()} (supported: {', '.join(supported)})"
        )
    if arch not in PROBE_VERIFIED_ARCHITECTURES:
        log.warning("%s: architecture %s is wrapped by TransformerLens but the probe's decomposition is only "
                    "verified on %s; check the recon_rel_err column", name, arch, ", ".join(PROBE_VERIFIED_ARCHITECTURES))
    return arch


def _tl_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("transformer-lens")
    except Exception:  # noqa: BLE001 - version lookup is cosmetic
        return "4.x"


def bridge_from_model(model: Any, tokenizer: Any, name: str | None = None, compatibility_mode: bool = False) -> Any:
    """Wrap an already-loaded HF causal LM (e.g. LoRA-merged) in a ``TransformerBridge``.

    The HF model is used as-is (its device and dtype are kept); the bridge
    switches it to eager attention so ``hook_pattern`` fires. Returns the bridge
    with ``bridge.cpi_weights`` set to ``"raw_hf"`` or ``"compatibility_mode"``.
    """
    from transformer_lens.model_bridge import TransformerBridge

    label = name or getattr(model.config, "_name_or_path", None) or type(model).__name__
    check_architecture(model.config, str(label), model_class=type(model).__name__)
    model.eval()
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device
    try:
        bridge = TransformerBridge.boot_transformers(
            str(label), hf_model=model, tokenizer=_bridge_tokenizer(tokenizer), device=device, dtype=dtype
        )
    except (ValueError, NotImplementedError, KeyError, AttributeError) as exc:
        raise CpiError(f"{label}: TransformerLens could not wrap the model: {exc}") from exc
    if compatibility_mode:
        bridge.enable_compatibility_mode()
    bridge.eval()
    bridge.cpi_weights = "compatibility_mode" if compatibility_mode else "raw_hf"
    return bridge


def _bridge_tokenizer(tokenizer: Any) -> Any:
    """A private copy of ``tokenizer`` for the bridge.

    TransformerLens's ``setup_tokenizer`` mutates the tokenizer it is given (padding side,
    pad/BOS tokens) and, unless ``add_bos_token`` is set, reloads it by name from disk or the
    hub. The probe tokenizes with the caller's tokenizer (through ``fullscale.prompts``), so the
    bridge gets a copy marked ``add_bos_token=True`` (no reload: works offline and for
    in-memory tokenizers); the bridge's own tokenizer is never used for probe inputs.
    """
    import copy

    if tokenizer is None:
        return None
    tok = copy.deepcopy(tokenizer)
    tok.init_kwargs = dict(getattr(tok, "init_kwargs", {}) or {})
    tok.init_kwargs.setdefault("name_or_path", getattr(tokenizer, "name_or_path", "") or "")
    tok.init_kwargs["add_bos_token"] = True
    return tok


def load_bridge(
    ckpt: Any,
    device: "str | torch.device | None" = None,
    dtype: "str | torch.dtype | None" = None,
    tokenizer: str | Path | None = None,
    compatibility_mode: bool = False,
) -> tuple[Any, Any]:
    """Load a local HF checkpoint folder (or LoRA adapter folder, merged) as a TransformerBridge.

    ``device`` defaults to cuda when a GPU is present, else cpu; ``dtype`` ``None``/``auto`` to bfloat16
    where the device has native bf16, else float32 (:func:`fullscale.checkpoints.resolve_device_dtype`). Returns
    ``(bridge, tokenizer)``. A checkpoint that fails to load, or an
    architecture TransformerLens 4.x does not support, raises
    :class:`cpi.errors.CpiError` naming the checkpoint.
    """
    from fullscale.checkpoints import load_checkpoint, resolve_device_dtype

    dev, dt = resolve_device_dtype(None if device is None else str(device), _dtype_name(dtype))
    name = str(getattr(ckpt, "path", ckpt))
    _precheck_architecture(ckpt, name)
    try:
        model, tok = load_checkpoint(ckpt, device=dev, dtype=dt, tokenizer=tokenizer)
    except CpiError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise CpiError(f"{name}: checkpoint failed to load: {exc}") from exc
    return bridge_from_model(model, tok, name=name, compatibility_mode=compatibility_mode), tok


def _dtype_name(dtype: Any) -> str | None:
    if dtype is None or isinstance(dtype, str):
        return dtype
    return str(dtype).replace("torch.", "")


def _precheck_architecture(ckpt: Any, name: str) -> None:
    """Read config.json (if there is one) and refuse unsupported architectures before loading weights."""
    import json

    path = Path(str(getattr(ckpt, "path", ckpt)))
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        return  # adapter folders / hub names: checked after loading
    try:
        raw = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CpiError(f"{name}: checkpoint failed to load: unreadable config.json: {exc}") from exc

    class _Cfg:  # minimal stand-in with the attributes determine_architecture_from_hf_config reads
        pass

    cfg = _Cfg()
    cfg.architectures = raw.get("architectures")
    if "model_type" in raw:
        cfg.model_type = raw["model_type"]
    check_architecture(cfg, name)


def iter_bridges(ckpts: Any, device: Any = None, dtype: Any = None, tokenizer: str | Path | None = None,
                 compatibility_mode: bool = False) -> Any:
    """``(checkpoint, bridge, tokenizer)`` for each checkpoint, one model in memory at a time.

    A LoRA trajectory over one base reuses one model and one bridge (adapters applied in place:
    use each bridge before asking for the next). ``compatibility_mode`` rewrites weights, so there
    every checkpoint is loaded and merged afresh.
    """
    from fullscale.adapters import checkpoint_models
    from fullscale.checkpoints import resolve_device_dtype

    dev, dt = resolve_device_dtype(None if device is None else str(device), _dtype_name(dtype))
    bridge, wrapped = None, None
    for ck in ckpts:
        _precheck_architecture(ck, str(ck.path))
    for ck, model, tok in checkpoint_models(ckpts, device=dev, dtype=dt, tokenizer=tokenizer,
                                            swap=not compatibility_mode):
        if model is not wrapped:
            bridge = None
            bridge = bridge_from_model(model, tok, name=str(ck.path), compatibility_mode=compatibility_mode)
            wrapped = model
        yield ck, bridge, tok
        del model
    bridge = wrapped = None
