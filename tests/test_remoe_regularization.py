"""ReMoE's load-balanced L1 penalty, the λ controller and the sparsity statistics."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.remoe import LambdaController, Routing, expert_load, load_balanced_l1, routing_stats, sparsity


pytestmark = pytest.mark.usefixtures("one_thread")


def test_load_balanced_l1_hand_computed():
    R = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.5, 3.0], [0.0, 0.0]], requires_grad=True)  # T = 4, E = 2, k = 1
    # n = [3, 1], f = E·n/(k·T) = [1.5, 0.5]; (1/T)·Σ f_e R_te = (1.5·3.5 + 0.5·3) / 4 = 6.75 / 4
    loss = load_balanced_l1(R, k=1)
    assert loss.item() == pytest.approx(1.6875)
    loss.backward()
    assert torch.allclose(R.grad, torch.tensor([1.5, 0.5]).expand(4, 2) / 4)  # f_e carries no gradient
    assert load_balanced_l1(R, k=1, balanced=False).item() == pytest.approx(6.5 / 4)  # plain L1, f_e = 1
    assert load_balanced_l1(R, k=2).item() == pytest.approx(1.6875 / 2)  # f_e ∝ 1/k


@settings(max_examples=50, deadline=None)
@given(E=st.integers(1, 8), reps=st.integers(1, 6), data=st.data())
def test_balanced_routing_makes_f_one_and_the_penalty_plain_mean_l1(E, reps, data):
    k = data.draw(st.integers(1, E))
    T = E * reps
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    # token t uses experts t, t+1, ..., t+k-1 (mod E): every expert serves exactly k·T/E tokens
    mask = torch.zeros(T, E, dtype=torch.bool)
    for t in range(T):
        mask[t, [(t + j) % E for j in range(k)]] = True
    R = (torch.rand(T, E, generator=g, dtype=torch.float64) + 0.1) * mask
    assert load_balanced_l1(R, k=k).item() == pytest.approx(R.sum(-1).mean().item(), rel=1e-12)
    assert load_balanced_l1(R, k=k).item() == pytest.approx(load_balanced_l1(R, k=k, balanced=False).item(), rel=1e-12)
    assert sparsity(R) == pytest.approx(1 - k / E)
    assert torch.allclose(expert_load(R), torch.full((E,), 1 / E, dtype=torch.float64))


@settings(max_examples=50, deadline=None)
@given(T=st.integers(1, 20), E=st.integers(1, 8), seed=st.integers(0, 10_000))
def test_overloaded_experts_are_penalised_more(T, E, seed):
    g = torch.Generator().manual_seed(seed)
    R = torch.relu(torch.randn(T, E, generator=g, dtype=torch.float64))
    R.requires_grad_(True)
    load_balanced_l1(R, k=1).backward()
    n = (R > 0).sum(0).double()
    assert torch.allclose(R.grad[0], E * n / T / T)  # ∂L/∂R_te = f_e / T, larger for busier experts
    assert 0 <= sparsity(R) <= 1
    load = expert_load(R)
    assert load.sum().item() == pytest.approx(1.0 if n.sum() > 0 else 0.0)


def test_sparsity_and_routing_stats_hand_computed():
    R1 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])  # 3 of 8 nonzero: S = 5/8
    R2 = torch.zeros(2, 4)  # every token skips the FFN: S = 1
    assert sparsity(R1) == pytest.approx(5 / 8) and sparsity(R2) == 1.0
    assert sparsity(R1 > 0) == pytest.approx(5 / 8)  # a bool mask works too
    stats = routing_stats([Routing(gates=R, mask=R > 0, logits=R) for R in (R1, R2)])
    assert stats["layer_sparsity"] == pytest.approx([5 / 8, 1.0])
    assert stats["sparsity"] == pytest.approx((5 / 8 + 1) / 2)  # averaged over layers
    assert stats["layer_active_experts"] == pytest.approx([1.5, 0.0])
    assert stats["expert_load"][0] == pytest.approx([2 / 3, 1 / 3, 0, 0])
    assert stats["expert_load"][1] == [0, 0, 0, 0]
    assert stats["dead_tokens"] == pytest.approx(0.5)


def test_controller_multiplies_below_target_and_divides_otherwise():
    c = LambdaController(num_experts=8, k=1)
    assert c.target == pytest.approx(0.875) and c.lam == 1e-8 and c.alpha == 1.2  # the paper's defaults
    for n in range(1, 6):
        assert c.update(0.5) == pytest.approx(1e-8 * 1.2**n)  # S < target: λ·α
    assert c.update(0.9) == pytest.approx(1e-8 * 1.2**4)  # S > target: λ/α
    assert c.update(0.875) == pytest.approx(1e-8 * 1.2**3)  # S == target: not below, so λ/α
    c2 = LambdaController(num_experts=4, k=2, lam0=0.5, alpha=2.0, target=0.3)
    assert c2.update(0.2) == 1.0 and c2.update(0.4) == 0.5
    assert c2.state_dict() == {"lam": 0.5, "lam0": 0.5, "alpha": 2.0, "target": 0.3}


@settings(max_examples=50, deadline=None)
@given(seq=st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_controller_log_lambda_moves_by_one_log_alpha_per_step(seq):
    import math

    c = LambdaController(num_experts=8, k=2)
    ups = sum(s < c.target for s in seq)
    for s in seq:
        c.update(s)
    assert math.log(c.lam) == pytest.approx(math.log(1e-8) + (2 * ups - len(seq)) * math.log(1.2), abs=1e-9)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_experts": 4, "k": 5}, "k must be <= the number of experts E = 4, got k = 5"),
        ({"num_experts": 0, "k": 1}, "num_experts"),
        ({"num_experts": 4, "k": 4}, r"target sparsity must be in \(0, 1\), got 0.0 \(1 - k/E"),
        ({"num_experts": 4, "k": 1, "target": 1.0}, r"target sparsity must be a number > 0 and < 1, got 1.0"),
        ({"num_experts": 4, "k": 1, "target": -0.1}, "target sparsity"),
        ({"num_experts": 4, "k": 1, "alpha": 1.0}, r"alpha \(α\) must be a number > 1, got 1.0"),
        ({"num_experts": 4, "k": 1, "alpha": 0.8}, "alpha"),
        ({"num_experts": 4, "k": 1, "lam0": 0.0}, r"lam0 \(λ₀\) must be a number > 0, got 0.0"),
        ({"num_experts": 4, "k": 1, "lam0": -1e-8}, "lam0"),
    ],
)
def test_controller_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LambdaController(**kwargs)


def test_regulariser_and_statistics_bad_input():
    with pytest.raises(ValueError, match="sparsity must be a number >= 0"):
        LambdaController(num_experts=4, k=1).update(1.5)
    with pytest.raises(ValueError, match=r"gates must have shape \[T, E\]"):
        load_balanced_l1(torch.zeros(3), k=1)
    with pytest.raises(ValueError, match="k must be <= the number of experts E = 2, got k = 3"):
        load_balanced_l1(torch.zeros(3, 2), k=3)
    with pytest.raises(TypeError, match="gates must be a torch.Tensor"):
        sparsity([[0.0]])
    with pytest.raises(ValueError, match="at least one MoE layer"):
        routing_stats([])
