"""DeMo's top-k compression, the mean-over-pickers aggregation and the byte formulas."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.demo import (
    aggregate,
    allgather_received_bytes,
    allreduce_bytes,
    clip_topk,
    decompress,
    index_dtype,
    model_wire_bytes,
    topk_compress,
    wire_bytes,
)

torch.set_num_threads(1)


def test_topk_keeps_largest_magnitudes_by_hand():
    x = torch.tensor([[0.1, -3.0, 2.0, 0.5], [4.0, 0.0, -0.2, -5.0]])
    idx, val = topk_compress(x, 2)
    got = [sorted(zip(i.tolist(), v.tolist())) for i, v in zip(idx, val)]
    assert got == [[(1, -3.0), (2, 2.0)], [(0, 4.0), (3, -5.0)]]
    assert torch.equal(decompress(idx, val, 4), torch.tensor([[0, -3.0, 2.0, 0], [4.0, 0, 0, -5.0]]))


def test_topk_clips_k_larger_than_chunk_with_warning():
    with pytest.warns(UserWarning, match="larger than a chunk of 4"):
        idx, val = topk_compress(torch.randn(3, 4), 10)
    assert idx.shape == (3, 4)
    with pytest.raises(ValueError, match=">= 1, got 0"):
        topk_compress(torch.randn(3, 4), 0)
    with pytest.raises(TypeError, match="int"):
        clip_topk(2.5, 4)


def test_aggregate_is_mean_over_workers_that_picked_by_hand():
    # 3 workers, 1 chunk of length 5, k = 2
    idx = torch.tensor([[[0, 1]], [[1, 2]], [[1, 0]]])
    val = torch.tensor([[[1.0, 3.0]], [[6.0, 9.0]], [[0.0, 5.0]]])
    q = aggregate(idx, val, 5)
    # coeff 0: picked by w0 (1) and w2 (5) -> 3 ; coeff 1: all three (3, 6, 0) -> 3 ; coeff 2: w1 only -> 9
    assert torch.equal(q, torch.tensor([[3.0, 3.0, 9.0, 0.0, 0.0]]))
    # not the sum divided by the world size
    assert q[0, 2] != 9.0 / 3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 12), st.data())
def test_aggregate_of_identical_workers_is_their_payload(w, t, length, data):
    k = data.draw(st.integers(1, length))
    x = torch.randn(t, length, dtype=torch.float64)
    idx, val = topk_compress(x, k)
    q = aggregate(idx[None].expand(w, -1, -1), val[None].expand(w, -1, -1), length)
    assert torch.allclose(q, decompress(idx, val, length))
    # top-k keeps the largest |x|: every dropped entry is <= every kept one in magnitude
    kept = torch.zeros_like(x, dtype=torch.bool).scatter_(1, idx, True)
    if k < length:
        assert (x.abs().masked_fill(kept, -1).amax(1) <= x.abs().masked_fill(~kept, float("inf")).amin(1)).all()


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        aggregate(torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 2), 4)
    with pytest.raises(TypeError, match="integer"):
        aggregate(torch.zeros(2, 3), torch.zeros(2, 3), 4)


@pytest.mark.parametrize("length, dtype", [(1, torch.uint8), (256, torch.uint8), (257, torch.int16),
                                           (4096, torch.int16), (32768, torch.int16), (32769, torch.int32)])
def test_index_dtype_is_smallest_that_holds_the_chunk(length, dtype):
    assert index_dtype(length) == dtype
    assert index_dtype(length, wire_format="official") == torch.int64


def test_wire_bytes_by_hand():
    # 768x768, s=64: 12x12 = 144 tiles of 4096, k = 32
    assert wire_bytes((768, 768)) == 144 * 32 * (2 + 4) == 27648
    assert wire_bytes((768, 768), wire_format="official") == 144 * 32 * 12 == 55296
    # ≈ 0.094 B / parameter official, vs 4 B for fp32: ~42.7x
    assert wire_bytes((768, 768), wire_format="official") / 768**2 == pytest.approx(0.09375)
    # bias of 768: 12 chunks of 64, k = 32 of 64 -> uint8 indices
    assert wire_bytes((768,)) == 12 * 32 * 5
    # a norm of 10: k clipped to 10, sends everything plus indices -> more than raw (40 B)
    assert wire_bytes((10,), wire_format="official") == 10 * 12 > 40
    # vocab 50257 x 768: tiles 29 x 64 = 1856 coefficients -> int16
    assert wire_bytes((50257, 768)) == (50257 // 29) * 12 * 32 * 6
    assert model_wire_bytes([(768, 768), (768,)]) == 27648 + 12 * 32 * 5
    with pytest.raises(ValueError, match="wire_format"):
        wire_bytes((4, 4), wire_format="int12")


def test_allgather_vs_allreduce_break_even():
    p = 768 * 768
    tx = wire_bytes((768, 768), wire_format="official")
    assert allgather_received_bytes(tx, 1) == 0
    assert allreduce_bytes(p, 2) == 4 * p
    # received bytes per worker grow as (W-1) tx; all-reduce stays ~8P: break-even near W ~ 85
    even = next(w for w in range(2, 1000) if allgather_received_bytes(tx, w) > allreduce_bytes(p, w))
    assert 80 <= even <= 90


def test_olmo_1b_bytes_per_step_recomputed_from_shapes():
    from companion.demo import olmo_1b_shapes

    shapes = olmo_1b_shapes()
    assert sum(a * b for a, b in shapes) == 1_176_764_416
    # the paper's figures, official wire format (int64 + fp32), decimal MB
    assert model_wire_bytes(shapes, k=32, wire_format="official") / 1e6 == pytest.approx(110.3, abs=0.05)
    assert model_wire_bytes(shapes, k=1, wire_format="official") / 1e6 == pytest.approx(3.45, abs=0.005)
    # compact indices (int16 for a 4096-coefficient tile) halve it
    assert model_wire_bytes(shapes, k=32) * 2 == model_wire_bytes(shapes, k=32, wire_format="official")


def test_wire_bytes_and_allreduce_bytes_reject_negative_sizes():
    # were -4 B per value -> a negative byte count, and a negative all-reduce volume
    with pytest.raises(ValueError, match="value_bytes must be an int >= 1, got -4"):
        wire_bytes((768, 768), value_bytes=-4)
    with pytest.raises(ValueError, match="numel must be an int >= 0, got -5"):
        allreduce_bytes(-5, 2)
    with pytest.raises(ValueError, match="value_bytes"):
        allreduce_bytes(10, 2, value_bytes=-4)
    with pytest.raises(ValueError, match="tx_bytes"):
        allgather_received_bytes(-1, 3)
    with pytest.raises(TypeError, match="world_size must be an int"):
        allreduce_bytes(10, True)
    with pytest.raises(ValueError, match=r"shapes\[1\]"):
        model_wire_bytes([(4, 4), (0, 4)])


def test_aggregate_and_decompress_reject_out_of_range_indices():
    # were a raw RuntimeError from scatter ("index 7 is out of bounds"), or a silent wrap-around for -1
    val = torch.ones(1, 2)
    with pytest.raises(ValueError, match=r"idx must hold indices in \[0, 4\).*from 0 to 7"):
        decompress(torch.tensor([[0, 7]]), val, 4)
    with pytest.raises(ValueError, match=r"idx must hold indices in \[0, 4\).*from -1 to 2"):
        aggregate(torch.tensor([[[-1, 2]], [[0, 1]]]), torch.ones(2, 1, 2), 4)
    with pytest.raises(ValueError, match="idx .* length = 2"):
        aggregate(torch.tensor([[0, 3]]), val, 2)
    with pytest.raises(ValueError, match="length must be an int >= 1"):
        decompress(torch.tensor([[0, 1]]), val, 0)
    with pytest.raises(TypeError, match="val must have a floating dtype"):
        decompress(torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.int64), 4)
