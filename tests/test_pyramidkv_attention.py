"""Queries and keys taken from inside attention, and decoding after compression, in eager and SDPA attention."""

import pytest
import torch

from companion.pyramidkv import compress, greedy_continue, prefill, queries_keys, window_scores


def tiny(family: str, *, attn: str = "eager", layers: int = 4):
    """A random decoder of ``family`` (no download): 4 query heads over 2 KV heads, head size 8."""
    import transformers

    configs = {"llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "olmo2": "Olmo2Config",
               "mistral": "MistralConfig"}
    models = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
              "olmo2": "Olmo2ForCausalLM", "mistral": "MistralForCausalLM"}
    cfg = getattr(transformers, configs[family])(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=512, attn_implementation=attn)
    torch.manual_seed(0)
    model = getattr(transformers, models[family])(cfg).eval()
    if family in ("qwen3", "olmo2"):  # random norms, so that a missed q/k norm changes the scores
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_norm.weight.uniform_(0.5, 2.0)
                layer.self_attn.k_norm.weight.uniform_(0.5, 2.0)
    return model


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "olmo2", "mistral"])
def test_window_scores_from_captured_states_equal_the_models_eager_attention(family):
    model = tiny(family)
    ids = torch.randint(0, 64, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        attentions = model(ids, output_attentions=True).attentions  # plain eager run, nothing of ours
    qk = queries_keys(model, ids)
    assert len(qk) == len(attentions) == 4 and qk[0][0].shape == (1, 4, 40, 8) and qk[0][1].shape == (1, 2, 40, 8)
    for (Q, K), A in zip(qk, attentions):
        ours = window_scores(Q, K, window=6, pooling=None, granularity="query")
        torch.testing.assert_close(ours, A[:, :, -6:, :-6].sum(-2), rtol=1e-5, atol=1e-6)
    model.set_attn_implementation("sdpa")  # the same states captured under SDPA
    for (Q, K), (Q2, K2) in zip(qk, queries_keys(model, ids)):
        torch.testing.assert_close(Q2, Q) and torch.testing.assert_close(K2, K)


def _pyramid(model, ids, capacity=40, window=4):
    pre = prefill(model, ids)
    cache, kept = compress(pre, "pyramidkv", capacity=capacity, window=window)
    assert len(set(kept)) == len(kept)  # every layer a different length
    return pre, cache


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_full_cache_decoding_equals_generate(attn):
    model = tiny("llama", attn=attn)
    ids = torch.randint(0, 64, (1, 50), generator=torch.Generator().manual_seed(2))
    pre = prefill(model, ids)
    ref = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)[0, 50:].tolist()
    assert greedy_continue(model, pre, compress(pre, "full", capacity=8)[0], max_new_tokens=5) == ref


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_multi_token_question_after_uneven_layers_equals_one_token_at_a_time(attn):
    """One-token steps need no mask at all; a multi-token step needs each layer's own causal mask."""
    model = tiny("llama", attn=attn)
    ids = torch.randint(0, 64, (1, 120), generator=torch.Generator().manual_seed(3))
    question = torch.randint(0, 64, (1, 6), generator=torch.Generator().manual_seed(4))
    pre, whole_cache = _pyramid(model, ids)
    whole = greedy_continue(model, pre, whole_cache, max_new_tokens=1, suffix=question)
    pre, cache = _pyramid(model, ids)
    for i in range(6):
        stepwise = greedy_continue(model, pre, cache, max_new_tokens=1, suffix=question[:, i: i + 1])
        pre.prompt_len += 1  # the next token's position
    assert stepwise == whole
    for a, b in zip(whole_cache.layers, cache.layers):  # deeper layers' keys depend on the earlier layers' masks
        torch.testing.assert_close(a.keys, b.keys, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(a.values, b.values, rtol=1e-5, atol=1e-6)


def test_eager_and_sdpa_decode_the_same_tokens_question_inside_and_after():
    model = tiny("llama", attn="eager")
    ids = torch.randint(0, 64, (1, 120), generator=torch.Generator().manual_seed(5))
    question = torch.randint(0, 64, (1, 5), generator=torch.Generator().manual_seed(6))
    out = {}
    for attn in ("eager", "sdpa"):
        model.set_attn_implementation(attn)
        pre, cache = _pyramid(model, ids)
        inside = greedy_continue(model, pre, cache, max_new_tokens=6)
        pre, cache = _pyramid(model, ids)
        after = greedy_continue(model, pre, cache, max_new_tokens=6, suffix=question)
        out[attn] = (inside, after, [L.keys.shape[2] for L in cache.layers])
    assert out["eager"] == out["sdpa"]
    assert out["eager"][2] == [k + 5 + 5 for k in (75, 52, 29, 6)]  # kept + question + generated (one is not fed)


def test_other_attention_implementations_and_long_sliding_windows_are_refused():
    model = tiny("llama")
    ids = torch.randint(0, 64, (1, 20))
    model.config._attn_implementation = "flex_attention"
    with pytest.raises(ValueError, match="attention implementation must be one of"):
        queries_keys(model, ids)
    mistral = tiny("mistral")
    mistral.config.sliding_window = 16
    with pytest.raises(ValueError, match="sliding-window attention"):
        queries_keys(mistral, ids)


def test_repeating_key_heads_is_refused_when_the_key_norm_spans_all_heads():
    from companion.pyramidkv import expand_kv_heads

    with pytest.raises(TypeError, match="normalises all key heads together"):
        expand_kv_heads(tiny("olmo2"))
    wide = expand_kv_heads(tiny("qwen3"))  # Qwen3 normalises each head: repeating is exact
    ids = torch.randint(0, 64, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(wide(ids).logits, tiny("qwen3")(ids).logits)


@pytest.mark.model
def test_the_book_model_decodes_a_pyramid_cache_with_eager_attention(smollm):
    """The reported crash: eager SmolLM2, a 300-token prompt, PyramidKV at C = 64, then decoding."""
    from companion.lab import corpus_tokens, eager_attention

    model, tok = smollm
    ids = corpus_tokens(tok, "validation", max_tokens=300)[None]
    out = {}
    for attn in ("eager", "sdpa"):
        with eager_attention(model) if attn == "eager" else torch.no_grad():
            pre = prefill(model, ids[:, :290])
            cache, kept = compress(pre, "pyramidkv", capacity=64)
            assert len(set(kept)) > 1
            after = greedy_continue(model, pre, cache, max_new_tokens=4, suffix=ids[:, 290:])
            cache, _ = compress(pre, "pyramidkv", capacity=64)
            inside = greedy_continue(model, pre, cache, max_new_tokens=4)
            out[attn] = (inside, after)
    assert out["eager"] == out["sdpa"]


def test_retrieval_sweep_names_a_bad_placement_or_granularity_before_running_anything():
    from companion.pyramidkv.experiments import retrieval_sweep

    with pytest.raises(ValueError, match="question must be one of"):
        retrieval_sweep(None, None, capacities=[32], question="before")
    with pytest.raises(ValueError, match=r"granularity must be one of \['query', 'kv', 'kv_pool_first'\]"):
        retrieval_sweep(None, None, capacities=[32], granularity="head")


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_wrapper_that_passes_dropout_by_position_still_runs(attn, monkeypatch):
    """kvpress patches every registered attention function with a wrapper that calls it as
    ``func(module, query, key, value, attention_mask, dropout, **kwargs)``; ours must take ``dropout`` by position
    (this broke the kvpress peer check once)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    from companion.pyramidkv.capture import NAME

    inner = ALL_ATTENTION_FUNCTIONS[NAME]

    def kvpress_like(module, query, key, value, attention_mask, dropout=0.0, **kwargs):
        return inner(module, query, key, value, attention_mask, dropout, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, NAME, kvpress_like)
    model = tiny("llama", attn=attn)
    ids = torch.randint(0, 64, (1, 24), generator=torch.Generator().manual_seed(2))
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, NAME, inner)
    expected = queries_keys(model, ids)
    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, NAME, kvpress_like)
    for (Q, K), (Q2, K2) in zip(expected, queries_keys(model, ids)):
        torch.testing.assert_close(Q2, Q) and torch.testing.assert_close(K2, K)
