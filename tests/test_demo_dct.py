"""DeMo's chunked DCT: the chunk rule, orthonormal bases, tiling and batched encode/decode."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.demo import (
    chunk_size,
    dct_matrix,
    decode,
    encode,
    from_tiles,
    matrix_shape,
    tile_shape,
    to_tiles,
    topk_energy_share,
)

torch.set_num_threads(1)


@pytest.mark.parametrize("n, s, expected", [(768, 64, 64), (50257, 64, 29), (100, 64, 50), (10, 64, 10),
                                            (97, 64, 1), (64, 64, 64), (2048, 64, 64), (192, 64, 64),
                                            (130, 64, 26), (1, 64, 1)])
def test_chunk_size_is_largest_divisor_at_most_s(n, s, expected):
    assert chunk_size(n, s) == expected


@given(st.integers(1, 5000), st.integers(1, 100))
def test_chunk_size_property(n, s):
    c = chunk_size(n, s)
    assert n % c == 0 and (c <= s or c == n)
    assert not any(n % d == 0 for d in range(c + 1, min(n, s) + 1))


def test_chunk_size_rejects_bad_input():
    with pytest.raises(ValueError, match="n .* >= 1"):
        chunk_size(0, 64)
    with pytest.raises(ValueError, match="compression_chunk"):
        chunk_size(10, 0)
    with pytest.raises(TypeError, match="int"):
        chunk_size(10.0, 64)


def test_dct_matrix_matches_the_formula_by_hand():
    # n = 4: row 0 = 1/2 everywhere; row k = sqrt(1/2) cos(pi (2i+1) k / 8)
    d = dct_matrix(4, dtype=torch.float64)
    assert torch.allclose(d[0], torch.full((4,), 0.5, dtype=torch.float64))
    for k in range(1, 4):
        for i in range(4):
            assert d[k, i].item() == pytest.approx(math.sqrt(0.5) * math.cos(math.pi * (2 * i + 1) * k / 8))
    # the DCT of a constant is all in the DC coefficient: [1,1,1,1] -> [2, 0, 0, 0]
    c = encode(torch.ones(1, 4, dtype=torch.float64))
    assert torch.allclose(c, torch.tensor([[2.0, 0, 0, 0]], dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 5, 29, 64])
def test_dct_matrix_is_orthonormal(n):
    d = dct_matrix(n, dtype=torch.float64)
    assert torch.allclose(d @ d.T, torch.eye(n, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("shape", [(128, 192), (100,), (50, 29), (6, 4, 3, 3), ()])
def test_tiles_round_trip(shape):
    x = torch.randn(shape, dtype=torch.float64)
    tile = tile_shape(shape, 64)
    t = to_tiles(x, tile)
    assert t.shape[1:] == tile
    assert torch.equal(from_tiles(t, shape), x)
    assert torch.allclose(from_tiles(decode(encode(t)), shape), x, atol=1e-12)


def test_to_tiles_cuts_matrix_into_row_major_tiles():
    x = torch.arange(16.0).reshape(4, 4)
    t = to_tiles(x, (2, 2))
    assert torch.equal(t[0], x[:2, :2]) and torch.equal(t[1], x[:2, 2:]) and torch.equal(t[2], x[2:, :2])


def test_batched_2d_encode_equals_per_tile_separable_dct():
    x = torch.randn(6, 3, 4, dtype=torch.float64)
    d3, d4 = dct_matrix(3, dtype=torch.float64), dct_matrix(4, dtype=torch.float64)
    c = encode(x)
    for i in range(6):
        assert torch.allclose(c[i], d3 @ x[i] @ d4.T, atol=1e-12)
    # energy is preserved (Parseval)
    assert torch.allclose((c**2).sum(), (x**2).sum())


def test_official_einsum_layout_gives_the_same_coefficients():
    # the official encode: rearrange "(y h) (x w) -> y h x w", einsum "...ijkl, jb, ld -> ...ikbd" with f = D^T
    x = torch.randn(8, 12, dtype=torch.float64)
    n1, n2 = 4, 6
    f1, f2 = dct_matrix(n1, dtype=torch.float64).T, dct_matrix(n2, dtype=torch.float64).T
    off = torch.einsum("ijkl,jb,ld->ikbd", x.reshape(2, n1, 2, n2), f1, f2).reshape(-1, n1, n2)
    assert torch.allclose(encode(to_tiles(x, (n1, n2))), off, atol=1e-12)


@pytest.mark.parametrize("shape, s, tiling, expected", [((768, 768), 64, "2d", (64, 64)),
                                                         ((50257, 768), 64, "2d", (29, 64)),
                                                         ((768,), 64, "2d", (64,)),
                                                         ((64, 64), 64, "1d", (4096,)),
                                                         ((16, 3, 3, 3), 64, "2d", (16, 27))])
def test_tile_shape(shape, s, tiling, expected):
    assert tile_shape(shape, s, tiling=tiling) == expected


def test_matrix_shape_reshapes_high_rank_tensors():
    assert matrix_shape((8, 4, 3, 3)) == (8, 36)
    assert matrix_shape(()) == (1,)
    with pytest.raises(ValueError, match="empty"):
        matrix_shape((0, 3))
    with pytest.raises(ValueError, match="tiling"):
        tile_shape((4, 4), 64, tiling="3d")


def test_encode_rejects_bad_input():
    with pytest.raises(TypeError, match="torch.Tensor"):
        encode([1.0, 2.0])
    with pytest.raises(ValueError, match=r"\[T, n\]"):
        encode(torch.zeros(4))
    with pytest.raises(TypeError, match="floating"):
        encode(torch.zeros(2, 4, dtype=torch.int64))


def test_energy_compaction_on_smooth_signal():
    # a smooth 64x64 field: a handful of DCT coefficients hold almost all the energy, raw entries do not
    g = torch.linspace(0, 1, 64, dtype=torch.float64)
    x = torch.sin(3 * g)[:, None] * torch.cos(2 * g)[None, :] + 0.5
    assert topk_energy_share(x, 8) > 0.99
    assert topk_energy_share(x, 8, transform="identity") < 0.01
    assert topk_energy_share(x, 4096) == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 16))
def test_round_trip_property(r, c, s):
    x = torch.randn(r, c, dtype=torch.float64)
    t = to_tiles(x, tile_shape((r, c), s))
    assert torch.allclose(from_tiles(decode(encode(t)), (r, c)), x, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 20), st.data())
def test_sparse_decode_equals_dense_decode(n1, n2, m, data):
    from companion.demo import decode_sparse

    for tile in ((n1, n2), (n1 * n2,)):
        length = n1 * n2
        idx = torch.tensor(data.draw(st.lists(st.integers(0, length - 1), min_size=m, max_size=m)))[None]
        val = torch.randn(1, m, dtype=torch.float64)
        dense = torch.zeros(1, length, dtype=torch.float64).index_put_((torch.zeros_like(idx), idx), val,
                                                                       accumulate=True)
        assert torch.allclose(decode_sparse(idx, val, tile), decode(dense.reshape(1, *tile)), atol=1e-12)


@pytest.mark.parametrize("n", [257, 1024, 4096, 1000])
def test_fft_dct_of_long_chunks_equals_the_matrix(n):
    x = torch.randn(3, n, dtype=torch.float64)
    assert torch.allclose(encode(x), x @ dct_matrix(n, dtype=torch.float64).T, atol=1e-10)
    assert torch.allclose(decode(x), x @ dct_matrix(n, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(decode(encode(x)), x, atol=1e-10)


def test_from_tiles_rejects_wrong_tile_shapes():
    # were reshape errors from deep inside ("shape '[3, 1, 2, 3]' is invalid for input of size 24")
    tiles = to_tiles(torch.randn(4, 6), (2, 3))
    with pytest.raises(ValueError, match=r"tiles of 2 x 3 .* do not tile a tensor of shape \(6, 4\)"):
        from_tiles(tiles, (6, 4))
    with pytest.raises(ValueError, match=r"tiles .* hold 24 entries, but shape \(4, 5\) has 20"):
        from_tiles(tiles, (4, 5))
    with pytest.raises(ValueError, match=r"tiles .* shape \(24,\)"):
        from_tiles(tiles, (24,))
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int"):
        from_tiles(tiles, (4.0, 6))
    with pytest.raises(ValueError, match=r"tile \(4, 4\) does not divide"):
        to_tiles(torch.randn(4, 6), (4, 4))
    with pytest.raises(ValueError, match="tile must be"):
        to_tiles(torch.randn(4, 6), (0, 3))
    x = torch.randn(4, 6)
    assert torch.equal(from_tiles(to_tiles(x, (2, 3)), (4, 6)), x)  # the right shape still round-trips


def test_decode_sparse_rejects_indices_outside_the_tile():
    # a negative index was silently wrapped around (python-style indexing of the DCT matrix)
    from companion.demo import decode_sparse

    with pytest.raises(ValueError, match=r"idx must hold indices in \[0, 6\) \(a tile \(2, 3\)"):
        decode_sparse(torch.tensor([[-1, 2]]), torch.ones(1, 2), (2, 3))
    with pytest.raises(TypeError, match="val must have a floating dtype"):
        decode_sparse(torch.tensor([[0, 2]]), torch.ones(1, 2, dtype=torch.int64), (2, 3))


def test_dct_matrix_and_shapes_reject_bools_and_floats():
    # matrix_shape((2.5, 3)) was (2, 3), chunk_size(True) was 1, dct_matrix(4, dtype=torch.int64) all zeros and ones
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int"):
        matrix_shape((2.5, 3))
    with pytest.raises(TypeError, match="n .* must be an int"):
        chunk_size(True)
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype"):
        dct_matrix(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="device"):
        dct_matrix(4, device="gpu")
