"""ReMoE routers, expert dispatch and the MoE layer: closed forms, a naive reference, gradients, continuity."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.remoe import MoE, ReLURouter, Routing, SwiGLU, TopKRouter, dispatch, logit_sweep, swiglu, switch_aux_loss


pytestmark = pytest.mark.usefixtures("one_thread")


def naive_moe(x, routing, w_in, w_out):
    """The per-token reference: y_t = Σ_e [mask_te] R_te · SwiGLU_e(x_t), one token and one expert at a time."""
    y = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for e in range(w_in.shape[0]):
            if routing.mask[t, e]:
                y[t] += routing.gates[t, e] * swiglu(x[t : t + 1], w_in[e], w_out[e])[0]
    return y


def test_relu_router_has_no_bias_and_init_std_one_hundredth():
    torch.manual_seed(0)
    router = ReLURouter(512, 64)
    assert [name for name, _ in router.named_parameters()] == ["weight"]  # no bias
    assert router.weight.shape == (64, 512)
    assert router.weight.mean().abs() < 1e-3
    assert router.weight.std().item() == pytest.approx(0.01, rel=0.03)


def test_relu_gates_are_relu_of_the_logits_without_normalisation():
    router = ReLURouter(3, 4)
    with torch.no_grad():
        router.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]]))
    x = torch.tensor([[2.0, -1.0, 0.5], [-1.0, -2.0, -3.0]])
    r = router(x)
    assert torch.equal(r.logits, torch.tensor([[2.0, -1.0, 0.5, -1.5], [-1.0, -2.0, -3.0, 6.0]]))
    assert torch.equal(r.gates, torch.tensor([[2.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 6.0]]))  # no softmax, sums free
    assert torch.equal(r.mask, r.gates > 0)
    assert r.aux_loss is None


@settings(max_examples=30, deadline=None)
@given(T=st.integers(1, 12), E=st.integers(1, 8), data=st.data())
def test_topk_gates_are_the_softmax_probabilities_of_the_selected_experts(T, E, data):
    k = data.draw(st.integers(1, E))
    torch.manual_seed(data.draw(st.integers(0, 1000)))
    router = TopKRouter(5, E, k=k)
    logits = torch.randn(T, E)
    r = router.route(logits)
    probs = torch.softmax(logits, -1)
    assert (r.mask.sum(-1) == k).all()  # exactly k experts per token
    top = probs.topk(k, -1).indices
    assert torch.equal(r.mask, torch.zeros(T, E, dtype=torch.bool).scatter(-1, top, True))
    assert torch.allclose(r.gates, torch.where(r.mask, probs, torch.zeros(())))  # not renormalised over the k
    assert (r.gates.sum(-1) <= 1 + 1e-6).all()


def test_switch_aux_loss_hand_computed():
    probs = torch.tensor([[0.7, 0.3], [0.6, 0.4]])
    mask = torch.tensor([[True, False], [True, False]])  # both tokens go to expert 0: f = [1, 0]
    # E · Σ f_e P_e = 2 · (1 · 0.65 + 0 · 0.35) = 1.3
    assert switch_aux_loss(probs, mask, k=1).item() == pytest.approx(1.3)
    uniform = torch.full((4, 4), 0.25)
    assert switch_aux_loss(uniform, torch.eye(4, dtype=torch.bool), k=1).item() == pytest.approx(1.0)  # balanced
    router = TopKRouter(2, 2, k=1, aux_coef=0.01)
    assert router.route(probs.log()).aux_loss.item() == pytest.approx(0.013)  # the 0.01 coefficient


@settings(max_examples=40, deadline=None)
@given(T=st.integers(1, 10), E=st.integers(1, 5), seed=st.integers(0, 10_000), p_active=st.floats(0.0, 1.0))
def test_dispatch_equals_the_naive_per_token_loop(T, E, seed, p_active):
    g = torch.Generator().manual_seed(seed)
    d, h = 4, 3
    x = torch.randn(T, d, generator=g, dtype=torch.float64)
    w_in = torch.randn(E, d, 2 * h, generator=g, dtype=torch.float64)
    w_out = torch.randn(E, h, d, generator=g, dtype=torch.float64)
    mask = torch.rand(T, E, generator=g) < p_active
    gates = torch.rand(T, E, generator=g, dtype=torch.float64) * mask
    routing = Routing(gates=gates, mask=mask, logits=gates)
    assert torch.allclose(dispatch(x, routing, w_in, w_out), naive_moe(x, routing, w_in, w_out), atol=1e-12)


def test_tokens_with_all_zero_gates_get_zero_output():
    torch.manual_seed(0)
    layer = MoE(8, 16, num_experts=4, router="relu")
    x = torch.randn(3, 8)
    logits = torch.tensor([[-1.0, -0.5, -2.0, -0.1], [0.3, -1.0, 0.2, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    y, r = layer(x, logits=logits)
    assert torch.equal(y[0], torch.zeros(8)) and torch.equal(y[2], torch.zeros(8))  # residual only
    assert y[1].abs().sum() > 0
    assert r.mask.sum(-1).tolist() == [0, 2, 0]  # the number of experts varies per token


def test_moe_layer_matches_reference_for_both_routers_and_keeps_shape():
    torch.manual_seed(1)
    for kind in ("relu", "topk"):
        layer = MoE(8, 16, num_experts=4, k=2, router=kind, router_init_std=1.0)
        x = torch.randn(2, 3, 8)
        y, r = layer(x)
        assert y.shape == x.shape and r.gates.shape == (6, 4)
        ref = naive_moe(x.reshape(6, 8), r, layer.w_in, layer.w_out).reshape(2, 3, 8)
        assert torch.allclose(y, ref, atol=1e-6)
    assert isinstance(MoE(8, 16, router="topk").router, TopKRouter)


def test_dense_swiglu_is_one_expert_with_gate_one():
    torch.manual_seed(2)
    dense = SwiGLU(8, 16)
    x = torch.randn(5, 8)
    routing = Routing(gates=torch.ones(5, 1), mask=torch.ones(5, 1, dtype=torch.bool), logits=torch.ones(5, 1))
    assert torch.allclose(dense(x), dispatch(x, routing, dense.w_in[None], dense.w_out[None]), atol=1e-6)


def test_gradcheck_relu_moe_layer_in_float64_away_from_the_kinks():
    torch.manual_seed(3)
    layer = MoE(4, 3, num_experts=3, router="relu", router_init_std=1.0).double()
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    logits = (x @ layer.router.weight.t()).detach()
    assert logits.abs().min() > 1e-2  # far from relu's kink relative to the 1e-6 perturbation
    mask = logits > 0
    assert (~mask).any() and (mask.sum(-1) >= 2).any()  # some experts off, some tokens with several on

    def f(x, w_r, w_in, w_out):
        r = ReLURouter(4, 3)  # only used for route(); the weights come in as arguments
        return dispatch(x, r.route(x @ w_r.t()), w_in, w_out)

    params = [p.detach().clone().requires_grad_(True) for p in (layer.router.weight, layer.w_in, layer.w_out)]
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-6)


def test_relu_router_gradient_reaches_every_active_expert_topk_only_the_chosen_one():
    torch.manual_seed(4)
    x = torch.randn(1, 6)
    for kind, expected in (("relu", None), ("topk", 1)):
        layer = MoE(6, 5, num_experts=4, k=1, router=kind, router_init_std=1.0)
        y, r = layer(x)
        y.sum().backward()
        rows_with_grad = (layer.router.weight.grad.abs().sum(-1) > 0).sum().item()
        if kind == "relu":
            assert rows_with_grad == r.mask.sum().item()  # every expert with a positive logit learns
        else:
            assert rows_with_grad == 4  # the softmax couples all logits, but only through the chosen gate
            assert r.mask.sum().item() == expected


def test_logit_sweep_topk_jumps_relu_is_continuous():
    coarse = logit_sweep(torch.linspace(-1, 1, 201), expert=0, seed=0)
    fine = logit_sweep(torch.linspace(-1, 1, 2001), expert=0, seed=0)
    c, f = coarse.largest_step(), fine.largest_step()
    assert f["topk"] > 0.5 * c["topk"] > 0  # a jump does not shrink with the grid
    assert f["relu"] < 0.2 * c["relu"]  # a continuous curve's steps shrink with the spacing
    assert f["topk"] > 20 * f["relu"]
    # the jump sits where the swept logit overtakes the leader among the others
    leader = coarse.logits[1:].max()
    steps = (coarse.topk[1:] - coarse.topk[:-1]).norm(dim=-1)
    at = coarse.values[steps.argmax()]
    assert abs(at - leader) <= 0.011
    # ReLU: while the swept logit is <= 0 its expert is off and the output does not move
    off = coarse.values <= 0
    assert torch.allclose(coarse.relu[off], coarse.relu[off][0].expand_as(coarse.relu[off]))
    assert (coarse.relu_gates[~off, 0] == coarse.values[~off]).all()


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: MoE(8, 16, num_experts=4, k=5), "k must be <= the number of experts E = 4, got k = 5"),
        (lambda: MoE(8, 16, num_experts=0, k=1), "num_experts"),
        (lambda: MoE(8, 16, num_experts=4, k=0), "k must be an int >= 1"),
        (lambda: MoE(8, 16, router="softmax"), "router must be"),
        (lambda: TopKRouter(8, 4, k=5), "k must be <="),
        (lambda: TopKRouter(8, 4, aux_coef=-1), "aux_coef"),
        (lambda: ReLURouter(8, 4, init_std=0), "init_std"),
        (lambda: ReLURouter(8, 4)(torch.zeros(3, 6)), r"expected input x of shape \[T, 8\].*got \(3, 6\)"),
        (lambda: MoE(8, 16)(torch.zeros(3, 6)), "expected hidden size 8, got input x of shape"),
        (lambda: MoE(8, 16, num_experts=4)(torch.zeros(3, 8), logits=torch.zeros(3, 5)), r"logits must have shape"),
        (lambda: SwiGLU(8, 16)(torch.zeros(2, 7)), "expected hidden size 8"),
        (lambda: logit_sweep(expert=4, num_experts=4), "expert must be"),
        (lambda: logit_sweep(torch.zeros(1)), "at least 2"),
    ],
)
def test_bad_input_raises_value_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_types_raise_type_error():
    with pytest.raises(TypeError, match="num_experts"):
        MoE(8, 16, num_experts=4.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        MoE(8, 16)([[0.0] * 8])
    with pytest.raises(TypeError, match="torch.Tensor"):
        ReLURouter(8, 4)([[0.0] * 8])


def test_moe_rejects_fp16_input_with_fp32_weights():
    layer = MoE(8, 16, num_experts=4)
    with pytest.raises(TypeError, match=r"x must have the dtype of the MoE layer's weights, torch.float32") as info:
        layer(torch.randn(3, 8).half())  # before: a dtype-mismatch RuntimeError from inside the router's matmul
    assert "torch.float16" in str(info.value)
    with pytest.raises(TypeError, match="logits must have the dtype"):
        layer(torch.randn(3, 8), logits=torch.zeros(3, 4, dtype=torch.float64))
    y, _ = layer.half()(torch.randn(3, 8).half())  # converting the layer is the fix the message suggests
    assert y.dtype == torch.float16
