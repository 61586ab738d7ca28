"""The relation-modulated transformer: the attention equation, padding, variants, detached distances, bad input."""

import math

import pytest
import torch

from companion.rebind import (
    ConformerConfig,
    ConformerModel,
    RelationAttention,
    collate,
    distance_loss,
    extra_edge_counts,
    modulated_scores,
    molecule_from_smiles,
    row_subtracted_distances,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mols():
    return [molecule_from_smiles(s) for s in ["CCO", "CC(=O)N", "c1ccccc1O", "OC1CCOC1"]]


def test_modulated_scores_on_a_two_atom_case():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])[None, None]  # [B=1, H=1, 2, 2]
    bond = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    rep = torch.tensor([[0.0, 0.0], [-1.0, 0.0]])
    rel = torch.stack([bond, rep])[None]  # [1, R=2, 2, 2]
    beta = torch.tensor([[0.5], [2.0]])  # [R, H]
    out = modulated_scores(s, rel, beta)
    # Ŝ = S + S ⊙ (0.5·A_bond + 2·A_rep): off-diagonal (0,1): 2 + 2·0.5 = 3; (1,0): 3 + 3·(0.5 − 2) = −1.5
    assert out[0, 0].tolist() == [[1.0, 3.0], [-1.5, 4.0]]


def test_relation_attention_matches_a_per_head_reference():
    torch.manual_seed(0)
    attn = RelationAttention(8, 2, 1)
    with torch.no_grad():
        attn.beta.copy_(torch.tensor([[0.7, -0.3]]))
    x = torch.randn(1, 3, 8)
    adj = torch.tensor([[0.0, 1, 0], [1, 0, 1], [0, 1, 0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    y = attn(x, adj[None, None], mask)
    q, k, v = attn.qkv(x[0]).split(8, -1)
    heads = []
    for h in range(2):
        sl = slice(4 * h, 4 * h + 4)
        s = q[:, sl] @ k[:, sl].T
        s = s + s * attn.beta[0, h] * adj
        heads.append(torch.softmax(s / math.sqrt(4), -1) @ v[:, sl])
    assert torch.allclose(y[0], attn.out(torch.cat(heads, -1)), atol=1e-6)


def test_row_subtracted_distance():
    d = torch.tensor([[0.0, 1.0, 2.0], [1.0, 0.0, 1.5], [2.0, 1.5, 0.0]])[None]
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert row_subtracted_distances(d, mask)[0].tolist() == [[2.0, 1.0, 0.0], [0.5, 1.5, 0.0], [0.0, 0.5, 2.0]]


@pytest.mark.parametrize("variant,n_rel", [("bond", 1), ("gtmgc", 2), ("rebind", 3), ("near", 2)])
def test_variants_differ_only_in_decoder_relations(mols, variant, n_rel):
    torch.manual_seed(0)
    model = ConformerModel(variant=variant)
    out = model(collate(mols))
    assert out.coords.shape == (4, 14, 3) and out.enc_coords.shape == (4, 14, 3)
    assert out.relations.shape == (4, n_rel, 14, 14) and len(out.relation_names) == n_rel
    assert model.decoder[0].attn.beta.shape == (n_rel, 4) and model.encoder[0].attn.beta.shape == (1, 4)
    base = {k: v.shape for k, v in ConformerModel(variant="bond").state_dict().items() if "beta" not in k}
    assert {k: v.shape for k, v in model.state_dict().items() if "beta" not in k} == base


def test_rebind_relations_are_force_edges_and_fire(mols):
    torch.manual_seed(0)
    b = collate(mols)
    out = ConformerModel(variant="rebind")(b)
    a_attr, a_rep = out.relations[:, 1], out.relations[:, 2]
    assert torch.equal(out.relations[:, 0], b.adjacency)
    edges = (a_attr != 0) | (a_rep != 0)
    assert edges.any() and torch.equal(edges.sum(-1), extra_edge_counts(b.adjacency, b.mask))
    assert not out.relations.requires_grad  # built from detached distances


def test_released_code_flag_gives_the_bond_only_model(mols):
    """The official collator leaves A_attr = A_rep = 0: ReBind then computes exactly what the bond-only model does."""
    b = collate(mols)
    torch.manual_seed(0)
    faithful = ConformerModel(variant="rebind", released_code=True, beta_init=0.3)
    torch.manual_seed(0)
    bond = ConformerModel(variant="bond", beta_init=0.3)
    state = {k: v for k, v in faithful.state_dict().items() if not k.startswith("decoder") or "beta" not in k}
    bond.load_state_dict(state, strict=False)
    out_f, out_b = faithful(b), bond(b)
    assert not out_f.relations[:, 1:].any()
    assert torch.allclose(out_f.coords, out_b.coords, atol=1e-6)


def test_padding_does_not_change_a_molecule_s_prediction(mols):
    torch.manual_seed(0)
    model = ConformerModel(variant="rebind").eval()
    alone = model(collate(mols[:1])).coords[0]
    together = model(collate(mols)).coords[0, : mols[0].n_atoms]
    assert torch.allclose(alone, together, atol=1e-5)


def test_loss_is_half_the_sum_of_both_d_maes(mols):
    from companion.rebind.model import masked_distance_mae

    torch.manual_seed(0)
    b = collate(mols)
    out = ConformerModel(variant="gtmgc")(b)
    loss = distance_loss(out, b)
    enc = masked_distance_mae(out.enc_coords, b.coords, b.mask)
    dec = masked_distance_mae(out.coords, b.coords, b.mask)
    assert loss.item() == pytest.approx(0.5 * (enc.item() + dec.item()))


def test_gradients_are_finite(mols):
    torch.manual_seed(0)
    model = ConformerModel(variant="rebind")
    b = collate(mols)
    distance_loss(model(b), b).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.decoder[0].attn.beta.grad is not None


def test_bad_configs_and_inputs(mols):
    with pytest.raises(ValueError, match="variant must be one of"):
        ConformerConfig(variant="egnn")
    with pytest.raises(ValueError, match="divisible by n_heads"):
        ConformerConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="d_model must be an int >= 1"):
        ConformerConfig(d_model=0)
    with pytest.raises(TypeError, match="expected a Batch"):
        ConformerModel()(mols)
    with pytest.raises(ValueError, match="need d_model >= 14"):
        ConformerModel(d_model=12, n_heads=4)(collate(mols))
    b = collate(mols)
    b.adjacency = b.adjacency[:, :-1]
    with pytest.raises(ValueError, match="batch tensors disagree"):
        ConformerModel()(b)


def test_same_seed_gives_every_variant_the_same_initial_weights():
    """A controlled comparison: the variants differ in their decoder relations and nothing else."""
    models = {}
    for variant in ("bond", "gtmgc", "rebind", "near"):
        torch.manual_seed(0)
        models[variant] = ConformerModel(variant=variant).state_dict()
    ref = models["bond"]
    for state in models.values():
        for key, value in ref.items():
            other = state[key]
            if key.startswith("decoder") and key.endswith("beta"):
                assert torch.equal(other[0], value[0])  # the bond relation's β
            else:
                assert torch.equal(other, value), key
    assert models["rebind"]["decoder.0.attn.beta"].std() > 0.3  # N(0, 1) draws, as the official code


# ------------------------------------------------------------------------- bad input, one way everywhere

def test_config_rejects_bool_and_nan_beta_init():
    with pytest.raises(TypeError, match="beta_init must be a real number"):  # was: beta_init=True kept
        ConformerConfig(beta_init=True)
    with pytest.raises(ValueError, match="beta_init must be a finite number"):  # was: a model of NaN outputs
        ConformerConfig(beta_init=math.nan)
    with pytest.raises(TypeError, match="d_model must be an int"):
        ConformerConfig(d_model=64.0)
    with pytest.raises(TypeError, match="released_code must be bool"):
        ConformerConfig(released_code=1)


def test_config_accepts_numpy_ints_as_plain_ints():
    """numpy ints were rejected here but accepted by RelationAttention; now accepted (and stored as int) by both."""
    import numpy as np

    c = ConformerConfig(d_model=np.int64(32), n_heads=np.int32(4))
    assert c.d_model == 32 and type(c.d_model) is int and type(c.n_heads) is int
    RelationAttention(np.int64(32), 4, 1)


def test_modulated_scores_rejects_batch_broadcasting():
    with pytest.raises(ValueError, match="same B and N"):  # was: relations of molecule 0 used for all four
        modulated_scores(torch.randn(4, 2, 3, 3), torch.randn(1, 2, 3, 3), torch.randn(2, 2))


def test_modulated_scores_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="relations, beta must have the same dtype"):  # was: einsum RuntimeError
        modulated_scores(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(2, 2))


def test_distance_loss_rejects_wrong_objects(mols):
    b = collate(mols)
    with pytest.raises(TypeError, match="out must be ConformerOutput"):  # was: AttributeError
        distance_loss(None, b)
    out = ConformerModel()(b)
    with pytest.raises(ValueError, match="out.enc_coords must have the shape of batch.coords"):
        distance_loss(out, collate(mols[:2]))
    with pytest.raises(TypeError, match="config must be ConformerConfig"):  # was: TypeError from replace()
        ConformerModel("rebind", d_model=32)


def test_relation_attention_checks_the_head_split_at_construction():
    with pytest.raises(ValueError, match="d_model \\(30\\) must be divisible by n_heads \\(4\\)"):  # was: at forward
        RelationAttention(30, 4, 1)
    with pytest.raises(ValueError, match="n_relations must be an int >= 1"):
        RelationAttention(32, 4, 0)


def _builtin_rebind_relations(model, batch, dist):
    """ReBind's own relations, rebuilt from public functions: bonds, attractive and repulsive force edges."""
    from companion.rebind import force_edges

    a_attr, a_rep = force_edges(dist, batch.z, batch.adjacency, batch.mask)
    return torch.stack([batch.adjacency, a_attr, a_rep], 1)


def test_decoder_relations_hook_replaces_the_variants_relations(mols):
    b = collate(mols)
    torch.manual_seed(0)
    plain = ConformerModel(variant="rebind")
    seen = {}

    def spy(model, batch, dist):
        seen.update(model=model, requires_grad=dist.requires_grad, shape=tuple(dist.shape))
        return _builtin_rebind_relations(model, batch, dist)

    torch.manual_seed(0)
    hooked = ConformerModel(variant="rebind", decoder_relations=spy)
    out_p, out_h = plain(b), hooked(b)
    # the same relations through the hook: bit-identical outputs; the hook saw the model and detached distances
    assert torch.equal(out_h.relations, out_p.relations) and torch.equal(out_h.coords, out_p.coords)
    assert seen == {"model": hooked, "requires_grad": False, "shape": (4, 14, 14)}
    assert out_h.relation_names == ("bond", "attractive", "repulsive")

    def bonds_only(model, batch, dist):
        z = torch.zeros_like(batch.adjacency)
        return torch.stack([batch.adjacency, z, z], 1)

    torch.manual_seed(0)
    other = ConformerModel(variant="rebind", decoder_relations=bonds_only)(b)
    assert not other.relations[:, 1:].any() and not torch.equal(other.coords, out_p.coords)


def test_decoder_relations_hook_is_checked(mols):
    b = collate(mols)
    with pytest.raises(TypeError, match="decoder_relations must be None or a callable"):
        ConformerModel(variant="rebind", decoder_relations="force_edges")
    two = lambda model, batch, dist: torch.stack([batch.adjacency, batch.adjacency], 1)  # noqa: E731
    with pytest.raises(ValueError, match=r"decoder_relations must return floating relations \[B, R, N, N\] = "
                                         r"\[4, 3, 14, 14\]"):
        ConformerModel(variant="rebind", decoder_relations=two)(b)
    ints = lambda model, batch, dist: torch.zeros(4, 2, 14, 14, dtype=torch.int64)  # noqa: E731
    with pytest.raises(ValueError, match="decoder_relations must return floating"):
        ConformerModel(variant="near", decoder_relations=ints)(b)
