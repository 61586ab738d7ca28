"""Bit packing of quantized weights, in the layouts of the official ``hqq`` code (0.2.8).

``W_q`` is a 2-D integer tensor ``[rows, cols]`` (the grouped layout of :func:`companion.hqq.quantize`).
Values are packed along the first dimension: with ``r`` rows and ``k`` values per storage word, row ``i`` of
the packed tensor holds rows ``i, i + r/k, i + 2r/k, ...`` of ``W_q``, the first in the highest bits.

| bits | storage | values per word | note |
| --- | --- | --- | --- |
| 8 | uint8 | 1 | |
| 4 | uint8 | 2 | |
| 3 | int32 | 10 | 30 of 32 bits used; rows padded with zeros to a multiple of 10 (as hqq does) |
| 2 | uint8 | 4 | |
| 1 | uint8 | 8 | |

hqq pads only the 3-bit case and silently mis-packs other row counts that the word size does not divide;
here every case pads to a multiple of the word's value count, and :func:`unpack` trims the padding.
"""

from __future__ import annotations

import torch

from ..lab.checks import check_choice, check_int, check_tensor

#: bits -> (storage dtype, values per storage word)
LAYOUT = {8: (torch.uint8, 1), 4: (torch.uint8, 2), 3: (torch.int32, 10), 2: (torch.uint8, 4), 1: (torch.uint8, 8)}


def pack(W_q: torch.Tensor, nbits: int) -> torch.Tensor:
    """Pack integer codes in ``[0, 2**nbits)`` of shape ``[rows, cols]`` into ``[ceil(rows / k), cols]`` words.

    Raises:
        TypeError: ``W_q`` is not an integer tensor (float codes such as 1.7 are not silently truncated);
            ``nbits`` is not an int.
        ValueError: ``W_q`` is not 2-D or holds codes outside ``[0, 2**nbits)``; ``nbits`` is not 8, 4, 3, 2 or 1.
    """
    nbits = check_choice("nbits", check_int("nbits", nbits), LAYOUT)
    check_tensor("W_q", W_q, ndim=2, dtype="integer", nonempty=False)
    if W_q.numel() and (W_q.min() < 0 or W_q.max() > 2**nbits - 1):
        raise ValueError(f"W_q: codes must lie in [0, {2**nbits - 1}] for {nbits}-bit packing")
    dtype, k = LAYOUT[nbits]
    rows = W_q.shape[0]
    padded = -(-rows // k) * k
    codes = torch.zeros((padded, W_q.shape[1]), dtype=dtype, device=W_q.device)
    codes[:rows] = W_q.to(dtype)
    step = padded // k
    out = torch.zeros((step, W_q.shape[1]), dtype=dtype, device=W_q.device)
    for j in range(k):  # slice j goes to bits [nbits * (k - 1 - j), nbits * (k - j))
        out |= codes[j * step : (j + 1) * step] << (nbits * (k - 1 - j))
    return out


def unpack(packed: torch.Tensor, nbits: int, rows: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``[ceil(rows / k), cols]`` words → ``uint8`` codes ``[rows, cols]``.

    Raises:
        TypeError: ``packed`` is not an integer tensor; ``nbits`` or ``rows`` is not an int.
        ValueError: ``packed`` is not 2-D or not in the storage dtype of ``nbits`` (``int32`` for 3 bits,
            ``uint8`` otherwise); ``rows`` is not the row count ``packed`` was packed from
            (``packed.shape[0] == ceil(rows / k)``).
    """
    nbits = check_choice("nbits", check_int("nbits", nbits), LAYOUT)
    check_tensor("packed", packed, ndim=2, dtype="integer", nonempty=False)
    dtype, k = LAYOUT[nbits]
    if packed.dtype != dtype:
        raise ValueError(f"{nbits}-bit packed data must be a 2-D {dtype} tensor, got {packed.dtype} {tuple(packed.shape)}")
    rows = check_int("rows", rows, low=0)
    if -(-rows // k) != packed.shape[0]:
        raise ValueError(f"rows={rows} does not fit: {rows} rows pack into {-(-rows // k)} words of {k} values, "
                         f"got {packed.shape[0]}")
    mask = 2**nbits - 1
    parts = [(packed >> (nbits * (k - 1 - j))) & mask for j in range(k)]
    return torch.cat(parts, dim=0)[:rows].to(torch.uint8)


def packed_bits(rows: int, cols: int, nbits: int) -> int:
    """Storage of ``rows x cols`` codes after packing, in bits (padding included)."""
    rows = check_int("rows", rows, low=0)
    cols = check_int("cols", cols, low=0)
    nbits = check_choice("nbits", check_int("nbits", nbits), LAYOUT)
    dtype, k = LAYOUT[nbits]
    return -(-rows // k) * cols * torch.iinfo(dtype).bits
