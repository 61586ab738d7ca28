"""The chunked, orthonormal DCT-II of DeMo (Peng, Quesnelle & Kingma, 2024, arXiv 2411.19870, §3, Algorithm 1).

DeMo encodes every momentum tensor with a DCT-II applied *per chunk*, not over the whole tensor:

- chunk size along a dimension of length ``n``: the largest divisor of ``n`` that is ``<= s`` (``s`` =
  ``compression_chunk`` = 64 in the paper): 768 -> 64, 50257 -> 29, 100 -> 50, 10 -> 10 (:func:`chunk_size`);
- a 2-D tensor ``[R, C]`` is cut into ``n1 x n2`` tiles (``n1 = chunk_size(R)``, ``n2 = chunk_size(C)``) and each
  tile gets the separable 2-D transform ``X̂ = D_{n1} X D_{n2}ᵀ`` (4096 coefficients per 64x64 tile);
- a 1-D tensor ``[N]`` is cut into chunks of ``n = chunk_size(N)`` and each chunk gets ``x̂ = D_n x``;
- tensors with >= 3 dimensions (the official code does not support them) are viewed as the matrix
  ``[shape[0], prod(shape[1:])]`` (for a conv weight: out-channels x (in-channels·kh·kw)); a 0-d tensor is a
  vector of length 1 (:func:`matrix_shape`).

``D_n`` is the orthonormal DCT-II matrix (:func:`dct_matrix`),
``D[k, i] = sqrt(2/n) · c_k · cos(π (2i + 1) k / (2n))``, ``c_0 = 1/√2``, ``c_k = 1`` otherwise, so
``D Dᵀ = I`` and the inverse is ``Dᵀ``; its true zeros (``(2i + 1) k ≡ n mod 2n``) are exact zeros. The official
code builds the matrices with torch-dct (``norm="ortho"``) from ``torch.eye(n)`` in float32: a forward and an
inverse matrix, equal to ``D`` and ``Dᵀ`` to float32 round-off only; :class:`companion.demo.DeMo` uses those by
default (:data:`BASES`), :func:`dct_matrix`, :func:`encode` and :func:`decode` the exact ``D``.

All tiles are transformed in one batched matmul: :func:`to_tiles` turns a tensor into ``[T, n1, n2]`` (or
``[T, n]``), tiles of several tensors with the same tile shape can be concatenated along ``T``, and
:func:`encode` / :func:`decode` act on the whole batch. 1-D chunks longer than :data:`FFT_MIN` (only the
``tiling="1d"`` ablation has them) use an FFT instead of the ``n x n`` matrix; :func:`decode_sparse` inverts tiles
that hold only a few nonzero coefficients without densifying them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from companion.lab.checks import check_choice, check_int, check_tensor, check_type, describe

TILINGS = ("2d", "1d")


def _check_shape(name: str, shape) -> tuple[int, ...]:
    """``shape`` (a tuple, list or ``torch.Size`` of ints >= 0) as a tuple of ints."""
    check_type(name, shape, (tuple, list, torch.Size), what="a shape (a tuple of ints)")
    return tuple(check_int(f"{name}[{i}]", d, low=0) for i, d in enumerate(shape))


def _check_tile(name: str, tile) -> tuple[int, ...]:
    """``tile``: ``(n,)`` or ``(n1, n2)`` with every entry an int >= 1."""
    tile = _check_shape(name, tile)
    if len(tile) not in (1, 2) or min(tile) < 1:
        raise ValueError(f"{name} must be (n,) or (n1, n2) with entries >= 1, got {tile}")
    return tile


def chunk_size(n: int, s: int = 64) -> int:
    """The largest divisor of ``n`` that is ``<= s`` (``n`` itself when ``n <= s``).

    The official ``_get_smaller_split``: 768 -> 64, 50257 (= 29·1733) -> 29, 100 -> 50, 97 (prime) -> 1.

    Args:
        n: a dimension length, ``>= 1``.
        s: the target chunk size, ``compression_chunk`` (paper: 64), ``>= 1``.
    """
    n = check_int("n (dimension length)", n, low=1)
    s = check_int("s (compression_chunk)", s, low=1)
    if n <= s:
        return n
    for d in range(s, 0, -1):
        if n % d == 0:
            return d
    return 1  # unreachable: 1 divides n


def matrix_shape(shape: torch.Size | tuple[int, ...]) -> tuple[int, ...]:
    """The 1-D or 2-D shape a tensor is encoded as.

    ``[] -> [1]``, ``[N] -> [N]``, ``[R, C] -> [R, C]``, ``[a, b, c, ...] -> [a, b·c·...]`` (documented reshape for
    >= 3-D tensors; the official code raises on them). Empty tensors are rejected.
    """
    shape = _check_shape("shape", shape)
    if any(d == 0 for d in shape):
        raise ValueError(f"shape must not contain 0 (cannot encode an empty tensor), got shape {shape}")
    return _matrix_shape(shape)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """:func:`matrix_shape` without the checks (``shape``: the shape of an existing, non-empty tensor)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return (1,)
    if len(shape) <= 2:
        return shape
    return (shape[0], math.prod(shape[1:]))


def tile_shape(shape: torch.Size | tuple[int, ...], s: int = 64, *, tiling: str = "2d") -> tuple[int, ...]:
    """The chunk (1-D) or tile (2-D) shape DeMo uses for a tensor of ``shape``.

    Args:
        shape: the parameter's shape (any number of dimensions, see :func:`matrix_shape`).
        s: ``compression_chunk`` (paper: 64).
        tiling: ``"2d"`` (the paper: ``s x s`` tiles for matrices) or ``"1d"`` (ablation: the matrix is
            flattened and cut into 1-D chunks of the largest divisor of its size ``<= s²``, so a chunk holds as
            many coefficients as a tile would). 1-D tensors use chunks ``<= s`` in both modes.

    Returns:
        ``(n1, n2)`` for a tile, ``(n,)`` for a 1-D chunk.
    """
    check_choice("tiling", tiling, TILINGS)
    s = check_int("s (compression_chunk)", s, low=1)
    m = matrix_shape(shape)
    if len(m) == 1:
        return (chunk_size(m[0], s),)
    if tiling == "1d":
        return (chunk_size(m[0] * m[1], s * s),)
    return (chunk_size(m[0], s), chunk_size(m[1], s))


@lru_cache(maxsize=None)
def _dct64(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    d[((2 * i + 1) * k).long() % (2 * n) == n] = 0.0  # cos(π/2 + mπ) = 0 exactly, not ±1e-17
    return d


def dct_matrix(n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` of size ``[n, n]``: ``x̂ = D x``, ``x = Dᵀ x̂``.

    ``D[k, i] = sqrt(2/n) · c_k · cos(π (2i + 1) k / (2n))`` with ``c_0 = 1/√2``, ``c_{k>0} = 1``. Built in float64
    and cast to ``dtype`` (a floating dtype) on ``device`` (default: the CPU).
    """
    from companion.lab.runtime import get_device

    n = check_int("n", n, low=1)
    check_type("dtype", dtype, torch.dtype, what="a floating torch.dtype")
    if not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype}")
    return _basis(n, dtype, get_device(device) if device is not None else torch.device("cpu"))


#: the bases the optimizer can use: ``"official"`` (the official code's float32 FFT-built matrices, cast to the
#: parameter's dtype; a forward and an inverse matrix) or ``"exact"`` (:func:`dct_matrix`: closed-form cosines in
#: float64 with exact zeros, cast)
BASES = ("official", "exact")


@lru_cache(maxsize=256)
def _basis(n: int, dtype: torch.dtype, device: torch.device, kind: str = "exact") -> torch.Tensor:
    """``D`` (``kind="exact"``), or the official forward / inverse matrix (``"forward"`` / ``"inverse"``)."""
    if kind == "exact":
        return _dct64(n).to(dtype=dtype, device=device)
    return _official(n, kind == "inverse").to(dtype=dtype, device=device)


def to_tiles(x: torch.Tensor, tile: tuple[int, ...]) -> torch.Tensor:
    """Cut a tensor into tiles: ``[R, C] -> [T, n1, n2]`` (row-major over tiles) or ``-> [T, n]`` for a 1-D tile.

    ``x`` is first viewed as :func:`matrix_shape`; for a 1-D tile of a matrix (the ``"1d"`` ablation) the matrix is
    flattened row-major. Every dimension must be divisible by the tile (use :func:`tile_shape`).
    """
    check_tensor("x", x)
    tile = _check_tile("tile", tile)
    return _to_tiles(x, tile)


def _to_tiles(x: torch.Tensor, tile: tuple[int, ...]) -> torch.Tensor:
    """:func:`to_tiles` without the argument checks (the optimizer's per-step path)."""
    m = _matrix_shape(x.shape)
    x = x.reshape(m)
    if len(tile) == 1:
        n = tile[0]
        if x.numel() % n:
            raise ValueError(f"tile {tile} does not divide tensor of shape {tuple(m)}")
        return x.reshape(-1, n)
    if len(m) != 2 or len(tile) != 2:
        raise ValueError(f"a 2-D tile {tile} needs a 2-D tensor, got shape {tuple(m)}")
    (r, c), (n1, n2) = m, tile
    if r % n1 or c % n2:
        raise ValueError(f"tile {tile} does not divide tensor of shape {tuple(m)}")
    return x.reshape(r // n1, n1, c // n2, n2).permute(0, 2, 1, 3).reshape(-1, n1, n2)


def _tile_view(x: torch.Tensor, tile: tuple[int, ...]) -> torch.Tensor | None:
    """A view (no copy) of a contiguous ``x`` whose entries are in :func:`to_tiles`'s order: ``[T, n]`` for 1-D
    tiles, ``[r/n1, c/n2, n1, n2]`` for 2-D tiles of the ``r x c`` matrix (``.reshape(-1, n1, n2)`` of it would be
    the tiles); None when ``x`` is not contiguous. The optimizer copies into and updates through it, so that a
    step makes no intermediate copy of the tiles."""
    if not x.is_contiguous():
        return None
    if len(tile) == 1:
        return x.view(-1, tile[0])
    (r, c), (n1, n2) = _matrix_shape(x.shape), tile
    return x.view(r // n1, n1, c // n2, n2).permute(0, 2, 1, 3)


def from_tiles(tiles: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`to_tiles`: ``[T, n1, n2]`` or ``[T, n]`` back to a tensor of ``shape``.

    Raises ``ValueError`` when the tiles cannot come from a tensor of ``shape`` (other number of entries, a tile
    that does not divide the matrix, a 2-D tile for a 1-D shape).
    """
    check_tensor("tiles", tiles, ndim=(2, 3))
    m = matrix_shape(shape)
    shape = tuple(int(d) for d in shape)
    if tiles.numel() != math.prod(m):
        raise ValueError(f"tiles ({describe(tiles)}) hold {tiles.numel()} entries, but shape {shape} has "
                         f"{math.prod(m)}")
    if tiles.dim() == 3:
        n1, n2 = tiles.shape[1:]
        if len(m) != 2 or m[0] % n1 or m[1] % n2:
            raise ValueError(f"tiles of {n1} x {n2} ({describe(tiles)}) do not tile a tensor of shape {shape} "
                             f"(viewed as {m})")
    return _from_tiles(tiles, shape)


def _from_tiles(tiles: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """:func:`from_tiles` without the argument checks (the optimizer's per-step path)."""
    shape = tuple(shape)
    m = _matrix_shape(shape)
    if tiles.dim() == 2:
        return tiles.reshape(shape)
    (r, c), (n1, n2) = m, tiles.shape[1:]
    return tiles.reshape(r // n1, c // n2, n1, n2).permute(0, 2, 1, 3).reshape(shape)


def _check_tiles(name: str, tiles: torch.Tensor) -> None:
    check_tensor(name, tiles, dtype="floating")
    if tiles.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape [T, n] or [T, n1, n2], got {describe(tiles)}")


def encode(tiles: torch.Tensor) -> torch.Tensor:
    """DCT-II of every tile at once: ``[T, n] -> x̂ = x Dᵀ`` and ``[T, n1, n2] -> X̂ = D_{n1} X D_{n2}ᵀ``."""
    _check_tiles("tiles", tiles)
    return _encode(tiles)


def _encode(tiles: torch.Tensor, basis: str = "exact", out: torch.Tensor | None = None,
            tmp: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`encode` without the checks, with the ``"exact"`` or the ``"official"`` forward basis. ``out`` (may be
    ``tiles`` itself) and, for 2-D tiles, ``tmp`` (the product ``D_{n1} X``): preallocated tensors of ``tiles``'s
    shape to write into, for 2-D tiles both or neither (the optimizer reuses them every step; the numbers are the
    same)."""
    kw = (tiles.dtype, tiles.device, "exact" if basis == "exact" else "forward")
    if tiles.dim() == 2:
        if tiles.shape[1] > FFT_MIN and tiles.dtype in (torch.float32, torch.float64):
            return _dct_fft(tiles)
        return torch.matmul(tiles, _basis(tiles.shape[1], *kw).T, out=out)
    d1, d2 = _basis(tiles.shape[1], *kw), _basis(tiles.shape[2], *kw)
    if out is None or tmp is None:
        return d1 @ tiles @ d2.T
    return torch.matmul(torch.matmul(d1, tiles, out=tmp), d2.T, out=out)


#: 1-D chunks longer than this are encoded with an FFT (O(n log n)) instead of the n x n matrix
#: (only the ``tiling="1d"`` ablation, whose chunks hold up to s² = 4096 coefficients, gets there)
FFT_MIN = 256


def _dct_fft(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal DCT-II along the last dim of ``[T, n]`` via one length-n FFT (Makhoul, 1980), with the official
    code's operations in its order (its ``_dct``, from torch-dct), so that :func:`_official` is bit-identical."""
    n = x.shape[-1]
    v = torch.cat([x[:, ::2], x[:, 1::2].flip(-1)], dim=-1)
    f = torch.fft.fft(v, dim=-1)
    k = -torch.arange(n, dtype=x.dtype, device=x.device)[None, :] * math.pi / (2 * n)
    out = f.real * torch.cos(k) - f.imag * torch.sin(k)
    out[:, 0] /= math.sqrt(n) * 2
    out[:, 1:] /= math.sqrt(n / 2) * 2
    return 2 * out


def _idct_fft(c: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_dct_fft` (orthonormal DCT-III) along the last dim of ``[T, n]`` via one inverse FFT, in the
    official code's order of operations (its ``_idct``)."""
    n = c.shape[-1]
    v = c / 2
    v[:, 0] *= math.sqrt(n) * 2
    v[:, 1:] *= math.sqrt(n / 2) * 2
    k = torch.arange(n, dtype=c.dtype, device=c.device)[None, :] * math.pi / (2 * n)
    vi = torch.cat([v[:, :1] * 0, -v.flip(-1)[:, :-1]], dim=-1)
    spec = torch.complex(v * torch.cos(k) - vi * torch.sin(k), v * torch.sin(k) + vi * torch.cos(k))
    y = torch.fft.irfft(spec, n=n, dim=-1)
    x = torch.zeros_like(y)
    x[:, ::2] = y[:, : n - n // 2]
    x[:, 1::2] = y.flip(-1)[:, : n // 2]
    return x


@lru_cache(maxsize=None)
def _official(n: int, inverse: bool) -> torch.Tensor:
    """The official code's basis (``TransformDCT``: torch-dct applied to ``torch.eye(n)`` in float32), ``[n, n]``
    float32: ``inverse=False`` gives ``D_f`` with ``x̂ = D_f x`` (the transpose of its ``f_dict[n]``),
    ``inverse=True`` gives ``D_b`` with ``x = D_bᵀ x̂`` (its ``b_dict[n]``). Both equal :func:`dct_matrix` to float32
    round-off but not to each other bit for bit, and only some of the true zeros come out as exact zeros."""
    eye = torch.eye(n, dtype=torch.float32)
    return _idct_fft(eye) if inverse else _dct_fft(eye).T.contiguous()


def decode(coeffs: torch.Tensor) -> torch.Tensor:
    """Inverse DCT of every tile at once: ``[T, n] -> x̂ D`` and ``[T, n1, n2] -> D_{n1}ᵀ X̂ D_{n2}``."""
    _check_tiles("coeffs", coeffs)
    return _decode(coeffs)


def _decode(coeffs: torch.Tensor, basis: str = "exact") -> torch.Tensor:
    """:func:`decode` without the checks, with the ``"exact"`` or the ``"official"`` inverse basis."""
    kw = (coeffs.dtype, coeffs.device, "exact" if basis == "exact" else "inverse")
    if coeffs.dim() == 2:
        if coeffs.shape[1] > FFT_MIN and coeffs.dtype in (torch.float32, torch.float64):
            return _idct_fft(coeffs)
        return coeffs @ _basis(coeffs.shape[1], *kw)
    d1, d2 = _basis(coeffs.shape[1], *kw), _basis(coeffs.shape[2], *kw)
    return d1.T @ coeffs @ d2


def decode_sparse(idx: torch.Tensor, val: torch.Tensor, tile: tuple[int, ...]) -> torch.Tensor:
    """Inverse DCT of tiles that hold only ``m`` nonzero coefficients each, without densifying them first.

    ``x = Σ_i val_i · D_{n1}[a_i]ᵀ D_{n2}[b_i]`` (``a_i, b_i``: row and column of flat index ``idx_i`` in the
    tile),
    computed as one batched matmul ``[T, n1, m] @ [T, m, n2]``: ``2·n1·n2·m`` flops per tile instead of
    ``2·n1·n2·(n1 + n2)`` for the dense :func:`decode` (8x fewer at m = 32, s = 64). Repeated indices add up.

    Args:
        idx: ``[T, m]`` flat coefficient indices in ``[0, n1·n2)`` (or ``[0, n)`` for a 1-D tile).
        val: ``[T, m]`` the coefficients.
        tile: ``(n1, n2)`` or ``(n,)``.

    Returns:
        ``[T, n1, n2]`` or ``[T, n]``, equal (up to rounding) to ``decode`` of the scattered coefficients.
    """
    from .compress import _check_indices

    tile = _check_tile("tile", tile)
    _check_indices(idx, val, math.prod(tile), ndim=2, chunk=f"a tile {tile} of {math.prod(tile)} coefficients")
    return _decode_sparse(idx, val, tile)


def _decode_sparse(idx: torch.Tensor, val: torch.Tensor, tile: tuple[int, ...], basis: str = "exact",
                   out: torch.Tensor | None = None, scratch: tuple | None = None) -> torch.Tensor:
    """:func:`decode_sparse` without the argument checks (the optimizer's per-step path). For 2-D tiles, ``out``
    (``[T, n1, n2]``) and ``scratch`` (two tensors with ``T·m·n1`` and ``T·m·n2`` entries, for the basis rows):
    preallocated tensors to write into, both or neither; the numbers are the same."""
    kw = (val.dtype, val.device, "exact" if basis == "exact" else "inverse")
    idx = idx.long()
    flat = idx.reshape(-1)  # index_select: the same rows as basis[idx], ~3x faster on CPU than advanced indexing
    if len(tile) == 1:
        rows = torch.index_select(_basis(tile[0], *kw), 0, flat).view(*idx.shape, tile[0])  # [T, m, n]
        return (val.unsqueeze(1) @ rows).squeeze(1)
    n1, n2 = tile
    s1, s2 = scratch if scratch is not None else (None, None)
    r1 = _rows(_basis(n1, *kw), flat // n2, s1).view(*idx.shape, n1)  # [T, m, n1]
    r2 = _rows(_basis(n2, *kw), flat % n2, s2).view(*idx.shape, n2)  # [T, m, n2]
    if scratch is None:
        return (r1 * val.unsqueeze(-1)).transpose(1, 2) @ r2
    return torch.bmm(r1.mul_(val.unsqueeze(-1)).transpose(1, 2), r2, out=out)


def _rows(basis: torch.Tensor, which: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """``basis[which]`` (``[len(which), n]``), written into ``out`` (any tensor with that many entries) if given."""
    if out is None:
        return torch.index_select(basis, 0, which)
    return torch.index_select(basis, 0, which, out=out.view(which.shape[0], basis.shape[1]))
