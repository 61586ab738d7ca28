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


def test_unknown_method_and_batched_prompts_are_rejected(smollm, pre):
    with pytest.raises(ValueError, match="method must be one of"):
        compress(pre, "quest", capacity=32)
    with pytest.raises(ValueError, match="one prompt"):
        prefill(smollm[0], torch.zeros(2, 5, dtype=torch.long))
