"""Top-k compression, aggregation and the wire format of DeMo (Peng et al., 2024, arXiv 2411.19870, Algorithm 1).

Per chunk (a row of ``coeffs``, ``[T, L]`` with ``L = n1·n2`` coefficients per tile, or ``n`` per 1-D chunk):

- compress: keep the ``k`` coefficients of largest magnitude, ``idx, val = topk(|x̂|, k)`` — ``[T, k]`` each
  (paper: ``k = compression_topk = 32``, i.e. 0.78 % of a 64x64 tile); ``k > L`` is clipped to ``L`` with a warning
  (the official code clips silently);
- aggregate: every worker's ``(idx, val)`` is gathered and scattered into one chunk, taking at each coefficient
  the **mean over the workers that selected it** (``scatter_reduce(..., "mean", include_self=False)``), *not* the
  sum divided by the world size; coefficients nobody selected are 0.

Wire format, per chunk: ``k · (bytes(index) + bytes(value))``.

- ``"official"``: int64 indices (8 B) + the value dtype (fp32: 4 B) — 12 B per coefficient;
- ``"compact"``: indices in the smallest integer dtype that holds ``L`` (:func:`index_dtype`: uint8 for
  ``L <= 256``, int16 for ``L <= 32768``, then int32, int64) — 6 B per fp32 coefficient of a 64x64 tile.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import torch

from companion.lab.checks import check_choice, check_int, check_same_device, check_tensor, describe

from .dct import TILINGS, _check_shape, matrix_shape, tile_shape

WIRE_FORMATS = ("compact", "official")


def index_dtype(length: int, *, wire_format: str = "compact") -> torch.dtype:
    """The integer dtype that carries an index into a chunk of ``length`` coefficients.

    ``"official"`` is always int64; ``"compact"`` is the smallest of uint8 / int16 / int32 / int64 whose range holds
    ``0 .. length-1``.
    """
    check_choice("wire_format", wire_format, WIRE_FORMATS)
    length = check_int("length", length, low=1)
    if wire_format == "official":
        return torch.int64
    for dt in (torch.uint8, torch.int16, torch.int32):
        if length - 1 <= torch.iinfo(dt).max:
            return dt
    return torch.int64


def clip_topk(k: int, length: int, *, warn: bool = True) -> int:
    """``min(k, length)``, warning when ``k`` had to be clipped (a chunk then sends all of itself plus indices)."""
    k = check_int("k (compression_topk)", k, low=1)
    length = check_int("length", length, low=1)
    if not isinstance(warn, bool):
        raise TypeError(f"warn must be a bool, got {describe(warn)}")
    if k > length:
        if warn:
            warnings.warn(f"compression_topk = {k} is larger than a chunk of {length} coefficients; clipped to "
                          f"{length} (the whole chunk is sent, plus its indices)", stacklevel=3)
        return length
    return k


def topk_compress(coeffs: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``k`` largest-magnitude coefficients of every chunk.

    Args:
        coeffs: ``[T, L]`` (T chunks of L coefficients; a ``[T, n1, n2]`` tile batch is flattened to
            ``[T, n1·n2]``).
        k: coefficients kept per chunk (paper: 32); clipped to ``L`` with a warning.

    Returns:
        ``(idx, val)``, both ``[T, k]``; ``idx`` is int64, ``val`` has ``coeffs``' dtype, ``val = coeffs.gather(idx)``.
    """
    check_tensor("coeffs", coeffs, dtype="floating")
    if coeffs.dim() not in (2, 3):
        raise ValueError(f"coeffs must have shape [T, L] or [T, n1, n2], got {describe(coeffs)}")
    if coeffs.dim() == 3:
        coeffs = coeffs.flatten(1)
    k = clip_topk(k, coeffs.shape[1])
    idx = torch.topk(coeffs.abs(), k, dim=-1, largest=True, sorted=False).indices
    return idx, coeffs.gather(-1, idx)


def decompress(idx: torch.Tensor, val: torch.Tensor, length: int) -> torch.Tensor:
    """Scatter one worker's ``(idx, val)`` (``[T, k]``) into dense chunks ``[T, length]``, zeros elsewhere.

    ``idx`` must hold integer indices in ``[0, length)``; ``val`` the floating-point coefficients, same shape.
    """
    length = check_int("length", length, low=1)
    _check_indices(idx, val, length, ndim=2)
    out = torch.zeros(idx.shape[0], length, dtype=val.dtype, device=val.device)
    return out.scatter_(-1, idx.long(), val)


def aggregate(idx: torch.Tensor, val: torch.Tensor, length: int) -> torch.Tensor:
    """Combine the gathered coefficients of W workers: mean over the workers that picked each coefficient.

    Args:
        idx: ``[W, T, k]`` (or ``[T, m]`` already concatenated over workers) chunk indices.
        val: same shape, the coefficients.
        length: ``L``, coefficients per chunk.

    Returns:
        ``[T, L]``: at coefficient ``j`` of chunk ``t``, ``mean{val[w, t, i] : idx[w, t, i] = j}``, and 0 where no
        worker picked ``j``. Workers are concatenated in rank order, as the official ``batch_decompress`` does.
    """
    length = check_int("length", length, low=1)
    _check_indices(idx, val, length, ndim=(2, 3))
    return _aggregate(idx, val, length)


def _aggregate(idx: torch.Tensor, val: torch.Tensor, length: int) -> torch.Tensor:
    """:func:`aggregate` without the argument checks (the optimizer's per-step path)."""
    if idx.dim() == 3:
        idx = idx.permute(1, 0, 2).flatten(1)
        val = val.permute(1, 0, 2).flatten(1)
    out = torch.zeros(idx.shape[0], length, dtype=val.dtype, device=val.device)
    return out.scatter_reduce_(-1, idx.long(), val, reduce="mean", include_self=False)


def _check_indices(idx: torch.Tensor, val: torch.Tensor, length: int, *, ndim, chunk: str | None = None) -> None:
    """``idx``: integer indices into chunks of ``length`` coefficients; ``val``: floating coefficients, same shape
    and device. One pass over ``idx`` (its minimum and maximum) checks the range; ``chunk`` names the chunk in the
    message (default ``"chunks of length = L coefficients"``)."""
    layout = "[T, k]" if ndim == 2 else "[W, T, k] or [T, m]"
    for name, value, kind in (("idx", idx, "integer"), ("val", val, "floating")):
        check_tensor(name, value, dtype=kind)
        if value.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
            raise ValueError(f"{name} must have shape {layout}, got {describe(value)}")
    if idx.shape != val.shape:
        raise ValueError(f"idx and val must have the same shape, got {tuple(idx.shape)} and {tuple(val.shape)}")
    check_same_device(idx=idx, val=val)
    low, high = (int(v) for v in torch.aminmax(idx))
    if low < 0 or high >= length:
        chunk = chunk or f"chunks of length = {length} coefficients"
        raise ValueError(f"idx must hold indices in [0, {length}) ({chunk}), got indices from {low} to {high}")


def topk_energy_share(x: torch.Tensor, k: int, *, chunk: int = 64, transform: str = "dct",
                      tiling: str = "2d") -> float:
    """Share of ``‖x‖²`` held by the top-k coefficients of every chunk (energy compaction; 1.0 = everything).

    ``transform="dct"`` keeps top-k DCT coefficients (orthonormal, so energy is preserved), ``"identity"`` keeps
    top-k raw entries of the same chunks.
    """
    from .dct import encode, to_tiles

    check_tensor("x", x, dtype="floating", finite=True)
    k = check_int("k", k, low=1)
    chunk = check_int("chunk", chunk, low=1)
    check_choice("transform", transform, ("dct", "identity"))
    check_choice("tiling", tiling, TILINGS)
    tiles = to_tiles(x.detach().double(), tile_shape(x.shape, chunk, tiling=tiling))
    c = (encode(tiles) if transform == "dct" else tiles).flatten(1)
    total = float((c**2).sum())
    if total == 0.0:
        return 1.0
    _, v = topk_compress(c, min(k, c.shape[1]))
    return float((v**2).sum()) / total


def wire_bytes(shape: torch.Size | tuple[int, ...], *, k: int = 32, chunk: int = 64, wire_format: str = "compact",
               value_bytes: int = 4, tiling: str = "2d") -> int:
    """Bytes one worker sends for one tensor per step: ``chunks · k_eff · (bytes(index) + value_bytes)``.

    ``k_eff = min(k, L)``; e.g. ``[768, 768]``, k=32, s=64: 144 tiles · 32 · (8+4) = 55 296 B official,
    144 · 32 · (2+4) = 27 648 B compact, vs 4·768² = 2 359 296 B for an fp32 gradient.
    """
    shape = _check_shape("shape", shape)
    matrix_shape(shape)  # rejects empty shapes
    k = check_int("k", k, low=1)
    chunk = check_int("chunk", chunk, low=1)
    check_choice("wire_format", wire_format, WIRE_FORMATS)
    value_bytes = check_int("value_bytes", value_bytes, low=1)
    check_choice("tiling", tiling, TILINGS)
    tile = tile_shape(shape, chunk, tiling=tiling)
    length = math.prod(tile)
    chunks = math.prod(matrix_shape(shape)) // length
    k_eff = clip_topk(k, length, warn=False)
    ib = torch.empty((), dtype=index_dtype(length, wire_format=wire_format)).element_size()
    return chunks * k_eff * (ib + value_bytes)


def model_wire_bytes(shapes: Iterable[torch.Size | tuple[int, ...]], **kwargs) -> int:
    """:func:`wire_bytes` summed over a model's parameter shapes (same keyword arguments)."""
    if isinstance(shapes, (str, bytes, torch.Tensor)) or not isinstance(shapes, Iterable):
        raise TypeError(f"shapes must be an iterable of shapes (tuples of ints), got {describe(shapes)}")
    shapes = list(shapes)
    for i, s in enumerate(shapes):
        if 0 in _check_shape(f"shapes[{i}]", s):
            raise ValueError(f"shapes[{i}] must not contain 0 (cannot encode an empty tensor), got {tuple(s)}")
    return sum(wire_bytes(s, **kwargs) for s in shapes)


def allreduce_bytes(numel: int, world_size: int, *, value_bytes: int = 4) -> float:
    """Bytes a worker sends (and receives) in a ring all-reduce of ``numel`` values: ``2 (W−1)/W · numel · b``."""
    numel = check_int("numel", numel, low=0)
    world_size = check_int("world_size", world_size, low=1)
    value_bytes = check_int("value_bytes", value_bytes, low=1)
    return 2 * (world_size - 1) / world_size * numel * value_bytes


def allgather_received_bytes(tx_bytes: int, world_size: int) -> int:
    """Bytes a worker receives in an all-gather of ``tx_bytes`` per worker: ``(W−1) · tx``."""
    tx_bytes = check_int("tx_bytes", tx_bytes, low=0)
    world_size = check_int("world_size", world_size, low=1)
    return (world_size - 1) * tx_bytes


def olmo_1b_shapes() -> list[tuple[int, int]]:
    """Parameter shapes of OLMo-1B, the paper's larger model (1.18 B parameters).

    d_model 2048, 16 blocks, vocabulary padded to 50304 with tied embeddings, fused QKV ``[6144, 2048]``, attention
    out ``[2048, 2048]``, SwiGLU ``ff_proj [16384, 2048]`` and ``ff_out [2048, 8192]``; no biases and non-parametric
    layer norms, so no 1-D tensors. With the official wire (int64 + fp32) these give the paper's 110.3 MB/step at
    k = 32 and 3.45 MB/step at k = 1 (decimal MB).
    """
    d, layers = 2048, 16
    return [(50304, d)] + [(3 * d, d), (d, d), (16384, d), (d, 8192)] * layers
