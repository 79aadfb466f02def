"""Finding and loading the checkpoints of a finetuning trajectory.

- :func:`discover_checkpoints` understands the Hugging Face Trainer layout
  (``OUT/checkpoint-<step>/``), a single model folder, a PEFT LoRA adapter
  folder (``adapter_config.json``), a list of any of these, or a
  comma-separated string of them. Result: :class:`Checkpoint` records sorted by
  training step. A registry model name (``smollm2-135m-instruct``, see
  :mod:`fullscale.models`) or its hub id stands for its cached folder and is
  fetched on first use, here and in :func:`load_checkpoint`.
- :func:`resolve_device_dtype` picks ``cuda`` when a GPU is present, else
  ``cpu``, and ``auto`` precision: ``bfloat16`` where the device multiplies it
  natively (:mod:`fullscale.precision`), else ``float32``; both can be overridden.
- :func:`load_checkpoint` loads one checkpoint (merging a LoRA adapter onto its
  base model), in eval mode, with its tokenizer. Bad folders raise
  :class:`~cpi.errors.CpiError` naming the checkpoint: no weights, a corrupt
  safetensors file, no tokenizer (falls back to a user-given tokenizer),
  a tokenizer whose vocabulary does not fit the model.

Only ``torch``/``transformers``/``peft`` imports happen inside functions, so
importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from cpi.config import Config
from cpi.errors import ConfigError, CpiError
# the one checkpoint-folder name rule (the Trainer's and ``cpi finetune``'s) lives in the run-folder protocol
from fullscale.run_folder import CHECKPOINT_PREFIX, checkpoint_dir_name, checkpoint_step

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ModelSettings(Config):
    """How a runner loads and prompts a model: the fields its config shares with the other runners'
    (``EvalConfig``, ``ProbeConfig``, ``InterveneConfig``, ``ScoreContextConfig`` extend it)."""

    template: str = "alpaca"
    "prompt template: plain, alpaca or chat"
    device: Optional[str] = None
    "cpu, cuda, cuda:1 ... (None: cuda if available)"
    dtype: Optional[str] = None
    "auto (= None: bfloat16 where the CPU/GPU has native bf16, else float32), float32, bfloat16, float16 (GPU)"
    tokenizer: Optional[str] = None
    "tokenizer folder used when a checkpoint has none"

    def validate(self) -> None:
        from fullscale.precision import canonical_dtype
        from fullscale.prompts import TEMPLATES

        if self.template not in TEMPLATES:
            raise ConfigError(f"field 'template': {self.template!r} is not one of {', '.join(TEMPLATES)}")
        canonical_dtype(self.dtype, "dtype")  # an unknown name fails here; the hardware is asked at run time


@dataclass(frozen=True)
class Checkpoint:
    """One model state on a trajectory.

    ``name`` is unique within a discovered list and safe as a file name;
    ``step`` is the training step (from ``checkpoint-<step>`` or
    ``trainer_state.json``), ``None`` when unknown; ``adapter`` is True for a
    PEFT LoRA adapter folder, merged onto its base model at load time.
    """

    name: str
    path: Path
    step: int | None
    adapter: bool


def _is_model_dir(p: Path) -> bool:
    return p.is_dir() and (
        (p / "config.json").is_file()
        or (p / "adapter_config.json").is_file()
        or any((p / f).exists() for f in WEIGHT_FILES + ADAPTER_WEIGHT_FILES)
        or any(p.glob("*.safetensors"))
    )


def _step_of(p: Path) -> int | None:
    step = checkpoint_step(p.name)
    if step is not None:
        return step
    state = p / "trainer_state.json"
    if state.is_file():
        try:
            step = json.loads(state.read_text()).get("global_step")
        except (OSError, json.JSONDecodeError):
            return None
        return int(step) if isinstance(step, int) else None
    return None


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "checkpoint"


def _resolve(spec: str | Path) -> Path:
    """A folder for ``spec``: a registry model name or hub id becomes its cached folder (fetched on first use)."""
    from fullscale.models import resolve_model

    return Path(resolve_model(spec)).expanduser()


def _expand(path: Path) -> list[Path]:
    if not path.exists():
        from fullscale.models import known_names

        raise CpiError(f"checkpoint path {path}: does not exist (nor is it a registry model: "
                       f"{', '.join(known_names())})")
    if not path.is_dir():
        raise CpiError(f"checkpoint path {path}: not a folder")
    subs = [d for d in path.iterdir() if d.is_dir() and checkpoint_step(d.name) is not None]
    if subs:
        if _is_model_dir(path):
            log.info("%s holds checkpoint-<step>/ folders; the model in the folder itself is not evaluated", path)
        return sorted(subs, key=lambda d: checkpoint_step(d.name))
    if _is_model_dir(path):
        return [path]
    raise CpiError(
        f"checkpoint path {path}: neither a model folder (config.json + weights, or adapter_config.json) "
        f"nor a Trainer output folder with checkpoint-<step>/ subfolders"
    )


def discover_checkpoints(spec: str | Path | Sequence[str | Path]) -> list[Checkpoint]:
    """All checkpoints named by ``spec``, sorted by step.

    ``spec`` is a folder (Trainer layout or one model), a list of folders, or a
    comma-separated string of folders. When every checkpoint has a step they
    are sorted by step; otherwise the given order is kept. Names are the folder
    names, prefixed by the parent folder where two would clash.
    """
    if isinstance(spec, (str, Path)):
        parts = [s.strip() for s in str(spec).split(",")] if isinstance(spec, str) else [str(spec)]
    else:
        parts = [str(s).strip() for s in spec]
    parts = [p for p in parts if p]
    if not parts:
        raise CpiError("no checkpoints given")
    paths: list[Path] = []
    for part in parts:
        paths.extend(_expand(_resolve(part)))
    seen: set[Path] = set()
    unique = []
    for p in paths:
        rp = p.resolve()
        if rp not in seen:
            seen.add(rp)
            unique.append(p)
    steps = [_step_of(p) for p in unique]
    names = [p.name for p in unique]
    if len(set(names)) != len(names):
        names = [f"{p.parent.name}__{p.name}" if p.parent.name else p.name for p in unique]
    if len(set(names)) != len(names):
        names = [f"{i:03d}__{n}" for i, n in enumerate(names)]
    ckpts = [
        Checkpoint(name=_safe_name(n), path=p, step=s, adapter=(p / "adapter_config.json").is_file())
        for n, p, s in zip(names, unique, steps)
    ]
    if all(c.step is not None for c in ckpts):
        ckpts.sort(key=lambda c: c.step)
    return ckpts


def resolve_device_dtype(device: Any = None, dtype: Any = None,
                         field: str = "dtype") -> "tuple[torch.device, torch.dtype]":
    """``(device, dtype)`` a runner computes in.

    ``device``: ``None``/``"auto"`` is cuda when a GPU is present, else cpu. ``dtype``: ``None``/``"auto"``
    is bfloat16 where the device multiplies bf16 natively (a CPU with AMX-BF16 or AVX-512-BF16, a CUDA
    device with bf16), else float32 (:func:`fullscale.precision.resolve_dtype`; ``CPI_CPU_BF16=0`` forces the
    float32 fallback); ``float32``/``fp32``, ``bfloat16``/``bf16``, ``float16``/``fp16`` or a ``torch.dtype``
    otherwise. ``bfloat16`` where unsupported and ``float16`` on a CPU are refused with a one-line
    :class:`~cpi.errors.ConfigError` naming ``field``.
    """
    import torch

    from fullscale.precision import resolve_dtype

    if device in (None, "", "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError) as exc:
            raise CpiError(f"--device {device!r}: not a valid torch device") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CpiError(f"--device {device!r}: CUDA is not available on this machine")
    return dev, resolve_dtype(None if dtype == "" else dtype, dev, field=field)


def _check_safetensors(ckpt_name: str, folder: Path, files: Sequence[str] | None = None) -> None:
    """Open every ``*.safetensors`` file's header and check that the file is as long as the header says."""
    from safetensors import SafetensorError, safe_open

    paths = [folder / f for f in files] if files is not None else sorted(folder.glob("*.safetensors"))
    for f in paths:
        try:
            with safe_open(str(f), framework="pt") as fh:
                keys = list(fh.keys())
                if keys:
                    fh.get_slice(keys[-1])
            size = f.stat().st_size
            with open(f, "rb") as raw:
                n = int.from_bytes(raw.read(8), "little")
                header = json.loads(raw.read(n))
            end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            if 8 + n + end > size:
                raise CpiError(f"checkpoint {ckpt_name}: {f.name} is truncated ({size} bytes, header expects {8 + n + end})")
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as exc:
            raise CpiError(f"checkpoint {ckpt_name}: corrupt safetensors file {f}: {exc}") from exc


def _check_weights(name: str, folder: Path, adapter: bool) -> None:
    wanted = ADAPTER_WEIGHT_FILES if adapter else WEIGHT_FILES
    if not any((folder / f).is_file() for f in wanted) and not (not adapter and any(folder.glob("model-*.safetensors"))):
        raise CpiError(
            f"checkpoint {name}: no weights in {folder} (expected one of {', '.join(wanted)})"
        )
    if adapter:
        st = [f for f in ADAPTER_WEIGHT_FILES if f.endswith(".safetensors") and (folder / f).is_file()]
        _check_safetensors(name, folder, st)
    else:
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, json.JSONDecodeError, KeyError) as exc:
                raise CpiError(f"checkpoint {name}: unreadable {index}: {exc}") from exc
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise CpiError(f"checkpoint {name}: shard {missing[0]} listed in {index.name} is missing")
            _check_safetensors(name, folder, shards)
        elif (folder / "model.safetensors").is_file():
            _check_safetensors(name, folder, ["model.safetensors"])


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / f).is_file() for f in TOKENIZER_FILES[:3]) or (
        (folder / "tokenizer_config.json").is_file() and (folder / "special_tokens_map.json").is_file()
        and any((folder / f).is_file() for f in ("merges.txt", "spiece.model", "sentencepiece.bpe.model"))
    )


def load_tokenizer(source: str | Path, what: str = "tokenizer") -> "PreTrainedTokenizerBase":
    """A fast tokenizer from a folder (or hub id, offline-cached only), with a pad token."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(source), use_fast=True)
    except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CpiError(f"{what}: cannot load a tokenizer from {source}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if not getattr(tok, "is_fast", False):
        raise CpiError(f"{what}: tokenizer at {source} is not a fast tokenizer (offset mappings are needed)")
    if tok.pad_token_id is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
    return tok


def _resolve_base(adapter_dir: Path, base: str) -> str:
    if not (adapter_dir / base).exists():
        base = str(_resolve(base))
    cand = Path(base).expanduser()
    if cand.is_absolute():
        return str(cand)
    rel = (adapter_dir / cand)
    if rel.exists():
        return str(rel)
    return str(cand)


def checkpoint_tokenizer(name: str, folder: Path, base_path: str | None, tokenizer: str | Path | None,
                         model: Any = None) -> "PreTrainedTokenizerBase":
    """The tokenizer of checkpoint ``name``: its folder's, else its base model's, else ``tokenizer``
    (CpiError if none); checked against ``model``'s embedding when given."""
    tok_sources = [folder] + ([Path(base_path)] if base_path and Path(base_path).is_dir() else [])
    tok_dir = next((s for s in tok_sources if _has_tokenizer(s)), None)
    if tok_dir is not None:
        tok = load_tokenizer(tok_dir, what=f"checkpoint {name}")
    elif tokenizer is not None:
        log.info("checkpoint %s has no tokenizer; using %s", name, tokenizer)
        tok = load_tokenizer(tokenizer, what=f"--tokenizer for checkpoint {name}")
    else:
        raise CpiError(f"checkpoint {name}: no tokenizer files in {folder}; pass --tokenizer PATH")
    if model is not None:
        check_vocab(name, tok, model)
    return tok


def check_vocab(name: str, tok: Any, model: Any) -> None:
    """CpiError when the tokenizer has more tokens than the model's embedding has rows."""
    n_emb = model.get_input_embeddings().num_embeddings
    if len(tok) > n_emb:
        raise CpiError(
            f"checkpoint {name}: tokenizer has {len(tok)} tokens but the model's embedding has {n_emb} rows "
            f"(wrong --tokenizer?)"
        )


@contextlib.contextmanager
def peft_deprecations_silenced() -> Any:
    """Hide the FutureWarning peft raises by reading transformers' deprecated ``is_gradient_checkpointing``
    (once per adapter wrapped or loaded): a library's internals, nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def check_checkpoint_files(ckpt: Checkpoint) -> str | None:
    """CpiError naming ``ckpt`` when its files cannot load (config, weights, shards, truncation; for an
    adapter also its base model's, and the base's content fingerprint); returns the base folder of an
    adapter (None for a full model). Reads headers only."""
    name, folder = ckpt.name, Path(ckpt.path)
    if not ckpt.adapter:
        if not (folder / "config.json").is_file():
            raise CpiError(f"checkpoint {name}: no config.json in {folder}")
        _check_weights(name, folder, adapter=False)
        return None
    from fullscale.adapters import check_adapter_base, read_adapter_config

    base_path = _resolve_base(folder, read_adapter_config(name, folder)["base_model_name_or_path"])
    _check_weights(name, folder, adapter=True)
    if Path(base_path).is_dir():
        _check_weights(f"{name} (base model {base_path})", Path(base_path), adapter=False)
        check_adapter_base(name, folder, base_path)
    return base_path


def load_checkpoint(
    ckpt: "Checkpoint | str | Path",
    device: Any = None,
    dtype: Any = None,
    tokenizer: str | Path | None = None,
) -> "tuple[PreTrainedModel, PreTrainedTokenizerBase]":
    """Load one checkpoint as ``(model, tokenizer)`` in eval mode on ``device``/``dtype``.

    A LoRA adapter folder is loaded onto the base model named by
    ``adapter_config.json`` (``base_model_name_or_path``: absolute, relative to
    the adapter folder, or a locally cached hub id) and merged
    (``merge_and_unload``), so the result is a plain ``PreTrainedModel``.
    The tokenizer comes from the checkpoint folder (for an adapter: the adapter
    folder, then the base model folder); only if there is none is
    ``tokenizer`` (a folder or hub id) used; otherwise :class:`CpiError`.
    """
    from transformers import AutoModelForCausalLM

    if not isinstance(ckpt, Checkpoint):
        p = _resolve(ckpt)
        if not p.is_dir():
            raise CpiError(f"checkpoint {p}: folder does not exist")
        ckpt = Checkpoint(name=p.name, path=p, step=_step_of(p), adapter=(p / "adapter_config.json").is_file())
    name, folder = ckpt.name, Path(ckpt.path)
    if not folder.is_dir():
        raise CpiError(f"checkpoint {name}: folder {folder} does not exist")
    dev, dt = resolve_device_dtype(device if not hasattr(device, "type") else str(device), dtype)

    base_path = check_checkpoint_files(ckpt)

    # tokenizer first: cheap, and a missing one should fail before loading weights
    tok = checkpoint_tokenizer(name, folder, base_path, tokenizer)

    load_errors = (OSError, ValueError, RuntimeError, KeyError, EnvironmentError)
    try:
        from safetensors import SafetensorError

        load_errors = load_errors + (SafetensorError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        # straight onto an accelerator (no CPU copy of the weights); on the CPU the safetensors stay memory-mapped
        placement = {} if dev.type == "cpu" else {"device_map": str(dev)}
        model = AutoModelForCausalLM.from_pretrained(base_path or str(folder), dtype=dt, **placement)
    except load_errors as exc:
        first = str(exc).splitlines()[0] if str(exc) else repr(exc)
        where = f"base model {base_path}" if base_path else str(folder)
        raise CpiError(f"checkpoint {name}: cannot load model from {where}: {first}") from exc
    from fullscale.preflight import check_checkpoint_weights

    # transformers starts a weight the files lack at random and only warns: refuse instead of scoring it
    check_checkpoint_weights(Path(base_path or folder), model, f"checkpoint {name}")
    if ckpt.adapter:
        from peft import PeftModel

        try:
            with peft_deprecations_silenced():
                model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
        except load_errors as exc:
            first = str(exc).splitlines()[0] if str(exc) else repr(exc)
            raise CpiError(f"checkpoint {name}: cannot load the LoRA adapter: {first}") from exc
    check_vocab(name, tok, model)
    model.to(dev)
    model.eval()
    return model, tok
