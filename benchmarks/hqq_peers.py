"""HQQ implementations side by side on real SmolLM2 matrices: companion.hqq, PyPI hqq, torchao's HQQ qparams and
optimum-quanto's ``HqqOptimizer``.

    pip install torchao==0.18.0 optimum-quanto==0.2.7                   # two peers (optional)
    DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 termcolor     # the third (optional)
    python benchmarks/hqq_peers.py [--layers 0,14,29] [--bits 4,3,2] [--repeats 5] [--threads 1] [--save]

Matrices: ``q_proj`` ([576, 576]) and ``down_proj`` ([576, 1536]) of the chosen decoder layers of the book's model
(the float32 copy that :func:`companion.lab.model.converted_model_path` holds). Matched settings: ``nbits`` from
``--bits``, groups of 64 consecutive weights of one output row (hqq's and ours ``axis=1``, torchao's default
``axis=1``, quanto's ``axis=0``: the one grouping all four offer), scale and zero kept in float32 (the weights'
dtype; torchao's ``compute_dtype`` is set to float32, its default is float16), and each solver at its own defaults
(p = 0.7, β = 10, κ = 1.01, 20 iterations, its own early stop). quanto takes 2 and 4 bits only.

Per matrix, bit width and implementation it reports:

- ``rel_error``: ‖W − Ŵ‖_F / ‖W‖_F of the dequantized weights (each implementation's own dequantization);
- ``bits_per_weight``: bits of the tensors the implementation keeps for the weight, divided by the number of
  weights — companion and hqq: the packed code words (hqq's layouts, 3-bit rows padded to a multiple of 10 per
  int32) plus one float32 scale and zero per group; torchao at 4 bits: the ``Int4OpaqueTensor`` its CPU HQQ path
  builds (``qdata``, two codes per byte, plus ``scale_and_zero``); at other widths no torchao tensor stores HQQ
  codes, so the primitive's own output is counted (one uint8 per code, plus scale and zero); quanto: the
  ``WeightQBitsTensor``'s packed ``_data`` plus ``_scale`` and ``_shift``;
- ``iterations``: zero updates the solver computed (read from each solver's own progress: our trace, a counter
  around hqq's step function, torchao's and quanto's ``verbose`` lines). Ours, hqq's and torchao's loops compute
  the next zero before testing the current one, so for the same stop they count one more than quanto's, which
  tests each update before accepting it;
- time: process CPU time and wall-clock time of one quantization (codes, scale and zero; packing included where
  the implementation packs while quantizing — ours, hqq, quanto; torchao's primitive does not pack), median of
  ``--repeats`` calls after one untimed call, the implementations interleaved; the ratio is each one's CPU time
  over ours (the corrected default) on the same matrix, in the same process.

A peer that is not installed is saved as missing (``measurements.peers``), never dropped.
``--save`` writes results/hqq/bench_peers.json: ``settings``, ``threads``, ``measurements`` (``peers``: installed
or why not, with versions; ``rows``: one per matrix, width and implementation, every repeat's times included;
``summary``: per implementation and width, the mean, min and max relative error over the matrices, the stored bits
per weight, the median CPU-time ratio and the median iterations) and ``ratios``:
``cpu_time_over_companion_<implementation>_<nbits>bit`` (median over the matrices; ``companion_faithful``, ``hqq``,
``torchao``, ``optimum_quanto``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import io
import statistics
import sys
import time

import torch

from companion import hqq as H
from companion.lab.results import benchmark_payload, save_benchmark

GROUP = 64
OURS = "companion"


def load_matrices(layers: list[int]) -> dict[str, torch.Tensor]:
    """``{"layers.<i>.<q_proj|down_proj>": W}`` from the float32 copy of the book's model (read lazily: no model)."""
    from safetensors import safe_open

    from companion.lab.model import converted_model_path

    out = {}
    with safe_open(str(converted_model_path() / "model.safetensors"), framework="pt") as f:
        for i in layers:
            for name in ("self_attn.q_proj", "mlp.down_proj"):
                out[f"layers.{i}.{name.split('.')[1]}"] = f.get_tensor(f"model.layers.{i}.{name}.weight")
    return out


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _count_lines(fn, marker: str):
    """Run ``fn()`` with stdout captured; return its result and how many printed lines contain ``marker``."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        result = fn()
    return result, sum(marker in line for line in buffer.getvalue().splitlines())


# ------------------------------------------------------------------------------------------------- the adapters
# Each adapter: ``quantize(W, nbits)`` (what is timed) and ``run(W, nbits)`` -> dict(dequantized, bits, iterations,
# counted) (the untimed call whose output is measured). ``supports(nbits)`` says which widths it takes.

class Companion:
    """companion.hqq: the corrected default (κ applied, best zero returned) or ``faithful`` (hqq 0.2.8's solver)."""

    def __init__(self, faithful: bool):
        self.faithful = faithful
        self.name = "companion (faithful)" if faithful else OURS
        self.version = None

    def supports(self, nbits: int) -> bool:
        return True

    def quantize(self, W, nbits):
        return H.quantize(W, nbits=nbits, group_size=GROUP, axis=1, faithful=self.faithful, bitpack=True)

    def run(self, W, nbits):
        W_q, meta = self.quantize(W, nbits)
        return {"dequantized": H.dequantize(W_q, meta, dtype=torch.float32), "bits": meta.storage_bits(),
                "iterations": len(meta.trace.errors),
                "counted": "packed code words (padding included) + float32 scale and zero per group"}


class HqqPeer:
    """PyPI hqq: ``Quantizer.quantize`` (its solver: ``optimize_weights_proximal_legacy``), packed."""

    name = "hqq"

    def __init__(self):
        from hqq.core import optimize
        from hqq.core.quantize import Quantizer

        self.Quantizer, self.optimize = Quantizer, optimize
        self.version = importlib.metadata.version("hqq")

    def supports(self, nbits: int) -> bool:
        return nbits in self.Quantizer.SUPPORTED_BITS

    def quantize(self, W, nbits):
        return self.Quantizer.quantize(W, nbits=nbits, group_size=GROUP, axis=1, device="cpu", bitpack=True)

    def run(self, W, nbits):
        step, calls = self.optimize.optimize_weights_proximal_legacy_step, []

        def counted(*args, **kwargs):
            calls.append(1)
            return step(*args, **kwargs)

        self.optimize.optimize_weights_proximal_legacy_step = counted  # looked up as a module global
        try:
            W_q, meta = self.quantize(W, nbits)
        finally:
            self.optimize.optimize_weights_proximal_legacy_step = step
        W_r = self.Quantizer.dequantize(W_q, meta).reshape(W.shape).float()
        return {"dequantized": W_r, "bits": 8 * _nbytes(W_q, meta["scale"], meta["zero"]), "iterations": len(calls),
                "counted": "packed code words (padding included) + float32 scale and zero per group"}


class TorchaoPeer:
    """torchao: ``quant_primitives._choose_qparams_and_quantize_affine_hqq`` (tinygemm convention:
    Ŵ = (W_q − 2^(b−1))·s + zero, the zero in the float domain); at 4 bits also the ``Int4OpaqueTensor`` its CPU
    HQQ path stores."""

    name = "torchao"

    def __init__(self):
        from torchao.quantization.quant_primitives import _choose_qparams_and_quantize_affine_hqq

        self.hqq = _choose_qparams_and_quantize_affine_hqq
        self.version = importlib.metadata.version("torchao")

    def supports(self, nbits: int) -> bool:
        return nbits in (1, 2, 3, 4, 5, 6, 7, 8)

    def quantize(self, W, nbits, verbose=False):
        return self.hqq(W, nbits=nbits, group_size=GROUP, axis=1, compute_dtype=torch.float32, device="cpu",
                        verbose=verbose)

    def run(self, W, nbits):
        (W_q, scale, zero, _), iterations = _count_lines(lambda: self.quantize(W, nbits, verbose=True), "Iter ")
        W_r = (W_q.reshape(-1, GROUP).float() - 2 ** (nbits - 1)) * scale.reshape(-1, 1) + zero.reshape(-1, 1)
        if nbits == 4:
            from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
            from torchao.quantization.quantize_.workflows import Int4ChooseQParamsAlgorithm

            t = Int4OpaqueTensor.from_hp(W, [1, GROUP], Int4ChooseQParamsAlgorithm.HQQ)
            bits = 8 * _nbytes(t.qdata, t.scale_and_zero)
            counted = "Int4OpaqueTensor (its CPU HQQ path): packed int4 qdata + float32 scale_and_zero"
        else:
            bits = 8 * _nbytes(W_q, scale, zero)
            counted = "no torchao tensor stores HQQ codes at this width: the primitive's uint8 codes + float32 scale, zero"
        return {"dequantized": W_r.reshape(W.shape), "bits": bits, "iterations": iterations, "counted": counted}


class QuantoPeer:
    """optimum-quanto: ``HqqOptimizer`` (float-domain shift: W_q = round((W + shift)/s), Ŵ = W_q·s − shift), then
    ``quantize_weight`` into a packed ``WeightQBitsTensor`` (qint2/qint4 only)."""

    name = "optimum-quanto"

    def __init__(self):
        from optimum.quanto import qint2, qint4
        from optimum.quanto.tensor.optimizers import HqqOptimizer
        from optimum.quanto.tensor.weights import quantize_weight

        self.qtypes, self.Optimizer, self.quantize_weight = {2: qint2, 4: qint4}, HqqOptimizer, quantize_weight
        self.version = importlib.metadata.version("optimum-quanto")

    def supports(self, nbits: int) -> bool:
        return nbits in self.qtypes

    def quantize(self, W, nbits, verbose=False):
        qtype = self.qtypes[nbits]
        scale, shift = self.Optimizer(verbose=verbose)(W, qtype=qtype, axis=0, group_size=GROUP)
        return self.quantize_weight(W, qtype=qtype, axis=0, scale=scale, shift=shift, group_size=GROUP)

    def run(self, W, nbits):
        qw, iterations = _count_lines(lambda: self.quantize(W, nbits, verbose=True), "HQQ error at it")
        data = qw._data._data if hasattr(qw._data, "_data") else qw._data
        return {"dequantized": qw.dequantize().float(), "bits": 8 * _nbytes(data, qw._scale, qw._shift),
                "iterations": iterations,
                "counted": "WeightQBitsTensor: packed uint8 _data + float32 _scale and _shift per group"}


PEERS = {"hqq": (HqqPeer, "DISABLE_CUDA=1 pip install --no-deps hqq==0.2.8.post1 termcolor"),
         "torchao": (TorchaoPeer, "pip install torchao==0.18.0"),
         "optimum-quanto": (QuantoPeer, "pip install optimum-quanto==0.2.7")}


def implementations() -> tuple[list, dict]:
    """Ours (default and faithful) and every peer that imports; ``status`` says for each peer whether it is
    installed (with its version) or why not."""
    impls, status = [Companion(False), Companion(True)], {}
    for name, (cls, command) in PEERS.items():
        try:
            peer = cls()
        except Exception as err:  # ImportError, or a broken install: report it, never skip silently
            status[name] = {"installed": False, "reason": f"{type(err).__name__}: {err}"[:300], "install": command}
            continue
        impls.append(peer)
        status[name] = {"installed": True, "version": peer.version, "install": command}
    return impls, status


def _times(impl, W, nbits) -> tuple[float, float]:
    start, cpu = time.perf_counter(), time.process_time()
    impl.quantize(W, nbits)
    return time.perf_counter() - start, time.process_time() - cpu


def measure(matrices: dict[str, torch.Tensor], bits: list[int], impls: list, repeats: int) -> list[dict]:
    """One row per (matrix, nbits, implementation): error, stored bits, iterations and times (see module doc)."""
    rows = []
    for (mname, W), nbits in ((m, b) for m in matrices.items() for b in bits):
        active = [impl for impl in impls if impl.supports(nbits)]
        found = {}
        for impl in active:
            out = impl.run(W, nbits)  # also the untimed warm-up call
            found[impl.name] = {"matrix": mname, "shape": list(W.shape), "nbits": nbits, "implementation": impl.name,
                                "rel_error": ((W - out["dequantized"]).norm() / W.norm()).item(),
                                "bits_per_weight": out["bits"] / W.numel(), "iterations": out["iterations"],
                                "counted": out["counted"], "wall_s_all": [], "cpu_s_all": []}
        for r in range(repeats):  # interleaved, the order rotated each repeat
            for impl in active[r % len(active):] + active[:r % len(active)]:
                wall, cpu = _times(impl, W, nbits)
                found[impl.name]["wall_s_all"].append(wall)
                found[impl.name]["cpu_s_all"].append(cpu)
        for row in found.values():
            row["wall_s"], row["cpu_s"] = statistics.median(row["wall_s_all"]), statistics.median(row["cpu_s_all"])
        for row in found.values():
            row["cpu_time_over_companion"] = row["cpu_s"] / found[OURS]["cpu_s"]
            row["wall_time_over_companion"] = row["wall_s"] / found[OURS]["wall_s"]
            row["rel_error_over_companion"] = row["rel_error"] / found[OURS]["rel_error"]
        for impl in impls:
            if impl not in active:
                rows.append({"matrix": mname, "shape": list(W.shape), "nbits": nbits, "implementation": impl.name,
                             "unsupported": f"{impl.name} does not quantize to {nbits} bits"})
        rows.extend(found.values())
        print(f"{mname:>18s} {nbits}-bit  " + "  ".join(
            f"{n}: err {v['rel_error']:.5f}, {v['bits_per_weight']:.3f} b/w, {v['iterations']} it, "
            f"CPU x{v['cpu_time_over_companion']:.2f}" for n, v in found.items()), flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Per implementation and width over the matrices: relative error (mean, min, max), stored bits per weight
    (mean; equal for matrices whose sizes pack alike), median CPU-time ratio to ours, median iterations."""
    out = []
    keys = dict.fromkeys((r["implementation"], r["nbits"]) for r in rows if "rel_error" in r)
    for name, nbits in keys:
        sel = [r for r in rows if r["implementation"] == name and r["nbits"] == nbits and "rel_error" in r]
        errs = [r["rel_error"] for r in sel]
        out.append({"implementation": name, "nbits": nbits, "matrices": len(sel),
                    "rel_error_mean": statistics.fmean(errs), "rel_error_min": min(errs), "rel_error_max": max(errs),
                    "rel_error_over_companion_min": min(r["rel_error_over_companion"] for r in sel),
                    "rel_error_over_companion_max": max(r["rel_error_over_companion"] for r in sel),
                    "bits_per_weight": statistics.fmean(r["bits_per_weight"] for r in sel),
                    "cpu_time_over_companion": statistics.median(r["cpu_time_over_companion"] for r in sel),
                    "cpu_time_over_companion_min": min(r["cpu_time_over_companion"] for r in sel),
                    "cpu_time_over_companion_max": max(r["cpu_time_over_companion"] for r in sel),
                    "iterations_median": statistics.median(r["iterations"] for r in sel),
                    "counted": sel[0]["counted"]})
    return out


def slug(name: str) -> str:
    """``"companion (faithful)"`` -> ``"companion_faithful"``, ``"optimum-quanto"`` -> ``"optimum_quanto"``."""
    return name.replace(" (", "_").replace(")", "").replace("-", "_")


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,14,29; got {text!r}") from None


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int_list, default=[0, 14, 29],
                        help="decoder layers whose q_proj and down_proj are quantized (default 0,14,29)")
    parser.add_argument("--bits", type=int_list, default=[4, 3, 2], help="bit widths (default 4,3,2)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per implementation (median; default 5)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save", action="store_true", help="write results/hqq/bench_peers.json (with provenance)")
    args = parser.parse_args(argv)
    for b in args.bits:
        if b not in H.SUPPORTED_BITS:
            parser.error(f"--bits takes values in {H.SUPPORTED_BITS}, got {b}")
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    impls, status = implementations()
    for name, s in status.items():
        print(f"{name}: " + (f"version {s['version']}" if s["installed"] else f"MISSING ({s['reason']}); {s['install']}"))
    rows = measure(load_matrices(args.layers), args.bits, impls, args.repeats)
    summary = summarize(rows)
    print(f"\n{'implementation':>22s} {'bits':>4s} {'rel. error (mean)':>18s} {'stored b/w':>10s} "
          f"{'CPU time / ours':>15s} {'iterations':>10s}")
    for s in summary:
        print(f"{s['implementation']:>22s} {s['nbits']:>4d} {s['rel_error_mean']:18.5f} {s['bits_per_weight']:10.3f} "
              f"{s['cpu_time_over_companion']:15.2f} {s['iterations_median']:10.1f}")
    ratios = {f"cpu_time_over_companion_{slug(s['implementation'])}_{s['nbits']}bit": s["cpu_time_over_companion"]
              for s in summary if s["implementation"] != OURS}
    settings = {k: v for k, v in vars(args).items() if k != "save"}
    settings.update(group_size=GROUP, axis="groups of 64 consecutive weights of one output row (hqq axis=1)",
                    meta_dtype="float32")
    payload = benchmark_payload("hqq_peers", settings, {"peers": status, "rows": rows, "summary": summary}, ratios)
    if args.save:
        print("saved", save_benchmark("hqq", "bench_peers", payload, argv=argv, seed=None))
    return payload


if __name__ == "__main__":
    main()
