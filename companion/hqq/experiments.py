"""The chapter's experiments, shared by its notebooks (quick) and ``python -m companion hqq ... --full``."""

from __future__ import annotations

import itertools
import statistics
import time

import torch

from .baseline import optimize_weights_autograd
from .layers import quantize_model
from .quantize import dequantize, quantization_error, quantize


def heavy_tailed(shape: tuple[int, ...], *, seed: int = 0, scale: float = 0.02, df: int = 3) -> torch.Tensor:
    """Synthetic weights with heavy tails: Student-t with ``df`` degrees of freedom, times ``scale``."""
    if df < 1 or df != int(df):
        raise ValueError(f"df must be a positive integer, got {df}")
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(shape, generator=g)
    chi2 = torch.randn((int(df), *shape), generator=g).pow(2).sum(0)  # sum of df squared normals
    return normal / (chi2 / df).sqrt() * scale  # t = N / sqrt(chi2_df / df)


def error_table(weights: dict[str, torch.Tensor], *, bits=(8, 4, 3, 2), groups=(16, 32, 64, 128), axes=(0, 1),
                **solver) -> list[dict]:
    """Mean absolute reconstruction error of RTN and HQQ for every (weights, bits, group, axis).

    Each row: ``name, nbits, group_size, axis, rtn, hqq, gain`` where ``gain = 1 − hqq/rtn`` (share of the
    RTN error removed).
    """
    rows = []
    for (name, W), nbits, g, axis in itertools.product(weights.items(), bits, groups, axes):
        errs = {method: quantization_error(W, nbits=nbits, group_size=g, axis=axis, optimize=optimize, **solver)["mae"]
                for method, optimize in (("rtn", False), ("hqq", True))}
        rows.append({"name": name, "nbits": nbits, "group_size": g, "axis": axis, **errs,
                     "gain": 1 - errs["hqq"] / errs["rtn"] if errs["rtn"] > 0 else 0.0})
    return rows


def perplexity_table(model, token_ids: torch.Tensor, configs: list[dict], *, context: int = 512,
                     max_tokens: int | None = None) -> list[dict]:
    """Held-out perplexity of ``model`` in full precision and after :func:`quantize_model` with each config.

    Each config is a dict of :func:`companion.hqq.quantize` arguments plus a ``label``. The model is quantized in
    place for each config and its original linear layers are put back afterwards (no copy of the model: a copy
    would hold the float weights twice while the quantized layers are built). Rows: ``label, perplexity, seconds_quantize,
    bits_per_weight, mb_linear, mb_linear_fp32``: stored bits per quantized weight and MB of the quantized
    linear layers as :class:`~companion.hqq.HQQLinear` holds them (packed codes with padding, meta-data in the
    model's dtype, biases), and the same layers' MB before.
    """
    from companion.lab import perplexity

    rows = [{"label": "full precision (fp32)", "perplexity": perplexity(model, token_ids, context=context, max_tokens=max_tokens, desc="fp32"),
             "seconds_quantize": 0.0, "bits_per_weight": 32.0, "mb_linear": None}]
    for cfg in configs:
        cfg = dict(cfg)
        label = cfg.pop("label")
        originals = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        report = quantize_model(model, progress=False, **cfg)
        try:
            ppl = perplexity(model, token_ids, context=context, max_tokens=max_tokens, desc=label)
        finally:  # put the float layers back, whatever happened
            for name, linear in originals:
                parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
                setattr(parent, name.rsplit(".", 1)[-1], linear)
        rows.append({"label": label, "perplexity": ppl, "seconds_quantize": report.seconds,
                     "bits_per_weight": report.bits_per_weight, "mb_linear": report.bytes_after / 1e6,
                     "mb_linear_fp32": report.bytes_before / 1e6})
    return rows


def stored_bits_per_weight(model, config: dict, *, meta_dtypes=(torch.float32, torch.float16),
                           skip: tuple[str, ...] = ("lm_head",)) -> dict[torch.dtype, float]:
    """Stored bits per weight of :func:`~companion.hqq.quantize_model` ``(model, **config)`` with the meta-data in
    each of ``meta_dtypes`` (the layers' compute dtype), without changing ``model``: every quantized weight's
    packed codes (padding included) and meta-data, counted by :meth:`QuantMeta.storage_bits` (tested equal to the
    bytes an :class:`~companion.hqq.HQQLinear` holds). Storage does not depend on the solver, so a
    round-to-nearest pass is enough; ``config`` may carry a ``label`` and ``optimize`` (both ignored)."""
    kwargs = {k: v for k, v in config.items() if k not in ("label", "optimize")}
    bits = dict.fromkeys(meta_dtypes, 0)
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and not any(s in name for s in skip):
            _, meta = quantize(m.weight.detach(), optimize=False, **kwargs)
            for dtype in meta_dtypes:
                bits[dtype] += meta.storage_bits(dtype)
            n += m.weight.numel()
    return {dtype: b / n for dtype, b in bits.items()}


def solver_comparison(W: torch.Tensor, *, nbits: int = 4, group_size: int = 64, axis: int = 0,
                      autograd_iters: int = 2500, lr: float = 2e-3, repeats: int = 3) -> dict:
    """Time and mean absolute error of the half-quadratic solver vs hqq's autograd baseline on the same weights.

    HQQ runs :func:`~companion.hqq.quantize` with its defaults (p = 0.7, 20 iterations, early stop; median time of
    ``repeats`` calls). The baseline is :func:`~companion.hqq.optimize_weights_autograd` (AdamW on scale and zero,
    hqq's ``lr = 2e-3`` and ``iters = 2500`` by default), timed once at ``autograd_iters`` steps and, when its
    error falls to HQQ's, once more at the first step count that reaches HQQ's error ("equal error").

    Returns a dict: ``rtn_error, hqq_error, hqq_seconds, hqq_iterations, adam_steps, adam_seconds, adam_error``
    (the error of the returned scale and zero), ``adam_history`` (error after 0, 1, ... steps),
    ``adam_steps_to_hqq_error`` and ``adam_seconds_to_hqq_error`` (``None`` if never reached),
    ``speedup`` (``adam_seconds / hqq_seconds``) and ``speedup_equal_error`` (``None`` if never reached); the same
    in process CPU time (``*_cpu_seconds``, ``speedup_cpu``, ``speedup_equal_error_cpu``), which a CPU shared
    with other work inflates far less than wall-clock time (meaningful with one thread).
    """
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        W_q, meta = quantize(W, nbits=nbits, group_size=group_size, axis=axis)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    t_hqq, c_hqq = statistics.median(times), statistics.median(cpu_times)
    e_hqq = (W - dequantize(W_q, meta)).abs().mean().item()
    e_rtn = quantization_error(W, nbits=nbits, group_size=group_size, axis=axis, optimize=False)["mae"]
    start, cpu = time.perf_counter(), time.process_time()
    _, _, history = optimize_weights_autograd(W, nbits=nbits, group_size=group_size, axis=axis, lr=lr,
                                              iters=autograd_iters)
    t_adam, c_adam = time.perf_counter() - start, time.process_time() - cpu
    e_adam = history[-1] if history[-1] < history[0] else history[0]  # hqq keeps the start if training failed
    steps = next((k for k, e in enumerate(history) if e <= e_hqq and k > 0), None)
    t_equal = c_equal = None
    if steps is not None:
        start, cpu = time.perf_counter(), time.process_time()
        optimize_weights_autograd(W, nbits=nbits, group_size=group_size, axis=axis, lr=lr, iters=steps)
        t_equal, c_equal = time.perf_counter() - start, time.process_time() - cpu
    return {"rtn_error": e_rtn, "hqq_error": e_hqq, "hqq_seconds": t_hqq, "hqq_seconds_all": times,
            "hqq_iterations": len(meta.trace.errors), "adam_steps": autograd_iters, "adam_lr": lr,
            "adam_seconds": t_adam, "adam_error": e_adam, "adam_history": history,
            "adam_steps_to_hqq_error": steps, "adam_seconds_to_hqq_error": t_equal, "speedup": t_adam / t_hqq,
            "speedup_equal_error": None if t_equal is None else t_equal / t_hqq,
            "hqq_cpu_seconds": c_hqq, "hqq_cpu_seconds_all": cpu_times, "adam_cpu_seconds": c_adam,
            "adam_cpu_seconds_to_hqq_error": c_equal, "speedup_cpu": c_adam / c_hqq,
            "speedup_equal_error_cpu": None if c_equal is None else c_equal / c_hqq}
