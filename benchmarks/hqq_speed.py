"""HQQ quantization time: companion.hqq vs PyPI hqq 0.2.8 (same matrices, same process) and vs hqq's autograd
baseline.

    DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 termcolor   # the peer (optional)
    python benchmarks/hqq_speed.py [--shapes 576x576,1536x576,2048x2048,4096x1024] [--repeats 5] [--threads 1] [--save]

Prints, per matrix shape (heavy-tailed synthetic weights, 4-bit, groups of 64 along axis 0), the median time of
companion's faithful mode (same arithmetic as hqq), of its corrected default and of hqq's ``Quantizer.quantize``,
and the ratio hqq / companion (faithful): above 1, companion is the faster of the two. Then the half-quadratic
solver (its defaults; median of ``--repeats``) against hqq's autograd baseline
(:func:`companion.hqq.optimize_weights_autograd`: AdamW on scale and zero, lr 2e-3) on the same weights, at hqq's
default ``--adam-steps`` (2500) and at equal error (the first step count whose mean |error| is at most HQQ's,
timed by a second run of that many steps), with the three errors (HQQ, autograd, round-to-nearest), in wall-clock
and in process CPU time (robust to other work on a shared machine; use ``--threads 1``). hqq wraps the
baseline's loss in ``torch.compile`` by default; we time it eagerly.

``--save`` writes results/hqq/bench_speed.json with its provenance: ``settings`` (every option), ``threads``,
``measurements`` (per shape, every repeat's time and the medians; the solver comparison's times, iterations and
errors) and ``ratios``: ``time_hqq_over_companion_faithful_<rows>x<cols>`` per shape (only with hqq installed)
and ``speedup_half_quadratic_over_adam`` (at ``--adam-steps``); the speed-up at equal error is
``measurements.solver_comparison.speedup_equal_error`` (``null`` when the baseline never reaches HQQ's error).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from companion.lab.results import benchmark_payload, save_benchmark

from companion import hqq as H
from companion.hqq.experiments import heavy_tailed, solver_comparison


def median_time(fn, repeats: int = 5) -> tuple[float, list[float]]:
    """The median and every one of ``repeats`` wall-clock times of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def shape(text: str) -> tuple[int, int]:
    """``"1536x576"`` -> ``(1536, 576)``."""
    try:
        rows, cols = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is ROWSxCOLS, e.g. 1536x576; got {text!r}") from None
    if rows < 1 or cols < 1:
        raise argparse.ArgumentTypeError(f"a shape needs positive sizes, got {text!r}")
    return rows, cols


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", type=lambda s: [shape(x) for x in s.split(",")],
                        default=[(576, 576), (1536, 576), (2048, 2048), (4096, 1024)],
                        help="comma-separated ROWSxCOLS (default 576x576,1536x576,2048x2048,4096x1024)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method and shape (median; default 5)")
    parser.add_argument("--solver-shape", type=shape, default=(1536, 576),
                        help="matrix of the half-quadratic vs Adam comparison (default 1536x576)")
    parser.add_argument("--adam-steps", type=int, default=2500,
                        help="AdamW steps of the autograd baseline (default 2500, hqq's iters)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write results/hqq/bench_speed.json (with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from hqq.core.quantize import Quantizer
    except ImportError:
        Quantizer = None
        print("PyPI hqq not installed: comparing with the autograd baseline only")
    print(f"{'shape':>12s} {'companion (faithful)':>21s} {'companion (default)':>20s} {'hqq 0.2.8':>10s} {'hqq/faithful':>13s}")
    rows, ratios = [], {}
    for shp in args.shapes:
        W = heavy_tailed(shp, seed=0, scale=0.15)
        t_faithful, all_faithful = median_time(lambda: H.quantize(W, nbits=4, group_size=64, axis=0, faithful=True),
                                               args.repeats)
        t_default, all_default = median_time(lambda: H.quantize(W, nbits=4, group_size=64, axis=0), args.repeats)
        row = {"shape": list(shp), "companion_faithful_s": t_faithful, "companion_default_s": t_default,
               "companion_faithful_all_s": all_faithful, "companion_default_all_s": all_default}
        if Quantizer is not None:
            t_peer, all_peer = median_time(
                lambda: Quantizer.quantize(W, nbits=4, group_size=64, axis=0, device="cpu", bitpack=False),
                args.repeats)
            ratio = f"{t_peer / t_faithful:13.2f}"
            peer = f"{t_peer:10.3f}"
            row.update(hqq_s=t_peer, hqq_all_s=all_peer)
            ratios[f"time_hqq_over_companion_faithful_{shp[0]}x{shp[1]}"] = t_peer / t_faithful
        else:
            ratio, peer = f"{'-':>13s}", f"{'-':>10s}"
        rows.append(row)
        print(f"{str(shp):>12s} {t_faithful:21.3f} {t_default:20.3f} {peer} {ratio}")
    rows_s, cols_s = args.solver_shape
    r = solver_comparison(heavy_tailed(args.solver_shape, seed=1, scale=0.15), autograd_iters=args.adam_steps,
                          repeats=args.repeats)
    print(f"\nhalf-quadratic ({r['hqq_iterations']} iterations, {r['hqq_seconds']:.3f} s) vs hqq's autograd baseline on "
          f"{rows_s}x{cols_s}, 4-bit g64 axis 0: {args.adam_steps} AdamW steps {r['adam_seconds']:.1f} s "
          f"({r['speedup']:.1f}x); mean |error| HQQ {r['hqq_error']:.6f}, autograd {r['adam_error']:.6f}, "
          f"RTN {r['rtn_error']:.6f}")
    if r["adam_steps_to_hqq_error"] is None:
        print(f"equal error: the baseline did not reach HQQ's error in {args.adam_steps} steps")
    else:
        print(f"equal error: {r['adam_steps_to_hqq_error']} AdamW steps, {r['adam_seconds_to_hqq_error']:.1f} s "
              f"({r['speedup_equal_error']:.1f}x; in CPU time {r['speedup_equal_error_cpu']:.1f}x)")
    print(f"in process CPU time: HQQ {r['hqq_cpu_seconds']:.3f} s, AdamW {r['adam_cpu_seconds']:.1f} s "
          f"({r['speedup_cpu']:.1f}x)")
    ratios["speedup_half_quadratic_over_adam"] = r["speedup"]
    settings = {k: v for k, v in vars(args).items() if k != "save"}
    settings["shapes"] = [list(s) for s in args.shapes]
    settings["solver_shape"] = list(args.solver_shape)
    measurements = {"hqq_installed": Quantizer is not None, "quantize": rows,
                    "solver_comparison": {k: v for k, v in r.items() if k != "speedup"}}
    payload = benchmark_payload("hqq_speed", settings, measurements, ratios)
    if args.save:
        print("saved", save_benchmark("hqq", "bench_speed", payload, argv=argv, seed=0))
    return payload


if __name__ == "__main__":
    main()
