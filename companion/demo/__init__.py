"""``companion.demo``: DeMo, Decoupled Momentum optimization (Peng, Quesnelle & Kingma, 2024, arXiv 2411.19870;
official code: github.com/bloc97/DeMo, ``demo.py``). Workers keep their own momentum and exchange only its
top-k DCT coefficients per chunk; the rest stays local (error feedback); the update is ``sign`` of the aggregate.

- :func:`chunk_size`, :func:`tile_shape`, :func:`matrix_shape`, :func:`dct_matrix`, :func:`to_tiles`,
  :func:`from_tiles`, :func:`encode`, :func:`decode`, :func:`decode_sparse` — the chunked orthonormal DCT-II,
  batched over tiles;
- :func:`topk_compress`, :func:`decompress`, :func:`aggregate`, :func:`index_dtype`, :func:`wire_bytes`,
  :func:`model_wire_bytes`, :func:`allreduce_bytes`, :func:`allgather_received_bytes`,
  :func:`topk_energy_share`, :func:`olmo_1b_shapes` — top-k, the mean-over-pickers aggregation, the wire
  formats and their bytes;
- :class:`DeMo` — the optimizer, single-process or over ``torch.distributed`` with one all-gather per step;
  :func:`official_step` — the official per-parameter step, ported as the reference the tests compare against;
- :class:`DeMoLowComms`, :func:`pack`, :func:`unpack`, :func:`lowcomms_topk`, :func:`lowcomms_wire_bytes` — the
  author's later design (bloc97/torchtitan-lowcomms): momentum in the DCT domain, top-k per 128 coefficients, one
  byte (7-bit index + sign) per coefficient, one all-gather;
- :func:`train`, :class:`TrainConfig`, :class:`ByteLM`, :func:`corpus_bytes`, :func:`sample_batch`, :func:`lm_loss` — N CPU workers (gloo) training a tiny
  byte-level LM with DeMo, AdamW + all-reduce or signSGD-momentum + all-reduce
  (``python -m companion demo train --workers N``).
"""

from .compress import (
    WIRE_FORMATS,
    aggregate,
    allgather_received_bytes,
    allreduce_bytes,
    clip_topk,
    decompress,
    index_dtype,
    model_wire_bytes,
    olmo_1b_shapes,
    topk_compress,
    topk_energy_share,
    wire_bytes,
)
from .dct import (
    BASES,
    TILINGS,
    chunk_size,
    dct_matrix,
    decode,
    decode_sparse,
    encode,
    from_tiles,
    matrix_shape,
    tile_shape,
    to_tiles,
)
from .lowcomms import DeMoLowComms, lowcomms_topk, lowcomms_wire_bytes, pack, unpack
from .optimizer import NONFINITE, TRANSFORMS, DeMo
from .reference import official_step
from .training import OPTIMIZERS, SCHEDULES, ByteLM, TrainConfig, corpus_bytes, lm_loss, sample_batch, train

__all__ = [
    "TILINGS",
    "TRANSFORMS",
    "NONFINITE",
    "BASES",
    "WIRE_FORMATS",
    "OPTIMIZERS",
    "SCHEDULES",
    "ByteLM",
    "DeMo",
    "DeMoLowComms",
    "TrainConfig",
    "aggregate",
    "allgather_received_bytes",
    "allreduce_bytes",
    "chunk_size",
    "clip_topk",
    "dct_matrix",
    "corpus_bytes",
    "decode",
    "decode_sparse",
    "decompress",
    "encode",
    "from_tiles",
    "index_dtype",
    "matrix_shape",
    "model_wire_bytes",
    "official_step",
    "olmo_1b_shapes",
    "tile_shape",
    "to_tiles",
    "topk_compress",
    "topk_energy_share",
    "lm_loss",
    "lowcomms_topk",
    "lowcomms_wire_bytes",
    "pack",
    "unpack",
    "sample_batch",
    "train",
    "wire_bytes",
]
