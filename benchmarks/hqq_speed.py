"""HQQ quantization time: companion.hqq vs PyPI hqq 0.2.8 (same matrices, same process) and vs Adam.

    DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 termcolor   # the peer (optional)
    python benchmarks/hqq_speed.py

Prints, per matrix shape, the median time of each and the ratio hqq / companion (target: >= 1, i.e. at least as
fast), for the faithful mode (same arithmetic as hqq) and the corrected default.
"""

from __future__ import annotations

import statistics
import time

import torch

from companion import hqq as H
from companion.hqq.experiments import heavy_tailed, solver_comparison


def median_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    torch.set_num_threads(2)
    try:
        from hqq.core.quantize import Quantizer
    except ImportError:
        Quantizer = None
        print("PyPI hqq not installed: comparing with the autograd baseline only")
    print(f"{'shape':>12s} {'companion (faithful)':>21s} {'companion (default)':>20s} {'hqq 0.2.8':>10s} {'hqq/faithful':>13s}")
    for shape in ((576, 576), (1536, 576), (2048, 2048), (4096, 1024)):
        W = heavy_tailed(shape, seed=0, scale=0.15)
        t_faithful = median_time(lambda: H.quantize(W, nbits=4, group_size=64, axis=0, faithful=True))
        t_default = median_time(lambda: H.quantize(W, nbits=4, group_size=64, axis=0))
        if Quantizer is not None:
            t_peer = median_time(lambda: Quantizer.quantize(W, nbits=4, group_size=64, axis=0, device="cpu", bitpack=False))
            ratio = f"{t_peer / t_faithful:13.2f}"
            peer = f"{t_peer:10.3f}"
        else:
            ratio, peer = f"{'-':>13s}", f"{'-':>10s}"
        print(f"{str(shape):>12s} {t_faithful:21.3f} {t_default:20.3f} {peer} {ratio}")
    r = solver_comparison(heavy_tailed((1536, 576), seed=1, scale=0.15), autograd_steps=200, lr=1e-2)
    print(f"\nhalf-quadratic vs Adam (200 steps) on 1536x576, 4-bit g64: {r['speedup']:.1f}x faster; "
          f"errors HQQ {r['hqq_error']:.5f}, Adam {r['adam_error']:.5f}, RTN {r['rtn_error']:.5f}")


if __name__ == "__main__":
    main()
