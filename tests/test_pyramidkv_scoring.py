import math

import pytest
import torch

from companion.pyramidkv import cache_bytes, keep_positions, select_tokens, window_scores


def test_single_query_scores_by_hand():
    Q = torch.tensor([[[[0.0], [0.0], [1.0]]]])  # [1, 1, 3, 1]; only the last query is in the window
    K = torch.tensor([[[[0.0], [math.log(2.0)], [0.0]]]])
    s = window_scores(Q, K, window=1, pooling=None)
    torch.testing.assert_close(s, torch.tensor([[[0.25, 0.5]]]))  # softmax of [0, ln 2, 0] on the prefix


def test_causal_mask_inside_the_window():
    q, w = 6, 2
    Q, K = torch.zeros(1, 1, q, 4), torch.zeros(1, 1, q, 4)  # uniform attention over the visible keys
    s = window_scores(Q, K, window=w, pooling=None)
    # query q-2 sees q-1 keys, query q-1 sees q keys: each prefix token gets 1/(q-1) + 1/q
    torch.testing.assert_close(s, torch.full((1, 1, q - w), 1 / (q - 1) + 1 / q))


def test_pooling_keeps_length_and_pads_with_zeros():
    # prefix scores [0, 1, 0, 0] (one-hot via a strong key), kernel 3
    Q = torch.zeros(1, 1, 5, 1)
    Q[0, 0, -1, 0] = 1.0
    K = torch.full((1, 1, 5, 1), -50.0)
    K[0, 0, 1, 0] = 50.0
    raw = window_scores(Q, K, window=1, pooling=None)[0, 0]
    torch.testing.assert_close(raw, torch.tensor([0.0, 1.0, 0.0, 0.0]), atol=1e-6, rtol=0)
    avg = window_scores(Q, K, window=1, pooling="avgpool", kernel=3)[0, 0]
    mx = window_scores(Q, K, window=1, pooling="maxpool", kernel=3)[0, 0]
    torch.testing.assert_close(avg, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]), atol=1e-6, rtol=0)
    torch.testing.assert_close(mx, torch.tensor([1.0, 1.0, 1.0, 0.0]), atol=1e-6, rtol=0)


def test_kv_granularity_is_the_group_mean_of_query_scores():
    torch.manual_seed(0)
    Q, K = torch.randn(2, 9, 20, 8), torch.randn(2, 3, 20, 8)  # SmolLM2's 9 query / 3 KV heads
    per_query = window_scores(Q, K, window=4)
    per_kv = window_scores(Q, K, window=4, granularity="kv")
    assert per_query.shape == (2, 9, 16) and per_kv.shape == (2, 3, 16)
    torch.testing.assert_close(per_kv, per_query.reshape(2, 3, 3, 16).mean(2))
    # head h uses KV head h // 3, as transformers' repeat_kv
    alone = window_scores(Q[:, 4:5], K[:, 1:2], window=4)
    torch.testing.assert_close(alone[:, 0], per_query[:, 4])


def test_window_rows_are_distributions():
    torch.manual_seed(1)
    Q, K = torch.randn(1, 2, 12, 4), torch.randn(1, 2, 12, 4)
    s = window_scores(Q, K, window=3, pooling=None)
    # the window queries spread mass 3 over prefix + window; the prefix gets at most that
    assert torch.all(s >= 0) and torch.all(s.sum(-1) <= 3 + 1e-5)


def test_select_tokens_keeps_the_best_prefix_and_the_window():
    b, Hkv, q, d, w = 1, 1, 6, 2, 2
    keys = torch.arange(q, dtype=torch.float32).reshape(1, 1, q, 1).expand(b, Hkv, q, d).clone()
    values = -keys
    scores = torch.tensor([[[0.1, 0.9, 0.3, 0.5]]])
    k, v = select_tokens(keys, values, scores, budget=2, window=w)
    assert k[0, 0, :, 0].tolist() == [1.0, 3.0, 4.0, 5.0] and torch.equal(v, -k)
    k_all, _ = select_tokens(keys, values, scores, budget=100, window=w)  # budget larger than the prefix
    assert k_all.shape[2] == q


def test_query_granularity_stores_the_cache_at_query_head_width():
    torch.manual_seed(2)
    Q, K, V = torch.randn(1, 9, 30, 8), torch.randn(1, 3, 30, 8), torch.randn(1, 3, 30, 8)
    kq, _ = select_tokens(K, V, window_scores(Q, K, window=4), budget=10, window=4)
    kk, _ = select_tokens(K, V, window_scores(Q, K, window=4, granularity="kv"), budget=10, window=4)
    assert kq.shape == (1, 9, 14, 8) and kk.shape == (1, 3, 14, 8)
    # the official GQA behaviour can use more memory than the uncompressed cache
    assert cache_bytes([14], heads=9, head_dim=8) > cache_bytes([30], heads=3, head_dim=8)
    assert cache_bytes([30, 10], heads=3, head_dim=64, bytes_per_value=2) == 2 * 3 * 64 * 2 * 40


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"window": 0}, "window must be in"),
        ({"window": 10}, "window must be in"),
        ({"window": 2, "pooling": "median"}, "pooling"),
        ({"window": 2, "kernel": 4}, "odd"),
        ({"window": 2, "granularity": "layer"}, "granularity"),
    ],
)
def test_window_scores_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        window_scores(torch.zeros(1, 2, 10, 4), torch.zeros(1, 2, 10, 4), **kwargs)


def test_shape_mismatches_are_named():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        window_scores(torch.zeros(1, 4, 10, 4), torch.zeros(1, 3, 10, 4), window=2)
    with pytest.raises(ValueError, match="do not match"):
        window_scores(torch.zeros(1, 3, 10, 4), torch.zeros(1, 3, 9, 4), window=2)
    with pytest.raises(ValueError, match="scores must be"):
        select_tokens(torch.zeros(1, 3, 10, 4), torch.zeros(1, 3, 10, 4), torch.zeros(1, 3, 9), budget=2, window=2)


@pytest.mark.model
def test_window_scores_from_captured_queries_equal_the_models_own_attention(smollm):
    from companion.lab import attention_maps
    from companion.pyramidkv import queries_keys

    model, tokenizer = smollm
    text = "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n"
    attn, tokens = attention_maps(model, tokenizer, text)  # eager attention weights [L, H, T, T]
    ids = tokenizer(text, return_tensors="pt").input_ids[:, : len(tokens)]
    qk = queries_keys(model, ids)  # the model runs with SDPA here: no weights returned, recomputed instead
    assert len(qk) == 30 and qk[0][0].shape[1] == 9 and qk[0][1].shape[1] == 3
    w = 4
    for layer in (0, 14, 29):
        Q, K = qk[layer]
        ours = window_scores(Q, K, window=w, pooling=None)[0]  # [9, T - w]
        theirs = attn[layer, :, -w:, : len(tokens) - w].sum(1)
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_unknown_architectures_are_named():
    from types import SimpleNamespace

    from companion.pyramidkv import queries_keys

    fake = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(TypeError, match="SimpleNamespace .*gpt2.* not supported"):
        queries_keys(fake, torch.zeros(1, 3, dtype=torch.long))


def test_funnel_stats_by_hand():
    from companion.pyramidkv import funnel_stats

    uniform = torch.ones(2, 8)
    h, n90, first, p = funnel_stats(uniform)
    assert h == pytest.approx(3.0) and first == pytest.approx(1 / 8)
    assert n90 == 8  # 7 tokens hold 87.5% < 90%
    peaked = torch.tensor([[9.0, 0.5, 0.5, 0.0]])
    h, n90, first, _ = funnel_stats(peaked)
    assert n90 == 1 and first == pytest.approx(0.9)
    assert h == pytest.approx(-(0.9 * math.log2(0.9) + 2 * 0.05 * math.log2(0.05)))
    with pytest.raises(ValueError, match="mass"):
        funnel_stats(uniform, mass=0)


@pytest.mark.model
def test_funnel_on_the_real_model(smollm):
    from companion.lab import corpus_tokens
    from companion.pyramidkv import funnel

    model, tokenizer = smollm
    ids = corpus_tokens(tokenizer, "validation", max_tokens=256)[None]
    f = funnel(model, ids, window=8)
    assert len(f.entropy) == len(f.tokens_90) == len(f.first_token) == 30
    assert all(0 <= h <= math.log2(248) + 1e-4 for h in f.entropy)
    assert all(1 <= n <= 248 for n in f.tokens_90)
    for p in f.window_attention:
        torch.testing.assert_close(p.sum(-1), torch.ones(9))
    with pytest.raises(ValueError, match="one prompt"):
        funnel(model, ids.expand(2, -1))


# ------------------------------------------------------------------------------------------ bad input, one way
@pytest.fixture(scope="module")
def tiny():
    """A two-layer random Llama (no download) and a 12-token prompt."""
    from badinput_lab import tiny_lm

    return tiny_lm(), (torch.arange(12) * 7 % 32)[None]


def test_keep_positions_rejects_a_float_budget():
    # before: budget=3.5 failed inside topk ("argument 'k' must be int, not float")
    with pytest.raises(TypeError, match="budget must be an int"):
        keep_positions(torch.rand(1, 2, 6), budget=3.5)
    with pytest.raises(ValueError, match="budget must be an int >= 0"):
        keep_positions(torch.rand(1, 2, 6), budget=-1)
    with pytest.raises(TypeError, match="budget must be an int"):
        select_tokens(torch.zeros(1, 1, 8, 4), torch.zeros(1, 1, 8, 4), torch.rand(1, 1, 6), budget=2.0, window=2)


def test_cache_bytes_rejects_negative_sizes():
    # before: cache_bytes([-5], ...) returned a negative number of bytes
    with pytest.raises(ValueError, match=r"num_layers_tokens\[0\] must be an int >= 0"):
        cache_bytes([-5], heads=3, head_dim=64)
    for name in ("heads", "head_dim", "bytes_per_value"):
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
            cache_bytes([5], **{"heads": 3, "head_dim": 64, name: -2})
    with pytest.raises(TypeError, match=r"num_layers_tokens\[0\] must be an int"):
        cache_bytes([1.5], heads=3, head_dim=64)
    assert cache_bytes(iter([30, 10]), heads=3, head_dim=64, bytes_per_value=2) == 2 * 3 * 64 * 2 * 40


def test_prefill_rejects_an_empty_prompt(tiny):
    from companion.pyramidkv import funnel, prefill, queries_keys

    model, _ = tiny
    empty = torch.zeros(1, 0, dtype=torch.long)
    # before: a transformers reshape error ("cannot reshape tensor of 0 elements ...")
    with pytest.raises(ValueError, match="input_ids must hold at least one token"):
        prefill(model, empty)
    with pytest.raises(ValueError, match="input_ids must hold at least one token"):
        queries_keys(model, empty)
    with pytest.raises(ValueError, match="input_ids must be token ids in \\[0, 32\\)"):
        prefill(model, torch.tensor([[3, 40]]))  # before: IndexError inside the embedding
    with pytest.raises(TypeError, match="input_ids must have an integer dtype"):
        prefill(model, torch.zeros(1, 4))
    with pytest.raises(ValueError, match="window must be an int >= 1 and <= 3"):
        funnel(model, torch.zeros(1, 4, dtype=torch.long), window=8)  # checked before the model runs


def test_compress_accepts_the_numpy_ints_layer_budgets_accepts(tiny):
    import numpy as np

    from companion.pyramidkv import compress, layer_budgets, prefill

    model, ids = tiny
    pre = prefill(model, ids)
    # before: compress rejected capacity=np.int64(6), which layer_budgets accepted
    for method in ("snapkv", "pyramidkv", "streaming"):
        a, kept_a = compress(pre, method, capacity=np.int64(6), window=np.int64(2), sink=np.int64(1))
        b, kept_b = compress(pre, method, capacity=6, window=2, sink=1)
        assert kept_a == kept_b and all(torch.equal(x.keys, y.keys) for x, y in zip(a.layers, b.layers))
    assert layer_budgets(np.int64(6), window=2, num_layers=2, prompt_len=12) == [k - 2 for k in
                                                                                 compress(pre, "pyramidkv", capacity=6, window=2)[1]]
    with pytest.raises(TypeError, match="capacity must be an int"):
        compress(pre, "snapkv", capacity=6.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        compress(pre, "snapkv", capacity=6, window=2, schedule="exactly")  # checked although snapkv ignores it
    with pytest.raises(TypeError, match="pre must be the Prefill returned by prefill"):
        compress(pre.cache, "snapkv", capacity=6)


def test_greedy_continue_checks_its_arguments(tiny):
    from companion.pyramidkv import compress, greedy_continue, prefill

    model, ids = tiny
    pre = prefill(model, ids)
    cache, _ = compress(pre, "full", capacity=6)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        greedy_continue(model, pre, cache, max_new_tokens=2.0)
    with pytest.raises(ValueError, match="suffix must be one prompt"):
        greedy_continue(model, pre, cache, suffix=torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="cache must be a transformers cache"):
        greedy_continue(model, pre, None)
    assert len(greedy_continue(model, pre, cache, max_new_tokens=2, suffix=torch.zeros(1, 0, dtype=torch.long))) == 2


# ------------------------------------------------------------ KVCache-Factory's scoring, transcribed
def _official_window_scores(query_states, key_states, window_size, kernel_size, pooling, groups):
    """``_grouped_window_attn_cache`` of KVCache-Factory's pyramidkv/pyramidkv_utils.py (c97f9d7), with
    ``gqa_score_agg="mean"``; ``groups=1`` on keys repeated to the query heads is its query-head path."""
    import torch.nn.functional as F

    head_dim = query_states.shape[-1]
    key_rep = key_states.repeat_interleave(groups, dim=1)  # repeat_kv
    attn_weights = torch.matmul(query_states[..., -window_size:, :], key_rep.transpose(2, 3)) / math.sqrt(head_dim)
    mask = torch.full((window_size, window_size), torch.finfo(attn_weights.dtype).min, device=attn_weights.device)
    mask_cond = torch.arange(mask.size(-1), device=attn_weights.device)
    mask.masked_fill_(mask_cond < (mask_cond + 1).view(mask.size(-1), 1), 0)
    attn_weights[:, :, -window_size:, -window_size:] += mask[None, None, :, :]
    attn_weights = torch.nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
    attn_weights_sum = attn_weights[:, :, -window_size:, : -window_size].sum(dim=-2)
    if groups > 1:
        b, h = attn_weights_sum.shape[:2]
        attn_weights_sum = attn_weights_sum.reshape(b, h // groups, groups, -1).mean(dim=2)
    pool = F.avg_pool1d if pooling == "avgpool" else F.max_pool1d
    return pool(attn_weights_sum, kernel_size=kernel_size, padding=kernel_size // 2, stride=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("pooling", ["maxpool", "avgpool"])
def test_scores_equal_kvcache_factory_per_query_head_and_per_kv_head(dtype, pooling):
    g = torch.Generator().manual_seed(7)
    Q = (torch.randn(1, 9, 60, 16, generator=g) * 2).to(dtype)  # SmolLM2's 9 query heads over 3 KV heads
    K = (torch.randn(1, 3, 60, 16, generator=g) * 2).to(dtype)
    kv = window_scores(Q, K, window=8, pooling=pooling, kernel=7, granularity="kv")
    assert kv.dtype == dtype
    assert torch.equal(kv, _official_window_scores(Q, K, 8, 7, pooling, groups=3))
    per_query = window_scores(Q, K, window=8, pooling=pooling, kernel=7, granularity="query")
    assert torch.equal(per_query, _official_window_scores(Q, K.repeat_interleave(3, dim=1), 8, 7, pooling, groups=1))


def test_pooling_first_is_a_named_variant_that_differs_only_with_max_pooling():
    g = torch.Generator().manual_seed(8)
    Q, K = torch.randn(1, 9, 80, 16, generator=g) * 2, torch.randn(1, 3, 80, 16, generator=g) * 2
    for pooling in ("maxpool", "avgpool"):
        official = window_scores(Q, K, window=8, pooling=pooling, kernel=7, granularity="kv")
        first = window_scores(Q, K, window=8, pooling=pooling, kernel=7, granularity="kv_pool_first")
        per_query = window_scores(Q, K, window=8, pooling=pooling, kernel=7, granularity="query")
        torch.testing.assert_close(first, per_query.reshape(1, 3, 3, 72).mean(2))
        if pooling == "avgpool":  # both linear: the order does not matter
            torch.testing.assert_close(first, official)
        else:  # max of a mean <= mean of maxes, strictly somewhere
            assert torch.all(official <= first + 1e-6) and not torch.allclose(official, first)
            top = lambda s: [set(r.tolist()) for r in keep_positions(s, budget=20)[0]]  # noqa: E731
            assert top(official) != top(first)
