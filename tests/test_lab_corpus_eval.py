import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from companion.lab import corpus_tokens, distinct_per_block, load_corpus, perplexity
from companion.lab.corpus import stdlib_files


# ----------------------------------------------------------------------------------------------- corpus
def test_splits_are_disjoint_deterministic_and_cover_the_corpus():
    train, val = load_corpus("train"), load_corpus("validation")
    assert set(train.paths).isdisjoint(val.paths)
    assert len(train) + len(val) == len(stdlib_files())
    assert list(train.paths) == sorted(train.paths) and load_corpus("validation").paths == val.paths
    assert 0.02 < len(val) / (len(train) + len(val)) < 0.10
    assert not any(p.startswith(("test/", "idlelib/idle_test/")) or "site-packages" in p for p in train.paths)
    assert "os.py" in train.paths + val.paths
    assert train.fingerprint() != val.fingerprint()
    assert "standard library" in train.describe()


def test_load_corpus_rejects_unknown_split():
    with pytest.raises(ValueError, match="split must be one of"):
        load_corpus("test")


class _CharTokenizer:
    """A tiny stand-in tokenizer: one id per character."""

    eos_token_id = 0
    name_or_path = "chars"

    def get_vocab(self):
        return {chr(i): i for i in range(1, 256)}

    def __call__(self, texts, add_special_tokens=False):
        return SimpleNamespace(input_ids=[[min(ord(c), 255) for c in t] for t in texts])


def test_corpus_tokens_are_cached_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPANION_CACHE", str(tmp_path))
    tok = _CharTokenizer()
    first = corpus_tokens(tok, "validation")
    val = load_corpus("validation")
    assert first.dtype == torch.int64
    assert first.numel() == val.num_chars + len(val)  # one EOS after each document
    files = list((tmp_path / "tokens").glob("*.npy"))
    assert len(files) == 1
    files[0].write_bytes(files[0].read_bytes()[:100])  # truncate the cache file
    again = corpus_tokens(tok, "validation")
    assert torch.equal(first, again)
    assert np.load(files[0]).size == first.numel()
    assert torch.equal(corpus_tokens(tok, "validation", max_tokens=10), first[:10])
    with pytest.raises(ValueError, match="max_tokens"):
        corpus_tokens(tok, "validation", max_tokens=0)


# ----------------------------------------------------------------------------------------------- perplexity
class _Bigram(torch.nn.Module):
    """logits[t] = table[x_t]: predicts x_{t+1} from x_t alone."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, ids):
        return SimpleNamespace(logits=self.table[ids])


def _bigram_ppl(table, ids, targets_at):
    logp = torch.log_softmax(table, -1)
    nll = [-logp[ids[t - 1], ids[t]].item() for t in targets_at]
    return math.exp(sum(nll) / len(nll))


def test_uniform_model_has_perplexity_equal_to_vocabulary_size():
    model = _Bigram(torch.zeros(7, 7))
    ids = torch.randint(0, 7, (100,))
    assert perplexity(model, ids, context=16) == pytest.approx(7.0)


def test_perfect_model_has_perplexity_one():
    ids = torch.arange(50) % 5
    table = torch.full((5, 5), -1e4)
    for a in range(5):
        table[a, (a + 1) % 5] = 0.0
    assert perplexity(_Bigram(table), ids, context=8) == pytest.approx(1.0)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 60), context=st.integers(2, 12), data=st.data())
def test_each_token_scored_once_as_in_a_hand_count(n, context, data):
    stride = data.draw(st.integers(1, context))
    g = torch.Generator().manual_seed(n * 100 + context)
    table = torch.randn(4, 4, generator=g)
    ids = torch.randint(0, 4, (n,), generator=g)
    # hand count: a token t is scored in the first window (start s, s < t < s + context) that holds it
    scored, done_until = [], 1
    for s in range(0, n - 1, stride):
        end = min(s + context, n)
        scored += [t for t in range(max(done_until, s + 1), end)]
        done_until = max(done_until, end)
    assert len(scored) == len(set(scored))
    expected = _bigram_ppl(table, ids, scored)
    assert perplexity(_Bigram(table), ids, context=context, stride=stride) == pytest.approx(expected, rel=1e-5)


def test_overlapping_windows_score_every_token_after_the_first():
    table = torch.randn(4, 4)
    ids = torch.randint(0, 4, (40,))
    assert perplexity(_Bigram(table), ids, context=4, stride=1) == pytest.approx(_bigram_ppl(table, ids, range(1, 40)), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,ids,match",
    [
        ({"context": 1}, torch.arange(10), "context must be an int >= 2"),
        ({"context": 4, "stride": 5}, torch.arange(10), "stride"),
        ({}, torch.arange(1), "at least 2 tokens"),
        ({}, torch.zeros(2, 3, dtype=torch.long), "shape"),
        ({}, torch.rand(10), "token_ids must have torch.int64 or torch.int32"),
    ],
)
def test_perplexity_rejects_bad_input(kwargs, ids, match):
    with pytest.raises((ValueError, TypeError), match=match):
        perplexity(_Bigram(torch.zeros(10, 10)), ids, **kwargs)


# ----------------------------------------------------------------------------------------------- distinct_per_block
def test_distinct_per_block_counts_by_hand():
    w = torch.tensor([[1.0, 1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0]])
    assert distinct_per_block(w, block=4).tolist() == [3, 1]
    with pytest.raises(ValueError, match="divisible"):
        distinct_per_block(torch.zeros(3, 5), block=4)
