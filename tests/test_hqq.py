import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion import hqq as H
from companion.hqq import packing

from companion.hqq.experiments import heavy_tailed
from companion.hqq.quantize import _init_scale_zero



# ------------------------------------------------------------------------------------------ the equations
def test_shrink_lp_closed_form_and_threshold():
    beta, p = 10.0, 0.7
    t = H.shrink_threshold(beta, p)
    assert t == pytest.approx(10 ** (-1 / 1.3))
    x = torch.tensor([-1.0, -0.2, -t * 0.99, 0.0, t * 0.99, 0.2, 1.0])
    out = H.shrink_lp(x, beta, p)
    expected = torch.sign(x) * torch.relu(x.abs() - x.abs().pow(p - 1) / beta)
    torch.testing.assert_close(out, torch.nan_to_num(expected, nan=0.0))
    assert torch.all(out[2:5] == 0) and torch.all(out[[0, 1, 5, 6]] != 0)
    # p = 1 is soft thresholding at 1/beta
    torch.testing.assert_close(H.shrink_lp(torch.tensor([0.05, 0.3, -0.3]), 10.0, 1.0), torch.tensor([0.0, 0.2, -0.2]))


def test_round_to_nearest_by_hand():
    # one group of 4 values with 2 bits: range 3, sc = 3/3 = 1, z = 0 -> exact
    W = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    W_q, meta = H.quantize(W, nbits=2, group_size=4, axis=0, optimize=False)
    assert W_q.flatten().tolist() == [0, 1, 2, 3]
    torch.testing.assert_close(H.dequantize(W_q, meta), W)
    # 1 bit on [0, 0.4, 0.6, 1]: sc = 1, codes round(w) = 0, 0, 1, 1, reconstruction 0, 0, 1, 1
    W = torch.tensor([0.0, 0.4, 0.6, 1.0])
    W_q, meta = H.quantize(W, nbits=1, group_size=4, axis=1, optimize=False)
    assert H.dequantize(W_q, meta).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_zero_update_is_the_least_squares_solution():
    W = heavy_tailed((64, 32), seed=1)
    Wg = W.reshape(64, -1)
    scale, zero = _init_scale_zero(Wg, 4, 0)
    new_zero, _ = H.optimize_zero(Wg, scale, zero, nbits=4, axis=0, iters=1, early_stop=False, faithful=True)
    W_q = torch.round(Wg * scale + zero).clamp(0, 15)
    W_e = H.shrink_lp(Wg - (W_q - zero) / scale, 10.0, 0.7)
    # z minimises sum_j (W_q - z - (W - W_e)·sc)^2: the derivative vanishes at the returned z
    grad = (W_q - new_zero - (Wg - W_e) * scale).sum(0)
    assert grad.abs().max() < 1e-3


@settings(max_examples=25, deadline=None)
@given(nbits=st.sampled_from([4, 3, 2]), g=st.sampled_from([16, 32, 64]), axis=st.integers(0, 1), seed=st.integers(0, 10**6),
       magnitude=st.sampled_from([0.02, 1.0, 2.0]))
def test_corrected_solver_never_does_worse_than_round_to_nearest(nbits, g, axis, seed, magnitude):
    W = heavy_tailed((64, 64), seed=seed, scale=magnitude)
    rtn = H.quantization_error(W, nbits=nbits, group_size=g, axis=axis, optimize=False)["mae"]
    W_q, meta = H.quantize(W, nbits=nbits, group_size=g, axis=axis)
    hqq = (W - H.dequantize(W_q, meta)).abs().mean().item()
    assert hqq <= rtn * (1 + 1e-6)
    assert hqq == pytest.approx(min(meta.trace.errors + [hqq]), rel=1e-5)  # the best step is returned


def test_faithful_mode_ignores_kappa_and_returns_the_last_zero():
    W = heavy_tailed((128, 128), seed=3, scale=1.0)  # large weights: the shrinkage is active, iterations differ
    _, fa = H.quantize(W, nbits=2, group_size=16, faithful=True)
    _, co = H.quantize(W, nbits=2, group_size=16)
    assert len(set(fa.trace.betas)) == 1  # kappa ignored (hqq 0.2.7-0.2.8.post1)
    assert co.trace.betas == pytest.approx([10.0 * 1.01**i for i in range(len(co.trace.betas))])
    # small weights stop early; hqq then returns the zero computed after the first non-improving step
    W = heavy_tailed((128, 128), seed=3, scale=0.02)
    _, fa = H.quantize(W, nbits=4, group_size=16, faithful=True)
    _, co = H.quantize(W, nbits=4, group_size=16)
    t = fa.trace
    assert len(t.errors) < 20  # the early stop fired
    assert t.returned_iter == len(t.errors) and t.best_iter == len(t.errors) - 2
    assert co.trace.returned_iter == co.trace.best_iter


def test_shrinkage_is_off_at_llm_weight_scale_and_on_at_100x():
    W = heavy_tailed((256, 256), seed=4, scale=0.02)
    _, small = H.quantize(W, nbits=4, group_size=64)
    _, large = H.quantize(W * 100, nbits=4, group_size=64)
    assert max(small.trace.active) == 0.0  # every |error| is below beta^(-1/(2-p)) ~ 0.17
    assert max(large.trace.active) > 0.1


def test_bits_per_weight_count_what_is_stored():
    W = heavy_tailed((128, 256), seed=5)
    _, m4 = H.quantize(W, nbits=4, group_size=64)
    assert m4.bits_per_weight(torch.float16) == 4 + 32 / 64  # fp16 meta: hqq's usual b + 32/g
    assert m4.bits_per_weight() == 4 + 64 / 64  # default: meta-data in the weight's dtype (fp32 here)
    # 3 bits, axis 0: 64 rows pad to 70 = 7 int32 words of 10 codes -> 7 * 32 / 64 = 3.5 bits, not 3
    _, m3 = H.quantize(W, nbits=3, group_size=64)
    assert m3.bits_per_weight(torch.float16) == 3.5 + 0.5
    # hqq's 8-bit meta recipe: one byte per group for scale and zero, plus the floats of the meta's own
    # scale/zero (scale: one pair per group of 128 groups; zero: one pair per tensor)
    _, m2 = H.quantize(W, nbits=2, group_size=16, quant_scale=True, quant_zero=True)
    groups = W.numel() // 16
    expected = 2 * W.numel() + 8 * groups * 2 + 16 * (2 * groups // 128 + 2)
    assert m2.storage_bits(torch.float16) == expected
    assert m2.meta_q["scale"][1].group_size == 128 and m2.meta_q["zero"][1].scale.numel() == 1


def test_meta_quantization_changes_scale_and_zero_only_slightly():
    W = heavy_tailed((256, 256), seed=6)
    W_q, m = H.quantize(W, nbits=2, group_size=16)
    W_q8, m8 = H.quantize(W, nbits=2, group_size=16, quant_scale=True, quant_zero=True)
    assert torch.equal(W_q, W_q8)
    rel = (m8.scale - m.scale).abs().max() / m.scale.abs().max()
    assert 0 < rel < 0.01
    assert (m8.zero - m.zero).abs().max() <= (m.zero.max() - m.zero.min()) / 255 / 2 * (1 + 1e-5)  # one RTN step
    e, e8 = [(W - H.dequantize(q, mm)).abs().mean().item() for q, mm in ((W_q, m), (W_q8, m8))]
    assert e8 == pytest.approx(e, rel=0.05)


# ------------------------------------------------------------------------------------------ packing
@settings(max_examples=40, deadline=None)
@given(nbits=st.sampled_from([8, 4, 3, 2, 1]), rows=st.integers(1, 37), cols=st.integers(1, 9), seed=st.integers(0, 999))
def test_packing_round_trips_exactly(nbits, rows, cols, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**nbits, (rows, cols), generator=g, dtype=torch.uint8)
    packed = H.pack(codes, nbits)
    assert torch.equal(H.unpack(packed, nbits, rows), codes)
    assert packed.numel() * packed.element_size() * 8 == H.packed_bits(rows, cols, nbits)


def test_packed_dequantization_equals_unpacked():
    W = heavy_tailed((96, 64), seed=7)
    for nbits in (8, 4, 3, 2, 1):
        q, m = H.quantize(W, nbits=nbits, group_size=32)
        qp, mp = H.quantize(W, nbits=nbits, group_size=32, bitpack=True)
        assert mp.packed and torch.equal(H.dequantize(qp, mp), H.dequantize(q, m))


def test_packing_rejects_bad_codes():
    with pytest.raises(ValueError, match="codes must lie"):
        H.pack(torch.tensor([[16]], dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match="nbits must be one of"):
        H.pack(torch.zeros(2, 2, dtype=torch.uint8), 5)
    with pytest.raises(ValueError, match="packed data"):
        H.unpack(torch.zeros(2, 2, dtype=torch.uint8), 3, 2)


# ------------------------------------------------------------------------------------------ layers
def test_hqq_linear_matches_dequantized_weight_and_saves_memory():
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    q = H.HQQLinear.from_linear(lin, nbits=4, group_size=64)
    x = torch.randn(5, 128)
    W_hat = q.weight_dequantized()
    torch.testing.assert_close(q(x), x @ W_hat.T + lin.bias)
    assert (W_hat - lin.weight).abs().max() < (lin.weight.max() - lin.weight.min()) / 15
    assert q.storage_bytes() < lin.weight.numel() * 4 / 6


def test_quantize_model_replaces_linears_and_reports():
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64))
    x = torch.randn(3, 64)
    ref = model(x)
    report = H.quantize_model(model, nbits=8, group_size=64, progress=False)
    assert report.layers == 2 and all(isinstance(model[i], H.HQQLinear) for i in (0, 2))
    assert report.bytes_after < report.bytes_before / 3 and report.bits_per_weight == 9.0  # 8 + 2 fp32 / 64
    torch.testing.assert_close(model(x), ref, atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        H.quantize_model(torch.nn.Sequential(torch.nn.ReLU()))


def test_autograd_baseline_lowers_the_error_and_trains_scale_and_zero():
    W = heavy_tailed((64, 64), seed=8)
    scale, zero, history = H.optimize_weights_autograd(W, nbits=3, group_size=32, iters=60)
    assert len(history) == 61 and history[-1] < history[0]
    scale0, zero0 = _init_scale_zero(W.reshape(32, -1), 3, 0)
    assert not torch.equal(scale, scale0) and not torch.equal(zero, zero0)
    W_r = (torch.round(W.reshape(32, -1) * scale + zero).clamp(0, 7) - zero) / scale
    assert (W.reshape(32, -1) - W_r).abs().mean().item() == pytest.approx(history[-1], rel=1e-6)


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "W,kwargs,exc,match",
    [
        (torch.zeros(8, 8), {"nbits": 5}, ValueError, "nbits must be one of"),
        (torch.zeros(8, 8), {"group_size": 10}, ValueError, "must be a positive int dividing"),
        (torch.zeros(8, 8, dtype=torch.int32), {}, TypeError, "W must have a floating dtype"),
        (torch.zeros(0), {}, ValueError, "empty"),
        (torch.tensor([1.0, float("nan")] * 32), {}, ValueError, "NaN or inf"),
        (torch.tensor([1.0, float("inf")] * 32), {}, ValueError, "NaN or inf"),
        (torch.zeros(8, 8), {"axis": 2, "group_size": 8}, ValueError, "axis"),
        ([1.0] * 64, {}, TypeError, "torch.Tensor"),
        (torch.zeros(64 * 8), {"quant_scale": True, "group_size": 8}, ValueError, "multiple of 128"),
        (torch.ones(64), {"p": 1.5}, ValueError, "p must be a number > 0.0 and <= 1.0"),
    ],
)
def test_bad_input_is_rejected_clearly(W, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        H.quantize(W, **kwargs)


def test_constant_groups_reconstruct_exactly():
    W = torch.full((64, 4), 0.5)
    W_q, meta = H.quantize(W, nbits=4, group_size=64)
    assert torch.all(meta.scale == 1.0)  # hqq sets sc = 1 where the range is <= 1e-4
    torch.testing.assert_close(H.dequantize(W_q, meta), W)


def test_dequantize_rejects_foreign_meta():
    with pytest.raises(TypeError, match="QuantMeta"):
        H.dequantize(torch.zeros(2, 2, dtype=torch.uint8), {"nbits": 4})


def test_quantize_rejects_bool_nbits():
    # before: nbits=True quantized silently to 1 bit (True == 1)
    with pytest.raises(TypeError, match="nbits must be an int"):
        H.quantize(torch.randn(8, 8), nbits=True, group_size=8)
    with pytest.raises(TypeError, match="quant_zero must be bool"):
        H.quantize(torch.randn(8, 8), group_size=8, quant_zero=1)


def test_quantize_rejects_float_nbits_also_with_bitpack():
    # before: nbits=4.0 passed the check and failed deep inside pack ("lshift_cpu" not implemented for 'Float')
    for bitpack in (False, True):
        with pytest.raises(TypeError, match="nbits must be an int"):
            H.quantize(torch.randn(8, 8), nbits=4.0, group_size=8, bitpack=bitpack)
    with pytest.raises(TypeError, match="nbits must be an int"):
        H.pack(torch.zeros(2, 2, dtype=torch.uint8), 4.0)


@pytest.mark.parametrize("name", ["p", "beta", "kappa"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_quantize_rejects_nan_and_inf_solver_settings(name, value):
    # before: beta=nan silently turned HQQ into round-to-nearest (a NaN zero-point never "improved")
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        H.quantize(torch.randn(8, 8), group_size=8, **{name: value})
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        H.quantize(torch.randn(8, 8), group_size=8, optimize=False, **{name: value})  # checked even for RTN


def test_shrink_rejects_a_zero_beta_with_a_message():
    # before: ZeroDivisionError from 1.0 / beta
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        H.shrink_lp(torch.randn(4), 0, 0.7)
    with pytest.raises(ValueError, match="beta must be a number > 0"):
        H.shrink_threshold(0, 0.7)
    with pytest.raises(ValueError, match="p must be a number > 0.0 and <= 1.0"):
        H.shrink_threshold(10.0, 2.0)  # before: ZeroDivisionError (2 - p = 0)
    with pytest.raises(ValueError, match="beta=.* is too small"):
        H.shrink_threshold(5e-324, 1.0)  # before: OverflowError


def test_pack_rejects_non_integer_codes():
    # before: pack(tensor([[1.7]]), 4) packed 1 (the float was truncated)
    with pytest.raises(TypeError, match="W_q must have an integer dtype"):
        H.pack(torch.tensor([[1.7]]), 4)
    with pytest.raises(TypeError, match="packed must have an integer dtype"):
        H.unpack(torch.zeros(1, 1), 4, 2)


def test_dequantize_rejects_codes_that_do_not_match_the_meta_data():
    W = heavy_tailed((16, 8), seed=12)
    codes, meta = H.quantize(W, nbits=4, group_size=16)
    words, packed_meta = H.quantize(W, nbits=4, group_size=16, bitpack=True)
    # before: unpacked codes with packed meta-data were unpacked again and returned garbage, silently
    with pytest.raises(ValueError, match="W_q does not match meta: expected 4-bit packed"):
        H.dequantize(codes, packed_meta)
    with pytest.raises(ValueError, match="W_q does not match meta: expected unpacked codes"):
        H.dequantize(words, meta)
    with pytest.raises(TypeError, match="W_q must have an integer dtype"):
        H.dequantize(codes.float(), meta)
    torch.testing.assert_close(H.dequantize(words, packed_meta), H.dequantize(codes, meta))


def test_unpack_needs_the_row_count_it_was_packed_from():
    words = H.pack(torch.randint(0, 16, (10, 3), dtype=torch.uint8), 4)  # 5 words of 2 codes
    with pytest.raises(ValueError, match="rows=4 does not fit"):
        H.unpack(words, 4, 4)
    with pytest.raises(TypeError, match="rows must be an int"):
        H.unpack(words, 4, 10.0)


def test_sizes_are_never_negative():
    with pytest.raises(ValueError, match="rows must be an int >= 0"):
        H.packed_bits(-5, 3, 4)  # before: -48 bits
    with pytest.raises(ValueError, match="cols must be an int >= 0"):
        H.packed_bits(5, -3, 4)


def test_optimize_zero_rejects_scales_that_would_broadcast():
    Wg = heavy_tailed((16, 8), seed=13)
    scale, zero = _init_scale_zero(Wg, 4, 0)
    with pytest.raises(ValueError, match=r"scale must have shape \[1, 8\]"):
        H.optimize_zero(Wg, scale[:, :1], zero, nbits=4, axis=0)
    scale1, zero1 = _init_scale_zero(Wg, 4, 1)  # axis 1: one value per row, [16, 1]
    with pytest.raises(ValueError, match=r"zero must have shape \[16, 1\]"):
        H.optimize_zero(Wg, scale1, zero1.T, nbits=4, axis=1)
    with pytest.raises(TypeError, match="W, scale, zero must have the same dtype"):
        H.optimize_zero(Wg.double(), scale.double(), zero, nbits=4, axis=0)
    with pytest.raises(ValueError, match="scale .* must be nonzero"):
        H.optimize_zero(Wg, torch.zeros_like(scale), zero, nbits=4, axis=0)


def test_quantize_model_is_all_or_nothing():
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # group_size 256 divides the first layer's 256 weights but not the second's 128: nothing may change
    with pytest.raises(ValueError, match="layer '2': group_size must be a positive int dividing"):
        H.quantize_model(model, nbits=4, group_size=256, progress=False)
    assert all(type(m) is torch.nn.Linear for m in (model[0], model[2]))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(TypeError, match="nbits must be an int"):
        H.quantize_model(model, nbits=True, progress=False)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nbit'"):
        H.quantize_model(model, nbit=4, progress=False)
    with pytest.raises(TypeError, match="skip must be a tuple of str"):
        H.quantize_model(model, skip="lm_head", progress=False)  # a str would skip every name containing "l", "m"...
    assert all(type(m) is torch.nn.Linear for m in (model[0], model[2]))
    with pytest.raises(ValueError, match="model is a single nn.Linear"):
        H.quantize_model(torch.nn.Linear(16, 16), progress=False)


def test_hqq_linear_checks_its_parts():
    lin = torch.nn.Linear(16, 8)
    W_q, meta = H.quantize(lin.weight.detach(), nbits=4, group_size=16, bitpack=True)
    with pytest.raises(ValueError, match=r"bias must have shape \[8\]"):
        H.HQQLinear(W_q, meta, torch.zeros(16))
    with pytest.raises(TypeError, match="linear must be an nn.Linear"):
        H.HQQLinear.from_linear(torch.nn.ReLU())
    with pytest.raises(ValueError, match="meta must describe a 2-D"):
        H.HQQLinear(*H.quantize(torch.randn(2, 8, 8), nbits=4, group_size=16, bitpack=True), None)


# ------------------------------------------------------------------------------------------ the peer: PyPI hqq
@pytest.mark.parametrize("nbits", [8, 4, 3, 2, 1])
@pytest.mark.parametrize("group_size,axis", [(64, 0), (64, 1), (16, 0), (128, 1)])
def test_faithful_mode_equals_pypi_hqq_bit_for_bit(smollm, nbits, group_size, axis):
    hq = pytest.importorskip("hqq.core.quantize", reason="optional peer: DISABLE_CUDA=1 pip install hqq==0.2.8.post1")
    model, _ = smollm
    for W in (model.model.layers[5].self_attn.k_proj.weight.detach(), heavy_tailed((256, 512), seed=9, scale=1.0)):
        ref_q, ref = hq.Quantizer.quantize(W, nbits=nbits, group_size=group_size, axis=axis, device="cpu", bitpack=False)
        W_q, meta = H.quantize(W, nbits=nbits, group_size=group_size, axis=axis, faithful=True)
        assert torch.equal(W_q.float(), ref_q.float())
        assert torch.equal(meta.scale, ref["scale"]) and torch.equal(meta.zero, ref["zero"])


@pytest.mark.parametrize("nbits", [8, 4, 3, 2, 1])
def test_packing_layout_equals_pypi_hqq(nbits):
    bp = pytest.importorskip("hqq.core.bitpack", reason="optional peer: DISABLE_CUDA=1 pip install hqq==0.2.8.post1")
    codes = torch.randint(0, 2**nbits, (80, 7), dtype=torch.uint8)  # 80 rows: divisible by 1, 2, 4, 8 and 10
    name = {8: "8bit_u8", 4: "4bit_u8", 3: "3bit_32", 2: "2bit_u8", 1: "1bit_u8"}[nbits]
    ref = getattr(bp.BitPack, f"pack_{name}")(codes)
    assert torch.equal(H.pack(codes, nbits), ref.to(H.pack(codes, nbits).dtype))


# ------------------------------------------------------------------------------------------ experiments helpers
def test_heavy_tailed_is_reproducible_and_heavy():
    a, b = heavy_tailed((200, 200), seed=3), heavy_tailed((200, 200), seed=3)
    assert torch.equal(a, b)
    z = (a - a.mean()) / a.std()
    assert (z.pow(4).mean() - 3) > 1.0  # excess kurtosis of a t(3) sample is large; a Gaussian's is ~0
    with pytest.raises(ValueError, match="df"):
        heavy_tailed((2, 2), df=2.5)


def test_error_table_rows_and_gain():
    from companion.hqq.experiments import error_table

    rows = error_table({"w": heavy_tailed((64, 128), seed=11)}, bits=(4, 2), groups=(32, 64), axes=(0,))
    assert len(rows) == 4 and {r["nbits"] for r in rows} == {4, 2}
    for r in rows:
        assert r["gain"] == pytest.approx(1 - r["hqq"] / r["rtn"]) and r["hqq"] <= r["rtn"] * (1 + 1e-6)


def test_hqq_linear_with_8bit_meta_stores_codes_and_matches_quantize():
    torch.manual_seed(1)
    lin = torch.nn.Linear(256, 128, bias=False)
    q = H.HQQLinear.from_linear(lin, nbits=2, group_size=16, quant_scale=True, quant_zero=True)
    W_q, meta = H.quantize(lin.weight.detach(), nbits=2, group_size=16, quant_scale=True, quant_zero=True)
    assert q.scale_q.dtype == torch.uint8 and q.zero_q.dtype == torch.uint8 and not hasattr(q, "scale")
    torch.testing.assert_close(q.weight_dequantized(), H.dequantize(W_q, meta), atol=0, rtol=0)  # fp32 compute
    plain = H.HQQLinear.from_linear(lin, nbits=2, group_size=16)
    assert q.storage_bytes() < plain.storage_bytes()
    assert q.bits_per_weight < plain.bits_per_weight
