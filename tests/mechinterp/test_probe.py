"""The attention/value probe on tiny real checkpoints: reconciliation, batching, known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cpi.errors import CpiError
from mechinterp.probe import SPANS, ProbeItem, probe, probe_arrays, recon_rel_err
from tests.mechinterp.helpers import conflict_items, load_tiny
from tests.tiny_models import make_tiny_checkpoint, make_tokenizer, tiny_config

ARCHS = ("llama", "mistral", "neox")


@pytest.fixture(scope="module", params=ARCHS)
def tiny(request, tmp_path_factory):
    torch.manual_seed(0)
    path = make_tiny_checkpoint(tmp_path_factory.mktemp(request.param) / "m", request.param, seed=3)
    bridge, tok = load_tiny(path)
    return request.param, path, bridge, tok


@pytest.mark.parametrize("template", ["alpaca", "plain"])
def test_reconciliation_and_real_logits(tiny, template):
    """Embedding + heads x spans + biases + MLPs == the model's real logit difference (1e-3 rel, float32),
    and that real difference is the one a plain HF forward gives."""
    arch, path, bridge, tok = tiny
    items = conflict_items(6)
    pitems, arr = probe_arrays(bridge, tok, items, template=template, batch_size=4)
    assert np.all(recon_rel_err(arr) < 1e-3), (arch, recon_rel_err(arr))
    assert np.all(np.abs(arr["recon"] - arr["logit_diff"]) < 1e-4)
    assert (np.abs(arr["logit_diff"]) > 1e-4).sum() >= 4  # the check is not vacuous
    assert arr["head_err"].max() < 1e-5  # per-layer: sum of heads x spans + bias == attention output
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    for it, ld in zip(pitems, arr["logit_diff"]):
        with torch.no_grad():
            last = hf(torch.tensor([it.input_ids])).logits[0, -1]
        assert abs(float(last[it.context_token] - last[it.parametric_token]) - ld) < 1e-4


def test_batched_padded_equals_single(tiny):
    _, _, bridge, tok = tiny
    items = conflict_items(6)
    _, batched = probe_arrays(bridge, tok, items, batch_size=6)
    _, single = probe_arrays(bridge, tok, items, batch_size=1)
    lengths = {len(i.input_ids) for i in probe_arrays(bridge, tok, items[:6], batch_size=6)[0]}
    assert len(lengths) > 1  # padding really happened
    for key in ("attn", "head_contrib", "mlp", "embed", "logit_diff", "recon", "scale"):
        np.testing.assert_allclose(batched[key], single[key], atol=1e-5, rtol=0, err_msg=key)


def test_masses_sum_to_one_and_table_shape(tiny):
    arch, _, bridge, tok = tiny
    items = conflict_items(4)
    pitems, arr = probe_arrays(bridge, tok, items, batch_size=3)
    np.testing.assert_allclose(arr["attn"].sum(-1), 1.0, atol=1e-5)
    assert (arr["attn"] >= 0).all()
    assert arr["attn"][..., SPANS.index("context")].max() > 0
    L, H = bridge.cfg.n_layers, bridge.cfg.n_heads
    table = probe(bridge, tok, items, batch_size=3)
    heads = table[table.component == "head"]
    assert len(heads) == len(items) * L * H * len(SPANS) * 2
    assert set(table["weights"]) == {"raw_hf"}
    sums = heads[heads.metric == "attn"].groupby(["item_id", "layer", "head"])["value"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    # the tidy table reconciles too
    for item_id, g in table.groupby("item_id"):
        parts = g[(g.metric == "logit_diff") & (g.component != "model")]["value"].sum()
        real = g[(g.component == "model") & (g.metric == "logit_diff")]["value"].item()
        assert abs(parts - real) <= 1e-3 * max(abs(real), 1e-3)


def test_bos_span_only_when_tokenizer_adds_bos(tiny):
    arch, _, bridge, tok = tiny
    pitems, arr = probe_arrays(bridge, tok, conflict_items(2), batch_size=2)
    bos_mass = arr["attn"][..., SPANS.index("bos")]
    if pitems[0].has_bos:
        assert bos_mass.min() > 0
    else:
        assert np.all(bos_mass == 0)


def _rms(x, w, eps):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _uniform_llama():
    """One Llama layer with q_proj = 0 (uniform causal attention over the real tokens) and a zero MLP,
    random norm gains; three hand-made items of lengths 7, 10, 12. Returns (model, cfg, bridge, tok, items)."""
    from transformers import AutoModelForCausalLM

    from mechinterp.load import bridge_from_model

    tok = make_tokenizer("sp")
    cfg = tiny_config("llama", vocab_size=len(tok), num_hidden_layers=1)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    layer = model.model.layers[0]
    with torch.no_grad():
        layer.self_attn.q_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        layer.input_layernorm.weight.uniform_(0.5, 1.5)
        model.model.norm.weight.uniform_(0.5, 1.5)
    bridge = bridge_from_model(model, tok)
    rng = np.random.default_rng(0)
    items = []
    for i, n in enumerate((7, 10, 12)):
        ids = tuple(int(t) for t in rng.integers(5, len(tok), size=n))
        items.append(ProbeItem(f"h{i}", ids, {"context": (1, 1 + n // 2), "question": (1 + n // 2, n - 1)},
                               context_token=int(rng.integers(5, len(tok))), parametric_token=3, has_bos=True))
    return model, cfg, bridge, tok, items


def test_hand_built_model_known_pattern_and_contributions():
    """On :func:`_uniform_llama`: the masses are |span| / n and each head's span contribution is the
    explicit GQA sum."""
    model, cfg, bridge, tok, items = _uniform_llama()
    layer = model.model.layers[0]
    _, arr = probe_arrays(bridge, tok, items, batch_size=3)
    H, KV, dh = 4, 2, 8
    Wv = layer.self_attn.v_proj.weight.detach()
    Wo = layer.self_attn.o_proj.weight.detach()
    WU = model.lm_head.weight.detach()
    for b, it in enumerate(items):
        n = len(it.input_ids)
        labels = it.span_mask()
        expected_mass = [labels.count(s) / n for s in SPANS]
        np.testing.assert_allclose(arr["attn"][b, 0], np.tile(expected_mass, (H, 1)), atol=1e-6)
        x = model.model.embed_tokens.weight.detach()[list(it.input_ids)]
        h1 = _rms(x, layer.input_layernorm.weight.detach(), cfg.rms_norm_eps)
        v = (h1 @ Wv.T).view(n, KV, dh)
        outs = torch.zeros(H, len(SPANS), x.shape[1])
        for h in range(H):
            for s, span in enumerate(SPANS):
                idx = [j for j in range(n) if labels[j] == span]
                z = v[idx, h // (H // KV)].sum(0) / n if idx else torch.zeros(dh)
                outs[h, s] = Wo[:, h * dh:(h + 1) * dh] @ z
        resid = x[-1] + outs.sum((0, 1))
        scale = torch.sqrt(resid.pow(2).mean() + cfg.rms_norm_eps)
        g = (WU[it.context_token] - WU[it.parametric_token]) * model.model.norm.weight.detach()
        expected = (outs @ g / scale).numpy()
        np.testing.assert_allclose(arr["head_contrib"][b, 0], expected, atol=1e-6)
        np.testing.assert_allclose(arr["mlp"][b], 0.0, atol=1e-7)
        np.testing.assert_allclose(arr["embed"][b], float(x[-1] @ g / scale), atol=1e-6)
        # a wrong GQA mapping (h % n_kv) would give different numbers: the test can fail
        wrong = torch.zeros(H, len(SPANS))
        for h in range(H):
            for s, span in enumerate(SPANS):
                idx = [j for j in range(n) if labels[j] == span]
                if idx:
                    wrong[h, s] = (Wo[:, h * dh:(h + 1) * dh] @ (v[idx, h % KV].sum(0) / n)) @ g / scale
        assert np.abs(wrong.numpy() - expected).max() > 1e-4


def test_bad_items_raise_naming_the_item(tiny):
    _, _, bridge, tok = tiny
    good = conflict_items(1)[0]
    bad_answer = type(good)(**{**good.to_record(), "id": "blank-answer", "context_answer": "   "}) \
        if hasattr(good, "to_record") else None
    with pytest.raises(CpiError, match="blank-answer"):
        probe(bridge, tok, [bad_answer])
    ids = tuple(tok("hello world")["input_ids"])
    no_ctx = ProbeItem("no-context", ids, {"context": (0, 0)}, 5, 6)
    with pytest.raises(CpiError, match="no-context.*context span"):
        probe(bridge, tok, [no_ctx])
    out_of_vocab = ProbeItem("oov", ids, {"context": (0, 1)}, 10**6, 6)
    with pytest.raises(CpiError, match="oov"):
        probe(bridge, tok, [out_of_vocab])


def test_chat_template_and_quote_items(tmp_path):
    """Chat-template prompts and quote items (the quote prefix ends the prompt) reconcile too, and the
    answer token is the one the model would write next (leading space included)."""
    from fullscale.conflicts import ConflictItem

    tok = make_tokenizer("bpe", chat_template=True)
    path = make_tiny_checkpoint(tmp_path / "m", "llama", tokenizer=tok)
    bridge, tok = load_tiny(path)
    quote = ConflictItem(id="q1", dataset="CF_Quotes", category="quote", task="quote",
                         context="Write a quote that ends in the word 'heavy':",
                         question="Absence makes the heart grow", context_answer="heavy", parametric_answer="fonder")
    items = conflict_items(3) + [quote]
    for template in ("chat", "alpaca"):
        pitems, arr = probe_arrays(bridge, tok, items, template=template, batch_size=4)
        assert np.all(recon_rel_err(arr) < 1e-3)
        q = pitems[-1]
        # byte-level BPE: the answer follows the prompt after a space, so its first token carries it
        assert tok.decode([q.context_token]).startswith(" h") and tok.decode([q.parametric_token]).startswith(" ")
        assert q.spans["question"][1] == len(q.input_ids)  # the quote prefix ends the prompt


def test_aggregate_mean_std_n_per_category_and_all():
    """Known answers on a hand-made per-item table: mean, sample std, n; one item -> std NaN (not 0)."""
    import pandas as pd

    from mechinterp.probe import aggregate

    rows = [dict(item_id=i, dataset="d", category=c, component="head", layer=0, head=1, span="context",
                 metric="attn", value=v, weights="raw_hf") for i, (c, v) in enumerate([("a", 0.2), ("a", 0.6), ("b", 0.9)])]
    out = aggregate(pd.DataFrame(rows)).set_index("category")
    assert out.loc["a", "value"] == pytest.approx(0.4) and out.loc["a", "std"] == pytest.approx(np.std([0.2, 0.6], ddof=1))
    assert out.loc["a", "n"] == 2 and out.loc["ALL", "n"] == 3
    assert out.loc["ALL", "value"] == pytest.approx((0.2 + 0.6 + 0.9) / 3)
    assert out.loc["b", "n"] == 1 and np.isnan(out.loc["b", "std"])


# ------------------------------------------------------------------------------------------------
# metric units, hook names


def _docs_block(heading: str) -> str:
    """The first python block under ``## heading`` of docs/mechinterp.md."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "mechinterp.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)[0]


def test_a_new_metric_is_one_unit_the_docs_example():
    """The docs' example unit (attention entropy) adds its rows and steps_table column and leaves every
    default row as it was; on uniform attention over n real tokens its value is log n (known answer)."""
    from mechinterp.link import steps_table

    ns: dict = {}
    exec(compile(_docs_block("Adding a metric"), "docs/mechinterp.md", "exec"), ns)  # noqa: S102 - the docs own code
    _, _, bridge, tok, items = _uniform_llama()
    table = probe(bridge, tok, items, batch_size=3, metrics=ns["MY_METRICS"])
    ent = table[table.component == "attn_entropy"]
    assert list(ent["metric"]) == ["nats"] * 3 and list(ent["layer"]) == [0] * 3
    np.testing.assert_allclose(ent["value"], np.log([len(it.input_ids) for it in items]), atol=1e-5)
    default = probe(bridge, tok, items, batch_size=3)
    rest = table[table.component != "attn_entropy"].reset_index(drop=True)
    assert rest.equals(default)  # same rows, same order, same values
    steps = steps_table(table.assign(step=0, category="ALL"), metrics=ns["MY_METRICS"])
    assert steps["attn_entropy"].item() == pytest.approx(np.mean(np.log([7, 10, 12])), abs=1e-5)
    assert "attn_entropy" not in steps_table(table.assign(step=0, category="ALL")).columns


def test_metric_lists_are_checked():
    from mechinterp.metrics import ATTN_BIAS, HEADS, METRICS, MLP, MODEL, Column, Metric, check_metrics

    check_metrics(METRICS)
    with pytest.raises(CpiError, match="listed twice"):
        check_metrics(METRICS + (HEADS,))
    with pytest.raises(CpiError, match="'model' unit .* is required"):
        check_metrics((HEADS, MLP))
    with pytest.raises(CpiError, match="'model' must come after"):
        check_metrics((HEADS, MODEL, MLP, ATTN_BIAS))
    twin = Metric(name="twin", finish=lambda ctx: {}, columns=(Column("mlp", "logit_diff", "layer", "mlp"),))
    with pytest.raises(CpiError, match=r"rows \[\('mlp', 'logit_diff'\)\]"):
        check_metrics(METRICS + (twin,))


def test_recon_adds_the_parts_in_residual_stream_order():
    """Embedding, attention (heads, then biases), MLPs, read-out constants: the float32 summation order
    the tables were made with before the units existed."""
    from mechinterp.metrics import METRICS, recon_terms

    assert recon_terms(METRICS) == ["embed", "head_contrib", "attn_bias", "mlp", "const"]
    assert recon_terms(tuple(reversed(METRICS))) == ["embed", "attn_bias", "head_contrib", "mlp", "const"]


def test_hook_names_come_from_one_helper():
    from pathlib import Path

    from mechinterp.hooks import HOOK_POINTS, hook_name

    assert hook_name("v", 2) == "blocks.2.attn.v.hook_out" and hook_name("embed") == "embed.hook_out"
    assert hook_name("post_mlp_out", 0) == "blocks.0.ln2_post.hook_out"
    with pytest.raises(CpiError, match="unknown hook point 'resid'"):
        hook_name("resid", 0)
    with pytest.raises(CpiError, match="per layer"):
        hook_name("pattern")
    with pytest.raises(CpiError, match="model-level"):
        hook_name("final_in", 1)
    # no hand-written hook string anywhere else in the package
    root = Path(__file__).resolve().parents[2] / "mechinterp"
    prefixes = sorted({p.split(".")[0] + "." for p in HOOK_POINTS.values()})
    for path in root.glob("*.py"):
        if path.name == "hooks.py":
            continue
        text = path.read_text(encoding="utf-8")
        for prefix in prefixes:
            for quote in ('"', "'", 'f"', "f'"):
                assert quote + prefix not in text, f"{path.name}: hand-written hook name {quote + prefix}..."
