"""companion.hqq against the HQQ implementations users pick, on real SmolLM2 matrices (each peer optional).

- torchao 0.18's ``_choose_qparams_and_quantize_affine_hqq``: our default solver (κ applied) with two documented
  differences — the zero rounded at 4 bits, and on early stop the zero *after* the first step that did not improve
  (ours keeps the best) — and its zero stored in the float domain (tinygemm convention);
- optimum-quanto 0.2.7's ``HqqOptimizer``: the same half-quadratic step in the float domain with the best shift
  kept, i.e. our default up to floating-point rounding; not quanto's default optimizer;
- PyPI hqq: the stored bits the benchmark counts from its packed tensors equal :meth:`QuantMeta.storage_bits`.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from companion import hqq as H

ROOT = Path(__file__).resolve().parents[1]
GROUP = 64


def _bench():
    spec = importlib.util.spec_from_file_location("benchmark_hqq_peers", ROOT / "benchmarks" / "hqq_peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _bench()


@pytest.fixture(scope="module")
def matrices(bench):
    """q_proj [576, 576] and down_proj [576, 1536] of decoder layer 0 of the book's model."""
    return bench.load_matrices([0])


def _torchao():
    return pytest.importorskip("torchao.quantization.quant_primitives",
                               reason="optional peer: pip install torchao==0.18.0")


def _rel(W, W_r):
    return ((W - W_r).norm() / W.norm()).item()


# ------------------------------------------------------------------------------------------------------ torchao
@pytest.mark.parametrize("nbits", [4, 3, 2])
def test_torchao_zero_is_in_the_float_domain(matrices, nbits):
    qp = _torchao()
    W = matrices["layers.0.q_proj"]
    kwargs = dict(nbits=nbits, group_size=GROUP, axis=1, compute_dtype=torch.float32, device="cpu")
    W_q, s, z, _ = qp._choose_qparams_and_quantize_affine_hqq(W, raw_output=True, **kwargs)  # hqq's format
    W_q_ao, s_ao, z_ao, _ = qp._choose_qparams_and_quantize_affine_hqq(W, **kwargs)  # torchao's own
    mid = 2 ** (nbits - 1)
    assert torch.equal(W_q.reshape(-1), W_q_ao.reshape(-1)) and torch.equal(s.reshape(-1), s_ao.reshape(-1))
    torch.testing.assert_close(z_ao.reshape(-1), ((mid - z) * s).reshape(-1))  # zero_ao = (2^(b-1) − z)·s
    hqq_form = (W_q.reshape(-1, GROUP).float() - z.reshape(-1, 1)) * s.reshape(-1, 1)
    ao_form = (W_q_ao.reshape(-1, GROUP).float() - mid) * s_ao.reshape(-1, 1) + z_ao.reshape(-1, 1)
    torch.testing.assert_close(ao_form, hqq_form, rtol=0, atol=1e-6)


@pytest.mark.parametrize("nbits", [4, 3, 2])
def test_torchao_rounds_the_zero_at_4_bits_only(matrices, nbits):
    """Without the solver, torchao's codes are our round-to-nearest codes, with the zero rounded exactly when
    nbits == 4 (its ``if nbits in [4]: zero = round(zero)``)."""
    qp = _torchao()
    for W in matrices.values():
        W_q_ao, *_ = qp._choose_qparams_and_quantize_affine_hqq(W, nbits=nbits, group_size=GROUP, axis=1,
                                                                optimize=False, compute_dtype=torch.float32,
                                                                device="cpu")
        ours, _ = H.quantize(W, nbits=nbits, group_size=GROUP, axis=1, optimize=False, round_zero=nbits == 4)
        other, _ = H.quantize(W, nbits=nbits, group_size=GROUP, axis=1, optimize=False, round_zero=nbits != 4)
        assert torch.equal(W_q_ao.reshape(-1), ours.reshape(-1))
        assert not torch.equal(W_q_ao.reshape(-1), other.reshape(-1))


@pytest.mark.parametrize("nbits", [3, 2])
def test_torchao_solver_is_ours_except_what_it_returns_on_early_stop(matrices, nbits):
    """Same trajectory as our default (κ applied): where our solver improved until its last iteration both return
    the same codes; where it stopped early, torchao returns the zero one step past the best, never one with a smaller
    mean |error| (the criterion both stop on)."""
    qp = _torchao()
    exact = 0
    for W in matrices.values():
        W_q_ao, s_ao, z_ao, _ = qp._choose_qparams_and_quantize_affine_hqq(
            W, nbits=nbits, group_size=GROUP, axis=1, compute_dtype=torch.float32, device="cpu", raw_output=True)
        W_q, meta = H.quantize(W, nbits=nbits, group_size=GROUP, axis=1)
        W_ao = ((W_q_ao.reshape(-1, GROUP).float() - z_ao.reshape(-1, 1)) * s_ao.reshape(-1, 1)).reshape(W.shape)
        e_ao = (W - W_ao).abs().mean().item()  # the solvers' criterion: mean |W − Ŵ|
        e_ours = (W - H.dequantize(W_q, meta)).abs().mean().item()
        if meta.trace.returned_iter == len(meta.trace.errors) == 20:  # no early stop: the last zero is ours
            assert torch.equal(W_q_ao.reshape(-1), W_q.reshape(-1).to(W_q_ao.dtype))
            exact += 1
        else:
            assert e_ours <= e_ao <= e_ours * 1.01
    assert exact >= 1  # layer 0's q_proj runs all 20 iterations at 2 and 3 bits


# ------------------------------------------------------------------------------------------------------- quanto
def _quanto():
    return pytest.importorskip("optimum.quanto", reason="optional peer: pip install optimum-quanto==0.2.7")


@pytest.mark.parametrize("nbits", [4, 2])
def test_quanto_hqq_optimizer_is_our_default_in_the_float_domain(matrices, nbits):
    """quanto's HqqOptimizer keeps the best shift and applies κ after each improvement, as our default does; its
    W_q = round((W + shift)/s) divides where we multiply by 1/s, so a few codes at a rounding boundary differ."""
    quanto = _quanto()
    from optimum.quanto.tensor.optimizers import HqqOptimizer

    qtype = {4: quanto.qint4, 2: quanto.qint2}[nbits]
    for W in matrices.values():
        scale, shift = HqqOptimizer()(W, qtype=qtype, axis=0, group_size=GROUP)  # quanto axis 0 = hqq axis 1
        codes = torch.ops.quanto.quantize_affine(W, bits=nbits, axis=0, group_size=GROUP, scale=scale, shift=shift)
        W_q, meta = H.quantize(W, nbits=nbits, group_size=GROUP, axis=1)
        assert (codes.reshape(-1) == W_q.reshape(-1)).float().mean().item() > 0.999
        ours_shift = (meta.zero * meta.scale).reshape(-1)  # shift = z·s: the zero in the float domain
        close = torch.isclose(shift.reshape(-1), ours_shift, rtol=1e-4, atol=1e-6)
        assert close.float().mean().item() > 0.999  # a code flipped at a boundary moves its group's mean
        W_r = (codes.float() * scale - shift).reshape(W.shape)
        assert _rel(W, W_r) == pytest.approx(_rel(W, H.dequantize(W_q, meta)), rel=1e-4)


def test_quanto_quantizes_with_min_max_unless_given_hqq():
    quanto = _quanto()
    from optimum.quanto.nn import QLinear
    from optimum.quanto.tensor.optimizers import HqqOptimizer, MaxOptimizer

    q = QLinear.from_module(torch.nn.Linear(256, 8), weights=quanto.qint4)
    assert type(q.optimizer) is MaxOptimizer and not isinstance(q.optimizer, HqqOptimizer)
    assert q.weight_group_size == 128  # quanto's own group size for qint4 (we compare at 64)


# ---------------------------------------------------------------------------------------- the benchmark's counts
@pytest.mark.parametrize("nbits", [4, 3, 2])
def test_bits_counted_from_hqq_tensors_equal_storage_bits(bench, matrices, nbits):
    pytest.importorskip("hqq.core.quantize", reason="optional peer: DISABLE_CUDA=1 pip install hqq==0.2.8.post1")
    W = matrices["layers.0.down_proj"]
    peer, ours = bench.HqqPeer().run(W, nbits), bench.Companion(faithful=True).run(W, nbits)
    assert peer["bits"] == ours["bits"]
    assert peer["iterations"] == ours["iterations"]  # hqq 0.2.8's solver is our faithful one
    torch.testing.assert_close(peer["dequantized"], ours["dequantized"], rtol=0, atol=0)


def test_bench_reports_a_missing_peer_as_missing(bench, monkeypatch):
    def broken():
        raise ImportError("No module named 'torchao'")

    monkeypatch.setitem(bench.PEERS, "torchao", (broken, "pip install torchao==0.18.0"))
    impls, status = bench.implementations()
    assert status["torchao"] == {"installed": False, "reason": "ImportError: No module named 'torchao'",
                                 "install": "pip install torchao==0.18.0"}
    assert "torchao" not in [impl.name for impl in impls]


def test_committed_peer_results_cover_every_peer_and_width():
    path = ROOT / "results" / "hqq" / "bench_peers.json"
    if not path.is_file():
        pytest.skip("results/hqq/bench_peers.json not committed yet")
    data = json.loads(path.read_text())
    m = data["measurements"]
    assert set(m["peers"]) == {"hqq", "torchao", "optimum-quanto"}
    names = {"companion", "companion (faithful)"} | {n for n, s in m["peers"].items() if s["installed"]}
    for s in m["peers"].values():
        assert s["installed"] or s["reason"]
    summary = {(s["implementation"], s["nbits"]) for s in m["summary"]}
    unsupported = {(r["implementation"], r["nbits"]) for r in m["rows"] if "unsupported" in r}
    for name in names:
        for nbits in data["settings"]["bits"]:
            assert ((name, nbits) in summary) != ((name, nbits) in unsupported), (name, nbits)
    for s in m["summary"]:
        for key in ("rel_error_mean", "bits_per_weight", "cpu_time_over_companion"):
            assert math.isfinite(s[key]) and s[key] > 0, (s["implementation"], key)
