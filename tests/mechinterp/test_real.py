"""The probe on the real pretrained models of the registry (fullscale/data/models.csv) against an
independent recomputation from plain ``transformers`` (``output_attentions=True`` plus forward hooks on
every ``o_proj`` input; the norm formulas written out per architecture in
``tests.mechinterp.helpers.hf_reference``), on a handful of items.

One test per registry model: SmolLM2-135M-Instruct (Llama, 9 query / 3 KV heads, tied embeddings) runs by
default (``make test`` fetches it); every other registry model (Gemma-3-270M: (1 + w) RMSNorm, sandwich
norms, scaled embeddings, QK-norm, 1 KV head) is opt-in: ``python -m pytest -m gemma``. A failed fetch
fails the test (never a silent skip).
"""

from __future__ import annotations

import numpy as np
import pytest

from fullscale.models import REGISTRY_FILE, load_registry

pytestmark = [pytest.mark.real, pytest.mark.slow]

#: the registry model every `make test` fetches; the others take minutes on CPU and are opt-in
DEFAULT_REAL = "smollm2-135m-instruct"
REAL = [pytest.param(spec, id=name, marks=() if name == DEFAULT_REAL else (pytest.mark.gemma,))
        for name, spec in load_registry(REGISTRY_FILE).items()]


@pytest.mark.parametrize("spec", REAL)
def test_probe_agrees_with_plain_transformers(spec):
    import torch
    from transformers import AutoModelForCausalLM

    from cpi.errors import CpiError
    from fullscale.architectures import lookup
    from fullscale.conflicts import load_conflicts
    from fullscale.models import fetch_model
    from mechinterp.load import load_bridge
    from mechinterp.probe import probe_arrays, recon_rel_err
    from tests.mechinterp.helpers import hf_reference

    try:
        path = fetch_model(spec.name, registry=REGISTRY_FILE)
    except CpiError as exc:
        pytest.fail(f"could not fetch the real model {spec.name}: {exc}", pytrace=False)
    bridge, tok = load_bridge(path, device="cpu", dtype="float32")
    row = lookup(bridge.original_model.config)
    assert row is not None and row.probe_verified and lookup(spec.architecture) is row  # the table knows the model
    wf = list(load_conflicts("CF_World_Facts"))[:3]
    years = [it for it in load_conflicts("CF_Bio") if it.category == "birth_year"][:2]
    pitems, arr = probe_arrays(bridge, tok, wf + years, template="alpaca", batch_size=5)
    assert len(pitems) == 5
    # birth years share their leading digits: read at the first differing digit, never a structural 0
    assert all(p.shared_prefix_len >= 2 for p in pitems[3:])
    assert all(p.context_token != p.parametric_token for p in pitems)
    assert np.all(np.abs(arr["logit_diff"]) > 1e-3)
    assert np.all(np.abs(arr["recon"] - arr["logit_diff"]) <= 1e-3 * np.maximum(np.abs(arr["logit_diff"]), 1.0))
    assert recon_rel_err(arr).max() < 1e-3
    torch.set_num_threads(1)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
    ref = hf_reference(hf, pitems, spec.architecture)
    np.testing.assert_allclose(arr["logit_diff"], ref["logit_diff"], atol=1e-4)
    np.testing.assert_allclose(arr["attn"], ref["attn"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(arr["head_contrib"].sum(-1), ref["head_total"], atol=1e-4, rtol=0)
    assert np.abs(ref["head_total"]).max() > 0.05 and ref["attn"][..., 0].max() > 0.1  # not vacuous
