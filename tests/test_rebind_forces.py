"""ReBind's Lennard-Jones table, forces and force-based rewiring: closed forms, hand cases, invariants, pitfalls."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.rebind import (
    LJ_PARAMETERS,
    edge_statistics,
    extra_edge_counts,
    force_edges,
    hop_distance,
    lj_force,
    lj_parameters,
    lj_potential,
    molecule_from_smiles,
    nearest_edges,
    pair_forces,
    collate,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def real_batch():
    """Five QM9-like molecules with MMFF94 ground states, padded into one batch."""
    smiles = ["CCO", "CC(=O)N", "c1ccccc1O", "CC(C)(C)F", "OC1CCOC1"]
    return collate([molecule_from_smiles(s) for s in smiles])


def test_table_is_the_uff_derived_one_of_the_paper():
    assert LJ_PARAMETERS == {"H": (2.886, 0.044), "C": (3.431, 0.105), "N": (3.260, 0.069),
                             "O": (3.118, 0.060), "F": (2.996, 0.050)}


def test_potential_is_minus_epsilon_and_force_zero_at_the_minimum():
    sigma, eps = 3.431, 0.105
    r_min = torch.tensor(2 ** (1 / 6) * sigma, dtype=torch.float64)
    assert lj_potential(r_min, sigma, eps).item() == pytest.approx(-eps, rel=1e-12)
    assert lj_force(r_min, sigma, eps).item() == pytest.approx(0.0, abs=1e-12)


def test_force_sign_convention_repulsive_inside_attractive_outside():
    sigma, eps = 3.0, 0.06
    r = torch.tensor([sigma, 2 * sigma], dtype=torch.float64)
    v, f = lj_potential(r, sigma, eps), lj_force(r, sigma, eps)
    assert v[0].item() == pytest.approx(0.0, abs=1e-15)
    assert f[0].item() == pytest.approx(24 * eps / sigma)  # (24ε/σ)(2 − 1) > 0: repulsive
    assert v[1].item() == pytest.approx(4 * eps * (2.0**-12 - 2.0**-6))
    assert f[1].item() == pytest.approx(24 * eps / (2 * sigma) * (2 * 2.0**-12 - 2.0**-6))
    assert f[1] < 0  # attractive


def test_force_is_minus_the_derivative_of_the_potential():
    r = torch.linspace(2.0, 8.0, 50, dtype=torch.float64, requires_grad=True)
    v = lj_potential(r, 3.2, 0.07)
    (dv,) = torch.autograd.grad(v.sum(), r)
    assert torch.allclose(lj_force(r.detach(), 3.2, 0.07), -dv)


def test_lorentz_berthelot_mixing_on_c_and_h():
    sigma, eps = lj_parameters(torch.tensor([6, 1]), dtype=torch.float64)
    assert sigma[0, 1].item() == pytest.approx((3.431 + 2.886) / 2)
    assert eps[0, 1].item() == pytest.approx(math.sqrt(0.105 * 0.044))
    assert sigma[0, 0].item() == pytest.approx(3.431) and eps[1, 1].item() == pytest.approx(0.044)
    assert torch.equal(sigma, sigma.T) and torch.equal(eps, eps.T)


def test_k_i_is_max_degree_minus_degree_per_molecule():
    # molecule 0: path 0-1-2 (degrees 1, 2, 1); molecule 1: star around atom 0 with 3 leaves
    adj = torch.zeros(2, 4, 4)
    for b, edges in ((0, [(0, 1), (1, 2)]), (1, [(0, 1), (0, 2), (0, 3)])):
        for i, j in edges:
            adj[b, i, j] = adj[b, j, i] = 1
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    assert extra_edge_counts(adj, mask).tolist() == [[1, 0, 1, 0], [0, 2, 2, 2]]



def test_acetone_budget_counts_neighbours_not_bond_order():
    """The book's example: in acetone (CH3)2C=O every atom's degree counts bonded neighbours, so the carbonyl
    oxygen (one neighbour, a double bond) has degree 1 and, beside the four-valent carbons, K = 4 - 1 = 3 --
    the same budget as a hydrogen; the central carbon (3 neighbours) gets 1, the methyl carbons 0."""
    m = molecule_from_smiles("CC(=O)C", seed=0)
    k = extra_edge_counts(m.adjacency)
    by_element = {}
    for zi, ki in zip(m.z.tolist(), k.tolist()):
        by_element.setdefault(zi, []).append(ki)
    assert sorted(by_element[8]) == [3]
    assert sorted(by_element[1]) == [3] * 6
    assert sorted(by_element[6]) == [0, 0, 1]

def chain():
    """C0-C1-C2-C3 on hand-set distances: K = [1, 0, 0, 1]."""
    z = torch.tensor([6, 6, 6, 6])
    adj = torch.zeros(4, 4)
    for i in range(3):
        adj[i, i + 1] = adj[i + 1, i] = 1
    return z, adj


def test_top_k_picks_the_largest_force_row_by_row_on_a_hand_chain():
    z, adj = chain()
    d = torch.tensor([[0.0, 1.5, 2.5, 3.8],
                      [1.5, 0.0, 1.5, 2.6],
                      [2.5, 1.5, 0.0, 1.5],
                      [3.8, 2.6, 1.5, 0.0]])
    a_attr, a_rep = force_edges(d, z, adj)
    # row 0 (K=1): |F| at 2.5 Å > at 3.8 Å, and 2.5 < 2^(1/6)·3.431 = 3.85, so repulsive
    # row 3 (K=1): candidates 0 (3.8 Å) and 1 (2.6 Å): picks 1; rows 1, 2 have K = 0
    expected_rep = torch.zeros(4, 4)
    expected_rep[0, 2] = expected_rep[3, 1] = -1
    assert torch.equal(a_rep, expected_rep)
    assert torch.equal(a_attr, torch.zeros(4, 4))
    assert not torch.equal(a_rep, a_rep.T)  # row-wise selection: asymmetric


def test_far_pairs_give_attractive_edges_with_plus_one():
    z, adj = chain()
    d = torch.tensor([[0.0, 1.5, 4.5, 6.0],
                      [1.5, 0.0, 1.5, 4.4],
                      [4.5, 1.5, 0.0, 1.5],
                      [6.0, 4.4, 1.5, 0.0]])
    a_attr, a_rep = force_edges(d, z, adj)
    f = pair_forces(d, z, adj)
    assert f[0, 2] < 0 and f[0, 2].abs() > f[0, 3].abs()
    assert a_attr[0, 2] == 1 and a_attr[3, 1] == 1 and a_attr.sum() == 2
    assert torch.equal(a_rep, torch.zeros(4, 4))


def test_bonded_diagonal_and_padding_get_no_force(real_batch):
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    f = pair_forces(d, b.z, b.adjacency, b.mask)
    assert (f[b.adjacency != 0] == 0).all()
    assert (f.diagonal(dim1=-2, dim2=-1) == 0).all()
    pad = ~(b.mask[:, :, None] & b.mask[:, None, :])
    assert (f[pad] == 0).all()
    a_attr, a_rep = force_edges(d, b.z, b.adjacency, b.mask)
    edges = (a_attr != 0) | (a_rep != 0)
    assert not edges[pad].any() and not edges[b.adjacency != 0].any()
    assert not edges.diagonal(dim1=-2, dim2=-1).any()
    # each row has exactly K_i edges (every molecule here has enough non-bonded atoms)
    assert torch.equal(edges.sum(-1), extra_edge_counts(b.adjacency, b.mask))


def test_rewiring_fires_on_real_molecules_unlike_the_released_code(real_batch):
    """The official collator reads the edge budget before computing it: both matrices stay zero there."""
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    a_attr, a_rep = force_edges(d, b.z, b.adjacency, b.mask)
    assert (a_rep != 0).sum() > 20
    assert set(a_rep.unique().tolist()) == {-1.0, 0.0} and set(a_attr.unique().tolist()) <= {0.0, 1.0}
    z_attr, z_rep = force_edges(d, b.z, b.adjacency, b.mask, released_code=True)
    assert not z_attr.any() and not z_rep.any()


def test_selected_edges_are_mostly_repulsive_two_hop_pairs(real_batch):
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    stats = edge_statistics(*force_edges(d, b.z, b.adjacency, b.mask), b.adjacency, b.mask)
    assert stats["edges"] == int(extra_edge_counts(b.adjacency, b.mask).sum())
    assert stats["share_repulsive"] > 0.9
    assert stats["share_1_3"] > 0.7
    assert stats["share_1_3"] + stats["share_1_4"] + stats["share_far"] == pytest.approx(1.0)


def test_hop_distance_on_a_chain():
    _, adj = chain()
    assert hop_distance(adj).tolist() == [[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]]


def test_nearest_edges_use_the_same_budget(real_batch):
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    near = nearest_edges(d, b.adjacency, b.mask)
    assert torch.equal(near.sum(-1).long(), extra_edge_counts(b.adjacency, b.mask))


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(list(range(9))), jitter=st.integers(0, 10_000))
def test_force_edges_are_equivariant_to_permuting_atoms(perm, jitter):
    mol = molecule_from_smiles("CC(O)F")  # 9 atoms with H
    g = torch.Generator().manual_seed(jitter)
    x = mol.coords + 0.3 * torch.randn(mol.coords.shape, generator=g)
    d = torch.cdist(x, x)
    p = torch.tensor(perm)
    a_attr, a_rep = force_edges(d, mol.z, mol.adjacency)
    pa_attr, pa_rep = force_edges(d[p][:, p], mol.z[p], mol.adjacency[p][:, p])
    assert torch.equal(pa_attr, a_attr[p][:, p]) and torch.equal(pa_rep, a_rep[p][:, p])


def test_force_edges_of_a_batch_equal_those_of_each_molecule(real_batch):
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    a_attr, a_rep = force_edges(d, b.z, b.adjacency, b.mask)
    for i, m in enumerate(b.molecules):
        n = m.n_atoms
        dm = torch.cdist(m.coords, m.coords)
        s_attr, s_rep = force_edges(dm, m.z, m.adjacency)
        assert torch.equal(a_attr[i, :n, :n], s_attr) and torch.equal(a_rep[i, :n, :n], s_rep)


def test_unknown_element_is_named():
    with pytest.raises(ValueError, match="element S .*H, C, N, O, F"):
        lj_parameters(torch.tensor([6, 16]))
    with pytest.raises(ValueError, match="element Cl"):
        force_edges(torch.ones(2, 2), torch.tensor([6, 17]), torch.zeros(2, 2))


def test_padding_may_hold_any_atomic_number():
    sigma, _ = lj_parameters(torch.tensor([6, 0]), torch.tensor([True, False]))
    assert sigma[1].abs().sum() == 0


def test_mismatched_shapes_and_types_are_rejected():
    z, adj = chain()
    with pytest.raises(ValueError, match=r"\[B, N, N\]"):
        force_edges(torch.ones(3, 3), z, adj)
    with pytest.raises(ValueError, match="mask"):
        force_edges(torch.ones(1, 4, 4), z[None], adj[None], torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="integer atomic numbers"):
        lj_parameters(torch.tensor([6.0, 1.0]))
    with pytest.raises(TypeError, match="dist must be a torch.Tensor"):
        force_edges([[0, 1], [1, 0]], z, adj)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 10), seed=st.integers(0, 10_000))
def test_each_row_gets_min_of_k_i_and_its_candidates_on_random_trees(n, seed):
    g = torch.Generator().manual_seed(seed)
    adj = torch.zeros(n, n)
    for i in range(1, n):  # a random tree: connected, degrees vary
        j = int(torch.randint(0, i, (1,), generator=g))
        adj[i, j] = adj[j, i] = 1
    z = torch.tensor([6, 7, 8, 9, 1])[torch.randint(0, 5, (n,), generator=g)]
    x = 3 * torch.randn(n, 3, generator=g)
    a_attr, a_rep = force_edges(torch.cdist(x, x), z, adj)
    edges = (a_attr != 0) | (a_rep != 0)
    candidates = (n - 1) - adj.sum(-1).long()
    assert torch.equal(edges.sum(-1), torch.minimum(extra_edge_counts(adj), candidates))
    assert not (edges & (adj != 0)).any() and not edges.diagonal().any()
    assert not ((a_attr != 0) & (a_rep != 0)).any()


def test_budget_override_k_picks_the_k_largest_forces_per_row(real_batch):
    """``k`` (for exploring the rule in the book) replaces K_i; None is ReBind's rule; a tensor of K_i equals it."""
    b = real_batch
    d = torch.cdist(b.coords, b.coords)
    rule = force_edges(d, b.z, b.adjacency, b.mask)
    k_rule = extra_edge_counts(b.adjacency, b.mask)
    for got, want in zip(force_edges(d, b.z, b.adjacency, b.mask, k=k_rule), rule):
        assert torch.equal(got, want)
    f = pair_forces(d, b.z, b.adjacency, b.mask).abs()
    eye = torch.eye(f.shape[-1], dtype=torch.bool)
    candidates = b.mask[:, :, None] & b.mask[:, None, :] & (b.adjacency == 0) & ~eye
    for k in (0, 1, 2):
        a_attr, a_rep = force_edges(d, b.z, b.adjacency, b.mask, k=k)
        edges = (a_attr != 0) | (a_rep != 0)
        want = torch.minimum(torch.full_like(k_rule, k), candidates.sum(-1)) * b.mask.long()
        assert torch.equal(edges.sum(-1), want)
        # every picked |F| is at least every unpicked candidate's |F| in the same row
        picked_min = torch.where(edges, f, torch.full_like(f, math.inf)).min(-1).values
        rest_max = torch.where(candidates & ~edges, f, torch.full_like(f, -math.inf)).max(-1).values
        assert (picked_min >= rest_max).all()
        near = nearest_edges(d, b.adjacency, b.mask, k=k)
        assert torch.equal(near.sum(-1).long(), want)
    with pytest.raises(ValueError, match="k must be an int >= 0"):
        force_edges(d, b.z, b.adjacency, b.mask, k=-1)
    with pytest.raises(TypeError, match="k must be None, an int"):
        force_edges(d, b.z, b.adjacency, b.mask, k=1.5)
    with pytest.raises(ValueError, match=r"k must be \[N\] or \[B, N\]"):
        nearest_edges(d, b.adjacency, b.mask, k=torch.ones(3, dtype=torch.long))


# ------------------------------------------------------------------------- bad input, one way everywhere

def test_hop_distance_rejects_bool_and_float_max_hops():
    _, adj = chain()
    with pytest.raises(TypeError, match="max_hops must be an int"):  # was: max_hops=1, silently
        hop_distance(adj, max_hops=True)
    with pytest.raises(TypeError, match="max_hops must be an int"):  # was: a TypeError from range()
        hop_distance(adj, max_hops=2.5)


def test_hop_distance_rejects_negative_max_hops():
    _, adj = chain()
    with pytest.raises(ValueError, match="max_hops must be an int >= 0"):  # was: every pair 0 hops apart
        hop_distance(adj, max_hops=-1)


def test_pair_forces_reject_negative_and_nan_distances():
    z, adj = chain()
    d = torch.cdist(torch.arange(4.0)[:, None], torch.arange(4.0)[:, None]) * 1.5
    with pytest.raises(ValueError, match="dist must hold distances >= 0"):  # was: clamped, answered silently
        pair_forces(-d, z, adj)
    with pytest.raises(ValueError, match="dist must hold finite distances"):
        force_edges(d.masked_fill(torch.eye(4, dtype=torch.bool).roll(1, 0), math.nan), z, adj)


def test_lj_force_at_zero_distance_is_a_value_error():
    with pytest.raises(ValueError, match="r must be a number > 0"):  # was: ZeroDivisionError
        lj_force(0.0, 3.2, 0.07)
    with pytest.raises(ValueError, match="r must be > 0 everywhere"):  # was: inf in the tensor
        lj_potential(torch.tensor([0.0, 1.0]), 3.2, 0.07)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        lj_force(2.0, 3.2, math.nan)


def test_lj_force_rejects_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="r, sigma and eps must broadcast"):  # was: a RuntimeError from torch
        lj_force(torch.linspace(2, 3, 4), torch.tensor([3.0, 3.2]), 0.07)


def test_float_masks_are_rejected():
    """A float mask was read two ways: ``.long()`` (0.5 -> padding) in the budget, ``.bool()`` (real) elsewhere."""
    z, adj = chain()
    half = torch.tensor([1.0, 0.5, 1.0, 1.0])
    with pytest.raises(TypeError, match="mask must have torch.bool"):
        extra_edge_counts(adj, half)
    with pytest.raises(TypeError, match="mask must have torch.bool"):
        force_edges(torch.ones(4, 4), z, adj, half)
    assert torch.equal(extra_edge_counts(adj, half.bool()), extra_edge_counts(adj))  # bool and 0/1 ints are fine
    assert torch.equal(extra_edge_counts(adj, torch.tensor([1, 1, 1, 1])), extra_edge_counts(adj))


def test_non_tensor_arguments_name_the_argument():
    z, adj = chain()
    with pytest.raises(TypeError, match="mask must be a torch.Tensor"):  # was: AttributeError 'str' ... 'bool'
        lj_parameters(z, "mask")
    with pytest.raises(TypeError, match="adj must be a torch.Tensor"):
        nearest_edges(torch.ones(4, 4), [[0, 1], [1, 0]])
    with pytest.raises(TypeError, match="released_code must be bool"):
        force_edges(torch.ones(4, 4), z, adj, released_code="yes")
