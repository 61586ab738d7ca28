"""The GPU suite: each chapter's core path on CUDA, checked against the same computation on the CPU.

Run it on a machine with a GPU: ``pytest -m gpu -q tests/test_gpu.py`` (seconds per test on an H200; the model
tests load the book's SmolLM2 from the user cache, as the ``model`` tests do). Without CUDA every test is
skipped. Float32 matmuls are run at full precision (no TF32), so CPU and CUDA agree to float32 rounding;
where a discrete choice (a rounding, a top-k, a ReLU gate) could flip on a near-tie, the test says what it
tolerates.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

DEVICE = torch.device("cuda")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available())")]


@pytest.fixture(autouse=True, scope="module")
def full_fp32_precision():
    """CPU and GPU must compute the same float32 function: no TF32 matmuls while these tests run."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def on_device(tensors) -> bool:
    return all(t.device.type == DEVICE.type for t in tensors)


# ------------------------------------------------------------------------------------------------ lab: model
@pytest.fixture(scope="module")
def gpu_smollm():
    from companion.lab import load_model

    return load_model(device=DEVICE)


@pytest.mark.model
def test_model_loads_on_cuda_and_its_logits_match_the_cpu(smollm, gpu_smollm):
    cpu_model, tokenizer = smollm
    model, _ = gpu_smollm
    assert on_device(model.parameters()) and on_device(model.buffers()) and not model.training
    assert next(model.parameters()).dtype == torch.float32
    ids = tokenizer("def mean(values):\n    return sum(values) / len(values)\n", return_tensors="pt").input_ids
    with torch.no_grad():
        got = model(ids.to(DEVICE)).logits
        want = cpu_model(ids).logits
    assert got.device.type == DEVICE.type and torch.isfinite(got).all()
    torch.testing.assert_close(got.cpu(), want, atol=2e-3, rtol=1e-3)
    assert torch.equal(got.argmax(-1).cpu(), want.argmax(-1))


# ------------------------------------------------------------------------------------------------ HQQ
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("optimize", [False, True], ids=["rtn", "hqq"])
def test_hqq_quantize_and_dequantize_on_cuda_equal_the_cpu(optimize, axis):
    from companion.hqq import dequantize, quantize

    g = torch.Generator().manual_seed(0)
    W = torch.randn(256, 512, generator=g) / torch.randn(256, 512, generator=g).abs().clamp_min(0.3) * 0.02
    kw = dict(nbits=4, group_size=64, axis=axis, optimize=optimize)
    q_cpu, m_cpu = quantize(W, **kw)
    q_gpu, m_gpu = quantize(W.to(DEVICE), **kw)
    assert on_device([q_gpu, m_gpu.scale, m_gpu.zero]) and q_gpu.dtype == torch.uint8
    torch.testing.assert_close(m_gpu.scale.cpu(), m_cpu.scale, rtol=1e-6, atol=0)  # from min / max only
    torch.testing.assert_close(m_gpu.zero.cpu(), m_cpu.zero, rtol=1e-4, atol=1e-4)  # solver means: summation order
    # a code may differ only where W·sc + z sits on a rounding boundary (float32 rounding): by one, and rarely
    diff = q_gpu.cpu().int() - q_cpu.int()
    assert diff.abs().max() <= 1 and (diff != 0).float().mean() <= 1e-4
    same = (diff == 0).reshape(-1)
    W_hat_gpu, W_hat_cpu = dequantize(q_gpu, m_gpu), dequantize(q_cpu, m_cpu)
    assert W_hat_gpu.dtype == torch.float32 and W_hat_gpu.shape == W.shape and on_device([W_hat_gpu])
    torch.testing.assert_close(W_hat_gpu.cpu().reshape(-1)[same], W_hat_cpu.reshape(-1)[same], rtol=1e-5, atol=1e-6)
    err_gpu, err_cpu = (W_hat_gpu.cpu() - W).abs().mean(), (W_hat_cpu - W).abs().mean()
    assert err_gpu == pytest.approx(err_cpu.item(), rel=1e-4)
    if optimize:  # the solver took the same path (its early stop may move by an iteration on an exact tie)
        e_gpu, e_cpu = m_gpu.trace.errors, m_cpu.trace.errors
        n = min(len(e_gpu), len(e_cpu))
        assert abs(len(e_gpu) - len(e_cpu)) <= 2 and abs(m_gpu.trace.best_iter - m_cpu.trace.best_iter) <= 2
        assert e_gpu[:n] == pytest.approx(e_cpu[:n], rel=1e-4)
        assert err_cpu < (dequantize(*quantize(W, **{**kw, "optimize": False})) - W).abs().mean()  # beats RTN
    # bit packing on the GPU: the same dequantized weights
    packed, m_packed = quantize(W.to(DEVICE), **kw, bitpack=True)
    assert m_packed.packed and on_device([packed])
    assert torch.equal(dequantize(packed, m_packed), W_hat_gpu)


def test_hqq_linear_forward_on_cuda_in_fp32_and_fp16():
    from companion.hqq import HQQLinear

    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 256)
    x = torch.randn(8, 512)
    q_cpu = HQQLinear.from_linear(lin, nbits=4, group_size=64)
    want = q_cpu(x)
    # the same packed layer moved to the GPU: fp32 forward equals the CPU's
    q = copy.deepcopy(q_cpu).to(DEVICE)
    assert on_device(q.buffers()) and on_device(q.parameters())
    assert q.storage_bytes() == q_cpu.storage_bytes()
    got = q(x.to(DEVICE))
    assert got.dtype == torch.float32 and on_device([got])
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(q.weight_dequantized().cpu(), q_cpu.weight_dequantized(), rtol=0, atol=1e-7)
    # fp16: the module in half precision (bias and meta-data fp16, codes unchanged), fp16 activations
    q16 = copy.deepcopy(q_cpu).to(DEVICE).half()
    assert q16.W_q.dtype == q_cpu.W_q.dtype and q16.bias.dtype == torch.float16
    got16 = q16(x.to(DEVICE).half())
    assert got16.dtype == torch.float16 and torch.isfinite(got16).all()
    torch.testing.assert_close(got16.float().cpu(), want, rtol=1e-2, atol=1e-2)
    # quantized on the GPU from a CUDA nn.Linear: the same layer up to rounding-boundary codes
    q_built = HQQLinear.from_linear(copy.deepcopy(lin).to(DEVICE), nbits=4, group_size=64)
    assert on_device(q_built.buffers()) and q_built.bits_per_weight == q_cpu.bits_per_weight
    step = (q_cpu.weight_dequantized() - lin.weight).abs().max().item() * 2  # at most one quantization step
    assert (q_built.weight_dequantized().cpu() - q_cpu.weight_dequantized()).abs().max() <= step
    torch.testing.assert_close(q_built(x.to(DEVICE)), x.to(DEVICE) @ q_built.weight_dequantized().T + q_built.bias)


@pytest.mark.model
def test_hqq_perplexity_of_the_quantized_model_on_cuda_matches_the_cpu(smollm, gpu_smollm):
    from companion.hqq.experiments import perplexity_table
    from companion.lab import corpus_tokens

    ids = corpus_tokens(smollm[1], "validation", max_tokens=256)
    # the attention projections only (quantizing the MLPs too would only make the CPU side slower)
    configs = [{"label": "RTN 4-bit g64, attention", "nbits": 4, "group_size": 64, "optimize": False, "axis": 0,
                "skip": ("lm_head", "mlp")}]
    want = perplexity_table(smollm[0], ids, configs, context=128)
    got = perplexity_table(gpu_smollm[0], ids, configs, context=128)
    assert on_device(gpu_smollm[0].parameters())  # the original model is left on the GPU, unquantized
    for g, w in zip(got, want):
        assert g["label"] == w["label"] and g["bits_per_weight"] == w["bits_per_weight"]
        assert g["perplexity"] == pytest.approx(w["perplexity"], rel=1e-3)
    assert want[1]["perplexity"] > want[0]["perplexity"]


# ------------------------------------------------------------------------------------------------ PyramidKV
@pytest.fixture(scope="module")
def prompt(smollm):
    from companion.lab import corpus_tokens

    return corpus_tokens(smollm[1], "validation", max_tokens=300)[None]


@pytest.mark.model
def test_pyramidkv_prefill_compress_and_decode_on_cuda_match_the_cpu(smollm, gpu_smollm, prompt):
    from companion.pyramidkv import compress, greedy_continue, keep_positions, layer_budgets, prefill, window_scores

    cpu_model, gpu_model = smollm[0], gpu_smollm[0]
    pre_c, pre_g = prefill(cpu_model, prompt), prefill(gpu_model, prompt)  # prefill moves the ids to the model
    assert pre_g.prompt_len == pre_c.prompt_len == 300 and on_device(pre_g.qk[0])
    torch.testing.assert_close(pre_g.last_logits.cpu(), pre_c.last_logits, atol=2e-3, rtol=1e-3)
    for L_g, L_c in zip(pre_g.cache.layers, pre_c.cache.layers):
        assert on_device([L_g.keys, L_g.values])
        torch.testing.assert_close(L_g.keys.cpu(), L_c.keys, atol=2e-3, rtol=1e-3)
        torch.testing.assert_close(L_g.values.cpu(), L_c.values, atol=2e-3, rtol=1e-3)

    # the budgets do not depend on the device; the kept tokens only through near-ties of the scores
    for method in ("streaming", "snapkv", "pyramidkv", "h2o"):
        cache_g, kept_g = compress(pre_g, method, capacity=64)
        cache_c, kept_c = compress(pre_c, method, capacity=64)
        assert kept_g == kept_c and [L.keys.shape for L in cache_g.layers] == [L.keys.shape for L in cache_c.layers]
        assert on_device([L.keys for L in cache_g.layers])
    budgets = layer_budgets(64, window=8, num_layers=len(pre_c.qk), prompt_len=300)
    for (Q_g, K_g), (Q_c, K_c), budget in zip(pre_g.qk, pre_c.qk, budgets):
        kw = dict(window=8, pooling="maxpool", kernel=7, granularity="kv")
        s_g, s_c = window_scores(Q_g, K_g, **kw), window_scores(Q_c, K_c, **kw)
        torch.testing.assert_close(s_g.cpu(), s_c, atol=1e-4, rtol=1e-3)
        kept_g = keep_positions(s_g, budget=budget).cpu()
        kept_c = keep_positions(s_c, budget=budget)
        for head in range(s_c.shape[1]):
            cut = s_c[0, head].sort(descending=True).values[budget - 1]  # the CPU's last kept score
            moved = set(kept_g[0, head].tolist()) ^ set(kept_c[0, head].tolist())
            # a token kept on one device only must be tied (to float32 rounding) with the cut-off
            assert all(abs(s_c[0, head, j] - cut) <= 1e-4 + 1e-3 * cut for j in moved), (head, sorted(moved))

    # greedy decoding from the full and the compressed caches: the same tokens
    for method in ("full", "snapkv", "pyramidkv"):
        out_g = greedy_continue(gpu_model, pre_g, compress(pre_g, method, capacity=64)[0], max_new_tokens=4)
        out_c = greedy_continue(cpu_model, pre_c, compress(pre_c, method, capacity=64)[0], max_new_tokens=4)
        assert out_g == out_c, method
    # and a question fed after a compressed context (query-agnostic), one token at a time
    ctx, question = prompt[:, :250], prompt[:, 250:]
    pre_g, pre_c = prefill(gpu_model, ctx), prefill(cpu_model, ctx)
    out_g = greedy_continue(gpu_model, pre_g, compress(pre_g, "pyramidkv", capacity=48)[0], max_new_tokens=4,
                            suffix=question)
    out_c = greedy_continue(cpu_model, pre_c, compress(pre_c, "pyramidkv", capacity=48)[0], max_new_tokens=4,
                            suffix=question)
    assert out_g == out_c


# ------------------------------------------------------------------------------------------------ DeMo
def _demo_params(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in [(128, 192), (192,), (50, 29), (4, 64, 3, 3)]]


@pytest.mark.parametrize("transform, chunk, topk", [("dct", 16, 8), ("dct", 64, 32), ("identity", 16, 8)])
def test_demo_steps_on_cuda_equal_the_cpu(transform, chunk, topk):
    from companion.demo import DeMo

    def run(device):
        ps = [torch.nn.Parameter(t.to(device)) for t in _demo_params(0)]
        opt = DeMo(ps, lr=1e-2, compression_topk=topk, compression_chunk=chunk, weight_decay=0.1,
                   transform=transform)
        assert opt.world_size == 1  # one process, no process group
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # k is clipped on the small tensors
            for step in range(3):
                for p, g in zip(ps, _demo_params(10 + step)):
                    p.grad = g.to(device)
                opt.step()
        return ps, opt

    ps_g, opt_g = run(DEVICE)
    ps_c, opt_c = run("cpu")
    assert opt_g.bytes_sent == opt_c.bytes_sent > 0 and opt_g.total_bytes_sent == opt_c.total_bytes_sent
    for p_g, p_c in zip(ps_g, ps_c):
        assert on_device([p_g, opt_g.state[p_g]["delta"]]) and torch.isfinite(p_g).all()
        torch.testing.assert_close(opt_g.state[p_g]["delta"].cpu(), opt_c.state[p_c]["delta"], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(p_g.detach().cpu(), p_c.detach(), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ ReMoE
@pytest.mark.parametrize("router", ["relu", "topk"])
def test_remoe_moe_layer_forward_and_backward_on_cuda_match_the_cpu(router):
    from companion.remoe import MoE

    torch.manual_seed(0)
    layer = MoE(64, 128, num_experts=8, k=2, router=router)
    gpu = copy.deepcopy(layer).to(DEVICE)
    x = torch.randn(4, 16, 64)
    y_c, r_c = layer(x)
    y_g, r_g = gpu(x.to(DEVICE))
    assert on_device([y_g, r_g.gates, r_g.mask]) and torch.equal(r_g.mask.cpu(), r_c.mask)
    torch.testing.assert_close(y_g.cpu(), y_c, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r_g.gates.cpu(), r_c.gates, rtol=1e-4, atol=1e-6)
    target = torch.randn(4, 16, 64)
    loss_c = (y_c * target).sum() + (r_c.aux_loss if r_c.aux_loss is not None else 0)
    loss_g = (y_g * target.to(DEVICE)).sum() + (r_g.aux_loss if r_g.aux_loss is not None else 0)
    loss_c.backward()
    loss_g.backward()
    for (name, p_g), p_c in zip(gpu.named_parameters(), layer.parameters()):
        assert p_g.grad is not None and on_device([p_g.grad]) and p_c.grad.abs().max() > 0, name
        torch.testing.assert_close(p_g.grad.cpu(), p_c.grad, rtol=1e-3, atol=1e-5 * p_c.grad.abs().max().item())


@pytest.mark.parametrize("ffn", ["dense", "topk", "remoe"])
def test_remoe_training_steps_on_cuda_match_the_cpu(ffn):
    from companion.remoe import LMConfig, Trainer, evaluate

    config = LMConfig(ffn=ffn, vocab_size=300, d_model=64, n_layers=2, n_heads=2, d_ff=128, num_experts=8, k=1)
    ids = torch.randint(0, 300, (4000,), generator=torch.Generator().manual_seed(0))
    kw = dict(train_ids=ids, steps=3, batch_size=4, seq_len=32, lr=2e-3, seed=0)
    t_g, t_c = Trainer(config, device=DEVICE, **kw), Trainer(config, device="cpu", **kw)
    assert t_g.device.type == DEVICE.type and on_device(t_g.model.parameters())
    first_g, first_c = t_g.step(), t_c.step()  # same initial weights and batch: the same loss
    assert first_g["loss"] == pytest.approx(first_c["loss"], rel=1e-5)
    if ffn != "dense":
        assert first_g["sparsity"] == pytest.approx(first_c["sparsity"], abs=1e-3)
        assert on_device([r.gates for r in first_g["routings"]])
    for _ in range(2):
        out_g, out_c = t_g.step(), t_c.step()
        assert math.isfinite(out_g["loss"]) and out_g["loss"] == pytest.approx(out_c["loss"], rel=1e-3)
    assert evaluate(t_g.model, ids, seq_len=32, max_windows=4) == pytest.approx(
        evaluate(t_c.model, ids, seq_len=32, max_windows=4), rel=1e-3)


# ------------------------------------------------------------------------------------------------ ReBind
@pytest.fixture(scope="module")
def molecules():
    from companion.rebind import molecule_from_smiles

    return [molecule_from_smiles(s) for s in ["CCO", "CC(=O)N", "c1ccccc1O"]]


@pytest.mark.parametrize("variant", ["bond", "rebind", "gtmgc"])
def test_rebind_model_forward_and_loss_on_cuda_match_the_cpu(variant, molecules):
    from companion.rebind import ConformerModel, collate, distance_loss, pairwise_distances

    torch.manual_seed(0)
    model = ConformerModel(variant=variant)
    gpu = copy.deepcopy(model).to(DEVICE)
    b_c, b_g = collate(molecules), collate(molecules, device=DEVICE)
    assert on_device([b_g.features, b_g.coords, b_g.mask, b_g.pe])
    out_c, out_g = model(b_c), gpu(b_g)
    assert on_device([out_g.coords, out_g.enc_coords, out_g.relations]) and torch.isfinite(out_g.coords).all()
    torch.testing.assert_close(out_g.enc_coords.cpu(), out_c.enc_coords, rtol=1e-4, atol=1e-5)
    # the decoder's relations (bonds, force edges: 0/±1; GTMGC: row-subtracted distances, continuous) from the
    # CPU's intermediate distances, then from each device's own: the same (no near-tie flipped a force edge)
    dist = pairwise_distances(out_c.enc_coords)
    rel = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gpu.decoder_relations(b_g, dist.to(DEVICE)).cpu(), model.decoder_relations(b_c, dist),
                               **rel)
    torch.testing.assert_close(out_g.relations.cpu(), out_c.relations, **rel)
    torch.testing.assert_close(out_g.coords.cpu(), out_c.coords, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_g.gate.cpu(), out_c.gate, rtol=1e-4, atol=1e-6)
    loss_c, loss_g = distance_loss(out_c, b_c), distance_loss(out_g, b_g)
    assert torch.isfinite(loss_g) and loss_g.item() == pytest.approx(loss_c.item(), rel=1e-4)
    loss_c.backward()
    loss_g.backward()
    for (name, p_g), p_c in zip(gpu.named_parameters(), model.parameters()):
        if p_c.grad is not None:
            torch.testing.assert_close(p_g.grad.cpu(), p_c.grad, rtol=1e-3, atol=1e-6, msg=name)


def test_rebind_training_on_cuda_keeps_the_model_there(molecules):
    from companion.rebind import evaluate, train

    hist = train("rebind", molecules, molecules, epochs=2, batch_size=2, device=DEVICE, show_progress=False)
    assert on_device(hist.model.parameters()) and len(hist.records) == 2
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["val_d_mae"]) for r in hist.records)
    res = evaluate(hist.model, molecules)  # predictions come back to the CPU for the metrics
    assert res["failed"] == 0 and all(math.isfinite(res[k]) for k in ("d_mae", "d_rmse", "c_rmsd"))
