"""PyramidKV costs, in one process: prefill + compression vs plain prefill, and a decode step with the
compressed vs the full cache, on SmolLM2 with a prompt from the standard-library corpus.

    python benchmarks/pyramidkv_overhead.py [--tokens 2048] [--capacity 128]

Targets (issue): compression overhead <= 10% of the prefill; report the decode-step ratio and bytes saved.
`prefill` keeps every layer's q_proj/k_proj outputs through hooks and applies RoPE to them once more.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from companion import lab
from companion.pyramidkv import cache_bytes, compress, prefill
from companion.lab import cache_kwargs


def timed(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--capacity", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = lab.load_model(device="cpu")
    ids = lab.corpus_tokens(tokenizer, "validation", max_tokens=args.tokens)[None]
    from transformers import DynamicCache

    def plain():  # the same forward pass as prefill's (cache filled, last position's logits only)
        return model(ids, use_cache=True, logits_to_keep=1, **cache_kwargs(model, DynamicCache(config=model.config)))

    plains, pres = [], []
    for _ in range(3):  # interleaved, so that a noisy neighbour slows both alike
        plains.append(timed(plain, repeats=1)[0])
        t, pre = timed(lambda: prefill(model, ids), repeats=1)
        pres.append(t)
    t_plain, t_pre = statistics.median(plains), statistics.median(pres)
    t_comp, (cache, kept) = timed(lambda: compress(pre, "pyramidkv", capacity=args.capacity, window=8))
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

    full_step = statistics.median(step(pre.cache) for _ in range(5))
    small_step = statistics.median(step(cache) for _ in range(5))
    cfg = model.config
    full_bytes = cache_bytes([pre.prompt_len] * cfg.num_hidden_layers, heads=cfg.num_key_value_heads, head_dim=cfg.head_dim)
    small_bytes = cache_bytes(kept, heads=cfg.num_key_value_heads, head_dim=cfg.head_dim)
    print(f"decode step, full cache:                 {full_step * 1e3:6.1f} ms")
    print(f"decode step, compressed cache:           {small_step * 1e3:6.1f} ms  (ratio {small_step / full_step:.2f})")
    print(f"cache bytes (fp32): {full_bytes / 1e6:.1f} MB -> {small_bytes / 1e6:.1f} MB ({small_bytes / full_bytes:.1%})")


if __name__ == "__main__":
    main()
