"""ReMoE's cost per training step, in one process: ReMoE vs TopK at the same E and k, and both vs the dense
model with the same active FFN size (the chapter's tiny Llama-style LM on the standard-library corpus).

    python benchmarks/remoe_step_time.py [--warmup 150] [--repeats 8] [--steps-per-repeat 5] [--threads 2] [--save]

How to read it: ReMoE / TopK is what ReLU routing costs over TopK routing at the same E and k (1.15 or less
keeps it within 15%); both against the dense model show what the routing and the expert dispatch cost over an
FFN of the active size. ReMoE's cost depends on its sparsity: it starts near-dense (up to E times the FFN
work), so every model first trains ``--warmup`` steps (ReMoE's sparsity is at its goal 1 - k/E by then, see the
printed sparsity), and only then are steps timed, round-robin over the three models so that background load
hits all of them alike; the median of the per-repeat means is reported.

``--save`` writes results/remoe/bench_step_time.json with its provenance: ``settings`` (every option),
``threads``, ``measurements`` (every repeat's mean step time per model and their medians, warm-up times, mean
sparsity, device) and ``ratios``: ``step_time_remoe_over_topk``, ``step_time_remoe_over_dense``,
``step_time_topk_over_dense``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from companion.lab.results import benchmark_payload, save_benchmark

from companion.remoe import LMConfig, Trainer, corpus_ids


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=150, help="untimed training steps first (default 150)")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--steps-per-repeat", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: CUDA when available, else CPU")
    parser.add_argument("--save", action="store_true",
                        help="write results/remoe/bench_step_time.json (with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ids = corpus_ids("train")
    total = args.warmup + args.repeats * args.steps_per_repeat
    trainers, warmup = {}, {}
    for ffn in ("dense", "topk", "remoe"):
        cfg = LMConfig(ffn=ffn, num_experts=args.experts, k=args.k)
        trainers[ffn] = t = Trainer(cfg, train_ids=ids, steps=total, batch_size=args.batch_size,
                                    seq_len=args.seq_len, seed=0, device=args.device)
        start = time.perf_counter()
        out = {}
        for _ in range(args.warmup):
            out = t.step()
        warmup[ffn] = {"seconds": time.perf_counter() - start, "sparsity_after": out.get("sparsity", 0.0)}
        print(f"{ffn:6s} warm-up: {args.warmup} steps in {warmup[ffn]['seconds']:5.1f} s, "
              f"sparsity {warmup[ffn]['sparsity_after']:.3f}")
    sync = torch.cuda.synchronize if trainers["dense"].device.type == "cuda" else (lambda: None)
    times = {ffn: [] for ffn in trainers}
    sparsity = {ffn: [] for ffn in trainers}
    for _ in range(args.repeats):
        for ffn, t in trainers.items():
            sync()
            start = time.perf_counter()
            for _ in range(args.steps_per_repeat):
                out = t.step()
                sparsity[ffn].append(out.get("sparsity", 0.0))
            sync()
            times[ffn].append((time.perf_counter() - start) / args.steps_per_repeat)
    step = {ffn: statistics.median(v) for ffn, v in times.items()}
    tokens = args.batch_size * args.seq_len
    print(f"\nE = {args.experts}, k = {args.k}, {tokens} tokens per step, device {trainers['dense'].device}, "
          f"{args.threads} threads")
    for ffn in trainers:
        s = statistics.mean(sparsity[ffn])
        active = "" if ffn == "dense" else f"  mean active experts/token {args.experts * (1 - s):.2f}"
        print(f"{ffn:6s} step: {step[ffn] * 1e3:7.1f} ms{active}")
    print(f"ReMoE / TopK:  {step['remoe'] / step['topk']:.2f}x")
    print(f"ReMoE / dense: {step['remoe'] / step['dense']:.2f}x")
    print(f"TopK / dense:  {step['topk'] / step['dense']:.2f}x")
    measurements = {"device": str(trainers["dense"].device), "tokens_per_step": tokens,
                    "step_s": times, "step_s_median": step, "warmup": warmup,
                    "mean_sparsity": {ffn: statistics.mean(v) for ffn, v in sparsity.items()}}
    ratios = {"step_time_remoe_over_topk": step["remoe"] / step["topk"],
              "step_time_remoe_over_dense": step["remoe"] / step["dense"],
              "step_time_topk_over_dense": step["topk"] / step["dense"]}
    payload = benchmark_payload("remoe_step_time", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("remoe", "bench_step_time", payload, argv=argv, seed=0))
    return payload


if __name__ == "__main__":
    main()
