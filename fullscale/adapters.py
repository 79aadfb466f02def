"""LoRA trajectories with the base model loaded once: adapters applied by rewriting their target weights.

A trajectory of LoRA checkpoints (``checkpoint-<step>/adapter_config.json`` + ``adapter_model.safetensors``)
shares one base model. Reloading and merging it for every checkpoint (``PeftModel.from_pretrained(...)
.merge_and_unload()``) costs a full load each time and, on a 7B base, a second copy of the weights.
Here the base is loaded once (:func:`fullscale.checkpoints.load_checkpoint`, memory-mapped) and each
adapter is applied in place to the weights it targets only:

    W = W_base + transpose(B @ A) * scaling          (float32 arithmetic, rounded once to the model dtype)

which is what peft's ``merge_and_unload`` computes (``autocast_adapter_dtype`` keeps LoRA weights in
float32, and the merge adds the float32 delta to the weight), so the numbers equal the merge path
(tests: bitwise in float32 and bfloat16 on tiny models, and on SmolLM2). Before the next adapter,
the touched weights are restored from the base's safetensors files (memory-mapped reads of those
tensors only). The model object stays the same, so a TransformerLens bridge built over it stays valid.

- :func:`adapter_plan`: whether a LoRA folder can be applied this way (plain LoRA on ``Linear``
  layers: no DoRA, no ``modules_to_save``, no LoRA biases, no per-module rank or alpha patterns),
  and why not otherwise (then the merge path is used, with an INFO line).
- :func:`check_adapter_base`: the fingerprint check: when the adapter's finetuning run recorded its
  base model's content fingerprint (``finetune_config.json`` beside the checkpoints, ``inputs.base_model``),
  the base it names now must have that fingerprint; and every adapter matrix must fit the base's weight.
- :func:`checkpoint_models`: ``(checkpoint, model, tokenizer)`` for each checkpoint of a list, one model in
  memory at a time, LoRA checkpoints over one base swapped in place.
"""

from __future__ import annotations

import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from cpi.errors import CpiError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from fullscale.checkpoints import Checkpoint

log = logging.getLogger(__name__)

#: The file a ``cpi finetune`` run folder records its inputs' fingerprints in (``inputs.base_model``).
RUN_RECORD = "finetune_config.json"


@dataclass(frozen=True)
class AdapterPlan:
    """How one LoRA folder applies: its base folder, its scaling, and why it cannot be swapped (or None)."""

    folder: Path
    base: str
    scaling: float
    not_swappable: str | None = None
    modules: dict[str, str] = field(default_factory=dict)
    "module name in the base model -> key prefix in adapter_model.safetensors"


def read_adapter_config(name: str, folder: Path) -> dict[str, Any]:
    try:
        acfg = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CpiError(f"checkpoint {name}: unreadable adapter_config.json: {exc}") from exc
    if not isinstance(acfg, dict) or not acfg.get("base_model_name_or_path"):
        raise CpiError(f"checkpoint {name}: adapter_config.json has no base_model_name_or_path")
    return acfg


def _why_not(acfg: dict[str, Any], folder: Path) -> str | None:
    checks = [
        (str(acfg.get("peft_type", "LORA")).upper() != "LORA", f"peft_type {acfg.get('peft_type')}"),
        (bool(acfg.get("use_dora")), "DoRA"),
        (bool(acfg.get("modules_to_save")), "modules_to_save"),
        (acfg.get("bias", "none") != "none", f"bias {acfg.get('bias')!r}"),
        (bool(acfg.get("rank_pattern")) or bool(acfg.get("alpha_pattern")), "per-module rank/alpha patterns"),
        (bool(acfg.get("fan_in_fan_out")), "fan_in_fan_out"),
        (bool(acfg.get("layer_replication")), "layer_replication"),
        (not (folder / "adapter_model.safetensors").is_file(), "no adapter_model.safetensors"),
    ]
    return next((why for bad, why in checks if bad), None)


def adapter_plan(ckpt: "Checkpoint") -> AdapterPlan:
    """Read ``ckpt``'s adapter: base folder, scaling, target modules (``not_swappable`` says why not)."""
    import math

    from fullscale.checkpoints import _resolve_base

    folder = Path(ckpt.path)
    acfg = read_adapter_config(ckpt.name, folder)
    base = _resolve_base(folder, acfg["base_model_name_or_path"])
    r, alpha = int(acfg.get("r", 8)), float(acfg.get("lora_alpha", 8))
    scaling = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    why = _why_not(acfg, folder)
    modules: dict[str, str] = {}
    if why is None:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as fh:
                keys = list(fh.keys())
        except (SafetensorError, OSError) as exc:
            raise CpiError(f"checkpoint {ckpt.name}: corrupt adapter_model.safetensors: {exc}") from exc
        for key in keys:
            if key.endswith(".lora_A.weight"):
                prefix = key[: -len(".lora_A.weight")]
                if prefix + ".lora_B.weight" not in keys:
                    raise CpiError(f"checkpoint {ckpt.name}: {prefix}.lora_A has no lora_B in adapter_model.safetensors")
                modules[_module_name(prefix)] = prefix
            elif not key.endswith(".lora_B.weight"):
                why = f"tensor {key} is not a LoRA matrix"
                break
        if not modules and why is None:
            why = "no LoRA matrices"
    return AdapterPlan(folder=folder, base=base, scaling=scaling, not_swappable=why, modules=modules)


def _module_name(prefix: str) -> str:
    """``base_model.model.model.layers.0.self_attn.q_proj`` -> ``model.layers.0.self_attn.q_proj``."""
    for head in ("base_model.model.",):
        if prefix.startswith(head):
            return prefix[len(head):]
    return prefix


def recorded_base_fingerprint(adapter_dir: Path) -> str | None:
    """The base-model fingerprint the adapter's finetuning run recorded, if any (see module doc)."""
    for folder in (adapter_dir, adapter_dir.parent):
        record = folder / RUN_RECORD
        if record.is_file():
            try:
                inputs = json.loads(record.read_text()).get("inputs") or {}
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
                return None
            fp = inputs.get("base_model") if isinstance(inputs, dict) else None
            return fp if isinstance(fp, str) else None
    return None


def check_adapter_base(name: str, adapter_dir: Path, base_dir: str | Path) -> None:
    """CpiError when the base named by the adapter is not the one its run recorded (content fingerprint)."""
    from cpi.fingerprint import checkpoint_fingerprint

    want = recorded_base_fingerprint(Path(adapter_dir))
    if want is None or not Path(base_dir).is_dir():
        return
    have = checkpoint_fingerprint(base_dir)
    if have != want:
        raise CpiError(f"checkpoint {name}: the adapter was trained on a base model with fingerprint {want} "
                       f"(recorded in {RUN_RECORD}) but its base {base_dir} has fingerprint {have}")


def _base_tensor_files(base_dir: Path) -> dict[str, Path]:
    """``{tensor name: safetensors file}`` of a base model folder (sharded or not)."""
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {k: base_dir / v for k, v in weight_map.items()}
    single = base_dir / "model.safetensors"
    if single.is_file():
        from safetensors import safe_open

        with safe_open(str(single), framework="pt") as fh:
            return {k: single for k in fh.keys()}
    return {}


class SwappedBase:
    """A base model in memory onto which LoRA adapters are applied one at a time (see module doc)."""

    def __init__(self, model: Any, tokenizer: Any, base_dir: str | Path, fingerprint: str) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.base_dir, self.fingerprint = Path(base_dir), fingerprint
        self.files = _base_tensor_files(self.base_dir)
        self.params = dict(model.named_parameters())
        self.touched: set[str] = set()

    def restore(self) -> None:
        """Put back the base weights of every module the last adapter changed."""
        from safetensors import safe_open

        import torch

        by_file: dict[Path, list[str]] = {}
        for pname in sorted(self.touched):
            by_file.setdefault(self.files[pname], []).append(pname)
        with torch.no_grad():
            for f, names in by_file.items():
                with safe_open(str(f), framework="pt") as fh:
                    for pname in names:
                        self.params[pname].copy_(fh.get_tensor(pname))
        self.touched.clear()

    def apply(self, ckpt: "Checkpoint", plan: AdapterPlan) -> None:
        """``W = W_base + transpose(B @ A) * scaling`` for every module of ``plan``; the base weights of
        modules only the previous adapter changed are restored first.

        ``W_base`` is read from the base's safetensors file (memory-mapped), so a module that every
        adapter targets is rewritten once per checkpoint, with no separate restore. The float32
        arithmetic is peft's: ``delta = (B @ A) * scaling``, then ``float(W_base) + delta`` rounded once.
        """
        from safetensors import safe_open

        import torch

        missing = [m for m in plan.modules if m + ".weight" not in self.params or m + ".weight" not in self.files]
        if missing:
            raise CpiError(f"checkpoint {ckpt.name}: the adapter targets {missing[0]}, which the base model "
                           f"{self.base_dir} does not have (adapter of another base?)")
        targets = {m + ".weight" for m in plan.modules}
        self.touched -= targets
        self.restore()
        handles: dict[Path, Any] = {}
        try:
            with torch.no_grad(), safe_open(str(plan.folder / "adapter_model.safetensors"), framework="pt") as fh:
                for module, prefix in plan.modules.items():
                    a = fh.get_tensor(prefix + ".lora_A.weight")
                    b = fh.get_tensor(prefix + ".lora_B.weight")
                    pname = module + ".weight"
                    w = self.params[pname]
                    if a.ndim != 2 or b.ndim != 2 or (b.shape[0], a.shape[1]) != tuple(w.shape) \
                            or b.shape[1] != a.shape[0]:
                        raise CpiError(f"checkpoint {ckpt.name}: adapter matrices of {module} ({tuple(b.shape)} @ "
                                       f"{tuple(a.shape)}) do not fit the base weight {tuple(w.shape)} of "
                                       f"{self.base_dir} (adapter of another base?)")
                    f = self.files[pname]
                    if f not in handles:
                        handles[f] = safe_open(str(f), framework="pt").__enter__()
                    dev = w.device
                    delta = torch.mm(b.to(dev, torch.float32), a.to(dev, torch.float32)).mul_(plan.scaling)
                    # float(W_base) + delta (addition commutes); W_base as loaded: rounded to the model's dtype first
                    delta.add_(handles[f].get_tensor(pname).to(dev, w.dtype))
                    w.copy_(delta)
                    self.touched.add(pname)
                    del delta
        finally:
            for h in handles.values():
                h.__exit__(None, None, None)


def _free(model: Any) -> None:
    import torch

    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def checkpoint_models(ckpts: Sequence["Checkpoint"], device: Any = None, dtype: Any = None,
                      tokenizer: str | Path | None = None, swap: bool = True
                      ) -> Iterator[tuple["Checkpoint", Any, Any]]:
    """``(checkpoint, model, tokenizer)`` for each of ``ckpts``, in order, one model in memory at a time.

    Consecutive LoRA checkpoints over the same base (same content fingerprint) share one loaded base
    and are applied in place (:class:`SwappedBase`): the yielded model is then the *same object*, its
    target weights changed; use it before asking for the next. ``swap=False`` (or an adapter that
    :func:`adapter_plan` cannot swap) loads and merges every checkpoint afresh
    (:func:`fullscale.checkpoints.load_checkpoint`).
    """
    from cpi.fingerprint import checkpoint_fingerprint
    from fullscale.checkpoints import Checkpoint, checkpoint_tokenizer, load_checkpoint

    current: SwappedBase | None = None
    for ck in ckpts:
        plan = adapter_plan(ck) if ck.adapter and swap else None
        if plan is not None and plan.not_swappable:
            log.info("checkpoint %s: adapter merged afresh (cannot be swapped in place: %s)", ck.name,
                     plan.not_swappable)
            plan = None
        if plan is None:
            if current is not None:
                current = None
                gc.collect()
            model, tok = load_checkpoint(ck, device=device, dtype=dtype, tokenizer=tokenizer)
            try:
                yield ck, model, tok
            finally:
                _free(model)
            continue
        from fullscale.checkpoints import _check_weights

        _check_weights(ck.name, plan.folder, adapter=True)
        if not Path(plan.base).is_dir():
            raise CpiError(f"checkpoint {ck.name}: base model {plan.base} is not a local folder")
        check_adapter_base(ck.name, plan.folder, plan.base)
        fp = checkpoint_fingerprint(plan.base)
        if current is None or current.fingerprint != fp:
            current = None
            gc.collect()
            base = Checkpoint(name=f"{ck.name} (base model {plan.base})", path=Path(plan.base), step=None,
                              adapter=False)
            model, base_tok = load_checkpoint(base, device=device, dtype=dtype, tokenizer=tokenizer)
            current = SwappedBase(model, base_tok, plan.base, fp)
        tok = checkpoint_tokenizer(ck.name, plan.folder, plan.base, tokenizer, current.model)
        current.apply(ck, plan)
        yield ck, current.model, tok
    if current is not None:
        model = current.model
        current = None
        _free(model)

