"""The author's later DeMo (companion.demo.DeMoLowComms) against its own code ported as written
(companion.demo.reference.OfficialLowComms, bloc97/torchtitan-lowcomms b530e64): the same weights and momenta bit
for bit in fp32 / fp64 / bf16 with and without nesterov / overlapped; the 1-byte wire format; bytes per step; the
DCT-domain momentum against the paper design's spatial one where the two coincide; 2 gloo workers."""

import copy
import datetime
import itertools
import os
import socket
import time
import warnings

import pytest
import torch

from companion.demo import DeMo, DeMoLowComms, lowcomms_topk, lowcomms_wire_bytes, pack, unpack
from companion.demo.dct import _to_tiles
from companion.demo.lowcomms import _encode
from companion.demo.reference import OfficialLowComms, OfficialLowCommsCollective

torch.set_num_threads(1)

# a matrix with 64 columns (flat chunks = 64 x 64 tiles), a wider one (chunks cut across rows), a bias (one padded
# chunk), a 3-D tensor, one exact chunk, one over a chunk
SHAPES = [(100, 70), (64,), (128, 64), (3, 5, 7), (4096,), (5000,)]


def _pair(dtype, shapes=SHAPES, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    init = [torch.randn(s, generator=g).to(dtype) for s in shapes]
    ours = [torch.nn.Parameter(t.clone()) for t in init]
    theirs = [torch.nn.Parameter(t.clone()) for t in init]
    faithful = kw.pop("faithful", False)
    ours_opt = DeMoLowComms(ours, lr=1e-2, faithful=faithful, **kw)
    return ours, theirs, ours_opt, OfficialLowComms(theirs, lr=1e-2, **kw), g


def _steps(ours, theirs, o, t, g, steps, zero_first=False):
    for s in range(steps):
        for a, b in zip(ours, theirs):
            grad = torch.randn(a.shape, generator=g).to(a.dtype)
            if s == 2:
                grad[: a.shape[0] // 2] = 0
            if zero_first and s == 0 and a.dim() == 1:
                grad.zero_()  # a zero momentum: every coefficient sent is exactly 0
            a.grad, b.grad = grad.clone(), grad.clone()
        o.step()
        t.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("nesterov,overlapped", list(itertools.product([False, True], [False, True])))
def test_equals_the_official_code_bit_for_bit(dtype, nesterov, overlapped):
    for fs in (1.0, 0.2):
        ours, theirs, o, t, g = _pair(dtype, nesterov=nesterov, overlapped=overlapped, feedback_strength=fs)
        _steps(ours, theirs, o, t, g, 6)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
            assert torch.equal(o.state[a]["momentum_buffer"], t.state[b]["momentum_buffer"])
        moved = sum(int((a != i).sum()) for a, i in zip(ours, _pair(dtype)[0]))
        assert moved > 0.5 * sum(a.numel() for a in ours)  # the step really moves the weights (bf16 rounds some back)


def test_momentum_zero_equals_the_official_code():
    # momentum 0 sends the encoded gradient itself; step 3 has gradient rows of zeros, so some groups send zeros,
    # which the official packing garbles: equal with faithful=True, different (there only) by default
    ours, theirs, o, t, g = _pair(torch.float32, momentum=0.0, weight_decay=0.0, faithful=True)
    _steps(ours, theirs, o, t, g, 3)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
    ours, theirs, o, t, g = _pair(torch.float32, momentum=0.0, weight_decay=0.0)
    _steps(ours, theirs, o, t, g, 3)
    assert not all(torch.equal(a, b) for a, b in zip(ours, theirs))


def test_zero_coefficients_the_official_packing_bug_and_the_corrected_default():
    # the wire format: 7-bit index + sign bit, one byte; a round trip keeps index and sign
    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 128, (50, 5), generator=g)
    val = torch.randn(50, 5, generator=g)
    for faithful in (False, True):
        b = pack(idx, val, faithful=faithful)
        assert b.dtype == torch.uint8 and b.shape == idx.shape
        i2, s2 = unpack(b)
        assert torch.equal(i2, idx) and torch.equal(s2, val.sign().to(torch.int8))
    assert torch.equal(pack(idx, val), pack(idx, val, faithful=True))  # the same bytes for nonzero values
    # a zero value: the official fast path sets bit 6, the top bit of the index
    i, s = unpack(pack(torch.tensor([3, 70]), torch.zeros(2), faithful=True))
    assert i.tolist() == [67, 6] and s.tolist() == [-1, 1]
    i, s = unpack(pack(torch.tensor([3, 70]), torch.zeros(2)))
    assert i.tolist() == [3, 70] and s.tolist() == [-1, -1]  # the code's general 1-bit path: index kept, -1
    # in a run: 1-D parameters whose first gradient is 0 send zeros in step 1
    ours, theirs, o, t, g = _pair(torch.float32, faithful=True)
    _steps(ours, theirs, o, t, g, 3, zero_first=True)
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs))  # faithful=True reproduces it
    ours, theirs, o, t, g = _pair(torch.float32)
    _steps(ours, theirs, o, t, g, 3, zero_first=True)
    differ = [not torch.equal(a, b) for a, b in zip(ours, theirs)]
    assert any(differ) and not any(d for d, a in zip(differ, ours) if a.dim() != 1)  # only where zeros were sent


def test_k_and_bytes_per_step():
    assert lowcomms_topk(0.01) == 5 and lowcomms_topk(0.01, value_bytes=2) == 2
    assert lowcomms_topk(1e-6) == 1 and lowcomms_topk(1.0) == 128
    for dtype, k in ((torch.float32, 5), (torch.bfloat16, 2)):
        ours, theirs, o, t, g = _pair(dtype)
        _steps(ours, theirs, o, t, g, 1)
        groups = sum(-(-a.numel() // 4096) * 4096 // 128 for a in ours)
        assert o.bytes_sent == groups * k == t.last_payload.numel()
        assert o.bytes_sent == lowcomms_wire_bytes([a.shape for a in ours], value_bytes=ours[0].element_size())
        assert o.bytes_received == 0  # one worker
    # about the compression ratio of the fp32 values: 1 byte for 5 of 128 coefficients of 4 bytes each
    assert lowcomms_wire_bytes([(4096, 4096)]) / (4 * 4096 * 4096) == pytest.approx(5 / 128 / 4)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_dct_domain_momentum_equals_the_spatial_one_where_the_designs_coincide(dtype, tol):
    # 64 columns: the flat 64 x 64 chunks are the paper design's 64 x 64 tiles. Without error feedback both keep
    # m = β m + η g, one in the DCT domain, one in space: m_dct = DCT(δ) up to round-off, step after step
    g = torch.Generator().manual_seed(2)
    shape = (128, 64)
    a = torch.nn.Parameter(torch.randn(shape, generator=g, dtype=dtype))
    b = torch.nn.Parameter(a.detach().clone())
    low = DeMoLowComms([a], lr=1e-2, momentum=0.9, feedback_strength=0.0, weight_decay=0.0)
    paper = DeMo([b], lr=1e-2, compression_decay=0.9, error_feedback=False)
    for _ in range(5):
        grad = torch.randn(shape, generator=g, dtype=dtype)
        a.grad, b.grad = grad.clone(), grad.clone()
        low.step()
        paper.step()
        m_dct = low.state[a]["momentum_buffer"]
        m_space = _encode(_to_tiles(paper.state[b]["delta"], (64, 64)).reshape(-1).contiguous())
        scale = float(m_space.abs().max())
        assert float((m_dct - m_space).abs().max()) <= tol * scale
    # k = a whole group and full feedback: everything is sent and the momentum is exactly empty after each step;
    # the paper design with k = a whole tile leaves round-off in δ
    a.grad = torch.randn(shape, generator=g, dtype=dtype)
    whole = DeMoLowComms([a], lr=1e-2, compression_ratio=1.0, weight_decay=0.0)
    whole.step()
    assert torch.count_nonzero(whole.state[a]["momentum_buffer"]) == 0
    b.grad = a.grad.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = DeMo([b], lr=1e-2, compression_topk=4096)
    full.step()
    residue = float(full.state[b]["delta"].abs().max()) / (1e-2 * float(b.grad.abs().max()))
    assert 0 < residue <= 1e-5  # the float32-built basis: forward and inverse are inverses to ~1e-7 only


def test_overlapped_first_step_moves_only_by_weight_decay_and_a_changed_layout_is_an_error():
    p = torch.nn.Parameter(torch.ones(64, 64))
    q = torch.nn.Parameter(torch.ones(8))
    o = DeMoLowComms([p, q], lr=0.1, weight_decay=0.5, overlapped=True)
    p.grad, q.grad = torch.randn(64, 64), torch.randn(8)
    o.step()
    assert torch.allclose(p, torch.full_like(p, 1 - 0.1 * 0.5))
    q.grad = None
    with pytest.raises(ValueError, match="changed since the previous step"):
        o.step()


# ---------------------------------------------------------------- 2 gloo workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, outdir: str) -> None:
    import torch.distributed as dist

    from companion.demo.lowcomms import _decode

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    out = {}
    for name, kw in (("plain", {}), ("nesterov", dict(nesterov=True, overlapped=True, feedback_strength=0.2))):
        torch.manual_seed(0)
        ours = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.Tanh(), torch.nn.Linear(100, 3))
        theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours.parameters()]
        o = DeMoLowComms(ours.parameters(), lr=1e-2, **kw)
        t = OfficialLowComms(theirs, lr=1e-2, collective=OfficialLowCommsCollective(dist.group.WORLD), **kw)
        gen = torch.Generator().manual_seed(1000 + rank)  # each worker its own data
        sent, received, grads = [], [], []
        for _ in range(4):
            x, y = torch.randn(16, 64, generator=gen), torch.randn(16, 3, generator=gen)
            o.zero_grad()
            torch.nn.functional.mse_loss(ours(x), y).backward()
            grads.append([p.grad.clone() for p in ours.parameters()])
            for p, q in zip(ours.parameters(), theirs):
                q.grad = p.grad.clone()
            o.step()
            t.step()
            sent.append(o.bytes_sent)
            received.append(o.bytes_received)
        # the weights without this worker's local look-ahead (nesterov): p + lr · sign(IDCT(m))
        base = [p.detach() + (1e-2 * _decode(o.state[p]["momentum_buffer"])[:p.numel()].view(p.shape).sign()
                              if kw else 0) for p in ours.parameters()]
        out[name] = {"ours": [p.detach() for p in ours.parameters()], "theirs": [p.detach() for p in theirs],
                     "base": base, "grads": grads, "sent": sent, "received": received}
    torch.save(out, os.path.join(outdir, f"{rank}.pt"))
    dist.destroy_process_group()


def test_two_gloo_workers_stay_identical_and_equal_the_official_code(tmp_path):
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 600
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a worker hung"
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    for name in ("plain", "nesterov"):
        a0, a1 = r0[name], r1[name]
        assert any(not torch.equal(a, b) for a, b in zip(a0["grads"][0], a1["grads"][0]))  # different data
        for r in (a0, a1):  # each worker equals the official code's all-gather run, bit for bit
            assert all(torch.equal(a, b) for a, b in zip(r["ours"], r["theirs"]))
        tx = lowcomms_wire_bytes([p.shape for p in a0["ours"]])
        assert a0["sent"] == [tx] * 4 and a0["received"] == [tx] * 4
    # without nesterov the replicas are bit-identical; with it each keeps its own look-ahead, and without the
    # look-ahead they agree to float round-off only (p − a + a is not p: the code undoes it by adding it back)
    assert all(torch.equal(a, b) for a, b in zip(r0["plain"]["ours"], r1["plain"]["ours"]))
    assert any(not torch.equal(a, b) for a, b in zip(r0["nesterov"]["ours"], r1["nesterov"]["ours"]))
    assert max(float((a - b).abs().max()) for a, b in zip(r0["nesterov"]["base"], r1["nesterov"]["base"])) < 1e-6


def test_parameter_groups_with_their_own_lr_equal_one_optimizer_per_group():
    # the code allows one group; ours honours per-group lr and weight decay. With one worker nothing couples the
    # parameters, so two groups in one optimizer step as two optimizers would, bit for bit (the momentum update
    # goes member by member when the lrs differ, as one block call when they agree)
    g = torch.Generator().manual_seed(3)
    init = [torch.randn(s, generator=g) for s in SHAPES]
    both = [torch.nn.Parameter(t.clone()) for t in init]
    apart = [torch.nn.Parameter(t.clone()) for t in init]
    one = DeMoLowComms([{"params": both[:3], "lr": 1e-2}, {"params": both[3:], "lr": 3e-3, "weight_decay": 0.1}])
    two = [DeMoLowComms(apart[:3], lr=1e-2), DeMoLowComms(apart[3:], lr=3e-3, weight_decay=0.1)]
    for _ in range(4):
        for a, b in zip(both, apart):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        one.step()
        for o in two:
            o.step()
    for a, b in zip(both, apart):
        assert torch.equal(a, b)
    assert all(not torch.equal(a.detach(), t) for a, t in zip(both, init))


@pytest.mark.parametrize("nesterov,overlapped", [(False, False), (True, False), (True, True)])
def test_loading_a_state_into_a_stepped_optimizer_equals_loading_it_into_a_fresh_one(nesterov, overlapped):
    # the step reads the momentum through one buffer per dtype; a load must replace what that buffer holds
    g = torch.Generator().manual_seed(5)
    init = [torch.randn(s, generator=g) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(5)]

    def run(ps, opt, steps):
        for gs in steps:
            for p, x in zip(ps, gs):
                p.grad = x.clone()
            opt.step()

    same = [torch.nn.Parameter(t.clone()) for t in init]
    opt = DeMoLowComms(same, lr=1e-2, nesterov=nesterov, overlapped=overlapped)
    run(same, opt, grads[:2])
    saved, weights = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in same]
    run(same, opt, grads[2:3])  # moves on, then goes back to the saved point
    opt.load_state_dict(saved)
    with torch.no_grad():
        for p, w in zip(same, weights):
            p.copy_(w)
    fresh = [torch.nn.Parameter(w.clone()) for w in weights]
    fresh_opt = DeMoLowComms(fresh, lr=1e-2, nesterov=nesterov, overlapped=overlapped)
    fresh_opt.load_state_dict(copy.deepcopy(saved))
    run(same, opt, grads[3:])
    run(fresh, fresh_opt, grads[3:])
    for a, b in zip(same, fresh):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[a]["momentum_buffer"], fresh_opt.state[b]["momentum_buffer"])
    assert not torch.equal(opt.state[same[0]]["momentum_buffer"], saved["state"][0]["momentum_buffer"])
