"""DeMo's cost per optimizer step and its bytes per step, in one process: DeMo vs AdamW on the same model
(companion.demo's tiny byte-level transformer, ByteLM), single-process, and DeMo's wire bytes vs the official
wire format and vs an fp32 all-reduce of all gradients.

    python benchmarks/demo_step_time.py [--d-model 256] [--layers 4] [--k 32] [--repeats 7] [--threads 1]
                                        [--gloo-steps 20 | --no-gloo]

Targets (issue): DeMo step / AdamW step <= 1.5 (the official code measured 2.5x slower); report the bytes per
step of the compact wire vs the official one (int64 indices) at equal k, and vs an fp32 all-reduce, for k in
{32, 8, 1}.

1. Step time: every optimizer gets its own copy of the same model and the same fixed gradients (one backward
   on a corpus batch); only ``optimizer.step()`` is timed (DeMo's DCT, top-k, error feedback, "all-gather" and
   sign update are all inside it), after ``--warmup`` untimed steps, round-robin over the optimizers so that
   background load hits all alike; the median of the per-repeat means is reported. The ported official step
   (:func:`companion.demo.official_step`, one Python iteration per parameter) is timed the same way for scale.
2. Bytes: DeMo's own ``bytes_sent`` counter after a step, for ``wire_format`` "compact" and "official",
   checked against :func:`companion.demo.model_wire_bytes`; the fp32 all-reduce is the ring formula
   ``2 (W-1)/W * 4 P`` (= 4 P, the gradient itself, at W = 2).
3. Optionally (default on): a short 2-worker gloo run of :func:`companion.demo.train` for DeMo and AdamW +
   all-reduce: measured bytes per step and the optimizer part of the step (sync + update), median over steps.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
from torch import nn

from companion.demo import ByteLM, DeMo, allreduce_bytes, corpus_bytes, model_wire_bytes, official_step, train
from companion.demo.training import lm_loss, sample_batch


def make_model(args) -> tuple[nn.Module, list[torch.Tensor]]:
    """ByteLM with seed 0 and the gradients of one corpus batch (kept fixed for all timed steps)."""
    torch.manual_seed(0)
    model = ByteLM(d_model=args.d_model, n_layers=args.layers, n_heads=args.heads, seq_len=args.seq_len)
    data = corpus_bytes(200_000)
    lm_loss(model, sample_batch(data, args.batch_size, args.seq_len)).backward()
    return model, [p.grad.detach().clone() for p in model.parameters()]


def demo(params, k, chunk, wire_format="compact"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k clipped on small 1-D tensors (norms, biases) is expected
        return DeMo(params, lr=1e-4, compression_topk=k, compression_chunk=chunk, wire_format=wire_format)


def quiet_step(opt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--k", type=int, default=32, help="compression_topk of the timed DeMo (default 32)")
    parser.add_argument("--chunk", type=int, default=64, help="compression_chunk (default 64)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per optimizer first (default 3)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps-per-repeat", type=int, default=3)
    parser.add_argument("--no-official", action="store_true", help="skip timing the ported official step")
    parser.add_argument("--gloo-steps", type=int, default=20, help="steps of the 2-worker gloo runs (default 20)")
    parser.add_argument("--no-gloo", action="store_true", help="skip the 2-worker gloo runs")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    base, grads = make_model(args)
    n_params = sum(p.numel() for p in base.parameters())
    shapes = [tuple(p.shape) for p in base.parameters()]

    def replica():
        m = copy.deepcopy(base)
        for p, g in zip(m.parameters(), grads):
            p.grad = g.clone()
        return list(m.parameters())

    # ---------------------------------------------------------------- 1. step time
    steps = {}
    p = replica()
    adamw = torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.95))
    steps["adamw"] = adamw.step
    p = replica()
    adamw_fe = torch.optim.AdamW(p, lr=1e-3, betas=(0.9, 0.95), foreach=True)
    steps["adamw (foreach)"] = adamw_fe.step
    opt = demo(replica(), args.k, args.chunk)
    steps["demo"] = lambda opt=opt: quiet_step(opt)
    if not args.no_official:
        op = replica()
        og = [x.grad for x in op]
        od = [torch.zeros_like(x) for x in op]

        @torch.no_grad()
        def official():
            official_step([op], [og], [od], lr=1e-4, topk=args.k, chunk=args.chunk)

        steps["official (ported)"] = official
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    times = {name: [] for name in steps}
    for _ in range(args.repeats):  # interleaved, so that a noisy neighbour slows all alike
        for name, fn in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_repeat):
                fn()
            times[name].append((time.perf_counter() - start) / args.steps_per_repeat)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"ByteLM d_model={args.d_model}, {args.layers} layers: {n_params:,} parameters in {len(shapes)} tensors; "
          f"DeMo k={args.k}, chunk={args.chunk}; {args.threads} thread(s); median of {args.repeats} x "
          f"{args.steps_per_repeat} steps")
    for name, t in med.items():
        print(f"  {name:18s} step: {t * 1e3:8.2f} ms   {t / med['adamw']:5.2f}x AdamW")
    print(f"DeMo / AdamW:          {med['demo'] / med['adamw']:.2f}x  (target <= 1.5; official code measured 2.5x)")
    print(f"DeMo / AdamW(foreach): {med['demo'] / med['adamw (foreach)']:.2f}x")
    if "official (ported)" in med:
        print(f"official (ported) / DeMo: {med['official (ported)'] / med['demo']:.2f}x")

    # ---------------------------------------------------------------- 2. bytes per step
    fp32 = 4 * n_params
    print(f"\nbytes per step per worker (fp32 gradient 4P = {fp32:,} B; ring all-reduce 2(W-1)/W*4P: "
          f"W=2 {allreduce_bytes(n_params, 2):,.0f} B, W=8 {allreduce_bytes(n_params, 8):,.0f} B)")
    print(f"  {'k':>3s} {'compact':>11s} {'official':>11s} {'compact/official':>17s} {'compact/4P':>11s} "
          f"{'official/4P':>12s}")
    for k in (32, 8, 1):
        counted = {}
        for wf in ("compact", "official"):
            o = demo(replica(), k, args.chunk, wf)
            quiet_step(o)
            counted[wf] = o.bytes_sent
            formula = model_wire_bytes(shapes, k=k, chunk=args.chunk, wire_format=wf)
            if formula != o.bytes_sent:
                print(f"  !! k={k} {wf}: counter {o.bytes_sent} B != model_wire_bytes {formula} B")
        c, f = counted["compact"], counted["official"]
        print(f"  {k:3d} {c:11,d} {f:11,d} {c / f:17.3f} {c / fp32:11.4f} {f / fp32:12.4f}")

    # ---------------------------------------------------------------- 3. 2 workers over gloo
    if args.no_gloo:
        return
    print(f"\n2 workers (gloo, spawn), {args.gloo_steps} steps each, ByteLM d_model={args.d_model}, {args.layers} "
          f"layers, 1 thread per worker; median over the steps after the first 3:")
    runs = {}
    for name in ("adamw", "demo"):
        start = time.perf_counter()
        h = train(optimizer=name, workers=2, steps=args.gloo_steps, batch_size=args.batch_size,
                  seq_len=args.seq_len, d_model=args.d_model, n_layers=args.layers, n_heads=args.heads,
                  demo=dict(compression_topk=args.k, compression_chunk=args.chunk), train_bytes=200_000)
        wall = time.perf_counter() - start
        runs[name] = h
        skip = 3 if len(h["opt_s"]) > 3 else 0
        opt_s = statistics.median(h["opt_s"][skip:])
        step_s = statistics.median(h["step_s"][skip:])
        print(f"  {name:5s}: opt part (sync + update) {opt_s * 1e3:8.2f} ms, whole step {step_s * 1e3:8.2f} ms, "
              f"sent {h['bytes_sent'][-1]:,} B/step, received {h['bytes_received'][-1]:,} B/step, "
              f"replicas identical {h['replicas_identical']}, run wall {wall:.1f} s")
    a, d = runs["adamw"], runs["demo"]
    skip = 3 if len(a["opt_s"]) > 3 else 0

    def ratio(key):
        return statistics.median(d[key][skip:]) / statistics.median(a[key][skip:])

    print(f"  DeMo / AdamW+all-reduce, opt part: {ratio('opt_s'):.2f}x; whole step: {ratio('step_s'):.2f}x; "
          f"bytes sent: {d['bytes_sent'][-1] / a['bytes_sent'][-1]:.4f}x")


if __name__ == "__main__":
    main()
