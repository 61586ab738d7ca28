"""HQQLinear in its compute dtype, stored-bit accounting, hqq's 8-bit meta recipe and autograd baseline."""

import copy

import pytest
import torch
import torch.nn.functional as F

from companion import hqq as H
from companion.hqq import packing
from companion.hqq.experiments import heavy_tailed
from companion.hqq.quantize import _grouped, _init_scale_zero

OFFSETS = (0.0, 1.0, 10.0, 100.0, 1000.0)


def _linear(offset: float, dtype: torch.dtype, *, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    lin = torch.nn.Linear(128, 64)
    with torch.no_grad():
        lin.weight.copy_(offset + 0.01 * torch.randn(64, 128))
        lin.bias.copy_(offset + 0.01 * torch.randn(64))
    return lin.to(dtype)


# ------------------------------------------------------------------------------------------ compute dtype
@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("nbits,group_size,axis", [(8, 64, 1), (4, 64, 0), (3, 32, 1)])
def test_fp32_layer_equals_quantize_dequantize_for_any_offset(offset, nbits, group_size, axis):
    # before: scale and zero were stored in fp16, so the 8-bit g64 layer of 1 + 0.01·randn was 5x less precise
    # than quantize/dequantize, and at large offsets the zero overflowed to inf
    lin = _linear(offset, torch.float32)
    q = H.HQQLinear.from_linear(lin, nbits=nbits, group_size=group_size, axis=axis)
    W_q, meta = H.quantize(lin.weight.detach(), nbits=nbits, group_size=group_size, axis=axis)
    want = H.dequantize(W_q, meta)
    got = q.weight_dequantized()
    assert q.compute_dtype == torch.float32 and q.bias.dtype == torch.float32
    assert torch.isfinite(got).all() and torch.equal(got, want)
    x = torch.randn(3, 128)
    torch.testing.assert_close(q(x), F.linear(x, want, lin.bias), rtol=0, atol=0)


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layer_is_within_the_rounding_of_its_meta_data(offset, dtype):
    # the layer's meta-data in bf16/fp16 costs at most the rounding of z and s to that dtype (and of the result):
    # |(q - z~)s~ - (q - z)s| <= u (|q - z| + |z|(1 + u)) s,  u = eps / 2
    lin = _linear(offset, dtype)
    W = lin.weight.detach()
    W_q, meta = H.quantize(W, nbits=8, group_size=64, axis=1)  # in fp32 from the dtype's weights
    if dtype == torch.float16 and meta.zero.abs().max() > torch.finfo(torch.float16).max:
        with pytest.raises(ValueError, match="zero does not fit in compute_dtype=torch.float16"):
            H.HQQLinear.from_linear(lin, nbits=8, group_size=64, axis=1)
        return
    q = H.HQQLinear.from_linear(lin, nbits=8, group_size=64, axis=1)
    assert q.compute_dtype == dtype and q.scale.dtype == dtype and q.zero.dtype == dtype and q.bias.dtype == dtype
    got = q.weight_dequantized(torch.float32)
    assert torch.isfinite(got).all()
    want = H.dequantize(W_q, meta, dtype=torch.float32)
    u = torch.finfo(dtype).eps / 2
    codes = W_q.float()
    s, z = meta.scale, meta.zero
    bound = (u * ((codes - z).abs() + z.abs() * (1 + u)) * s).reshape(W.shape) + u * want.abs() + 1e-30
    assert ((got - want).abs() <= bound * 1.01).all()
    x = torch.randn(3, 128).to(dtype)
    out = q(x)  # bias in the compute dtype: no dtype clash
    assert out.dtype == dtype and torch.isfinite(out).all()


def test_fp16_overflow_is_refused_not_stored_as_inf():
    lin = _linear(1000.0, torch.float32)  # zero-points of about -1e3 * 255 / 0.05 ~ -5e6
    with pytest.raises(ValueError, match="zero does not fit in compute_dtype=torch.float16.*use compute_dtype"):
        H.HQQLinear.from_linear(lin, nbits=8, group_size=64, axis=1, compute_dtype=torch.float16)
    q = H.HQQLinear.from_linear(lin, nbits=8, group_size=64, axis=1)  # fp32: fine
    assert torch.isfinite(q.zero).all()


def test_bias_follows_the_compute_dtype():
    lin = _linear(0.0, torch.float32)
    q = H.HQQLinear.from_linear(lin, nbits=4, group_size=64, compute_dtype=torch.bfloat16)
    assert q.bias.dtype == torch.bfloat16 and q.compute_dtype == torch.bfloat16
    x = torch.randn(2, 128, dtype=torch.bfloat16)
    want = F.linear(x, q.weight_dequantized(), lin.bias.detach().to(torch.bfloat16))
    torch.testing.assert_close(q(x), want, rtol=0, atol=0)
    with pytest.raises(TypeError, match="x must have the layer's compute dtype torch.bfloat16, got torch.float32"):
        q(x.float())
    q.float()  # moving the module moves the compute dtype with its buffers
    assert q.compute_dtype == torch.float32 and q(x.float()).dtype == torch.float32


def test_quantize_model_is_all_or_nothing_when_a_later_layer_overflows():
    model = torch.nn.Sequential(_linear(0.0, torch.float32), torch.nn.ReLU(), _linear(1000.0, torch.float32))
    model[2] = torch.nn.Linear(128, 64)
    with torch.no_grad():
        model[2].weight.copy_(1000 + 0.01 * torch.randn(64, 128))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="layer '2': zero does not fit"):
        H.quantize_model(model, nbits=8, group_size=64, axis=1, compute_dtype=torch.float16, progress=False)
    assert all(type(m) is torch.nn.Linear for m in (model[0], model[2]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ------------------------------------------------------------------------------------------ stored bits
def _byte_count(q: H.HQQLinear) -> int:
    """Bytes of the tensors the layer holds for its weight, counted tensor by tensor."""
    names = ["W_q"] + [n for n in ("scale", "zero", "scale_q", "scale_scale", "scale_zero", "zero_q", "zero_scale",
                                   "zero_zero") if hasattr(q, n)]
    return sum(getattr(q, n).numel() * getattr(q, n).element_size() for n in names)


@pytest.mark.parametrize("nbits", [8, 4, 3, 2, 1])
@pytest.mark.parametrize("group_size,axis", [(64, 0), (16, 1), (32, 0)])
@pytest.mark.parametrize("meta_q", [{}, {"quant_zero": True}, {"quant_scale": True, "quant_zero": True}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_bits_per_weight_equal_a_byte_count_of_the_stored_tensors(nbits, group_size, axis, meta_q, dtype):
    W = heavy_tailed((256, 128), seed=1)
    lin = torch.nn.Linear(128, 256, bias=False)
    lin.weight.data = W
    q = H.HQQLinear.from_linear(lin, nbits=nbits, group_size=group_size, axis=axis, compute_dtype=dtype, **meta_q)
    W_q, meta = H.quantize(W, nbits=nbits, group_size=group_size, axis=axis, bitpack=True, **meta_q)
    n_bytes = _byte_count(q)
    assert q.weight_bytes() == n_bytes == q.storage_bytes()
    assert q.bits_per_weight == 8 * n_bytes / W.numel() == meta.bits_per_weight(dtype)
    # the codes: whole storage words, padding included
    storage, k = packing.LAYOUT[nbits]
    rows = group_size if axis == 0 else W.numel() // group_size
    assert q.W_q.dtype == storage and q.W_q.shape[0] == -(-rows // k)
    assert 8 * q.W_q.numel() * q.W_q.element_size() == packing.packed_bits(rows, W.numel() // rows, nbits)


def test_quantize_model_report_counts_the_stored_bytes():
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    report = H.quantize_model(model, nbits=3, group_size=64, axis=0, progress=False)
    layers = (model[0], model[2])
    assert report.bytes_after == sum(_byte_count(m) + m.bias.numel() * 4 for m in layers)
    # 3 bits in groups of 64 down the columns: 7 int32 words per 64 codes (3.5 bits) + 2 fp32 per group (1 bit)
    assert report.bits_per_weight == 8 * sum(_byte_count(m) for m in layers) / (2 * 64 * 128) == 4.5


# ------------------------------------------------------------------------------------------ hqq's recipes
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("nbits,group_size", [(2, 16), (4, 64), (3, 32)])
def test_8bit_meta_recipe_equals_hqq_base_quantize_config(axis, nbits, group_size):
    hq = pytest.importorskip("hqq.core.quantize", reason="optional peer: DISABLE_CUDA=1 pip install hqq==0.2.8.post1")
    cfg = hq.BaseQuantizeConfig(nbits=nbits, group_size=group_size, quant_zero=True, quant_scale=True, axis=axis)
    W = heavy_tailed((256, 512), seed=2, scale=0.05)
    _, ref = hq.Quantizer.quantize(W, nbits=nbits, group_size=group_size, axis=axis, device="cpu", bitpack=False)
    _, meta = H.quantize(W, nbits=nbits, group_size=group_size, axis=axis, faithful=True, quant_scale=True,
                         quant_zero=True)
    for name in ("scale", "zero"):  # as hqq's HQQLinear.quantize applies the config to its meta-data
        ref_q, ref_m = hq.Quantizer.quantize(ref[name], device="cpu", view_as_float=False,
                                             **cfg[f"{name}_quant_params"])
        codes, m = meta.meta_q[name]
        assert torch.equal(codes, ref_q) and torch.equal(m.scale, ref_m["scale"]) and torch.equal(m.zero, ref_m["zero"])
        ref_m["compute_dtype"] = torch.float32
        assert torch.equal(getattr(meta, name), hq.Quantizer.dequantize(ref_q, ref_m))


def test_8bit_meta_recipe_refuses_group_counts_that_128_does_not_divide():
    # hqq asserts; before, our variant fell back to smaller meta groups and silently stored more meta-data
    with pytest.raises(ValueError, match=r"quant_scale=True .* multiple of 128; got 4096 / 64 = 64"):
        H.quantize(torch.randn(64, 64), nbits=4, group_size=64, quant_scale=True)
    _, meta = H.quantize(torch.randn(64, 64), nbits=4, group_size=64, quant_zero=True)  # the zero needs no grouping
    assert meta.meta_q["zero"][0].shape == (1, 64)


@pytest.mark.parametrize("axis", [0, 1])
def test_autograd_baseline_equals_hqq_optimize_weights_autograd(axis):
    opt = pytest.importorskip("hqq.core.optimize", reason="optional peer: DISABLE_CUDA=1 pip install hqq==0.2.8.post1")
    W = heavy_tailed((64, 128), seed=3, scale=0.05)
    scale, zero, history = H.optimize_weights_autograd(W, nbits=3, group_size=32, axis=axis, iters=40)
    Wg = _grouped(W, 32, axis)
    s0, z0 = _init_scale_zero(Wg, 3, axis)
    params = {"lr": 2e-3, "iters": 40, "lr_schedule": False, "update_Wq": False, "use_fake_data": False}
    _, ref_scale, ref_zero = opt.optimize_weights_autograd(Wg, s0, z0, [0, 7], axis=axis, opt_params=params,
                                                           compile=False)
    assert torch.equal(scale, ref_scale) and torch.equal(zero, ref_zero)
    assert history[-1] < history[0]
    # hqq's defaults are the port's defaults
    import inspect
    defaults = inspect.signature(opt.optimize_weights_autograd).parameters["opt_params"].default
    sig = inspect.signature(H.optimize_weights_autograd).parameters
    assert (sig["lr"].default, sig["iters"].default) == (defaults["lr"], defaults["iters"])


@pytest.mark.parametrize("config", [{"nbits": 3, "group_size": 64}, {"nbits": 2, "group_size": 16, "quant_zero": True,
                                                                     "quant_scale": True}])
def test_stored_bits_of_a_model_equal_what_quantize_model_stores(config):
    from companion.hqq.experiments import stored_bits_per_weight

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256))
    bits = stored_bits_per_weight(model, dict(config, label="x", optimize=True))
    assert all(type(m) is torch.nn.Linear for m in (model[0], model[2]))  # the model is left as it was
    for dtype in (torch.float32, torch.float16):
        report = H.quantize_model(copy.deepcopy(model), progress=False, compute_dtype=dtype, **config)
        assert bits[dtype] == report.bits_per_weight


def test_perplexity_table_quantizes_in_place_and_puts_the_float_layers_back():
    from transformers import LlamaConfig, LlamaForCausalLM

    from companion.hqq.experiments import perplexity_table
    from companion.lab import perplexity

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    ids = torch.randint(0, 64, (256,))
    config = {"label": "HQQ 4-bit g32", "nbits": 4, "group_size": 32, "axis": 0}
    rows = perplexity_table(model, ids, [config], context=64)
    # the same model object, its own float layers back in place, every weight unchanged
    assert {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)} == linears
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # and the quantized perplexity is what a separately quantized copy gives
    twin = copy.deepcopy(model)
    H.quantize_model(twin, progress=False, nbits=4, group_size=32, axis=0)
    assert rows[1]["perplexity"] == pytest.approx(perplexity(twin, ids, context=64), rel=1e-6)
    assert rows[0]["perplexity"] == pytest.approx(perplexity(model, ids, context=64), rel=1e-6)
