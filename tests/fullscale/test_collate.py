"""Finetuning batches that keep only the logits the loss reads: same loss and gradients as the full output layer."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from fullscale.collate import ResponseLogitsCollator, accepts_logits_to_keep
from tests.tiny_models import make_tiny_checkpoint, tiny_config


def _features(seed: int = 0, n: int = 5) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    feats = []
    for _ in range(n):
        length = int(torch.randint(6, 20, (1,), generator=g))
        ids = torch.randint(3, 90, (length,), generator=g).tolist()
        answer = int(torch.randint(1, 4, (1,), generator=g))
        feats.append({"input_ids": ids, "attention_mask": [1] * length,
                      "labels": [-100] * (length - answer) + ids[-answer:]})
    return feats


class _Tok:
    pad_token_id = 0

    def __init__(self, side: str) -> None:
        self.padding_side = side


def _loss_and_grads(model, batch) -> tuple[float, list[torch.Tensor]]:
    model.eval()  # no dropout (GPT-2 has some): the two passes must see the same network
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out.loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize("arch", ["llama", "mistral", "neox", "gpt2"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_kept_logits_give_the_full_loss_and_gradients(arch, side):
    torch.manual_seed(0)
    if arch == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    else:
        model = AutoModelForCausalLM.from_config(tiny_config(arch, 96))
    assert accepts_logits_to_keep(model)
    feats = _features()
    full = ResponseLogitsCollator(_Tok(side), response_logits_only=False)(feats)
    kept = ResponseLogitsCollator(_Tok(side))(feats)
    n_labels = sum(sum(1 for v in f["labels"][1:] if v != -100) for f in feats)
    assert kept["logits_to_keep"].sum().item() == n_labels == kept["shift_labels"].numel()
    assert model(**{k: v for k, v in kept.items() if k != "labels"}).logits.shape[0] == n_labels
    lf, gf = _loss_and_grads(model, full)
    lk, gk = _loss_and_grads(model, kept)
    assert lk == pytest.approx(lf, rel=1e-6)
    assert len(gf) == len(gk)
    for a, b in zip(gf, gk):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_a_peft_wrapped_model_keeps_logits_too(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m", "llama", tokenizer_kind="bpe")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(path),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert accepts_logits_to_keep(model)
    feats = [{k: [min(v, 90) if v != -100 else v for v in f[k]] for k in f} for f in _features(1)]
    lf, gf = _loss_and_grads(model, ResponseLogitsCollator(_Tok("right"), response_logits_only=False)(feats))
    lk, gk = _loss_and_grads(model, ResponseLogitsCollator(_Tok("right"))(feats))
    assert lk == pytest.approx(lf, rel=1e-6) and len(gk) == len(gf) > 0
    for a, b in zip(gf, gk):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


def test_a_model_without_logits_to_keep_gets_the_plain_batch():
    class Plain(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, labels=None):  # no logits_to_keep, no **kwargs
            return input_ids

    assert not accepts_logits_to_keep(Plain())
