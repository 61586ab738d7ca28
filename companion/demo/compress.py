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

from .dct import TILINGS, matrix_shape, tile_shape

WIRE_FORMATS = ("compact", "official")


def index_dtype(length: int, *, wire_format: str = "compact") -> torch.dtype:
    """The integer dtype that carries an index into a chunk of ``length`` coefficients.

    ``"official"`` is always int64; ``"compact"`` is the smallest of uint8 / int16 / int32 / int64 whose range holds
    ``0 .. length-1``.
    """
    if wire_format not in WIRE_FORMATS:
        raise ValueError(f"wire_format must be one of {WIRE_FORMATS}, got {wire_format!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be an int >= 1, got {length!r}")
    if wire_format == "official":
        return torch.int64
    for dt in (torch.uint8, torch.int16, torch.int32):
        if length - 1 <= torch.iinfo(dt).max:
            return dt
    return torch.int64


def clip_topk(k: int, length: int, *, warn: bool = True) -> int:
    """``min(k, length)``, warning when ``k`` had to be clipped (a chunk then sends all of itself plus indices)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"k (compression_topk) must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k (compression_topk) must be >= 1, got {k}")
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
    if not isinstance(coeffs, torch.Tensor):
        raise TypeError(f"coeffs must be a torch.Tensor [T, L], got {type(coeffs).__name__}")
    if coeffs.dim() == 3:
        coeffs = coeffs.flatten(1)
    if coeffs.dim() != 2:
        raise ValueError(f"coeffs must have shape [T, L] or [T, n1, n2], got {tuple(coeffs.shape)}")
    k = clip_topk(k, coeffs.shape[1])
    idx = torch.topk(coeffs.abs(), k, dim=-1, largest=True, sorted=False).indices
    return idx, coeffs.gather(-1, idx)


def decompress(idx: torch.Tensor, val: torch.Tensor, length: int) -> torch.Tensor:
    """Scatter one worker's ``(idx, val)`` (``[T, k]``) into dense chunks ``[T, length]``, zeros elsewhere."""
    _check_pair(idx, val)
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
    _check_pair(idx, val)
    if idx.dim() == 3:
        idx = idx.permute(1, 0, 2).flatten(1)
        val = val.permute(1, 0, 2).flatten(1)
    if idx.dim() != 2:
        raise ValueError(f"idx must be [W, T, k] or [T, m], got {tuple(idx.shape)}")
    out = torch.zeros(idx.shape[0], length, dtype=val.dtype, device=val.device)
    return out.scatter_reduce_(-1, idx.long(), val, reduce="mean", include_self=False)


def _check_pair(idx: torch.Tensor, val: torch.Tensor) -> None:
    if not isinstance(idx, torch.Tensor) or not isinstance(val, torch.Tensor):
        raise TypeError(f"idx and val must be torch.Tensors, got {type(idx).__name__} and {type(val).__name__}")
    if idx.shape != val.shape:
        raise ValueError(f"idx and val must have the same shape, got {tuple(idx.shape)} and {tuple(val.shape)}")
    if idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise TypeError(f"idx must be an integer tensor, got {idx.dtype}")


def topk_energy_share(x: torch.Tensor, k: int, *, chunk: int = 64, transform: str = "dct",
                      tiling: str = "2d") -> float:
    """Share of ``‖x‖²`` held by the top-k coefficients of every chunk (energy compaction; 1.0 = everything).

    ``transform="dct"`` keeps top-k DCT coefficients (orthonormal, so energy is preserved), ``"identity"`` keeps
    top-k raw entries of the same chunks.
    """
    from .dct import encode, to_tiles

    if transform not in ("dct", "identity"):
        raise ValueError(f"transform must be 'dct' or 'identity', got {transform!r}")
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
    if tiling not in TILINGS:
        raise ValueError(f"tiling must be one of {TILINGS}, got {tiling!r}")
    tile = tile_shape(shape, chunk, tiling=tiling)
    length = math.prod(tile)
    chunks = math.prod(matrix_shape(shape)) // length
    k_eff = clip_topk(k, length, warn=False)
    ib = torch.empty((), dtype=index_dtype(length, wire_format=wire_format)).element_size()
    return chunks * k_eff * (ib + value_bytes)


def model_wire_bytes(shapes: Iterable[torch.Size | tuple[int, ...]], **kwargs) -> int:
    """:func:`wire_bytes` summed over a model's parameter shapes (same keyword arguments)."""
    return sum(wire_bytes(s, **kwargs) for s in shapes)


def allreduce_bytes(numel: int, world_size: int, *, value_bytes: int = 4) -> float:
    """Bytes a worker sends (and receives) in a ring all-reduce of ``numel`` values: ``2 (W−1)/W · numel · b``."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    return 2 * (world_size - 1) / world_size * numel * value_bytes


def allgather_received_bytes(tx_bytes: int, world_size: int) -> int:
    """Bytes a worker receives in an all-gather of ``tx_bytes`` per worker: ``(W−1) · tx``."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
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
