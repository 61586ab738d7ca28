"""The tiny Llama-style LM, the BPE tokenizer and its cache, training (smoke, determinism, λ dynamics) and the
routing read-outs. Everything runs on a 300-token BPE of the first 100k characters, in a temporary cache."""

import math
import warnings

import numpy as np
import pytest
import torch

from companion.remoe import (
    EOS,
    LMConfig,
    TinyLM,
    corpus_ids,
    expert_counts,
    experts_vs_frequency,
    load_tokenizer,
    lr_at,
    rope,
    text_expert_counts,
    token_frequency,
    train,
    train_tokenizer,
)
from companion.remoe.tokenizer import tokenizer_path

TINY = LMConfig(vocab_size=300, d_model=32, n_layers=2, n_heads=2, d_ff=64, num_experts=4, k=1)
RUN = dict(batch_size=4, seq_len=32, lr=3e-3, show_progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(remoe_data):
    return remoe_data


@pytest.fixture(scope="module")
def remoe_run(data):
    _, train_ids, val_ids = data
    return train(TINY, steps=150, log_every=25, train_ids=train_ids, val_ids=val_ids, seed=0, **RUN)


# ------------------------------------------------------------------------------------------------- the model
def test_model_shapes_and_one_routing_per_moe_layer():
    for ffn, n_routings in (("dense", 0), ("topk", 2), ("remoe", 2)):
        torch.manual_seed(0)
        model = TinyLM(TINY.replace(ffn=ffn))
        logits, routings = model(torch.randint(0, 300, (3, 10)))
        assert logits.shape == (3, 10, 300) and len(routings) == n_routings
        assert all(r.gates.shape == (30, 4) for r in routings)


def test_matched_active_compute_dense_ffn_equals_one_expert():
    dense, topk = TinyLM(TINY.replace(ffn="dense")), TinyLM(TINY.replace(ffn="topk"))
    router_params = TINY.n_layers * TINY.num_experts * TINY.d_model
    assert topk.num_parameters(active=True) == dense.num_parameters() + router_params
    expert = topk.blocks[0].ffn
    assert expert.w_in[0].shape == dense.blocks[0].ffn.w_in.shape  # each expert is a full FFN


def test_model_is_causal_for_every_ffn_kind():
    for ffn in ("dense", "topk", "remoe"):
        torch.manual_seed(0)
        model = TinyLM(TINY.replace(ffn=ffn))
        ids = torch.randint(0, 300, (1, 12))
        changed = ids.clone()
        changed[0, 8:] = (changed[0, 8:] + 1) % 300
        a, _ = model(ids)
        b, _ = model(changed)
        assert torch.allclose(a[0, :8], b[0, :8], atol=1e-5) and not torch.allclose(a[0, 8:], b[0, 8:])


def test_rope_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(8), torch.randn(8)
    S = 10
    Q = rope(q.expand(1, 1, S, 8).contiguous())[0, 0]
    K = rope(k.expand(1, 1, S, 8).contiguous())[0, 0]
    scores = Q @ K.t()  # scores[m, n] = <R_m q, R_n k> = f(m - n)
    for offset in range(-3, 4):
        diag = torch.diagonal(scores, offset)
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-5)
    assert torch.allclose(rope(q.view(1, 1, 1, 8))[0, 0, 0], q)  # position 0 is not rotated


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    kw = dict(lr=5e-4, min_lr=5e-5, warmup_steps=10, steps=110)
    assert lr_at(0, **kw) == pytest.approx(5e-5) and lr_at(9, **kw) == pytest.approx(5e-4)
    assert lr_at(60, **kw) == pytest.approx((5e-4 + 5e-5) / 2)
    assert lr_at(110, **kw) == pytest.approx(5e-5)


# ------------------------------------------------------------------------------------------------- tokenizer
def test_tokenizer_is_byte_level_with_eos_zero_and_round_trips(data):
    tok, train_ids, val_ids = data
    assert tok.token_to_id(EOS) == 0 and tok.get_vocab_size() == 300
    text = "def f(x):\n    return x ** 2  # ünïcode ✓\n"
    assert tok.decode(tok.encode(text).ids) == text
    assert train_ids.dtype == torch.int64 and 0 <= train_ids.min() and train_ids.max() < 300
    assert (train_ids == 0).any()  # documents separated by <|endoftext|>


def test_tokenizer_training_is_deterministic():
    docs = ["def foo(x):\n    return x + 1\n" * 20, "class Bar:\n    pass\n" * 10]
    assert train_tokenizer(docs, vocab_size=280).to_str() == train_tokenizer(docs, vocab_size=280).to_str()


def test_corrupted_or_missing_cache_files_are_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    first = load_tokenizer(vocab_size=270, max_chars=20_000)
    path = tokenizer_path(vocab_size=270, max_chars=20_000)
    assert path.is_file() and str(path).startswith(str(tmp_path))
    path.write_text('{"version": "1.0", "trunc')  # an interrupted write from an older version, say
    with pytest.warns(UserWarning, match="Rebuilding the cached tokenizer"):
        again = load_tokenizer(vocab_size=270, max_chars=20_000)
    assert again.to_str() == first.to_str()
    ids = corpus_ids("validation", tokenizer=again, max_chars=5_000)
    (npy,) = [p for p in (tmp_path / "remoe").glob("validation-*.npy")]
    npy.write_bytes(npy.read_bytes()[:40])  # truncated
    with pytest.warns(UserWarning, match="Rebuilding the cached token ids"):
        assert torch.equal(corpus_ids("validation", tokenizer=again, max_chars=5_000), ids)
    npy.unlink()  # missing: rebuilt silently
    path.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_tokenizer(vocab_size=270, max_chars=20_000).to_str() == first.to_str()
        assert torch.equal(corpus_ids("validation", tokenizer=again, max_chars=5_000), ids)
    assert not list((tmp_path / "remoe").glob(".*tmp*"))  # no temporary files left behind


# ------------------------------------------------------------------------------------------------- training
def test_training_smoke_loss_decreases_and_same_seed_same_numbers(data):
    _, train_ids, val_ids = data
    runs = {}
    for ffn in ("dense", "topk"):
        runs[ffn] = h = train(TINY.replace(ffn=ffn), steps=30, log_every=10, train_ids=train_ids, val_ids=val_ids, **RUN)
        assert np.mean(h.trace["loss"][-5:]) < np.mean(h.trace["loss"][:5]) - 0.3
        assert h.trace["loss"][0] == pytest.approx(math.log(300), abs=0.2)  # starts near uniform
        assert h.final_val_loss is not None and h.final_val_loss < math.log(300)
    assert runs["topk"].records[-1]["active_experts"] == 1.0 and "aux_loss" in runs["topk"].records[-1]
    assert runs["topk"].records[-1]["aux_loss"] == pytest.approx(0.01 * TINY.n_layers, rel=0.5)  # ≈ balanced
    again = train(TINY.replace(ffn="topk"), steps=30, log_every=10, train_ids=train_ids, val_ids=val_ids, **RUN)
    assert again.trace == runs["topk"].trace and again.records == runs["topk"].records
    other = train(TINY.replace(ffn="topk"), steps=30, log_every=10, train_ids=train_ids, val_ids=val_ids, seed=1, **RUN)
    assert other.trace["loss"] != runs["topk"].trace["loss"]


def test_remoe_lambda_follows_the_controller_and_sparsity_reaches_target(remoe_run):
    h = remoe_run
    lam, s = np.array(h.trace["lam"]), np.array(h.trace["sparsity"])
    assert lam[0] == 1e-8
    target = 1 - TINY.k / TINY.num_experts
    expected = np.where(s[:-1] < target, 1.2, 1 / 1.2)
    assert np.allclose(lam[1:] / lam[:-1], expected)  # one α step per training step
    assert s[:10].min() < 0.2  # stage I: near-dense while λ is tiny
    assert abs(s[-30:].mean() - target) < 0.1  # stage III: around the target
    assert lam[-30:].min() > 1e-5  # λ had to grow by orders of magnitude to get there
    last = h.records[-1]
    assert len(last["layer_sparsity"]) == TINY.n_layers and len(last["expert_load"][0]) == TINY.num_experts
    assert last["active_experts"] == pytest.approx(TINY.num_experts * (1 - last["sparsity"]))
    assert {"lam", "reg_loss", "val_loss", "dead_tokens", "lr"} <= set(last)
    json_ready = h.to_dict()
    assert "model" not in json_ready and json_ready["config"]["ffn"] == "remoe"


def test_expert_counts_and_experts_vs_frequency(remoe_run, data):
    tok, train_ids, val_ids = data
    model = remoe_run.model
    counts = expert_counts(model, val_ids[:50])
    assert counts.shape == (TINY.n_layers, 50) and counts.dtype == torch.int64
    assert 0 <= counts.min() and counts.max() <= TINY.num_experts
    tokens, c = text_expert_counts(model, tok, "import os\nprint(os.getcwd())\n")
    assert len(tokens) == c.shape[1] and "".join(tokens) == "import os\nprint(os.getcwd())\n"
    freq = token_frequency(train_ids, 300)
    assert freq.sum() == pytest.approx(1.0)
    out = experts_vs_frequency(model, val_ids, freq, bins=4, seq_len=32, max_tokens=2048)
    assert sum(out["tokens"]) == 2048 and out["frequency"] == sorted(out["frequency"])
    assert all(0 <= m <= TINY.num_experts for m in out["mean_experts"])
    topk = train(TINY.replace(ffn="topk"), steps=2, train_ids=train_ids, val_ids=val_ids, **RUN).model
    assert (expert_counts(topk, val_ids[:40]) == 1).all()  # TopK: always exactly k


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"ffn": "switch"}, "ffn must be one of"),
        ({"k": 5}, "k must be <= the number of experts E = 4, got k = 5"),
        ({"num_experts": 0}, "num_experts"),
        ({"d_model": 30}, "heads of even size"),
        ({"l1": "l2"}, "l1 must be"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_config_bad_input(changes, match):
    with pytest.raises(ValueError, match=match):
        TINY.replace(**changes)


def test_training_and_helpers_bad_input(data):
    tok, train_ids, val_ids = data
    kw = dict(train_ids=train_ids, val_ids=val_ids, show_progress=False)
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        train(TINY, steps=0, **kw)
    with pytest.raises(ValueError, match="lr must be a number > 0"):
        train(TINY, steps=1, lr=0.0, **kw)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        train(TINY, steps=1, train_ids=train_ids[:10], val_ids=val_ids, seq_len=32, show_progress=False)
    with pytest.raises(TypeError, match="config must be an LMConfig"):
        train({"ffn": "remoe"}, steps=1, **kw)
    with pytest.raises(TypeError, match="train_ids must have an integer dtype"):
        train(TINY, steps=1, train_ids=train_ids.float(), val_ids=val_ids, show_progress=False)
    model = TinyLM(TINY)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 300\)"):
        model(torch.tensor([[1, 300]]))
    with pytest.raises(ValueError, match=r"shape \[B, S\]"):
        model(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match="MoE layers"):
        expert_counts(TinyLM(TINY.replace(ffn="dense")), val_ids[:10])
    with pytest.raises(ValueError, match=r"frequency must have shape \[300\]"):
        experts_vs_frequency(model, val_ids, np.ones(10))
    with pytest.raises(ValueError, match="vocab_size must be an int >= 258"):
        train_tokenizer(["abc"], vocab_size=100)
    with pytest.raises(TypeError, match="iterable of documents"):
        train_tokenizer("abc", vocab_size=300)
    with pytest.raises(ValueError, match="split must be one of"):
        corpus_ids("test", tokenizer=tok)
    with pytest.raises(ValueError, match="max_chars"):
        load_tokenizer(max_chars=0)


def test_config_rejects_remoe_with_one_expert():
    # before: accepted, and the trainer failed later (the λ controller's target sparsity 1 - k/E is 0)
    with pytest.raises(ValueError, match=r"ffn='remoe' needs k < num_experts .* got k = 1, num_experts = 1"):
        LMConfig(ffn="remoe", num_experts=1)
    with pytest.raises(ValueError, match="num_experts"):
        TINY.replace(num_experts=1)  # TINY is a ReMoE config with k = 1
    assert LMConfig(ffn="topk", num_experts=1).num_experts == 1  # one always-chosen expert still trains
    assert LMConfig(ffn="dense", num_experts=1).ffn == "dense"
