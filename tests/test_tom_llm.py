import numpy as np
import pytest

from companion.tom import get_game, play
from companion.tom.llm import PROMPTS, LLMAgent, ScoringLM, rules_text


def test_rules_text_states_every_payoff_cell_unless_told_not_to():
    text = rules_text(get_game("ipd"))
    assert "you play defect and the partner plays cooperate: you get 5, the partner gets 0." in text
    assert text.count("- you play") == 4
    assert "Points" not in rules_text(get_game("ipd"), payoffs=False)


def test_bad_llm_agent_input_is_rejected():
    with pytest.raises(ValueError, match="prompt must be one of .*got 'cot'"):
        LLMAgent(prompt="cot")
    with pytest.raises(ValueError, match="temperature must be"):
        LLMAgent(temperature=-1)
    with pytest.raises(TypeError, match="both model and tokenizer"):
        LLMAgent(model=object())


@pytest.mark.model
def test_cached_scoring_gives_the_same_logprobs_as_re_encoding(smollm):
    model, tok = smollm
    runs = {}
    for reuse in (True, False):
        agent = LLMAgent(model, tok, reuse_cache=reuse)
        ep = play("ipd", agent, "tft", horizon=2, seed=0)
        runs[reuse] = (ep, np.array(agent.action_logprobs), np.array(agent.prediction_logprobs),
                       agent.lm.tokens_encoded)
    (ep_c, act_c, pred_c, tok_c), (ep_r, act_r, pred_r, tok_r) = runs[True], runs[False]
    np.testing.assert_allclose(act_c, act_r, atol=1e-4)
    np.testing.assert_allclose(pred_c, pred_r, atol=1e-4)
    np.testing.assert_array_equal(ep_c.actions, ep_r.actions)
    assert tok_c * 3 < tok_r  # the cache encodes each token once


@pytest.mark.model
def test_scoring_lm_leaves_the_prompt_unchanged(smollm):
    model, tok = smollm
    lm = ScoringLM(model, tok)
    lm.reset("Round 1: you played rock, the partner played paper.\n")
    first = lm.score("Round 2: you played", ["rock", "paper", "scissors"])
    assert lm.cache.get_seq_length() == len(lm.ids)
    np.testing.assert_allclose(lm.score("Round 2: you played", ["rock", "paper", "scissors"]), first, atol=1e-5)
    assert (first < 0).all()


@pytest.mark.model
@pytest.mark.parametrize("prompt", PROMPTS)
def test_every_prompt_family_plays_legal_actions(smollm, prompt):
    model, tok = smollm
    ep = play("ipd", LLMAgent(model, tok, prompt=prompt), "tft", horizon=2, seed=0)
    assert set(ep.actions.tolist()) <= {0, 1} and ep.invalid == 0
    assert np.allclose(ep.predictions.sum(1), 1)


# ------------------------------------------------------------------------------------------- HTTP backend
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from http.server import BaseHTTPRequestHandler, HTTPServer  # noqa: E402

from companion.tom.llm import HTTPAgent, HTTPBackend, parse_action  # noqa: E402


RPS_WORDS = ("rock", "paper", "scissors")


@pytest.mark.parametrize("text, want", [
    ("I will play Paper, not rock.", 1),
    ("ROCK!", 0),
    ("rocks and papers", None),  # whole words only
    ("", None),
    # "will play X, so I play Y": the reply's own choice, not the prediction it starts with (was rock)
    ("The partner will play rock, so I play paper.", 1),
    ("I play paper because the partner will play rock.", 1),
    # negations
    ("I will not play Rock.", None),  # was rock
    ("I will not play rock, I play paper.", 1),
    ("I won't choose rock; I pick scissors", 2),
    ("I will play paper rather than rock", 1),
    ("I will not play rock but paper", 1),
    ("Rock, not scissors.", 0),
    # the explicit answer line wins; it alone is read
    ("I think rock. Answer: scissors", 2),
    ("Rock is tempting.\nAnswer: **Paper**\nGood luck!", 1),
    ("Answer: rock or paper", None),
    ("Answer: lizard. I play rock.", None),  # the answer line names nothing legal
    # history is not a choice; ambiguity is invalid
    ("The partner played rock last round, so I play paper", 1),
    ("Last round the partner played rock.", None),
    ("Rock or paper?", None),
    ("Rock beats scissors, so I play rock.", 0),
    ("My choice is **scissors**.", 2),
])
def test_parse_action_reads_the_committed_choice(text, want):
    assert parse_action(text, RPS_WORDS) == want


def test_parse_action_for_a_prediction_prefers_the_partners_stated_move():
    text = "The partner will play rock, so I play paper."
    assert parse_action(text, RPS_WORDS, who="partner") == 0
    assert parse_action("I think they will probably play scissors.", RPS_WORDS, who="partner") == 2
    assert parse_action("They won't play rock.", RPS_WORDS, who="partner") is None


def test_parse_action_rejects_bad_arguments():
    with pytest.raises(TypeError, match="text must be str"):
        parse_action(None, RPS_WORDS)
    with pytest.raises(ValueError, match="who must be one of"):
        parse_action("rock", RPS_WORDS, who="them")


def _serve(replies):
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, body, self.headers.get("Authorization")))
            out = json.dumps({"choices": [{"message": {"content": replies[(len(seen) - 1) % len(replies)]}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(out.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def test_http_agent_plays_through_an_openai_compatible_endpoint_and_counts_invalid_replies(monkeypatch):
    # replies alternate: action, prediction (play() asks act() first); the second action names no legal move
    server, seen = _serve(["The partner will play rock, so I play paper.\nAnswer: paper",
                           "Answer: rock", "I refuse to answer", "rock"])
    try:
        monkeypatch.setenv("TOM_TEST_KEY", "sk-secret")
        backend = HTTPBackend(f"http://127.0.0.1:{server.server_port}/v1", "tiny", api_key_env="TOM_TEST_KEY",
                              timeout=5)
        assert "sk-secret" not in repr(backend)
        agent = HTTPAgent(backend)
        ep = play("rps", agent, "single-rock", horizon=2, seed=0)
    finally:
        server.shutdown()
    assert seen[0][0] == "/v1/chat/completions" and seen[0][1]["model"] == "tiny"
    assert seen[0][2] == "Bearer sk-secret"
    assert ep.actions[0] == 1 and ep.invalid == 1 and agent.invalid_predictions == 0
    assert ep.accuracy == 1.0
    assert "Round 1: you played paper, the partner played rock." in seen[-1][1]["messages"][0]["content"]
    assert "'Answer: <action>'" in seen[0][1]["messages"][0]["content"]


def test_unreachable_endpoint_fails_fast_with_the_url():
    with socket_closed_port() as port:
        backend = HTTPBackend(f"http://127.0.0.1:{port}/v1", "m", timeout=2)
        t0 = time.perf_counter()
        with pytest.raises(ConnectionError, match=rf"127.0.0.1:{port}/v1/chat/completions"):
            play("rps", HTTPAgent(backend), "tft", horizon=3, seed=0)
        assert time.perf_counter() - t0 < 10


def socket_closed_port():
    import contextlib
    import socket

    @contextlib.contextmanager
    def ctx():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there any more
        yield port

    return ctx()


def test_bad_http_input_is_rejected():
    with pytest.raises(ValueError, match="base_url must start with http"):
        HTTPBackend("localhost:8000", "m")
    with pytest.raises(ValueError, match="timeout must be"):
        HTTPBackend("http://x", "m", timeout=0)
    with pytest.raises(TypeError, match="backend must be an HTTPBackend"):
        HTTPAgent("http://x")


# ------------------------------------------------------------------------------------ bad input, one way
def test_llm_agent_rejects_nan_temperature_and_a_non_model():
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        LLMAgent(temperature=float("nan"))  # was accepted: NaN probabilities at the first sampled round
    with pytest.raises(TypeError, match="model must be a causal language model"):
        LLMAgent(object(), object())  # was accepted, then AttributeError at reset
    with pytest.raises(TypeError, match="model must be a causal language model"):
        ScoringLM(object(), lambda text, **kw: {"input_ids": []})  # was AttributeError: no 'parameters'


def test_http_backend_rejects_a_non_positive_max_tokens():
    with pytest.raises(ValueError, match="max_tokens must be an int >= 1"):
        HTTPBackend("http://x", "m", max_tokens=-5)  # was sent to the endpoint
    with pytest.raises(TypeError, match="base_url must be str"):
        HTTPBackend(3, "m")


def test_parse_action_rejects_one_string_of_words():
    with pytest.raises(TypeError, match="words must be a sequence of words, not one string"):
        parse_action("r", "rock")  # was the index of the letter 'r'


def test_rules_text_takes_a_game_name():
    assert rules_text("ipd") == rules_text(get_game("ipd"))  # was AttributeError for a name
    with pytest.raises(TypeError, match="payoffs must be bool"):
        rules_text("ipd", payoffs="no")


# ------------------------------------------------------------------------------ listing orders (position bias)
from companion.tom import action_orders  # noqa: E402
from companion.tom import experiments as ex  # noqa: E402


def test_rules_text_lists_the_actions_in_the_given_order_and_keeps_the_game():
    text = rules_text("rps", order=("scissors", "paper", "rock"))
    assert "Your actions: scissors, paper, rock. The partner's actions: scissors, paper, rock." in text
    lines = [ln for ln in text.splitlines() if ln.startswith("- you play")]
    assert lines[0] == "- you play scissors and the partner plays scissors: you get 0, the partner gets 0."
    assert sorted(lines) == sorted(ln for ln in rules_text("rps").splitlines() if ln.startswith("- you play"))
    assert rules_text("ipd", order=[1, 0]).count("Your actions: defect, cooperate.") == 1
    assert rules_text("rps", order=["rock", "paper", "scissors"]) == rules_text("rps")
    with pytest.raises(ValueError, match="order must list each of the 3 actions"):
        rules_text("rps", order=["rock", "paper"])
    with pytest.raises(ValueError, match="order must not repeat"):
        rules_text("rps", order=["rock", "Rock", "paper"])
    with pytest.raises(ValueError, match="order: unknown action 'lizard'"):
        rules_text("rps", order=["rock", "paper", "lizard"])


def test_action_orders_are_every_permutation_with_the_games_own_first():
    orders = action_orders("rps")
    assert len(orders) == 6 == len(set(orders)) and orders[0] == ("rock", "paper", "scissors")
    assert action_orders("bos") == [("opera", "football"), ("football", "opera")]


class _RecordingBackend(HTTPBackend):
    """Answers 'Answer: <the first listed action>' and keeps every prompt (no network)."""

    def __init__(self):
        super().__init__("http://localhost:0/v1", "recording")
        self.prompts = []

    def complete(self, prompt):
        self.prompts.append(prompt)
        listed = prompt.rsplit("the action one of: ", 1)[1].split(",")[0].rstrip(".")
        return f"Answer: {listed}"


def test_llm_runs_over_all_orders_changes_only_the_listing():
    backend = _RecordingBackend()
    rows = ex.llm_runs(backend=backend, game="rps", partner="single", prompts=["lm"], horizon=2, orders="all")
    assert [r["order"] for r in rows] == [" ".join(o) for o in action_orders("rps")]
    # an agent that always plays the first listed word plays each word as often as the orders put it first
    first = [r["order"].split()[0] for r in rows]
    played = [max(r["action_counts"], key=r["action_counts"].get) for r in rows]
    assert played == first and sorted(set(played)) == ["paper", "rock", "scissors"]
    assert all(r["invalid"] == 0 for r in rows)
    per_order = ex.summarize(rows, by=("prompt", "order"))
    pooled = ex.summarize(rows, by=("prompt",))
    assert len(per_order) == 6 and pooled[0]["n"] == 6 and pooled[0]["regret_std"] > 0
    one = ex.llm_runs(backend=_RecordingBackend(), game="ipd", partner="single", prompts=["lm"], horizon=1,
                      orders=[["defect", "cooperate"]])
    assert one[0]["order"] == "defect cooperate" and one[0]["action_counts"] == {"cooperate": 0, "defect": 1}
    with pytest.raises(ValueError, match=r"orders\[0\]: order must list each"):
        ex.llm_runs(backend=backend, orders=[["rock"]])
    with pytest.raises(ValueError, match="orders must be one of"):
        ex.llm_runs(backend=backend, orders="some")


def test_llm_agent_prompt_uses_the_order():
    from badinput_lab import tiny_lm
    from badinput_tom import ByteTokenizer

    tok = ByteTokenizer()
    agent = LLMAgent(tiny_lm(), tok, order=("defect", "cooperate"))
    play("ipd", agent, "tft", horizon=1, seed=0)
    text = rules_text("ipd", order=("defect", "cooperate"))
    assert agent.lm.ids[:len(text)] == tok(text)["input_ids"]
    with pytest.raises(TypeError, match=r"order\[0\] must be an action word or an int"):
        LLMAgent(order=[True, False])


# ------------------------------------------------------------------------------ chat template, order spread
class _ChatByteTokenizer:
    """ByteTokenizer with a ChatML chat template (what SmolLM2-Instruct's tokenizer renders)."""

    chat_template = "chatml"

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [b % 32 for b in text.encode()]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")


def test_chat_prompt_keeps_the_conversation_in_the_cache():
    from badinput_lab import tiny_lm

    tok = _ChatByteTokenizer()
    agent = LLMAgent(tiny_lm(), tok, prompt="chat", order=("scissors", "rock", "paper"))
    ep = play("rps", agent, "single-rock", horizon=3, seed=0)
    words = get_game("rps").actions
    msgs = [{"role": "system", "content": rules_text("rps", order=("scissors", "rock", "paper")).strip()}]
    for t in range(3):
        seen = "" if t == 0 else "The partner played rock. "
        msgs += [{"role": "user", "content": f"{seen}Round {t + 1}: which action do you play? Reply with one "
                                             f"word: scissors, rock, paper."},
                 {"role": "assistant", "content": words[ep.actions[t]]}]
    assert agent.lm.ids == tok(tok.apply_chat_template(msgs))["input_ids"]
    assert len(agent.action_logprobs) == 3 and np.allclose(ep.predictions.sum(1), 1)


def test_chat_prompt_needs_a_chat_template():
    from badinput_lab import tiny_lm
    from badinput_tom import ByteTokenizer

    with pytest.raises(ValueError, match="prompt='chat' needs a tokenizer with a chat template"):
        play("rps", LLMAgent(tiny_lm(), ByteTokenizer(), prompt="chat"), "tft", horizon=1, seed=0)


def test_oracle_copy_rate_is_the_share_of_moves_equal_to_the_told_word():
    from badinput_lab import tiny_lm
    from badinput_tom import ByteTokenizer

    rows = ex.llm_runs(tiny_lm(), ByteTokenizer(), game="ipd", partner="tft", prompts=["oracle", "lm"], horizon=4)
    oracle, lm = rows
    # TFT's next move is what it is told, and it is what TFT then plays: copying it means a_t == b_t
    ep = play("ipd", LLMAgent(tiny_lm(), ByteTokenizer(), prompt="oracle"), "tft", horizon=4, seed=0)
    assert oracle["copy_rate"] == pytest.approx(float(np.mean(ep.actions == ep.partner_actions)))
    assert "copy_rate" not in lm and len(lm["first_action_probs"]) == 2
    assert sum(lm["first_action_probs"]) == pytest.approx(1)


def test_order_spread_gives_mean_sample_sd_and_t_interval_over_orders():
    rows = [{"prompt": "lm", "order": o, "regret": v} for o, v in zip("abc", (1.0, 2.0, 3.0))]
    rows.append({"prompt": "chat", "order": "a", "regret": 0.5})
    lm, chat = ex.order_spread(rows, by=("prompt",), metrics=("regret", "accuracy"))
    assert lm["n"] == 3 and lm["regret"] == 2 and lm["regret_sd"] == pytest.approx(1.0)
    half = 4.302652729911275 / np.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert lm["regret_ci"] == pytest.approx([2 - half, 2 + half])
    assert (lm["regret_min"], lm["regret_max"]) == (1.0, 3.0) and "accuracy" not in lm
    assert chat["n"] == 1 and chat["regret_sd"] == 0 and chat["regret_ci"] == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"rows\[0\] lacks the keys \['game', 'partner'\]"):
        ex.order_spread(rows)
    with pytest.raises(ValueError, match="rows must not be empty"):
        ex.order_spread([])
