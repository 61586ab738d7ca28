"""The long-context retrieval driver: memory-safe H2O scores, the needle-survival measurement, resuming, the summary."""

import pytest
import torch

from companion.pyramidkv.methods import _h2o_scores
from companion.pyramidkv.scoring import last_queries_attention


@pytest.mark.parametrize("chunk", [1, 7, 16, 49, 50, 256])
def test_chunked_h2o_scores_equal_the_one_block_computation(chunk):
    torch.manual_seed(0)
    q, w = 50, 4
    Q, K = torch.randn(2, 9, q, 8), torch.randn(2, 3, q, 8)  # SmolLM2's 9 query / 3 KV heads
    one_block = last_queries_attention(Q, K, q).sum(dim=2)[..., : q - w].reshape(2, 3, 3, q - w).mean(2)
    torch.testing.assert_close(_h2o_scores(Q, K, w, chunk=chunk), one_block, rtol=1e-5, atol=1e-6)
    # every query spreads a mass of 1 over the keys it sees: the prefix receives at most q in all
    assert torch.all(_h2o_scores(Q, K, w, chunk=chunk).sum(-1) <= q + 1e-4)


def _tiny_llama(vocab_size: int):
    """A two-layer random Llama over the real tokenizer's vocabulary (two query heads share one KV head)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024)
    return LlamaForCausalLM(cfg).eval()


QUICK = {"lengths": [160, 224], "prompts": 2, "capacities": [24, 48]}


@pytest.fixture(scope="module")
def tiny(smollm):
    return _tiny_llama(smollm[0].config.vocab_size), smollm[1]


@pytest.fixture(scope="module")
def run(tiny, one_thread):
    from companion.pyramidkv.experiments import long_retrieval

    return long_retrieval(*tiny, **QUICK)


@pytest.mark.model
def test_one_row_per_prompt_question_method_and_capacity(run):
    rows = run["rows"]
    assert len(rows) == 2 * 2 * 2 * (1 + 4 * 2)  # lengths × prompts × questions × (full + 4 methods × 2 C)
    assert run["lengths"] == [160, 224] and run["prompts"] == 2 and run["layers"] == 2 and run["kv_heads"] == 1
    depths = {(r["length"], r["prompt"]): r["depth"] for r in rows}
    assert len(set(depths.values())) == 4 and all(0 <= d <= 1 for d in depths.values())
    for r in rows:
        assert r["digit_tokens"] == 10  # the key twice, one token per digit
        assert len(r["needle_kept"]) == len(r["digits_kept"]) == 2
        assert all(0 <= k <= r["needle_tokens"] for k in r["needle_kept"])
        assert all(0 <= k <= r["digit_tokens"] for k in r["digits_kept"])
        if r["method"] == "snapkv":
            assert r["kept_tokens"] == r["capacity"]


@pytest.mark.model
def test_the_survival_measurement_matches_what_each_method_keeps(tiny, run):
    from companion.pyramidkv.experiments import QUESTION, long_prompt

    tok = tiny[1]
    q_len = len(tok(QUESTION, add_special_tokens=False).input_ids)
    for r in run["rows"]:
        if r["method"] == "full":
            assert r["needle_kept"] == [r["needle_tokens"]] * 2 and r["digits_kept"] == [10] * 2
        if r["method"] == "streaming":  # four sinks and the last C - 4 positions of the prefilled prompt
            p = long_prompt(tok, length=r["length"], index=r["prompt"])
            q = p.context.shape[1] + (q_len if r["question"] == "inside" else 0)
            kept = set(range(4)) | set(range(q - (r["capacity"] - 4), q))
            expected = len(kept & set(range(*p.needle_span)))
            assert r["needle_kept"] == [expected] * 2
        if r["question"] == "after":
            assert r["question_kept"] is None and r["question_tokens"] is None
            continue
        assert r["question_tokens"] == q_len - 8  # the question before the always-kept window of 8
        if r["method"] == "full":
            assert r["question_kept"] == [q_len - 8] * 2
        if r["method"] == "streaming":  # the last C - 4 positions hold the whole question at these capacities
            assert r["question_kept"] == [q_len - 8] * 2
    # at C = 24 of 160 tokens the selecting methods lose part of the needle somewhere
    small = [r for r in run["rows"] if r["capacity"] == 24 and r["method"] in ("snapkv", "h2o")]
    assert any(k < r["needle_tokens"] for r in small for k in r["needle_kept"])


@pytest.mark.model
def test_an_interrupted_run_resumes_where_it_stopped(tiny, run, tmp_path):
    from companion.lab import load_results, save_results
    from companion.pyramidkv.experiments import long_retrieval

    class Interrupted(Exception):
        pass

    def save_then_stop(payload):
        save_results("pyramidkv", "long_retrieval", payload, seed=0, folder=tmp_path)
        raise Interrupted

    with pytest.raises(Interrupted):
        long_retrieval(*tiny, **QUICK, on_prompt=save_then_stop)
    saved = load_results("pyramidkv", "long_retrieval", folder=tmp_path)
    assert {(r["length"], r["prompt"]) for r in saved["rows"]} == {(160, 0)}
    ran = []
    resumed = long_retrieval(*tiny, **QUICK, previous=saved,
                             on_prompt=lambda p: ran.append((p["rows"][-1]["length"], p["rows"][-1]["prompt"])))
    assert ran == [(224, 0), (160, 1), (224, 1)]  # prompt by prompt across the lengths
    assert resumed["rows"] == run["rows"]
    # rows from before the question's survival was recorded are run again, pair by pair, and replaced
    old = {**saved, "rows": [{k: v for k, v in r.items() if not k.startswith("question_")} for r in run["rows"]]}
    ran.clear()
    refreshed = long_retrieval(*tiny, **{**QUICK, "lengths": [224]}, previous=old,
                               on_prompt=lambda p: ran.append(len(p["rows"])))
    assert ran == [len(run["rows"])] * 2  # each finished pair replaces its own rows; the 160-token rows stay
    key = lambda r: (r["length"], r["prompt"], r["question"], r["method"], r["capacity"])  # noqa: E731
    fresh = {key(r): r for r in run["rows"]}
    for r in refreshed["rows"]:
        assert r == (fresh[key(r)] if r["length"] == 224 else old["rows"][[key(o) for o in old["rows"]].index(key(r))])
    # other settings: nothing is kept
    other = long_retrieval(*tiny, lengths=[160], prompts=1, capacities=[32], methods=["streaming"], previous=saved)
    assert {r["capacity"] for r in other["rows"]} == {32}


@pytest.mark.model
def test_lengths_the_model_or_the_needle_cannot_hold_are_refused(tiny):
    from companion.pyramidkv.experiments import long_retrieval

    with pytest.raises(ValueError, match="lengths: 2000 tokens exceed the model's 1024 positions"):
        long_retrieval(*tiny, lengths=[2000], prompts=1)
    with pytest.raises(ValueError, match="lengths: 40 tokens cannot hold"):
        long_retrieval(*tiny, lengths=[40], prompts=1)
    with pytest.raises(ValueError, match=r"capacities\[0\]"):
        long_retrieval(*tiny, lengths=[160], prompts=1, capacities=[8])
    with pytest.raises(ValueError, match="questions"):
        long_retrieval(*tiny, lengths=[160], prompts=1, questions=["before"])


def _row(found, needle_kept, digits_kept, *, method="snapkv", capacity=64):
    return {"length": 2048, "question": "inside", "method": method, "capacity": capacity, "found": found,
            "needle_tokens": 20, "digit_tokens": 10, "needle_kept": needle_kept, "digits_kept": digits_kept}


def test_summary_gives_the_question_survival_over_the_rows_that_record_it():
    from companion.pyramidkv.experiments import long_summary

    rows = [{**_row(True, [20, 20, 20], [10, 10, 10]), "question_tokens": 8, "question_kept": [8, 4, 0]},
            {**_row(False, [0, 0, 0], [0, 0, 0]), "question_tokens": 8, "question_kept": [2, 2, 2]},
            _row(False, [0, 0, 0], [0, 0, 0])]  # a row from before the question was counted
    (snap,) = long_summary(rows, layers=3)
    assert snap["n"] == 3 and snap["question_n"] == 2
    assert snap["question_share"] == pytest.approx([(1 + 0.25) / 2, (0.5 + 0.25) / 2, 0.25 / 2])
    after = [{**r, "question": "after", "question_tokens": None, "question_kept": None} for r in rows[:2]]
    (a,) = long_summary(after, layers=3)
    assert a["question_n"] == 0 and a["question_share"] is None


def test_summary_gives_wilson_intervals_and_survival_per_layer():
    from companion.lab.stats import wilson_interval
    from companion.pyramidkv.experiments import long_summary

    rows = [_row(True, [20, 10, 0], [10, 5, 0]), _row(False, [0, 0, 0], [0, 0, 0]),
            _row(False, [4, 0, 2], [0, 0, 1]), _row(True, [20, 20, 20], [10, 10, 10], method="full", capacity=None)]
    full, snap = long_summary(rows, layers=3)  # full cache first
    assert (full["method"], full["n"], full["found"], full["accuracy"]) == ("full", 1, 1, 1.0)
    assert (snap["n"], snap["found"]) == (3, 1)
    assert (snap["low"], snap["high"]) == pytest.approx(wilson_interval(1, 3))
    assert snap["needle_layers"] == pytest.approx((2 + 0 + 2) / 3)
    assert snap["needle_layers_found"] == 2 and snap["needle_layers_missed"] == 1
    assert snap["digit_layers"] == pytest.approx((2 + 0 + 1) / 3)
    assert snap["needle_share"] == pytest.approx([(1 + 0 + 0.2) / 3, 0.5 / 3, 0.1 / 3])
    assert snap["digit_share"] == pytest.approx([1 / 3, 0.5 / 3, 0.1 / 3])
    assert full["needle_layers_missed"] is None


@pytest.mark.model
def test_resume_needs_a_full_run():
    from companion.__main__ import main

    with pytest.raises(SystemExit, match="only --full --resume can resume"):
        main(["pyramidkv", "long", "--resume"])
