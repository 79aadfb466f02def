"""The probe on a real pretrained model (SmolLM2-135M-Instruct, Llama architecture, 9 query / 3 KV
heads, tied embeddings) against an independent recomputation from plain ``transformers``
(``output_attentions=True`` plus forward hooks on every ``o_proj`` input), on a handful of items.

``real_smollm2`` / ``real_gemma`` are the registry's fetched folders (tests/conftest.py); the Gemma
test is opt-in (``python -m pytest -m gemma``).
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.real, pytest.mark.slow]


@pytest.fixture(scope="module")
def smollm2(real_smollm2):
    from fullscale.conflicts import load_conflicts
    from mechinterp.load import load_bridge

    bridge, tok = load_bridge(real_smollm2, device="cpu", dtype="float32")
    wf = list(load_conflicts("CF_World_Facts"))[:3]
    years = [it for it in load_conflicts("CF_Bio") if it.category == "birth_year"][:2]
    return real_smollm2, bridge, tok, wf + years


def test_probe_agrees_with_plain_transformers(smollm2):
    import torch
    from transformers import AutoModelForCausalLM

    from mechinterp.probe import probe_arrays, recon_rel_err
    from tests.mechinterp.helpers import hf_reference

    path, bridge, tok, items = smollm2
    pitems, arr = probe_arrays(bridge, tok, items, template="alpaca", batch_size=5)
    assert len(pitems) == 5
    # birth years share their leading digits: read at the first differing digit, never a structural 0
    assert all(p.shared_prefix_len >= 2 for p in pitems[3:])
    assert all(p.context_token != p.parametric_token for p in pitems)
    assert np.all(np.abs(arr["logit_diff"]) > 1e-3)
    assert np.all(np.abs(arr["recon"] - arr["logit_diff"]) <= 1e-3 * np.maximum(np.abs(arr["logit_diff"]), 1.0))
    assert recon_rel_err(arr).max() < 1e-3
    torch.set_num_threads(1)
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager", dtype=torch.float32).eval()
    ref = hf_reference(hf, pitems, "llama")
    np.testing.assert_allclose(arr["logit_diff"], ref["logit_diff"], atol=1e-4)
    np.testing.assert_allclose(arr["attn"], ref["attn"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(arr["head_contrib"].sum(-1), ref["head_total"], atol=1e-4, rtol=0)
    assert np.abs(ref["head_total"]).max() > 0.05 and ref["attn"][..., 0].max() > 0.1  # not vacuous


@pytest.mark.gemma
def test_gemma3_probe_agrees_with_plain_transformers(real_gemma):
    """Gemma-3-270M: (1 + w) RMSNorm, sandwich norms, scaled embeddings, QK-norm, 1 KV head."""
    import torch
    from transformers import AutoModelForCausalLM

    from fullscale.conflicts import load_conflicts
    from mechinterp.load import load_bridge
    from mechinterp.probe import probe_arrays
    from tests.mechinterp.helpers import hf_reference

    bridge, tok = load_bridge(real_gemma, device="cpu", dtype="float32")
    items = list(load_conflicts("CF_World_Facts"))[:3]
    pitems, arr = probe_arrays(bridge, tok, items, template="alpaca", batch_size=3)
    assert np.all(np.abs(arr["recon"] - arr["logit_diff"]) <= 1e-3 * np.maximum(np.abs(arr["logit_diff"]), 1.0))
    hf = AutoModelForCausalLM.from_pretrained(real_gemma, attn_implementation="eager", dtype=torch.float32).eval()
    ref = hf_reference(hf, pitems, "gemma3")
    np.testing.assert_allclose(arr["logit_diff"], ref["logit_diff"], atol=1e-4)
    np.testing.assert_allclose(arr["attn"], ref["attn"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(arr["head_contrib"].sum(-1), ref["head_total"], atol=1e-4, rtol=0)
