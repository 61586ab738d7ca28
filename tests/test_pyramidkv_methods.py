import pytest
import torch

from companion.pyramidkv import compress, greedy_continue, layer_budgets, prefill

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ids(smollm):
    from companion.lab import corpus_tokens

    return corpus_tokens(smollm[1], "validation", max_tokens=300)[None]


@pytest.fixture(scope="module")
def pre(smollm, ids):
    return prefill(smollm[0], ids)


def test_full_cache_decoding_equals_generate(smollm, ids, pre):
    model, tok = smollm
    ref = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.eos_token_id)[0, 300:].tolist()
    cache, kept = compress(pre, "full", capacity=64)
    assert kept == [300] * 30
    assert greedy_continue(model, pre, cache, max_new_tokens=6) == ref


def test_pyramid_layers_keep_their_budget_plus_the_window(pre):
    cache, kept = compress(pre, "pyramidkv", capacity=64, window=8)
    budgets = layer_budgets(64, window=8, num_layers=30, prompt_len=300)
    assert kept == [b + 8 for b in budgets] and [L.keys.shape[2] for L in cache.layers] == kept
    assert cache.layers[0].keys.shape[1] == 3  # selected per KV head: the cache keeps its GQA width


def test_streaming_keeps_sinks_and_recent_tokens(pre):
    cache, kept = compress(pre, "streaming", capacity=32, sink=4)
    full = pre.cache.layers[5].keys
    got = cache.layers[5].keys
    assert kept == [32] * 30
    assert torch.equal(got[:, :, :4], full[:, :, :4]) and torch.equal(got[:, :, 4:], full[:, :, -28:])


def test_compression_happens_on_every_call_and_leaves_the_prefill_untouched(pre):
    before = [L.keys.shape[2] for L in pre.cache.layers]
    a, kept_a = compress(pre, "snapkv", capacity=48)
    b, kept_b = compress(pre, "snapkv", capacity=48)
    assert kept_a == kept_b == [48] * 30
    assert torch.equal(a.layers[7].keys, b.layers[7].keys) and a.layers[7].keys is not b.layers[7].keys
    assert [L.keys.shape[2] for L in pre.cache.layers] == before == [300] * 30
    h, kept_h = compress(pre, "h2o", capacity=48)
    assert kept_h == [48] * 30 and not torch.equal(h.layers[7].keys, a.layers[7].keys)


def test_a_budget_at_least_the_prompt_is_a_no_op(pre):
    for method in ("snapkv", "pyramidkv", "streaming", "h2o"):
        cache, kept = compress(pre, method, capacity=300)
        assert kept == [300] * 30 and torch.equal(cache.layers[4].keys, pre.cache.layers[4].keys)


@pytest.mark.parametrize("kwargs, match", [
    ({"capacity": 0}, "capacity must be an int >= 1"),
    ({"capacity": 8, "window": 8}, "capacity .* must be larger than the window"),
    ({"capacity": 64, "window": 0}, "window must be an int >= 1"),
    ({"capacity": 299, "window": 300}, "capacity .* must be larger than the window"),
])
def test_compress_bad_budgets_are_named(pre, kwargs, match):
    with pytest.raises(ValueError, match=match):
        compress(pre, "snapkv", **kwargs)


def test_unknown_method_and_batched_prompts_are_rejected(smollm, pre):
    with pytest.raises(ValueError, match="method must be one of"):
        compress(pre, "quest", capacity=32)
    with pytest.raises(ValueError, match="one prompt"):
        prefill(smollm[0], torch.zeros(2, 5, dtype=torch.long))


def test_expanded_kv_heads_compute_the_same_function_with_a_query_wide_cache(smollm, ids):
    from companion.pyramidkv import expand_kv_heads, stored_bytes

    model = smollm[0]
    wide = expand_kv_heads(model)
    assert wide is expand_kv_heads(model) and model.config.num_key_value_heads == 3
    assert wide.model.embed_tokens.weight is model.model.embed_tokens.weight  # shared, not copied
    with torch.no_grad():
        torch.testing.assert_close(wide(ids[:, :64]).logits, model(ids[:, :64]).logits, rtol=1e-5, atol=1e-5)
    pre_q = prefill(wide, ids)
    cache, kept = compress(pre_q, "snapkv", capacity=48)
    assert cache.layers[0].keys.shape[1] == 9 and kept == [48] * 30
    kv_cache, _ = compress(prefill(model, ids), "snapkv", capacity=48)
    assert stored_bytes(cache) == 3 * stored_bytes(kv_cache) == 3 * 2 * 30 * 3 * 64 * 48 * 4


def test_question_after_the_compressed_context_equals_one_long_prompt_when_uncompressed(smollm, ids):
    model = smollm[0]
    context, question = ids[:, :250], ids[:, 250:]
    pre = prefill(model, context)
    cache, _ = compress(pre, "full", capacity=64)
    after = greedy_continue(model, pre, cache, max_new_tokens=5, suffix=question)
    whole = prefill(model, ids)
    assert after == greedy_continue(model, whole, compress(whole, "full", capacity=64)[0], max_new_tokens=5)


def test_a_question_after_a_pyramid_cache_of_uneven_layers_decodes(smollm, ids):
    model = smollm[0]
    pre = prefill(model, ids[:, :250])
    cache, kept = compress(pre, "pyramidkv", capacity=40)
    assert len(set(kept)) > 1  # layers of different lengths
    out = greedy_continue(model, pre, cache, max_new_tokens=3, suffix=ids[:, 250:])
    assert len(out) == 3 and [L.keys.shape[2] for L in cache.layers] == [k + 50 + 2 for k in kept]


def test_scores_are_reused_across_capacities_but_not_across_settings(pre):
    pre.scores.clear()
    compress(pre, "snapkv", capacity=40)
    compress(pre, "pyramidkv", capacity=100)
    compress(pre, "snapkv", capacity=40, kernel=5, pooling="avgpool")
    assert len(pre.scores) == 2
    a, _ = compress(pre, "snapkv", capacity=40)
    pre.scores.clear()
    b, _ = compress(pre, "snapkv", capacity=40)
    assert torch.equal(a.layers[3].keys, b.layers[3].keys)


def test_passkey_prompt_places_the_needle_at_its_depth(smollm):
    from companion.pyramidkv.experiments import NEEDLE, passkey_prompt

    tok = smollm[1]
    for depth in (0.0, 0.5, 1.0):
        p = passkey_prompt(tok, context_tokens=300, depth=depth, seed=3)
        start, end = p.needle_span
        assert p.context.shape == (1, 300)
        assert tok.decode(p.context[0, start:end]) == NEEDLE.format(key=p.key)
        assert (start == 0) if depth == 0 else (end == 300) if depth == 1 else 0 < start < end < 300
    assert passkey_prompt(tok, context_tokens=300, seed=3).key == p.key != passkey_prompt(tok, context_tokens=300, seed=4).key
    with pytest.raises(ValueError, match="depth must be in"):
        passkey_prompt(tok, depth=1.5)
    with pytest.raises(ValueError, match="context_tokens must be at least"):
        passkey_prompt(tok, context_tokens=20)


def test_found_reads_the_first_number_of_the_answer(smollm):
    from companion.pyramidkv.experiments import found, retrieval_sweep

    tok = smollm[1]
    ids = lambda text: tok(text, add_special_tokens=False).input_ids  # noqa: E731
    assert found(tok, ids(" 60494.\n"), "60494")
    assert not found(tok, ids(" 604.\n"), "60494") and not found(tok, ids(" 604941"), "60494")
    assert not found(tok, ids(" unknown"), "60494")
    with pytest.raises(ValueError, match="question must be"):
        retrieval_sweep(smollm[0], tok, capacities=[32], question="before")
