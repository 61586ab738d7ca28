"""ReMoE's cost per training step, in one process: ReMoE vs TopK at the same E and k, and both vs the dense
model with the same active FFN size (the chapter's tiny Llama-style LM on the standard-library corpus).

    python benchmarks/remoe_step_time.py [--warmup 150] [--repeats 8] [--steps-per-repeat 5] [--threads 2]

Target (issue): ReMoE / TopK <= 1.15. ReMoE's cost depends on its sparsity: it starts near-dense (up to E times
the FFN work), so every model first trains ``--warmup`` steps (ReMoE's sparsity is at its target 1 - k/E by
then, see the printed sparsity), and only then are steps timed, round-robin over the three models so that
background load hits all of them alike; the median of the per-repeat means is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from companion.remoe import LMConfig, Trainer, corpus_ids


def main() -> None:
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ids = corpus_ids("train")
    total = args.warmup + args.repeats * args.steps_per_repeat
    trainers = {}
    for ffn in ("dense", "topk", "remoe"):
        cfg = LMConfig(ffn=ffn, num_experts=args.experts, k=args.k)
        trainers[ffn] = t = Trainer(cfg, train_ids=ids, steps=total, batch_size=args.batch_size,
                                    seq_len=args.seq_len, seed=0, device=args.device)
        start = time.perf_counter()
        for _ in range(args.warmup):
            out = t.step()
        print(f"{ffn:6s} warm-up: {args.warmup} steps in {time.perf_counter() - start:5.1f} s, "
              f"sparsity {out.get('sparsity', 0.0):.3f}")
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
    print(f"ReMoE / TopK:  {step['remoe'] / step['topk']:.2f}x  (target <= 1.15)")
    print(f"ReMoE / dense: {step['remoe'] / step['dense']:.2f}x")
    print(f"TopK / dense:  {step['topk'] / step['dense']:.2f}x")


if __name__ == "__main__":
    main()
