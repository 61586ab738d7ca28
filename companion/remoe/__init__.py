"""``companion.remoe``: ReMoE, fully differentiable mixture-of-experts with ReLU routing (Wang, Zhu & Chen,
ICLR 2025, arXiv 2412.14711; official code: github.com/thu-ml/ReMoE, a Megatron-LM fork).

- :class:`ReLURouter`, :class:`TopKRouter` — ``R = relu(x W_rᵀ)`` vs softmax + top-k (+ Switch loss);
- :class:`MoE`, :func:`dispatch`, :class:`SwiGLU` — SwiGLU experts, dropless dispatch batched by expert;
- :func:`load_balanced_l1`, :class:`LambdaController`, :func:`sparsity`, :func:`expert_load`,
  :func:`routing_stats` — the adaptive L1 regularisation and its statistics;
- :class:`LMConfig`, :class:`TinyLM` — a tiny Llama-style LM with dense / TopK / ReMoE FFN blocks;
- :func:`load_tokenizer`, :func:`corpus_ids` — a 4096-token byte-level BPE of the standard-library corpus;
- :func:`train`, :class:`Trainer`, :class:`History`, :func:`expert_counts`, :func:`text_expert_counts`,
  :func:`experts_vs_frequency`, :func:`measure_routing`, :func:`routing_snapshot` — training (with routing
  snapshots of a fixed text at chosen steps) and reading the routing afterwards;
- :func:`logit_sweep`, :func:`gradient_check` — the continuity demo (TopK jumps, ReLU does not) and its
  derivative: autograd against finite differences;
- ``companion.remoe.experiments`` — the chapter's experiments (routers compared, α sweep, plain vs load-balanced
  L1, number of experts), each returning JSON-ready dicts; ``python -m companion remoe ...`` runs them.
"""

from .continuity import LogitSweep, gradient_check, logit_sweep
from .model import FFN_KINDS, LMConfig, RMSNorm, TinyLM, rope
from .moe import MoE, SwiGLU, dispatch, swiglu
from .regularization import LambdaController, expert_load, load_balanced_l1, routing_stats, sparsity
from .routers import ReLURouter, Routing, TopKRouter, switch_aux_loss
from .tokenizer import EOS, corpus_ids, load_tokenizer, train_tokenizer
from .training import (
    History,
    Trainer,
    evaluate,
    expert_counts,
    experts_vs_frequency,
    lr_at,
    measure_routing,
    routing_snapshot,
    text_expert_counts,
    token_frequency,
    train,
)

__all__ = [
    "EOS",
    "FFN_KINDS",
    "History",
    "LMConfig",
    "LambdaController",
    "LogitSweep",
    "MoE",
    "RMSNorm",
    "ReLURouter",
    "Routing",
    "SwiGLU",
    "TinyLM",
    "TopKRouter",
    "Trainer",
    "corpus_ids",
    "dispatch",
    "evaluate",
    "expert_counts",
    "expert_load",
    "gradient_check",
    "experts_vs_frequency",
    "load_balanced_l1",
    "load_tokenizer",
    "logit_sweep",
    "lr_at",
    "measure_routing",
    "rope",
    "routing_snapshot",
    "routing_stats",
    "sparsity",
    "swiglu",
    "switch_aux_loss",
    "text_expert_counts",
    "token_frequency",
    "train",
    "train_tokenizer",
]
