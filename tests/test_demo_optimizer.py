"""The DeMo optimizer in one process: hand-computed steps, agreement with the official algorithm, ablations,
byte counters and bad input."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.demo import DeMo, model_wire_bytes
from companion.demo.reference import official_step

torch.set_num_threads(1)


def test_two_steps_by_hand():
    # p = [1,2,3,4], one chunk of 4, k = 1, lr = 0.1
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64))
    opt = DeMo([p], lr=0.1, compression_topk=1, compression_chunk=4)
    # step 1: g = 1 -> δ = 0.1·1, DCT = [0.2, 0, 0, 0]; the DC coefficient is sent: δ -> 0, Q = 0.1 > 0
    p.grad = torch.ones(4, dtype=torch.float64)
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.9, 1.9, 2.9, 3.9], dtype=torch.float64))
    assert torch.allclose(opt.state[p]["delta"], torch.zeros(4, dtype=torch.float64), atol=1e-15)
    # step 2: g = [1,-1,0,0] -> δ = [.1,-.1,0,0]; DCT = [0, .0383, .1, .0924]; top-1 is c2 = 0.1,
    # IDCT(c2) = [.05,-.05,-.05,.05] -> p -= 0.1·[1,-1,-1,1], δ = [.05,-.05,.05,-.05]
    p.grad = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    opt.step()
    assert torch.allclose(p.detach(), torch.tensor([0.8, 2.0, 3.0, 3.8], dtype=torch.float64))
    assert torch.allclose(opt.state[p]["delta"], torch.tensor([0.05, -0.05, 0.05, -0.05], dtype=torch.float64))
    assert opt.state[p]["step"] == 2


def test_decoupled_weight_decay_by_hand():
    p = torch.nn.Parameter(torch.full((4,), 2.0))
    opt = DeMo([p], lr=0.1, weight_decay=0.5, compression_topk=1, compression_chunk=4)
    p.grad = torch.ones(4)
    opt.step()
    # p·(1 − 0.1·0.5) − 0.1·sign(+) = 1.9 − 0.1
    assert torch.allclose(p.detach(), torch.full((4,), 1.8))


def _model_params(seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(128, 192), (192,), (10,), (50, 29), (7, 3)]
    return [torch.randn(s, generator=g, dtype=dtype) for s in shapes]


@pytest.mark.parametrize("topk, chunk, wd", [(32, 64, 0.0), (4, 16, 0.1), (100, 8, 0.0)])
def test_single_worker_matches_official_algorithm(topk, chunk, wd):
    init = _model_params(0)
    ref_p = [[t.clone() for t in init]]
    ref_d = [[torch.zeros_like(t) for t in init]]
    ps = [torch.nn.Parameter(t.clone()) for t in init]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k is clipped on the small tensors
        opt = DeMo(ps, lr=1e-2, compression_topk=topk, compression_chunk=chunk, weight_decay=wd)
        for step in range(4):
            grads = _model_params(100 + step)
            official_step(ref_p, [grads], ref_d, lr=1e-2, topk=topk, chunk=chunk, wd=wd)
            for p, g in zip(ps, grads):
                p.grad = g.clone()
            opt.step()
    for p, r, d in zip(ps, ref_p[0], ref_d[0]):
        assert torch.allclose(p.detach(), r, atol=1e-12)
        assert torch.allclose(opt.state[p]["delta"], d, atol=1e-12)


def test_bytes_counters_match_formula_and_wire_formats():
    ps = [torch.nn.Parameter(t.float()) for t in _model_params(0)]
    shapes = [p.shape for p in ps]
    for fmt in ("compact", "official"):
        opt = DeMo(ps, lr=1e-3, wire_format=fmt)
        for p in ps:
            p.grad = torch.randn_like(p)
        with pytest.warns(UserWarning, match="clipped"):
            opt.step()
        assert opt.bytes_sent == model_wire_bytes(shapes, wire_format=fmt)
        assert opt.bytes_received == 0  # one worker receives nothing from others
    # 128x192: 2x3 tiles of 64x64, k=32: official 6·32·12 B, compact 6·32·6 B
    assert model_wire_bytes([(128, 192)], wire_format="official") == 2 * model_wire_bytes([(128, 192)])


def test_compact_and_official_wire_give_identical_updates():
    out = []
    for fmt in ("compact", "official"):
        ps = [torch.nn.Parameter(t.clone()) for t in _model_params(0)]
        opt = DeMo(ps, lr=1e-2, compression_topk=8, compression_chunk=16, wire_format=fmt)
        for step in range(3):
            for p, g in zip(ps, _model_params(10 + step)):
                p.grad = g
            opt.step()
        out.append([p.detach().clone() for p in ps])
    for a, b in zip(*out):
        assert torch.equal(a, b)


def test_scratch_tensors_live_across_steps_and_are_rebuilt_when_the_layout_changes():
    # the step writes into scratch tensors it keeps (a fresh tensor per step costs page faults on the CPU): the same
    # tensors in every step, new ones when a parameter drops out; each step still equals the official one
    init = _model_params(0, torch.float32)
    ps = [torch.nn.Parameter(t.clone()) for t in init]
    ref_p, ref_d = [t.clone() for t in init], [torch.zeros_like(t) for t in init]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k is clipped on the small tensors
        opt = DeMo(ps, lr=1e-2, compression_topk=8, compression_chunk=16)
        seen = []
        for step in range(4):
            live = range(len(ps)) if step < 3 else [0, 2, 3, 4]  # in step 3 the bias has no gradient
            grads = _model_params(100 + step, torch.float32)
            official_step([[ref_p[i] for i in live]], [[grads[i] for i in live]], [[ref_d[i] for i in live]],
                          lr=1e-2, topk=8, chunk=16)
            for i, p in enumerate(ps):
                p.grad = grads[i].clone() if i in live else None
            opt.step()
            seen.append((opt._work, [id(t) for t in opt._work.values()]))
            for p, r, d in zip(ps, ref_p, ref_d):
                assert torch.equal(p.detach(), r)
                assert torch.allclose(opt.state[p]["delta"], d, atol=1e-6)
    (w0, ids0), (w1, ids1), (w2, ids2), (w3, _) = seen
    assert len(ids0) >= 2 and w0 is w1 is w2 and ids0 == ids1 == ids2  # the same tensors, steps 0-2
    assert w3 is not w2  # rebuilt for the new layout


def test_params_without_grad_are_skipped_and_high_rank_tensors_work():
    conv = torch.nn.Parameter(torch.randn(8, 4, 3, 3))
    frozen = torch.nn.Parameter(torch.randn(5))
    opt = DeMo([conv, frozen], lr=0.1, compression_topk=4, compression_chunk=8)
    conv.grad = torch.randn_like(conv)
    before = frozen.detach().clone()
    opt.step()
    assert torch.equal(frozen.detach(), before) and frozen not in opt.state
    assert opt.state[conv]["delta"].shape == (8, 4, 3, 3)
    # [8, 36] with tiles 8 x 6 (largest divisor of 36 <= 8): 6 tiles, k = 4
    assert opt.bytes_sent == 6 * 4 * (1 + 4)


def test_ablations():
    init = torch.randn(16, 16, dtype=torch.float64)
    g = torch.randn(16, 16, dtype=torch.float64)

    def run(**kw):
        p = torch.nn.Parameter(init.clone())
        opt = DeMo([p], lr=0.1, compression_topk=2, compression_chunk=8, **kw)
        p.grad = g.clone()
        opt.step()
        return p.detach(), opt.state[p]["delta"], opt

    _, d_ef, _ = run()
    _, d_noef, _ = run(error_feedback=False)
    assert torch.allclose(d_noef, 0.1 * g)  # nothing removed
    assert d_ef.norm() < d_noef.norm()
    # no DCT: top-2 raw entries per 8x8 tile; the update touches exactly those entries
    p_id, d_id, _ = run(transform="identity")
    moved = (p_id != init)
    assert moved.sum() == 4 * 2 and torch.all(d_id[moved] == 0)
    # 1-D chunking: the 16x16 matrix is one 1-D chunk of 64 (<= 8²)… 4 chunks of 64, k = 2 each
    _, _, opt1d = run(tiling="1d")
    assert opt1d.bytes_sent == 4 * 2 * (1 + 8)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 6), st.integers(1, 80))
def test_full_k_without_ef_is_signsgd_with_momentum(r, c, s, k):
    # k >= chunk: everything is sent, so Q = δ and the step is p -= lr·sign(β δ + lr g) (with the float64 basis:
    # the official one is float32-accurate, so δ keeps ~1e-8 of the gradient)
    p = torch.nn.Parameter(torch.randn(r, c, dtype=torch.float64))
    p0 = p.detach().clone()
    g = torch.randn(r, c, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        opt = DeMo([p], lr=0.5, compression_topk=max(k, s * s), compression_chunk=s, basis="exact")
        p.grad = g
        opt.step()
    assert torch.allclose(opt.state[p]["delta"], torch.zeros_like(g), atol=1e-12)
    expect = p0 - 0.5 * torch.sign(0.5 * g)
    ok = torch.isclose(p.detach(), expect)
    assert ok.all()


def test_bad_input():
    p = torch.nn.Parameter(torch.randn(4))
    for bad in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"compression_decay must be a number >= 0.0 and < 1.0"):
            DeMo([p], lr=0.1, compression_decay=bad)
    with pytest.raises(ValueError, match="compression_topk must be an int >= 1, got 0"):
        DeMo([p], lr=0.1, compression_topk=0)
    with pytest.raises(ValueError, match="compression_chunk must be an int >= 1, got -2"):
        DeMo([p], lr=0.1, compression_chunk=-2)
    with pytest.raises(TypeError, match="compression_topk must be an int"):
        DeMo([p], lr=0.1, compression_topk=2.0)
    with pytest.raises(ValueError, match="lr"):
        DeMo([p], lr=-1.0)
    with pytest.raises(ValueError, match="transform"):
        DeMo([p], lr=0.1, transform="fft")
    with pytest.raises(ValueError, match="world_size = 2 .* 1 worker"):
        DeMo([p], lr=0.1, world_size=2)
    opt = DeMo([p], lr=0.1, compression_topk=8, compression_chunk=4)
    p.grad = torch.randn(4)
    with pytest.warns(UserWarning, match=r"compression_topk = 8 is larger than a chunk of 4 .*shape \(4,\)"):
        opt.step()


def test_no_grads_is_a_no_op():
    p = torch.nn.Parameter(torch.randn(4))
    opt = DeMo([p], lr=0.1)
    assert opt.step() is None and opt.bytes_sent == 0
    assert math.isclose(opt.compression_decay, 0.999)


def test_state_dict_round_trip_and_half_precision():
    m = torch.nn.Linear(128, 64)
    opt = DeMo(m.parameters(), lr=1e-3)
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    opt2 = DeMo(m.parameters(), lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    assert torch.equal(opt2.state[m.weight]["delta"], opt.state[m.weight]["delta"])
    # bf16: values travel as 2 bytes; [64, 128] = 2 tiles · 32 · (2 + 2) B, bias 64: 32 · (1 + 2) B
    h = torch.nn.Linear(128, 64).to(torch.bfloat16)
    opt3 = DeMo(h.parameters(), lr=1e-3)
    for p in h.parameters():
        p.grad = torch.randn_like(p)
    opt3.step()
    assert opt3.bytes_sent == 2 * 32 * 4 + 32 * 3 and torch.isfinite(h.weight).all()


def test_demo_rejects_a_process_group_that_is_not_one():
    # was an AttributeError from inside torch.distributed ("'object' object has no attribute ...")
    p = torch.nn.Parameter(torch.randn(4))
    with pytest.raises(TypeError, match="process_group must be a torch.distributed ProcessGroup or None"):
        DeMo([p], lr=0.1, process_group=object())
    with pytest.raises(TypeError, match="world_size must be an int"):
        DeMo([p], lr=0.1, world_size=1.0)


def test_demo_rejects_bools_nan_and_non_bool_flags():
    p = torch.nn.Parameter(torch.randn(4))
    with pytest.raises(TypeError, match="compression_topk must be an int"):
        DeMo([p], lr=0.1, compression_topk=True)  # was accepted as k = 1
    with pytest.raises(ValueError, match="lr must be a finite number"):
        DeMo([p], lr=float("inf"))  # was accepted: every step moved the parameters by inf
    with pytest.raises(TypeError, match="error_feedback must be bool"):
        DeMo([p], lr=0.1, error_feedback="no")  # was truthy: error feedback stayed on
    with pytest.raises(ValueError, match="weight_decay must be a finite number"):
        DeMo([{"params": [p], "weight_decay": float("nan")}], lr=0.1)  # a per-group NaN
    with pytest.raises(TypeError, match="params must be an iterable"):
        DeMo(3, lr=0.1)


def test_demo_rejects_empty_parameters_up_front():
    # was accepted, then every step failed with "cannot encode an empty tensor"
    with pytest.raises(ValueError, match="params must not contain empty tensors"):
        DeMo([torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.zeros(0, 3))], lr=0.1)
    opt = DeMo([torch.nn.Parameter(torch.randn(4))], lr=0.1)
    with pytest.raises(ValueError, match="params must not contain empty tensors"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(0))]})
    assert len(opt.param_groups) == 1  # nothing was added


def test_official_step_checks_everything_before_changing_anything():
    p, g, d = torch.ones(4, 4), torch.ones(4, 4), torch.zeros(4, 4)
    with pytest.raises(ValueError, match=r"grads\[0\]\[0\] must have the shape of params\[0\]\[0\]"):
        official_step([[p]], [[torch.ones(4, 5)]], [[d]], lr=0.1)
    with pytest.raises(ValueError, match=r"params\[0\]\[0\] must have 1 or 2 dimensions"):
        official_step([[torch.ones(2, 2, 2)]], [[g]], [[d]], lr=0.1)
    with pytest.raises(ValueError, match="beta"):
        official_step([[p]], [[g]], [[d]], lr=0.1, beta=1.0)
    assert torch.equal(p, torch.ones(4, 4)) and torch.equal(d, torch.zeros(4, 4))
