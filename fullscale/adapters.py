"""LoRA trajectories with the base model loaded once: adapters applied by rewriting their target weights.

A trajectory of LoRA checkpoints (``checkpoint-<step>/adapter_config.json`` + ``adapter_model.safetensors``)
shares one base model. Reloading and merging it for every checkpoint (``PeftModel.from_pretrained(...)
.merge_and_unload()``) costs a full load each time and, on a 7B base, a second copy of the weights.
Here the base is loaded once (:func:`fullscale.checkpoints.load_checkpoint`, memory-mapped) and each
adapter is applied in place to the weights it targets only:

    W = W_base + transpose(B @ A) * scaling          (float32 arithmetic, rounded once to the model dtype)

which is what peft's ``merge_and_unload`` computes (``autocast_adapter_dtype`` keeps LoRA weights in
float32, and the merge adds the float32 delta to the weight), so the numbers equal the merge path
(tests: bitwise in float32 and bfloat16 on tiny models, and on SmolLM2). On the CPU each weight is
rewritten a cache-sized chunk of rows at a time (:func:`merge_rows`: the chunk's delta, its base rows read
from the base's safetensors file with ``pread``, the sum rounded once into the weight; one float32 buffer
for the whole adapter), which equals the whole-weight computation bitwise (tested at chunk boundaries and
at the 7B shapes) and makes one pass over the weight instead of four full-size float32 ones. Before the
next adapter, weights only the previous one touched are restored from the same files. The model object
stays the same, so a TransformerLens bridge built over it stays valid.

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
from contextlib import contextmanager
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


#: float32 elements of the one buffer a weight's delta is computed in on the CPU, a chunk of rows at a time
#: (4 MiB: the chunk's delta, its base rows and the result stay in the cache, instead of the four full-size
#: float32 passes over memory that computing the whole delta first costs)
CHUNK_ELEMENTS = 1 << 20

#: torch threads while a weight is rewritten on the CPU: each op of the chunk loop is short and in cache,
#: and two threads on a loaded 2-core machine wait for each other at every op (measured at 4096 x 4096
#: under load 4: 27 ms per weight on one thread, 340-1130 ms on two)
SWAP_THREADS = 1

#: safetensors dtype name -> torch dtype name, for the dtypes read by ``pread``; others through ``safe_open``
_FILE_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


class _BaseRows:
    """Row ranges of the base model's 2-D weights, read from its safetensors files with ``pread``.

    A row range of a row-major tensor is one contiguous byte range of the file, read into a reused
    buffer: no mapping of the file (so no page faults and no mapped pages counted in the resident
    memory), no copy of the whole tensor.
    """

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files
        self.spans: dict[Path, dict[str, tuple[str, list[int], int, int]]] = {}
        self.fds: dict[Path, int] = {}
        self.raw: "torch.Tensor | None" = None

    def _span(self, name: str) -> tuple[str, list[int], int, int]:
        """``(safetensors dtype, shape, first byte, end byte)`` of ``name`` in its file."""
        f = self.files[name]
        if f not in self.spans:
            with open(f, "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(n))
            self.spans[f] = {k: (v["dtype"], v["shape"], 8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
                             for k, v in header.items() if k != "__metadata__"}
        return self.spans[f][name]

    def read(self, name: str, r0: int, r1: int) -> "torch.Tensor":
        """Rows ``r0:r1`` of ``name`` in the file's dtype, on the CPU (shape ``(r1 - r0, d_in)``); a view of a
        buffer the next call overwrites."""
        import os

        import torch

        dtype, shape, begin, end = self._span(name)
        if dtype not in _FILE_DTYPES or len(shape) != 2:
            from safetensors import safe_open

            with safe_open(str(self.files[name]), framework="pt") as fh:
                return fh.get_slice(name)[r0:r1]
        tdtype = getattr(torch, _FILE_DTYPES[dtype])
        row = shape[1] * tdtype.itemsize
        nbytes, offset = (r1 - r0) * row, begin + r0 * row
        if offset + nbytes > end:
            raise CpiError(f"{self.files[name]}: rows {r0}:{r1} of {name} lie outside the tensor ({shape})")
        if self.raw is None or self.raw.numel() < nbytes:
            self.raw = torch.empty(nbytes, dtype=torch.uint8)
        f = self.files[name]
        if f not in self.fds:
            self.fds[f] = os.open(f, os.O_RDONLY)
        view, done = memoryview(self.raw.numpy())[:nbytes], 0
        while done < nbytes:
            got = os.preadv(self.fds[f], [view[done:]], offset + done)
            if got <= 0:
                raise CpiError(f"{f}: truncated: {name} ends before byte {offset + nbytes}")
            done += got
        return self.raw[:nbytes].view(tdtype).view(r1 - r0, shape[1])

    def close(self) -> None:
        import os

        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()


def chunk_rows(weight: "torch.Tensor", chunk_elements: int = CHUNK_ELEMENTS) -> int:
    """Rows of ``weight`` processed at once: a cache-sized chunk on the CPU, every row on other devices
    (where the delta is computed whole, as peft does, so that the matrix product is the same call)."""
    if weight.device.type != "cpu":
        return weight.shape[0]
    return max(1, min(weight.shape[0], chunk_elements // max(1, weight.shape[1])))


def merge_rows(weight: "torch.Tensor", base: "torch.Tensor", b: "torch.Tensor", a: "torch.Tensor", scaling: float,
               r0: int, buffer: "torch.Tensor") -> None:
    """``weight[r0:r1] = base + (b[r0:r1] @ a) * scaling``, peft's merge arithmetic on a chunk of rows.

    ``base`` (rows ``r0:r1`` of the base weight; batch = ``r1 - r0``, shape ``(rows, d_in)``) is first rounded
    to ``weight``'s dtype, as it was when loaded; ``b`` ``(d_out, r)`` and ``a`` ``(r, d_in)`` are float32.
    The delta is computed in float32 in ``buffer`` (at least ``rows * d_in`` elements), scaled, added to
    the base in float32 and rounded once to ``weight``'s dtype: each element is the same rank-``r`` dot
    product, scaling, sum and rounding as in ``weight += (b @ a) * scaling`` over the whole weight
    (tested bitwise against peft's merge and against the whole-weight computation at chunk boundaries).
    """
    import torch

    rows, d_in = base.shape
    delta = buffer[: rows * d_in].view(rows, d_in)
    torch.mm(b[r0:r0 + rows], a, out=delta)
    delta.mul_(scaling)
    # float32 + base (rounded to the model's dtype first), computed in float32, rounded once on store
    torch.add(delta, base.to(weight.device, weight.dtype), out=weight[r0:r0 + rows])


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """``torch.set_num_threads(n)`` for the block (None: unchanged), the previous count restored after."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SwappedBase:
    """A base model in memory onto which LoRA adapters are applied one at a time (see module doc).

    ``chunk_elements``: float32 elements of the delta buffer on the CPU (:data:`CHUNK_ELEMENTS`);
    ``threads``: torch threads while weights are rewritten on the CPU (:data:`SWAP_THREADS`; None: as set).
    """

    def __init__(self, model: Any, tokenizer: Any, base_dir: str | Path, fingerprint: str,
                 chunk_elements: int = CHUNK_ELEMENTS, threads: int | None = SWAP_THREADS) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.base_dir, self.fingerprint = Path(base_dir), fingerprint
        self.files = _base_tensor_files(self.base_dir)
        self.params = dict(model.named_parameters())
        self.touched: set[str] = set()
        self.chunk_elements = chunk_elements
        on_cpu = all(p.device.type == "cpu" for p in self.params.values())
        self.threads = threads if on_cpu else None

    def restore(self) -> None:
        """Put back the base weights of every module the last adapter changed."""
        import torch

        reader = _BaseRows(self.files)
        try:
            with torch.no_grad(), _torch_threads(self.threads):
                for pname in sorted(self.touched):
                    w = self.params[pname]
                    step = chunk_rows(w, self.chunk_elements)
                    for r0 in range(0, w.shape[0], step):
                        r1 = min(r0 + step, w.shape[0])
                        w[r0:r1].copy_(reader.read(pname, r0, r1))
        finally:
            reader.close()
        self.touched.clear()

    def apply(self, ckpt: "Checkpoint", plan: AdapterPlan) -> None:
        """``W = W_base + transpose(B @ A) * scaling`` for every module of ``plan``; the base weights of
        modules only the previous adapter changed are restored first.

        ``W_base`` is read from the base's safetensors file once, a chunk of rows at a time
        (:func:`merge_rows`), so a module that every adapter targets is rewritten once per checkpoint,
        with no separate restore. The float32 arithmetic is peft's: ``delta = (B @ A) * scaling``, then
        ``float(W_base) + delta`` rounded once.
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
        reader = _BaseRows(self.files)
        buffers: dict[Any, torch.Tensor] = {}
        try:
            with torch.no_grad(), _torch_threads(self.threads), \
                    safe_open(str(plan.folder / "adapter_model.safetensors"), framework="pt") as fh:
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
                    dev = w.device
                    a, b = a.to(dev, torch.float32), b.to(dev, torch.float32)
                    step = chunk_rows(w, self.chunk_elements)
                    need = step * w.shape[1]
                    if dev not in buffers or buffers[dev].numel() < need:
                        buffers[dev] = torch.empty(need, dtype=torch.float32, device=dev)
                    self.touched.add(pname)  # from here on the weight is no longer the base's
                    for r0 in range(0, w.shape[0], step):
                        merge_rows(w, reader.read(pname, r0, min(r0 + step, w.shape[0])), b, a, plan.scaling, r0,
                                   buffers[dev])
        finally:
            reader.close()


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

