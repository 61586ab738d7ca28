"""The chapter's experiments, each returning JSON-ready dicts (the notebooks plot them; ``python -m companion
remoe <experiment> --full`` saves the larger runs under ``results/remoe/``).

- :func:`compare_routers` — dense vs TopK vs ReMoE at matched active compute (each expert a full FFN, k = 1);
- :func:`alpha_sweep` — ReMoE's training dynamics (sparsity, λ, the three stages) for several α;
- :func:`l1_comparison` — plain L1 vs the load-balanced L1 of the official code: per-layer sparsity and
  per-expert load;
- :func:`expert_scaling` — TopK vs ReMoE as the number of experts E grows at k = 1;
- :func:`seed_summary` — several seeds of :func:`compare_routers` as losses with their spread, paired
  differences between the kinds, and the compute each MoE used.

Every run is a call to :func:`~companion.remoe.train`; :func:`summarize` turns its :class:`History` into plain
numbers, with the routing measured afterwards on held-out text (:func:`~companion.remoe.measure_routing`) and,
for ReMoE, the stages of its sparsity curve (:func:`stages`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from companion.lab.checks import check_float, check_int, check_sequence, check_type
from companion.lab.stats import Spread, spread

from .model import FFN_KINDS, LMConfig
from .training import History, experts_vs_frequency, measure_routing, train

#: the notebooks' model: 2 layers of width 64, E = 8 experts of d_ff = 192, k = 1 (trains in seconds on a CPU)
QUICK = LMConfig(d_model=64, n_layers=2, n_heads=2, d_ff=192, num_experts=8, k=1)
#: the notebooks' training run: 300 steps of 8 windows of 64 tokens
QUICK_RUN: dict[str, Any] = dict(steps=300, batch_size=8, seq_len=64, lr=4e-3, log_every=10, eval_every=25,
                                 eval_windows=32, seed=0)


def load_data(*, vocab_size: int = 4096) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """``(tokenizer, train_ids, val_ids)``: the chapter's BPE and the two splits of the standard-library corpus."""
    from .tokenizer import corpus_ids, load_tokenizer

    tok = load_tokenizer(vocab_size=vocab_size)
    return tok, corpus_ids("train", tokenizer=tok), corpus_ids("validation", tokenizer=tok)


def stages(sparsity: Sequence[float], target: float, *, band: float = 0.02) -> dict[str, Any]:
    """Find the paper's three stages in a ReMoE sparsity curve (one value per training step).

    - Stage I ends where the sparsity is lowest before it first reaches the target (λ still tiny, the routers
      open up: the model drifts towards dense);
    - Stage II runs from there to the first step with ``S >= target − band`` (λ grows by α per step and the
      sparsity climbs);
    - Stage III is the rest: ``S`` hovers around the target.

    Args:
        sparsity: ``[steps]`` mean sparsity over layers, step by step (``History.trace["sparsity"]``).
        target: ``1 − k/E``.
        band: how close to the target counts as having reached it.
    Returns:
        ``{"stage2_start", "stage3_start"}`` (1-based steps, ``None`` if never reached), ``"min_sparsity"``,
        ``"stage3_mean"``, ``"stage3_std"`` (of S over stage III, ``None`` if empty).
    """
    s = np.asarray(sparsity, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"sparsity must be a non-empty 1-D sequence, got shape {s.shape}")
    check_float("target", target, low=0, high=1, low_open=True, high_open=True)
    check_float("band", band, low=0)
    reached = np.flatnonzero(s >= target - band)
    end = int(reached[0]) if reached.size else s.size
    low = int(np.argmin(s[: max(1, end)]))
    out: dict[str, Any] = {"stage2_start": low + 1, "stage3_start": end + 1 if reached.size else None,
                           "min_sparsity": float(s[: max(1, end)].min()), "stage3_mean": None, "stage3_std": None}
    if reached.size and end + 1 < s.size:
        out["stage3_mean"], out["stage3_std"] = float(s[end:].mean()), float(s[end:].std())
    return out


def summarize(history: History, *, val_ids: torch.Tensor | None = None, seq_len: int = 64,
              frequency: np.ndarray | None = None, routing_tokens: int = 8192, tail: float = 0.2) -> dict[str, Any]:
    """One training run as plain numbers.

    Args:
        history: what :func:`~companion.remoe.train` returned (with its model).
        val_ids: held-out ids to measure the trained model's routing on (MoE models; skipped when ``None``).
        seq_len: window length for that measurement.
        frequency: ``[vocab]`` training-token frequencies; adds ``"frequency"`` (experts per token by
            frequency bin, :func:`~companion.remoe.experts_vs_frequency`) for MoE models.
        routing_tokens: held-out tokens read for the routing measurement.
        tail: the share of the last training steps over which ``active_experts_tail`` is averaged.
    Returns:
        ``{"ffn", "config", "val" ([[step, val_loss]]), "loss" (train cross-entropy per step),
        "final_val_loss", "seconds"}``, and for MoE models ``"sparsity"`` (per step),
        ``"active_experts_train"`` (mean active experts per token over all steps: the compute actually spent),
        ``"active_experts_tail"``, ``"routing"`` (held-out ``measure_routing``), for ReMoE ``"lam"`` (per step),
        ``"target"`` and ``"stages"``.
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be a History from train(), got {type(history).__name__}")
    check_int("seq_len", seq_len, low=1)
    check_int("routing_tokens", routing_tokens, low=1)
    check_float("tail", tail, low=0, high=1, low_open=True)
    c = history.config
    out: dict[str, Any] = {"ffn": c.ffn, "config": asdict(c), "val": [list(v) for v in history.column("val_loss")],
                           "loss": list(history.trace["loss"]), "final_val_loss": history.final_val_loss,
                           "seconds": history.seconds}
    if c.ffn == "dense":
        return out
    active = np.asarray(history.trace["active_experts"])
    out["sparsity"] = list(history.trace["sparsity"])
    out["active_experts_train"] = float(active.mean())
    out["active_experts_tail"] = float(active[-max(1, int(round(tail * active.size))):].mean())
    if c.ffn == "remoe":
        out["lam"] = list(history.trace["lam"])
        out["target"] = 1 - c.k / c.num_experts
        out["stages"] = stages(out["sparsity"], out["target"])
    if history.model is not None and val_ids is not None:
        out["routing"] = measure_routing(history.model, val_ids, seq_len=seq_len, max_tokens=routing_tokens)
        if frequency is not None:
            out["frequency"] = experts_vs_frequency(history.model, val_ids, frequency, seq_len=seq_len,
                                                    max_tokens=routing_tokens)
    return out


def _run_kw(train_kw: dict[str, Any], vocab_size: int = 4096) -> dict[str, Any]:
    kw = {**QUICK_RUN, "show_progress": False, **train_kw}
    if kw.get("train_ids") is None or kw.get("val_ids") is None:
        _, train_ids, val_ids = load_data(vocab_size=vocab_size)
        kw["train_ids"] = train_ids if kw.get("train_ids") is None else kw["train_ids"]
        kw["val_ids"] = val_ids if kw.get("val_ids") is None else kw["val_ids"]
    return kw


def _check_config(base) -> None:
    check_type("base", base, LMConfig, what="an LMConfig")


def train_routers(base: LMConfig = QUICK, *, kinds: Iterable[str] = FFN_KINDS, **train_kw) -> dict[str, History]:
    """Train the same model with each FFN kind (dense / TopK / ReMoE), same seed and batches.

    Every expert is a full FFN (``d_ff`` of the dense model) and k = ``base.k``, so at k = 1 the three do the
    same FFN work per token once ReMoE has reached its target sparsity.

    Args:
        base: the configuration; its ``ffn`` is replaced by each kind.
        kinds: which of ``"dense"``, ``"topk"``, ``"remoe"``.
        **train_kw: passed to :func:`~companion.remoe.train` (defaults :data:`QUICK_RUN`, no progress bar; the
            corpus splits are loaded when ``train_ids`` / ``val_ids`` are not given).
    Returns:
        ``{kind: History}`` with the trained models.
    """
    _check_config(base)
    kinds = list(kinds)
    bad = [k for k in kinds if k not in FFN_KINDS]
    if bad or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {FFN_KINDS}, got {kinds}")
    kw = _run_kw(train_kw, base.vocab_size)
    out = {}
    for kind in kinds:
        run_kw = dict(kw)
        if kind == "dense":  # the dense model has no routing to snapshot
            for key in ("snapshot_every", "snapshot_steps", "snapshot_ids"):
                run_kw.pop(key, None)
        out[kind] = train(base.replace(ffn=kind), **run_kw)
    return out


def _summaries(histories: dict[str, History], kw: dict[str, Any], frequency=None) -> dict[str, Any]:
    return {name: summarize(h, val_ids=kw["val_ids"], seq_len=kw["seq_len"], frequency=frequency)
            for name, h in histories.items()}


def _settings(base: LMConfig, kw: dict[str, Any]) -> dict[str, Any]:
    keep = ("steps", "batch_size", "seq_len", "lr", "seed", "eval_every", "eval_windows")
    return {"base": asdict(base), "train": {k: kw[k] for k in keep if k in kw},
            "train_tokens": int(kw["train_ids"].numel()), "val_tokens": int(kw["val_ids"].numel())}


def compare_routers(base: LMConfig = QUICK, *, kinds: Iterable[str] = FFN_KINDS, with_frequency: bool = True,
                    **train_kw) -> dict[str, Any]:
    """Dense vs TopK vs ReMoE at matched active compute: :func:`train_routers`, then :func:`summarize` each.

    Returns:
        ``{"settings", "runs": {kind: summary}}``; MoE summaries carry experts-per-token by token frequency
        when ``with_frequency``.
    """
    kw = _run_kw(train_kw, base.vocab_size)
    histories = train_routers(base, kinds=kinds, **kw)
    freq = None
    if with_frequency:
        from .training import token_frequency

        freq = token_frequency(kw["train_ids"], base.vocab_size)
    return {"settings": _settings(base, kw), "runs": _summaries(histories, kw, freq)}


def seed_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several seeds of :func:`compare_routers` (the saved results of ``python -m companion remoe compare --full
    --seed N``) summarised with the book's rule for a detectable difference (:func:`companion.lab.spread`: mean,
    sample sd, n, 95% t-interval).

    Returns:
        ``{"seeds": [...], "loss": {kind: Spread}, "active_experts_train": {kind: Spread},
        "active_experts_tail": {kind: Spread}, "difference": {"remoe - topk": Spread, "remoe - dense": Spread,
        "topk - dense": Spread}}`` — final validation losses (nats/token); the MoE kinds' mean experts per token
        over all training steps (the compute used, 1.0 = that of k = 1) and over the last 20% of steps; and the
        per-seed paired differences of the final validation losses (same seed: same data order, same initial
        embedding), for the kinds every result holds.

    Raises:
        TypeError / ValueError: ``results`` not a non-empty sequence of compare results.
    """
    results = check_sequence("results", results, "compare_routers results")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not isinstance(r.get("runs"), dict):
            raise TypeError(f"results[{i}] must be a compare_routers result (a dict with 'runs'), got "
                            f"{type(r).__name__}")
    kinds = [k for k in FFN_KINDS if all(k in r["runs"] for r in results)]
    out: dict[str, Any] = {"seeds": [r.get("settings", {}).get("train", {}).get("seed") for r in results],
                           "loss": {k: spread([r["runs"][k]["final_val_loss"] for r in results]) for k in kinds}}
    for key in ("active_experts_train", "active_experts_tail"):
        out[key] = {k: spread([r["runs"][k][key] for r in results]) for k in kinds if k != "dense"}
    out["difference"] = {f"{a} - {b}": spread([r["runs"][a]["final_val_loss"] - r["runs"][b]["final_val_loss"]
                                               for r in results])
                         for a, b in (("remoe", "topk"), ("remoe", "dense"), ("topk", "dense"))
                         if a in kinds and b in kinds}
    return out


def alpha_sweep(base: LMConfig = QUICK, *, alphas: Sequence[float] = (1.05, 1.2, 1.5), **train_kw) -> dict[str, Any]:
    """ReMoE with several controller factors α (λ ← λ·α or λ/α each step; the paper's α = 1.2).

    Returns:
        ``{"settings", "alphas", "runs": [summary per α]}`` (each summary has the per-step ``sparsity``, ``lam``
        and ``stages``).
    """
    _check_config(base)
    alphas = [check_float(f"alphas[{i}]", a, low=1, low_open=True) for i, a in enumerate(alphas)]
    if not alphas:
        raise ValueError(f"alphas must be a non-empty list of numbers > 1, got {alphas}")
    kw = _run_kw(train_kw, base.vocab_size)
    runs = []
    for a in alphas:
        h = train(base.replace(ffn="remoe", alpha=a), **kw)
        runs.append(summarize(h, val_ids=kw["val_ids"], seq_len=kw["seq_len"]))
    return {"settings": _settings(base, kw), "alphas": alphas, "runs": runs}


def l1_comparison(base: LMConfig = QUICK, *, variants: Sequence[str] = ("balanced", "plain"),
                  **train_kw) -> dict[str, Any]:
    """ReMoE with the load-balanced L1 of the official code (``f_e = E·n_e/(k·T)``) vs plain L1 (``f_e = 1``).

    Args:
        base: the configuration (its ``ffn`` and ``l1`` are replaced).
        variants: which penalties to train, a subset of ``("balanced", "plain")`` (a notebook that already has
            the balanced run, e.g. from :func:`alpha_sweep` with the same settings, can train only ``"plain"``).
        **train_kw: as in :func:`train_routers`.
    Returns:
        ``{"settings", "runs": {variant: summary}}``; each summary's ``routing`` has the held-out
        ``layer_sparsity`` and ``expert_load`` (``[n_layers][E]``).
    """
    _check_config(base)
    variants = list(variants)
    if not variants or any(v not in ("balanced", "plain") for v in variants):
        raise ValueError(f"variants must be a non-empty subset of ('balanced', 'plain'), got {variants}")
    kw = _run_kw(train_kw, base.vocab_size)
    runs = {}
    for l1 in variants:
        h = train(base.replace(ffn="remoe", l1=l1), **kw)
        runs[l1] = summarize(h, val_ids=kw["val_ids"], seq_len=kw["seq_len"])
    return {"settings": _settings(base, kw), "runs": runs}


def expert_scaling(base: LMConfig = QUICK, *, experts: Sequence[int] = (4, 8, 16), include_dense: bool = True,
                   **train_kw) -> dict[str, Any]:
    """TopK vs ReMoE as the number of experts grows at fixed k (fixed active compute, more parameters).

    Returns:
        ``{"settings", "experts", "dense": summary or None, "topk": [summary per E], "remoe": [...],
        "gap": [TopK − ReMoE final validation loss per E]}`` (a positive gap: ReMoE is better).
    """
    _check_config(base)
    experts = list(experts)
    if not experts:
        raise ValueError(f"experts must be ints > k = {base.k} (and >= 2), got {experts}")
    experts = [check_int(f"experts[{i}] (E > k = {base.k})", e, low=max(2, base.k + 1)) for i, e in enumerate(experts)]
    kw = _run_kw(train_kw, base.vocab_size)
    out: dict[str, Any] = {"settings": _settings(base, kw), "experts": experts, "dense": None, "topk": [],
                           "remoe": []}
    if include_dense:
        out["dense"] = summarize(train(base.replace(ffn="dense"), **kw))
    for e in experts:
        for kind in ("topk", "remoe"):
            h = train(base.replace(ffn=kind, num_experts=e), **kw)
            out[kind].append(summarize(h, val_ids=kw["val_ids"], seq_len=kw["seq_len"], routing_tokens=4096))
    out["gap"] = [t["final_val_loss"] - r["final_val_loss"] for t, r in zip(out["topk"], out["remoe"])]
    return out
