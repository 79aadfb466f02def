"""Checkpoint discovery and loading (fullscale.checkpoints)."""

from __future__ import annotations

import json
import warnings
import shutil

import pytest
import torch

from cpi.errors import ConfigError, CpiError
from fullscale.checkpoints import Checkpoint, discover_checkpoints, load_checkpoint, resolve_device_dtype
from tests.fullscale.evalkit import one_torch_thread
from tests.tiny_models import make_tiny_checkpoint


_threads = pytest.fixture(scope="module", autouse=True)(one_torch_thread)


@pytest.fixture(scope="module")
def trainer_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    for step, seed in [(100, 1), (20, 2), (0, 0)]:
        make_tiny_checkpoint(root / f"checkpoint-{step}", arch="llama", seed=seed)
    (root / "logs").mkdir()  # noise the discovery must ignore
    return root


def test_trainer_layout_sorted_by_step(trainer_dir):
    ckpts = discover_checkpoints(trainer_dir)
    assert [c.step for c in ckpts] == [0, 20, 100]
    assert [c.name for c in ckpts] == ["checkpoint-0", "checkpoint-20", "checkpoint-100"]
    assert not any(c.adapter for c in ckpts)


def test_single_folder_list_and_comma_string(trainer_dir, tmp_path):
    one = discover_checkpoints(trainer_dir / "checkpoint-20")
    assert len(one) == 1 and one[0].step == 20
    plain = make_tiny_checkpoint(tmp_path / "base", arch="neox")
    (plain / "trainer_state.json").write_text(json.dumps({"global_step": 7}))
    lst = discover_checkpoints([trainer_dir / "checkpoint-100", plain])
    assert [c.step for c in lst] == [7, 100]  # sorted by step
    s = discover_checkpoints(f"{trainer_dir / 'checkpoint-100'},{trainer_dir / 'checkpoint-0'}")
    assert [c.step for c in s] == [0, 100]
    # no step anywhere -> the given order is kept
    other = make_tiny_checkpoint(tmp_path / "other", arch="mistral")
    (plain / "trainer_state.json").unlink()
    assert [c.name for c in discover_checkpoints([other, plain])] == ["other", "base"]


def test_name_clash_gets_parent_prefix(tmp_path):
    a = make_tiny_checkpoint(tmp_path / "runA" / "final", arch="llama")
    b = make_tiny_checkpoint(tmp_path / "runB" / "final", arch="llama")
    names = [c.name for c in discover_checkpoints([a, b])]
    assert names == ["runA__final", "runB__final"]


def test_discovery_errors(tmp_path):
    with pytest.raises(CpiError, match="does not exist"):
        discover_checkpoints(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CpiError, match="empty: neither a model folder"):
        discover_checkpoints(tmp_path / "empty")
    with pytest.raises(CpiError, match="no checkpoints"):
        discover_checkpoints([])


def test_resolve_device_dtype(monkeypatch):
    monkeypatch.setenv("CPI_CPU_BF16", "0")  # a CPU without native bf16: auto is float32
    dev, dt = resolve_device_dtype()
    if torch.cuda.is_available():
        assert dev.type == "cuda" and dt == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    else:
        assert (dev.type, dt) == ("cpu", torch.float32)
    assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match=r"^field 'dtype': bfloat16 is not supported here"):
        resolve_device_dtype("cpu", "bf16")
    monkeypatch.setenv("CPI_CPU_BF16", "1")  # one with it: auto is bfloat16, and bf16 may be asked for
    assert resolve_device_dtype("cpu") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", "bf16") == (torch.device("cpu"), torch.bfloat16)
    assert resolve_device_dtype("cpu", torch.float32) == (torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match=r"^field 'dtype': unknown dtype 'int3'"):
        resolve_device_dtype("cpu", "int3")
    with pytest.raises(ConfigError, match=r"^field 'dtype': float16 is not supported on the CPU"):
        resolve_device_dtype("cpu", "float16")
    if not torch.cuda.is_available():
        with pytest.raises(CpiError, match="CUDA is not available"):
            resolve_device_dtype("cuda")


def test_auto_asks_the_cpu_flags_not_the_model(monkeypatch):
    """With no override, ``auto`` follows the CPU's reported flags (the probe is monkeypatched: nothing here
    depends on this machine having AMX or AVX-512-BF16)."""
    from fullscale import precision

    monkeypatch.delenv("CPI_CPU_BF16", raising=False)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: frozenset({"avx512f", "amx_tile", "amx_bf16"}))
    assert resolve_device_dtype("cpu", None) == (torch.device("cpu"), torch.bfloat16)
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: frozenset({"avx512f", "avx512_vnni"}))
    assert resolve_device_dtype("cpu", "auto") == (torch.device("cpu"), torch.float32)
    with pytest.raises(ConfigError, match="bfloat16 is not supported here"):
        resolve_device_dtype("cpu", "bfloat16")


def test_model_settings_refuse_an_unknown_dtype_at_config_time():
    from fullscale.checkpoints import ModelSettings

    assert ModelSettings(dtype="bf16").dtype == "bf16"
    with pytest.raises(ConfigError, match=r"^field 'dtype': unknown dtype 'int8'"):
        ModelSettings(dtype="int8")


@pytest.mark.parametrize("arch", ["llama", "mistral", "neox"])
def test_load_roundtrip_matches_saved_model(tmp_path, arch):
    from transformers import AutoModelForCausalLM

    path = make_tiny_checkpoint(tmp_path / f"checkpoint-5", arch=arch, seed=3)
    model, tok = load_checkpoint(discover_checkpoints(path)[0], device="cpu", dtype="float32")
    assert not model.training and tok.pad_token_id is not None
    ids = torch.tensor([tok("The capital of France is Paris.")["input_ids"]])
    ref = AutoModelForCausalLM.from_pretrained(path).eval()
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, ref(ids).logits, atol=1e-6)


def test_lora_adapter_is_merged(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = make_tiny_checkpoint(tmp_path / "base", arch="llama", seed=4)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter_dir = tmp_path / "run" / "checkpoint-10"
    peft_model.save_pretrained(adapter_dir)
    cfg_path = adapter_dir / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = str(base_dir)
    cfg_path.write_text(json.dumps(cfg))
    ckpts = discover_checkpoints(tmp_path / "run")
    assert len(ckpts) == 1 and ckpts[0].adapter and ckpts[0].step == 10
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, tok = load_checkpoint(ckpts[0], device="cpu", dtype="float32")  # tokenizer found in the base folder
    assert not isinstance(model, PeftModel)
    # peft's deprecation noise about transformers' internals is not shown to the user
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    ids = torch.tensor([tok("Albert Einstein was born in Ulm")["input_ids"]])
    fresh_base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    with torch.no_grad():
        merged, with_adapter, plain = model(ids).logits, ref(ids).logits, fresh_base(ids).logits
    assert torch.allclose(merged, with_adapter, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-4)  # the adapter changed the model


def test_no_weights_error(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "checkpoint-3", arch="llama")
    (path / "model.safetensors").unlink()
    with pytest.raises(CpiError, match="checkpoint checkpoint-3: no weights"):
        load_checkpoint(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_error(tmp_path, damage):
    path = make_tiny_checkpoint(tmp_path / "checkpoint-4", arch="neox")
    f = path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(CpiError, match="checkpoint checkpoint-4: .*(corrupt|truncated)"):
        load_checkpoint(path)


def test_missing_tokenizer_with_and_without_fallback(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "checkpoint-8", arch="llama", save_tokenizer=False)
    with pytest.raises(CpiError, match="checkpoint checkpoint-8: no tokenizer .*--tokenizer"):
        load_checkpoint(path)
    donor = make_tiny_checkpoint(tmp_path / "donor", arch="llama")
    model, tok = load_checkpoint(path, tokenizer=donor)
    assert tok.bos_token == "<s>"
    with pytest.raises(CpiError, match="--tokenizer for checkpoint checkpoint-8: cannot load"):
        load_checkpoint(path, tokenizer=tmp_path / "no-such-tokenizer")


def test_tokenizer_too_big_for_model(tmp_path):
    from tests.tiny_models import make_tokenizer

    small = make_tiny_checkpoint(tmp_path / "small", tokenizer=make_tokenizer("bpe", vocab_size=300),
                                 save_tokenizer=False)
    big = tmp_path / "bigtok"
    make_tokenizer("bpe", vocab_size=400).save_pretrained(big)
    with pytest.raises(CpiError, match="tokenizer has .* tokens but the model's embedding has"):
        load_checkpoint(small, tokenizer=big)


def test_checkpoint_record_from_path(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "m", arch="llama")
    shutil.copytree(path, tmp_path / "checkpoint-12")
    model, _ = load_checkpoint(str(tmp_path / "checkpoint-12"))
    assert model is not None
    assert discover_checkpoints(tmp_path / "checkpoint-12")[0] == Checkpoint(
        name="checkpoint-12", path=tmp_path / "checkpoint-12", step=12, adapter=False)
