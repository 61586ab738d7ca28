"""DeMo's cost per optimizer step and its bytes per step, in one process: DeMo (the paper's design) and
DeMoLowComms (the author's later design, bloc97/torchtitan-lowcomms b530e64) vs AdamW on the same model
(companion.demo's tiny byte-level transformer, ByteLM), single-process, and the bytes of every wire format
(compact, official int64 indices, the later 1-byte index+sign) vs an fp32 all-reduce of all gradients.

    python benchmarks/demo_step_time.py [--d-model 256] [--layers 4] [--k 32] [--repeats 7] [--threads 1]
                                        [--gloo-steps 20 | --no-gloo] [--no-profile] [--save]

How to read it: the step-time ratio DeMo / AdamW says how many AdamW steps one DeMo step costs (the target for
this port is 3x or less on one thread, stretch 1.5x; the ported official step is timed beside it); the bytes
are exact, not timed, and are printed for k in {32, 8, 1} for the compact wire vs the official one (int64
indices) at equal k, and vs an fp32 all-reduce.

1. Step time: every optimizer gets its own copy of the same model and the same fixed gradients (one backward
   on a corpus batch); only ``optimizer.step()`` is timed (DeMo's DCT, top-k, error feedback, "all-gather" and
   sign update are all inside it), after ``--warmup`` untimed steps, round-robin over the optimizers so that
   background load hits all alike; the median of the per-repeat means is reported. The ported official step
   (:func:`companion.demo.official_step`, one Python iteration per parameter) is timed the same way for scale,
   and so are :class:`companion.demo.DeMoLowComms` (its defaults: ratio 0.01, i.e. k = 5 of 128 in fp32) and
   its code ported as written (:class:`companion.demo.reference.OfficialLowComms`).
2. Bytes: DeMo's own ``bytes_sent`` counter after a step, for ``wire_format`` "compact" and "official",
   checked against :func:`companion.demo.model_wire_bytes`; the fp32 all-reduce is the ring formula
   ``2 (W-1)/W * 4 P`` (= 4 P, the gradient itself, at W = 2).
   DeMoLowComms's ``bytes_sent``, checked against :func:`companion.demo.lowcomms_wire_bytes`.
4. Where the time goes (default on, ``--no-profile`` skips it): torch.profiler's self-CPU time per operator over
   3 steps of DeMo and of DeMoLowComms (the top operators, as shares), and two alternatives on the model's own
   64 x 64 tiles of DeMo's momentum: the 2-D DCT as a batched matmul (what DeMo does) vs through the FFT (torch-dct's
   route, per dimension), and top-k vs a threshold selection (the k-th largest magnitude per chunk by
   ``kthvalue``, then a mask) — medians of ``--repeats`` timings each.
3. Optionally (default on): a short 2-worker gloo run of :func:`companion.demo.train` for DeMo and AdamW +
   all-reduce: measured bytes per step and the optimizer part of the step (sync + update), median over steps.

``--save`` writes results/demo/bench_step_time.json with its provenance: ``settings`` (every option),
``threads``, ``measurements`` (every repeat's step time per optimizer and their medians, the bytes per k, the
gloo runs' per-step medians) and ``ratios``: ``step_time_<optimizer>_over_adamw`` for each timed optimizer,
``step_time_demo_over_adamw_foreach``, ``step_time_official_over_demo``, ``bytes_compact_over_official_k<k>``,
``bytes_compact_over_fp32_k<k>``, ``bytes_official_over_fp32_k<k>`` and, with the gloo runs,
``gloo_opt_part_demo_over_adamw``, ``gloo_step_demo_over_adamw``, ``gloo_bytes_sent_demo_over_adamw``;
``step_time_lowcomms_over_adamw``, ``step_time_lowcomms_official_over_adamw``, ``bytes_lowcomms_over_fp32``,
``bytes_lowcomms_over_compact_k32``, and with the profile ``dct_fft_over_matmul``,
``threshold_over_topk``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings

import torch

from companion.lab.results import benchmark_payload, save_benchmark
from torch import nn

from companion.demo import (ByteLM, DeMo, DeMoLowComms, allreduce_bytes, corpus_bytes, lowcomms_wire_bytes,
                            model_wire_bytes, official_step, train)
from companion.demo.reference import OfficialLowComms
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


SLUG = {"adamw": "adamw", "adamw (foreach)": "adamw_foreach", "demo": "demo", "official (ported)": "official",
        "lowcomms": "lowcomms", "lowcomms official": "lowcomms_official"}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
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
    parser.add_argument("--no-profile", action="store_true", help="skip the per-operator profile")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write results/demo/bench_step_time.json (with provenance)")
    args = parser.parse_args(argv)
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
    low = DeMoLowComms(replica(), lr=1e-4)
    steps["lowcomms"] = low.step
    if not args.no_official:
        steps["lowcomms official"] = OfficialLowComms(replica(), lr=1e-4).step
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
    print(f"DeMo / AdamW:          {med['demo'] / med['adamw']:.2f}x")
    print(f"DeMoLowComms / AdamW:  {med['lowcomms'] / med['adamw']:.2f}x")
    print(f"DeMo / AdamW(foreach): {med['demo'] / med['adamw (foreach)']:.2f}x")
    if "official (ported)" in med:
        print(f"official (ported) / DeMo: {med['official (ported)'] / med['demo']:.2f}x")
    ratios = {f"step_time_{SLUG[name]}_over_adamw": t / med["adamw"] for name, t in med.items() if name != "adamw"}
    ratios["step_time_demo_over_adamw_foreach"] = med["demo"] / med["adamw (foreach)"]
    if "official (ported)" in med:
        ratios["step_time_official_over_demo"] = med["official (ported)"] / med["demo"]
    measurements = {"n_params": n_params, "n_tensors": len(shapes),
                    "step_s": {SLUG[name]: v for name, v in times.items()},
                    "step_s_median": {SLUG[name]: t for name, t in med.items()}}

    # ---------------------------------------------------------------- 2. bytes per step
    fp32 = 4 * n_params
    print(f"\nbytes per step per worker (fp32 gradient 4P = {fp32:,} B; ring all-reduce 2(W-1)/W*4P: "
          f"W=2 {allreduce_bytes(n_params, 2):,.0f} B, W=8 {allreduce_bytes(n_params, 8):,.0f} B)")
    print(f"  {'k':>3s} {'compact':>11s} {'official':>11s} {'compact/official':>17s} {'compact/4P':>11s} "
          f"{'official/4P':>12s}")
    wire = []
    for k in (32, 8, 1):
        counted = {}
        agree = True
        for wf in ("compact", "official"):
            o = demo(replica(), k, args.chunk, wf)
            quiet_step(o)
            counted[wf] = o.bytes_sent
            formula = model_wire_bytes(shapes, k=k, chunk=args.chunk, wire_format=wf)
            if formula != o.bytes_sent:
                print(f"  !! k={k} {wf}: counter {o.bytes_sent} B != model_wire_bytes {formula} B")
                agree = False
        c, f = counted["compact"], counted["official"]
        print(f"  {k:3d} {c:11,d} {f:11,d} {c / f:17.3f} {c / fp32:11.4f} {f / fp32:12.4f}")
        wire.append({"k": k, "compact_bytes": c, "official_bytes": f, "counter_equals_formula": agree})
        ratios.update({f"bytes_compact_over_official_k{k}": c / f, f"bytes_compact_over_fp32_k{k}": c / fp32,
                       f"bytes_official_over_fp32_k{k}": f / fp32})
    lo = DeMoLowComms(replica(), lr=1e-4)
    lo.step()
    lo_formula = lowcomms_wire_bytes(shapes)
    compact32 = next(w["compact_bytes"] for w in wire if w["k"] == 32)
    print(f"  later design (1 byte per coefficient, k = 5 of 128): {lo.bytes_sent:,d} B = {lo.bytes_sent / fp32:.4f} "
          f"of 4P, {lo.bytes_sent / compact32:.3f}x compact k=32 (counter equals lowcomms_wire_bytes: "
          f"{lo.bytes_sent == lo_formula})")
    ratios.update({"bytes_lowcomms_over_fp32": lo.bytes_sent / fp32, "bytes_lowcomms_over_compact_k32":
                   lo.bytes_sent / compact32})
    measurements["bytes_per_step"] = {"fp32_gradient": fp32, "allreduce_w2": allreduce_bytes(n_params, 2),
                                      "allreduce_w8": allreduce_bytes(n_params, 8), "per_k": wire,
                                      "lowcomms": {"bytes": lo.bytes_sent, "counter_equals_formula":
                                                   lo.bytes_sent == lo_formula}}

    # ---------------------------------------------------------------- 4. where the time goes
    if not args.no_profile:
        profile(args, replica, measurements, ratios)

    # ---------------------------------------------------------------- 3. 2 workers over gloo
    if not args.no_gloo:
        gloo(args, measurements, ratios)
    payload = benchmark_payload("demo_step_time", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("demo", "bench_step_time", payload, argv=argv, seed=0))
    return payload


def profile(args, replica, measurements: dict, ratios: dict) -> None:
    """4. Self-CPU time per operator of DeMo's and DeMoLowComms's steps; DCT by matmul vs FFT; top-k vs threshold."""
    from torch.profiler import profile as torch_profile

    from companion.demo.dct import _dct_fft, _encode, _to_tiles, tile_shape

    print("\nwhere the time goes (torch.profiler, self CPU time over 3 steps; top operators):")
    shares = {}
    for name, opt in (("demo", demo(replica(), args.k, args.chunk)), ("lowcomms", DeMoLowComms(replica(), lr=1e-4))):
        for _ in range(2):
            quiet_step(opt)
        with torch_profile() as prof:
            for _ in range(3):
                quiet_step(opt)
        ev = [e for e in prof.key_averages() if not e.key.startswith("Optimizer.step")]
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        top = sorted(ev, key=lambda e: -e.self_cpu_time_total)[:8]
        shares[name] = {e.key: e.self_cpu_time_total / total for e in top}
        print(f"  {name:9s} " + ", ".join(f"{k.removeprefix('aten::')} {v:.0%}" for k, v in shares[name].items()))
    # DeMo's tiles of the model's matrices, of the most common tile shape ([T, 64, 64] for the default model)
    by_tile = {}
    for p in replica():
        if p.dim() == 2:
            by_tile.setdefault(tile_shape(p.shape, args.chunk), []).append(_to_tiles(p.grad, tile_shape(p.shape,
                                                                                                  args.chunk)))
    tile = max(by_tile, key=lambda t: sum(x.shape[0] for x in by_tile[t]))
    tiles = torch.cat(by_tile[tile])

    def fft2(x):  # torch-dct's route: 1-D DCT along the last dim, then along the other
        t, n1, n2 = x.shape
        y = _dct_fft(x.reshape(-1, n2)).reshape(t, n1, n2).transpose(1, 2)
        return _dct_fft(y.reshape(-1, n1)).reshape(t, n2, n1).transpose(1, 2)

    flat = _encode(tiles, "official").reshape(tiles.shape[0], -1)
    k = min(args.k, flat.shape[1])  # as DeMo clips k to the tile

    def threshold(x, k):  # the k-th largest magnitude per chunk, then a mask (ties may keep more than k)
        a = x.abs()
        kth = a.kthvalue(a.shape[1] - k + 1, dim=1, keepdim=True).values
        return (a >= kth).nonzero()

    cands = {"dct_matmul": lambda: _encode(tiles, "official"), "dct_fft": lambda: fft2(tiles),
             "topk": lambda: torch.topk(flat.abs(), k, dim=-1, sorted=False),
             "threshold": lambda: threshold(flat, k)}
    t = {name: [] for name in cands}
    for _ in range(args.repeats):
        for name, fn in cands.items():
            start = time.perf_counter()
            fn()
            t[name].append(time.perf_counter() - start)
    med = {name: statistics.median(v) for name, v in t.items()}
    gap = float((fft2(tiles) - _encode(tiles, "official")).abs().max())
    print(f"  {tiles.shape[0]} tiles of {tile[0]}x{tile[1]}: DCT as batched matmul "
          f"{med['dct_matmul'] * 1e3:.2f} ms, "
          f"via FFT {med['dct_fft'] * 1e3:.2f} ms ({med['dct_fft'] / med['dct_matmul']:.2f}x; max difference "
          f"{gap:.1e}); top-{k} {med['topk'] * 1e3:.2f} ms, threshold (kthvalue + mask) "
          f"{med['threshold'] * 1e3:.2f} ms ({med['threshold'] / med['topk']:.2f}x)")
    measurements["profile"] = {"op_share": shares, "tiles": tiles.shape[0], "tile": list(tile), "alternatives_s": t,
                               "alternatives_s_median": med, "dct_fft_vs_matmul_max_abs_difference": gap}
    ratios.update({"dct_fft_over_matmul": med["dct_fft"] / med["dct_matmul"],
                   "threshold_over_topk": med["threshold"] / med["topk"]})


def gloo(args, measurements: dict, ratios: dict) -> None:
    """3. DeMo vs AdamW + all-reduce, 2 workers over gloo; adds to ``measurements`` and ``ratios``."""
    print(f"\n2 workers (gloo, spawn), {args.gloo_steps} steps each, ByteLM d_model={args.d_model}, {args.layers} "
          f"layers, 1 thread per worker; median over the steps after the first 3:")
    runs, rows = {}, {}
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
        rows[name] = {"opt_s_median": opt_s, "step_s_median": step_s, "opt_s": h["opt_s"], "step_s": h["step_s"],
                      "bytes_sent_per_step": h["bytes_sent"][-1], "bytes_received_per_step": h["bytes_received"][-1],
                      "replicas_identical": h["replicas_identical"], "wall_s": wall, "skipped_first_steps": skip}
    a, d = runs["adamw"], runs["demo"]
    skip = 3 if len(a["opt_s"]) > 3 else 0

    def ratio(key):
        return statistics.median(d[key][skip:]) / statistics.median(a[key][skip:])

    print(f"  DeMo / AdamW+all-reduce, opt part: {ratio('opt_s'):.2f}x; whole step: {ratio('step_s'):.2f}x; "
          f"bytes sent: {d['bytes_sent'][-1] / a['bytes_sent'][-1]:.4f}x")
    measurements["gloo"] = rows
    ratios.update({"gloo_opt_part_demo_over_adamw": ratio("opt_s"), "gloo_step_demo_over_adamw": ratio("step_s"),
                   "gloo_bytes_sent_demo_over_adamw": d["bytes_sent"][-1] / a["bytes_sent"][-1]})


if __name__ == "__main__":
    main()
