"""PyramidKV costs, in one process: prefill + compression vs plain prefill, and a decode step with the
compressed vs the full cache, on SmolLM2 with a prompt from the standard-library corpus.

    python benchmarks/pyramidkv_overhead.py [--tokens 2048] [--capacity 128] [--save]

How to read it: the prefill with Q/K capture against the plain prefill (``prefill`` runs the model through a
registered attention function that keeps references to each layer's query and key states, then calls the
model's own attention; nothing is recomputed) is the price of being able to compress; the compression itself
(window scoring of every layer included: the score memo is cleared before each timed call) is printed as a
share of the plain prefill (10% or less keeps it a small addition); the
decode step with the compressed cache against the full cache is the saving per generated token, and the cache
bytes (exact, computed from the kept tokens) the memory saved. Prefills are interleaved, plain then with
capture, and so are the decode steps, so that background load slows both alike; every time is a median.

``--save`` writes results/pyramidkv/bench_overhead.json with its provenance: ``settings`` (every option),
``threads``, ``measurements`` (every repeat's time and the medians, the kept tokens per layer, the cache bytes)
and ``ratios``: ``prefill_time_with_capture_over_plain`` (the printed overhead is this minus 1),
``compression_time_over_plain_prefill``, ``decode_step_compressed_over_full``, ``cache_bytes_compressed_over_full``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from companion.lab.results import benchmark_payload, save_benchmark

from companion import lab
from companion.pyramidkv import cache_bytes, compress, prefill
from companion.lab import cache_kwargs


def timed(fn, repeats=3):
    """The median time of ``repeats`` calls of ``fn``, the last call's output and every time."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out, times


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--capacity", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed prefills of each kind, and timed compressions (default 3)")
    parser.add_argument("--decode-repeats", type=int, default=5, help="timed decode steps per cache (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--save", action="store_true",
                        help="write results/pyramidkv/bench_overhead.json (with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, tokenizer = lab.load_model(device="cpu")
    ids = lab.corpus_tokens(tokenizer, "validation", max_tokens=args.tokens)[None]
    from transformers import DynamicCache

    def plain():  # the same forward pass as prefill's (cache filled, last position's logits only)
        return model(ids, use_cache=True, logits_to_keep=1, **cache_kwargs(model, DynamicCache(config=model.config)))

    plains, pres = [], []
    for _ in range(args.repeats):  # interleaved, so that a noisy neighbour slows both alike
        plains.append(timed(plain, repeats=1)[0])
        t, pre, _ = timed(lambda: prefill(model, ids), repeats=1)
        pres.append(t)
    t_plain, t_pre = statistics.median(plains), statistics.median(pres)
    def compression():
        pre.scores.clear()  # time the window scoring too, not only the selection from memoised scores
        return compress(pre, "pyramidkv", capacity=args.capacity, window=8)

    t_comp, (cache, kept), comps = timed(compression, repeats=args.repeats)
    print(f"plain prefill ({args.tokens} tokens):            {t_plain:6.2f} s")
    print(f"prefill + Q/K capture:                   {t_pre:6.2f} s  ({t_pre / t_plain - 1:+.0%})")
    print(f"compression (PyramidKV, C={args.capacity}):          {t_comp:6.3f} s  ({t_comp / t_plain:.1%} of the prefill)")

    token = pre.last_logits.argmax().view(1, 1)
    pos = torch.tensor([[pre.prompt_len]])

    def step(c):
        import copy

        c = copy.deepcopy(c)  # each timed step starts from the same cache
        start = time.perf_counter()
        model(token, position_ids=pos, use_cache=True, **cache_kwargs(model, c))
        return time.perf_counter() - start

    full_steps, small_steps = [], []
    for _ in range(args.decode_repeats):  # interleaved too
        full_steps.append(step(pre.cache))
        small_steps.append(step(cache))
    full_step, small_step = statistics.median(full_steps), statistics.median(small_steps)
    cfg = model.config
    full_bytes = cache_bytes([pre.prompt_len] * cfg.num_hidden_layers, heads=cfg.num_key_value_heads, head_dim=cfg.head_dim)
    small_bytes = cache_bytes(kept, heads=cfg.num_key_value_heads, head_dim=cfg.head_dim)
    print(f"decode step, full cache:                 {full_step * 1e3:6.1f} ms")
    print(f"decode step, compressed cache:           {small_step * 1e3:6.1f} ms  (ratio {small_step / full_step:.2f})")
    print(f"cache bytes (fp32): {full_bytes / 1e6:.1f} MB -> {small_bytes / 1e6:.1f} MB ({small_bytes / full_bytes:.1%})")

    measurements = {
        "prompt_tokens": int(pre.prompt_len), "window": 8,
        "plain_prefill_s": t_plain, "plain_prefill_all_s": plains,
        "prefill_with_capture_s": t_pre, "prefill_with_capture_all_s": pres,
        "compression_s": t_comp, "compression_all_s": comps,
        "decode_step_full_s": full_step, "decode_step_full_all_s": full_steps,
        "decode_step_compressed_s": small_step, "decode_step_compressed_all_s": small_steps,
        "kept_per_layer": [int(k) for k in kept], "cache_bytes_full": int(full_bytes),
        "cache_bytes_compressed": int(small_bytes)}
    ratios = {"prefill_time_with_capture_over_plain": t_pre / t_plain,
              "compression_time_over_plain_prefill": t_comp / t_plain,
              "decode_step_compressed_over_full": small_step / full_step,
              "cache_bytes_compressed_over_full": small_bytes / full_bytes}
    payload = benchmark_payload("pyramidkv_overhead", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("pyramidkv", "bench_overhead", payload, argv=argv, seed=None))
    return payload


if __name__ == "__main__":
    main()
