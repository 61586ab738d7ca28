"""The ReBind conformation model: an encoder-decoder transformer whose attention follows relation matrices.

Every attention head ``h`` computes raw scores ``S_h = Q_h K_hᵀ`` and modulates them by the molecule's relation
matrices ``A_r`` with learned per-head scalars ``β_{h,r}`` (Kim et al., ICLR 2025, Eq. 4–5; the same form as
GTMGC's MSRSA)::

    Ŝ_h = S_h + S_h ⊙ Σ_r β_{h,r} A_r,        attention_h = softmax(Ŝ_h / √d_k) V_h

The layers are post-LN (``x ← LN(x + Attn(x))``, ``x ← LN(x + FFN(x))``), no dropout, as in the official code.

1. **Encoder** (relation: ``A_bond``). Input: the sum of 9 atom-feature embeddings, plus the Laplacian
   eigenvector encoding added into the first ``N`` channels.
2. **Intermediate conformation**: an MLP head ``d → 3d → 3`` on the encoder outputs gives ``X_enc``; its
   pairwise distances are *detached* before the decoder's relations are computed from them.
3. **Decoder** (input: encoder outputs plus the Laplacian encoding again). Its relations are what the variants
   change (everything else is identical):

   ============ =================================================================================================
   variant      decoder relations
   ============ =================================================================================================
   ``bond``     ``A_bond`` only (what the released ReBind code effectively trains: its rewiring never fires)
   ``gtmgc``    ``A_bond`` and GTMGC's row-subtracted distance ``max_k D_ik − D_ij`` of ``X_enc``
   ``rebind``   ``A_bond``, ``A_attr`` (+1) and ``A_rep`` (−1): the force edges of :func:`force_edges`
   ``near``     ``A_bond`` and the ``K_i`` nearest non-bonded atoms of ``X_enc`` (the control: same budget)
   ============ =================================================================================================

4. **Output head**: a per-atom gate mixes ``g·h_dec + (1−g)·h_enc``, then an MLP ``d → 3d → 3`` gives the final
   coordinates ``X_dec``. The gate depends on ``config.recipe``:

   - ``"companion"`` (default, ours): ``g = σ(W[h_dec; h_enc] + b)``, ``W`` a ``2d → 1`` projection;
   - ``"official"``: a softmax over the two inputs of one shared ``d → 1`` projection, scaled by ``1/√d``:
     ``(g, 1−g) = softmax((w·h_dec + b, w·h_enc + b) / √d)`` (official ``models/modules/task_head.py``,
     ``ConformerPredictionHead.forward``, the ``conformer_base`` branch; the bias cancels in the softmax).
     The official recipe also counts hydrogens as the official featurizer does (``num_hs`` feature 0 for every
     atom, :data:`~companion.rebind.data.NUM_HS_MODES`).

Loss (:func:`distance_loss`): ``½ (D-MAE(X_enc) + D-MAE(X_dec))`` over all atom pairs, hydrogens included.

The paper's model has d = 512, 8 + 8 layers, 8 heads, FFN 1024; GTMGC 6 + 6 layers at d = 256 with atom tokens
from a learned Mole-BERT tokenizer (here every variant uses the plain 9-feature embedding). The tiny default
(d = 64, 2 + 2 layers, 4 heads) trains on a CPU in minutes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from companion.lab.checks import (
    check_choice,
    check_float,
    check_int,
    check_same_device,
    check_same_dtype,
    check_tensor,
    check_type,
    describe,
)

from .data import ATOM_FEATURES, Batch
from .forces import MASK_DTYPES, _force_edges, _nearest_edges

#: decoder relations of each variant (the encoder always uses ``("bond",)``)
VARIANTS: dict[str, tuple[str, ...]] = {
    "bond": ("bond",),
    "gtmgc": ("bond", "row_subtracted"),
    "rebind": ("bond", "attractive", "repulsive"),
    "near": ("bond", "nearest"),
}
#: the most relations a variant's decoder uses (ReBind: bond, attractive, repulsive)
MAX_RELATIONS = max(len(v) for v in VARIANTS.values())
#: the recipes (model side: output gate and hydrogen counts; training side: :data:`companion.rebind.RECIPES`)
RECIPE_NAMES = ("companion", "official")
#: column of ``num_hs`` in the atom features (:data:`~companion.rebind.data.ATOM_FEATURES`)
_NUM_HS = [name for name, _ in ATOM_FEATURES].index("num_hs")


@dataclass(frozen=True)
class ConformerConfig:
    """Shape of :class:`ConformerModel`.

    Attributes:
        variant: ``"rebind"``, ``"gtmgc"``, ``"bond"`` or ``"near"`` (see the module docstring).
        d_model, n_heads, d_ff: width, heads and FFN size (paper: 512, 8, 1024).
        encoder_layers, decoder_layers: depth (paper: 8 + 8).
        released_code: ReBind only: keep both force matrices all zero, as the official code's collator does
            (the model then equals ``"bond"``); the corrected behaviour (False) is the default.
        beta_init: initial value of every β_{h,r}; ``None`` (default) draws each from N(0, 1), as GTMGC's and
            ReBind's code do; 0 starts the model as a plain transformer with Laplacian positions.
        recipe: ``"companion"`` (default) or ``"official"``: the output gate and hydrogen counts (module
            docstring) here, and the optimiser settings :func:`~companion.rebind.train` uses
            (:data:`~companion.rebind.RECIPES`).
    """

    variant: Literal["rebind", "gtmgc", "bond", "near"] = "rebind"
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 128
    encoder_layers: int = 2
    decoder_layers: int = 2
    released_code: bool = False
    beta_init: float | None = None
    recipe: Literal["companion", "official"] = "companion"

    def __post_init__(self):
        check_choice("variant", self.variant, tuple(VARIANTS))
        check_choice("recipe", self.recipe, RECIPE_NAMES)
        for name in ("d_model", "n_heads", "d_ff", "encoder_layers", "decoder_layers"):
            # stored as plain ints (a numpy int would not survive asdict -> JSON in the results files)
            object.__setattr__(self, name, check_int(name, getattr(self, name), low=1))
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        check_type("released_code", self.released_code, bool)
        if self.beta_init is not None:
            beta = check_float("beta_init", self.beta_init)
            if type(self.beta_init) not in (int, float):  # e.g. numpy.float32: keep the config JSON-ready
                object.__setattr__(self, "beta_init", beta)

    @property
    def relations(self) -> tuple[str, ...]:
        return VARIANTS[self.variant]


def modulated_scores(scores: torch.Tensor, relations: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``Ŝ_h = S_h + S_h ⊙ Σ_r β_{h,r} A_r`` (before the ``1/√d_k`` scaling).

    Args:
        scores: ``[B, H, N, N]`` raw scores ``Q Kᵀ``.
        relations: ``[B, R, N, N]`` relation matrices.
        beta: ``[R, H]`` per-relation, per-head scalars.
    """
    check_tensor("scores", scores, ndim=4, dtype="floating")
    check_tensor("relations", relations, ndim=4, dtype="floating")
    check_tensor("beta", beta, ndim=2, dtype="floating")
    B, _, N, _ = scores.shape
    if scores.shape[-1] != N or relations.shape[0] != B or relations.shape[2:] != (N, N):
        raise ValueError(f"scores must be [B, H, N, N] and relations [B, R, N, N] with the same B and N, got "
                         f"{list(scores.shape)} and {list(relations.shape)}")
    if relations.shape[1] != beta.shape[0] or scores.shape[1] != beta.shape[1]:
        raise ValueError(f"beta must be [R, H] = {[relations.shape[1], scores.shape[1]]}, got {list(beta.shape)}")
    if relations.dtype != beta.dtype and not any(torch.is_autocast_enabled(d) for d in ("cpu", scores.device.type)):
        check_same_dtype(relations=relations, beta=beta)  # (under autocast, einsum casts both itself)
    check_same_device(scores=scores, relations=relations, beta=beta)
    mod = torch.einsum("rh,brij->bhij", beta, relations)
    return scores + scores * mod


class RelationAttention(nn.Module):
    """Multi-head self-attention with relation-modulated logits (:func:`modulated_scores`).

    Args:
        d_model, n_heads: width and heads (``d_k = d_model / n_heads``).
        n_relations: ``R``, the number of relation matrices; ``beta`` is ``[R, H]``.
        beta_init: initial β (``None``: N(0, 1) per head and relation).
    """

    def __init__(self, d_model: int, n_heads: int, n_relations: int, *, beta_init: float | None = None):
        d_model = check_int("d_model", d_model, low=1)
        n_heads = check_int("n_heads", n_heads, low=1)
        n_relations = check_int("n_relations", n_relations, low=1)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        if beta_init is not None:
            check_float("beta_init", beta_init)
        super().__init__()
        self.n_heads, self.d_k = n_heads, d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if beta_init is None:  # always draw MAX_RELATIONS rows: every variant then gets the same other weights
            beta = torch.randn(max(MAX_RELATIONS, n_relations), n_heads)[:n_relations].clone()
        else:
            beta = torch.full((n_relations, n_heads), float(beta_init))
        self.beta = nn.Parameter(beta)

    def forward(self, x: torch.Tensor, relations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, N, d]``, ``relations`` ``[B, R, N, N]``, ``mask`` ``[B, N]`` → ``[B, N, d]``."""
        B, N, d = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)
        s = modulated_scores(q @ k.transpose(-1, -2), relations, self.beta) / math.sqrt(self.d_k)
        s = s.masked_fill(~mask[:, None, None, :], float("-inf"))
        y = torch.softmax(s, -1) @ v  # [B, H, N, d_k]
        return self.out(y.transpose(1, 2).reshape(B, N, d))


class RelationLayer(nn.Module):
    """One post-LN transformer layer: ``x ← LN(x + Attn(x))``, ``x ← LN(x + FFN(x))`` (GELU FFN, no dropout)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, n_relations: int, *, beta_init: float | None = None):
        super().__init__()
        self.attn = RelationAttention(d_model, n_heads, n_relations, beta_init=beta_init)
        self.ln1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.ln2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, relations: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, relations, mask))
        return self.ln2(x + self.ffn(x))


def _mlp3(d: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d, 3 * d), nn.GELU(), nn.Linear(3 * d, 3))


def pairwise_distances(coords: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """``D_ij = ‖x_i − x_j‖``, ``[..., N, 3] → [..., N, N]``, with a gradient that stays finite at ``D = 0``
    (``eps > 0``: the smallest squared distance)."""
    check_tensor("coords", coords, dtype="floating")
    if coords.ndim < 2 or coords.shape[-1] != 3:
        raise ValueError(f"coords must be [..., N, 3], got {describe(coords)}")
    check_float("eps", eps, low=0.0, low_open=True)
    diff = coords[..., :, None, :] - coords[..., None, :, :]
    return (diff * diff).sum(-1).clamp_min(eps).sqrt()


def row_subtracted_distances(dist: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GTMGC's relation ``max_k D_ik − D_ij`` over real atoms ``k``; zero on padding. ``[B, N, N]``."""
    check_tensor("dist", dist, ndim=3, dtype="floating")
    if dist.shape[1] != dist.shape[2]:
        raise ValueError(f"dist must be [B, N, N], got {describe(dist)}")
    check_tensor("mask", mask, dtype=MASK_DTYPES)
    if mask.shape != dist.shape[:2]:
        raise ValueError(f"mask must be [B, N] = {list(dist.shape[:2])} to match dist, got {describe(mask)}")
    check_same_device(dist=dist, mask=mask)
    pair = mask[:, :, None] & mask[:, None, :]
    row_max = dist.masked_fill(~pair, float("-inf")).max(-1, keepdim=True).values
    return torch.where(pair, row_max - dist, torch.zeros_like(dist))


#: a replacement of the decoder's relations: ``(model, batch, dist [B, N, N]) -> relations [B, R, N, N]``
RelationsFn = Callable[["ConformerModel", Batch, torch.Tensor], torch.Tensor]


def _check_relations_fn(fn: RelationsFn | None, name: str = "decoder_relations") -> RelationsFn | None:
    """``fn`` if it is ``None`` or callable; a ``TypeError`` naming ``name`` otherwise."""
    if fn is not None and not callable(fn):
        raise TypeError(f"{name} must be None or a callable (model, batch, dist) -> [B, R, N, N] relations, got "
                        f"{describe(fn)}")
    return fn


@dataclass
class ConformerOutput:
    """What :class:`ConformerModel` returns: ``enc_coords``/``coords`` ``[B, N, 3]`` (intermediate and final
    conformation), ``relations`` ``[B, R, N, N]`` (the decoder's, names in ``relation_names``), ``gate``
    ``[B, N, 1]`` (the weight ``g`` of the decoder output ``h_dec`` in the output head, either recipe)."""

    enc_coords: torch.Tensor
    coords: torch.Tensor
    relations: torch.Tensor
    relation_names: tuple[str, ...]
    gate: torch.Tensor


class ConformerModel(nn.Module):
    """The encoder-decoder conformation model (ReBind and its variants), see the module docstring.

    Args:
        config: a :class:`ConformerConfig` (``None``: the default one), fields overridden by ``overrides``.
        decoder_relations: ``None`` (default): the decoder's relations are the variant's
            (:meth:`decoder_relations`). A callable ``(model, batch, dist) -> relations`` replaces them, for
            experiments with other relation graphs: it gets this model, the :class:`~companion.rebind.Batch` and
            the *detached* pairwise distances ``[B, N, N]`` of ``X_enc``, and must return a floating tensor
            ``[B, R, N, N]`` with ``R = len(config.relations)`` (one matrix per ``β`` row of the decoder; the
            names in :attr:`ConformerOutput.relation_names` stay the variant's).

    Raises:
        TypeError: ``config`` is not a :class:`ConformerConfig`, or ``decoder_relations`` is neither ``None`` nor
            callable; ValueError/TypeError from :class:`ConformerConfig` for bad ``overrides``.
    """

    def __init__(self, config: ConformerConfig | None = None, *,
                 decoder_relations: RelationsFn | None = None, **overrides):
        _check_relations_fn(decoder_relations)
        if config is None:
            config = ConformerConfig(**overrides)
        else:
            check_type("config", config, ConformerConfig)
            if overrides:
                from dataclasses import replace

                config = replace(config, **overrides)
        super().__init__()
        self.config = c = config
        self.relations_fn = decoder_relations
        self.embeddings = nn.ModuleList(nn.Embedding(size, c.d_model) for _, size in ATOM_FEATURES)
        self.encoder = nn.ModuleList(RelationLayer(c.d_model, c.n_heads, c.d_ff, 1, beta_init=c.beta_init)
                                     for _ in range(c.encoder_layers))
        self.decoder = nn.ModuleList(RelationLayer(c.d_model, c.n_heads, c.d_ff, len(c.relations),
                                                   beta_init=c.beta_init) for _ in range(c.decoder_layers))
        self.enc_head = _mlp3(c.d_model)
        # ours: σ over a 2d → 1 projection of [h_dec; h_enc]; official: softmax over a shared d → 1 projection
        self.gate = nn.Linear((1 if c.recipe == "official" else 2) * c.d_model, 1)
        self.dec_head = _mlp3(c.d_model)

    def _add_pe(self, x: torch.Tensor, pe: torch.Tensor) -> torch.Tensor:
        n = pe.shape[-1]
        if n > x.shape[-1]:
            raise ValueError(f"molecules of {n} atoms need d_model >= {n} for the Laplacian encoding, "
                             f"d_model is {x.shape[-1]}")
        return torch.cat([x[..., :n] + pe, x[..., n:]], -1)

    def output_gate(self, h_dec: torch.Tensor, h_enc: torch.Tensor) -> torch.Tensor:
        """The weight ``g`` ``[B, N, 1]`` of ``h_dec`` (``[B, N, d]``, as ``h_enc``) in the output head: ``σ(W[h_dec;
        h_enc] + b)`` (recipe ``"companion"``) or the first entry of ``softmax((w·h_dec + b, w·h_enc + b) / √d)``
        (``"official"``, ``task_head.py`` ``ConformerPredictionHead``)."""
        if self.config.recipe == "official":
            logits = self.gate(torch.stack([h_dec, h_enc], -2)).squeeze(-1)  # [B, N, 2]
            return torch.softmax(logits / math.sqrt(h_dec.shape[-1]), -1)[..., :1]
        return torch.sigmoid(self.gate(torch.cat([h_dec, h_enc], -1)))

    def decoder_relations(self, batch: Batch, dist: torch.Tensor) -> torch.Tensor:
        """The decoder's relation matrices ``[B, R, N, N]`` from the (detached) intermediate distances ``[B, N, N]``:
        the variant's (module docstring), or those of the model's ``decoder_relations`` callable when it has one
        (a ``ValueError`` when that returns anything but a floating ``[B, R, N, N]`` tensor)."""
        dist = dist.detach()
        if self.relations_fn is not None:
            rels = self.relations_fn(self, batch, dist)
            want = [*batch.adjacency.shape[:1], len(self.config.relations), *batch.adjacency.shape[1:]]
            if not isinstance(rels, torch.Tensor) or list(rels.shape) != want or not rels.is_floating_point():
                raise ValueError(f"decoder_relations must return floating relations [B, R, N, N] = {want} (R = "
                                 f"{len(self.config.relations)}: the decoder of variant {self.config.variant!r}), "
                                 f"got {describe(rels)}")
            return rels
        adj, mask = batch.adjacency, batch.mask
        rels, forces = [], None
        for name in self.config.relations:
            if name == "bond":
                rels.append(adj)
            elif name == "row_subtracted":
                rels.append(row_subtracted_distances(dist, mask))
            elif name in ("attractive", "repulsive"):
                if forces is None:
                    forces = _force_edges(dist, batch.z, adj, mask, released_code=self.config.released_code)
                rels.append(forces[0] if name == "attractive" else forces[1])
            elif name == "nearest":
                rels.append(_nearest_edges(dist, adj, mask))
        return torch.stack(rels, 1)

    def forward(self, batch: Batch) -> ConformerOutput:
        """Predict conformations for a padded :class:`~companion.rebind.Batch` (see the module docstring)."""
        if not isinstance(batch, Batch):
            raise TypeError(f"expected a Batch (companion.rebind.collate), got {type(batch).__name__}")
        B, N = batch.mask.shape
        if batch.features.shape != (B, N, 9) or batch.adjacency.shape != (B, N, N) or batch.pe.shape != (B, N, N):
            raise ValueError(f"batch tensors disagree: mask {list(batch.mask.shape)}, features "
                             f"{list(batch.features.shape)} (expected [B, N, 9]), adjacency "
                             f"{list(batch.adjacency.shape)} and pe {list(batch.pe.shape)} (expected [B, N, N])")
        mask, features = batch.mask, batch.features
        if self.config.recipe == "official":
            # GetTotalNumHs() of the official featurizer: 0 for every atom once hydrogens are graph atoms (which
            # molecule_from_mol requires), i.e. atom_features(mol, num_hs="official") (tested)
            features = features.clone()
            features[..., _NUM_HS] = 0
        x = sum(emb(features[..., i]) for i, emb in enumerate(self.embeddings))
        x = self._add_pe(x, batch.pe)
        bond = batch.adjacency[:, None]
        for layer in self.encoder:
            x = layer(x, bond, mask)
        h_enc = x
        enc_coords = self.enc_head(h_enc)
        rels = self.decoder_relations(batch, pairwise_distances(enc_coords))
        y = self._add_pe(h_enc, batch.pe)
        for layer in self.decoder:
            y = layer(y, rels, mask)
        g = self.output_gate(y, h_enc)
        coords = self.dec_head(g * y + (1 - g) * h_enc)
        return ConformerOutput(enc_coords, coords, rels, self.config.relations, g)


def masked_distance_mae(pred_coords: torch.Tensor, true_coords: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pooled D-MAE ``Σ_b Σ_ij |D − D̂| / Σ_b N_b²`` of ``[B, N, 3]`` coordinates (differentiable)."""
    pair = (mask[:, :, None] & mask[:, None, :]).to(pred_coords.dtype)
    err = (pairwise_distances(pred_coords) - pairwise_distances(true_coords)).abs() * pair
    return err.sum() / pair.sum()


def distance_loss(out: ConformerOutput, batch: Batch) -> torch.Tensor:
    """ReBind's loss ``½ (D-MAE(X_enc) + D-MAE(X_dec))`` over all atom pairs of the batch."""
    check_type("out", out, ConformerOutput)
    check_type("batch", batch, Batch)
    for name in ("enc_coords", "coords"):
        got = getattr(out, name)
        if not isinstance(got, torch.Tensor) or got.shape != batch.coords.shape:
            raise ValueError(f"out.{name} must have the shape of batch.coords {list(batch.coords.shape)}, got "
                             f"{describe(got)}")
    return 0.5 * (masked_distance_mae(out.enc_coords, batch.coords, batch.mask)
                  + masked_distance_mae(out.coords, batch.coords, batch.mask))
