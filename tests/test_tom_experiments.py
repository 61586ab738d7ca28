import json

import numpy as np
import pytest

from companion.__main__ import main
from companion.tom import experiments as ex
from companion.tom import HTTPBackend, get_game, play


def test_make_partner_factory_builds_the_chapter_partners():
    for game in ex.GAME_NAMES:
        for kind in ex.PARTNER_KINDS:
            p = ex.make_partner_factory(game, kind)()
            p.reset(get_game(game), horizon=10)
            assert p.policy(p.initial_state(), 0).sum() == pytest.approx(1.0)
    p = ex.make_partner_factory("rps", "single")()
    p.reset(get_game("rps"), horizon=5)
    assert p.name == "single-rock"


def test_best_response_rate_counts_rounds_that_beat_the_partner_move():
    ep = play("rps", "oracle", ex.make_partner_factory("rps", "single")(), horizon=20, seed=0)
    assert ex.best_response_rate(ep) == 1.0
    ep = play("rps", "random", "single-rock", horizon=300, seed=1)
    assert ex.best_response_rate(ep) == pytest.approx(np.mean(ep.actions == 1))  # paper beats rock


def test_table1_reproduces_rmax_and_the_surrogate_signature():
    res = ex.table1(seeds=range(10))
    by = {s["agent"]: s for s in res["summary"]}
    assert 0.05 < by["rmax"]["regret"] < 0.12  # paper: 0.083
    assert by["random"]["regret"] == pytest.approx(1.0, abs=0.15)
    sur = by["surrogate"]
    assert sur["accuracy"] > 0.95 and sur["tom_regret"] < 0.05 and sur["regret"] > 0.8  # knows, does not act
    assert by["rmax-backoff"]["regret"] == by["rmax"]["regret"]  # the probe does not change the play
    assert res["paper"][0]["regret"] == 0.083


def test_grid_summary_has_one_row_per_cell_and_oracle_has_no_regret():
    res = ex.grid(games=["ipd", "bos"], partners=["tft", "switching"], agents=["oracle", "random"], seeds=[0, 1],
                  horizon=20)
    assert len(res["summary"]) == 2 * 2 * 2 and len(res["rows"]) == 16
    for s in res["summary"]:
        assert s["n"] == 2
        if s["agent"] == "oracle":
            assert s["regret"] == pytest.approx(0.0, abs=1e-12) and s["accuracy"] == 1.0
    json.dumps(res)  # JSON-ready


def test_horizon_sweep_rmax_regret_per_round_shrinks_with_T():
    res = ex.horizon_sweep(horizons=[10, 100, 1000], agents=["rmax"], partners=["single"], seeds=[0, 1])
    regret = [s["regret"] for s in res["summary"]]
    assert regret[0] > regret[1] > regret[2]


def test_summarize_means_and_stds():
    rows = [{"game": "g", "agent": "a", "partner": "p", "regret": x, "tom_regret": 0.0, "accuracy": 1.0}
            for x in (1.0, 3.0)]
    (s,) = ex.summarize(rows)
    assert s["regret"] == 2.0 and s["regret_std"] == pytest.approx(2 ** 0.5) and s["n"] == 2  # sample sd, ddof 1


def test_bad_experiment_input_is_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        ex.make_partner_factory("rps", "nasty")
    with pytest.raises(ValueError, match=r"games\[0\] must be one of"):
        ex.grid(games=["chess"])
    with pytest.raises(ValueError, match=r"agents\[0\] must be one of"):
        ex.grid(agents=["alphazero"])
    with pytest.raises(ValueError, match=r"seeds\[0\] must be an int >= 0"):
        ex.grid(seeds=[-1])
    with pytest.raises(ValueError, match="must not be empty"):
        ex.grid(partners=[])
    with pytest.raises(ValueError, match=r"horizons\[0\] must be an int >= 1"):
        ex.horizon_sweep(horizons=[0])
    with pytest.raises(TypeError, match="Episode"):
        ex.best_response_rate({"actions": []})
    with pytest.raises(ValueError, match="rows must not be empty"):
        ex.summarize([])
    with pytest.raises(TypeError, match="model and its tokenizer"):
        ex.llm_runs(horizon=2)
    with pytest.raises(ValueError, match=r"prompts\[0\] must be one of"):
        ex.llm_runs(object(), object(), prompts=["cot"])
    with pytest.raises(ValueError, match="temperature"):
        ex.llm_runs(object(), object(), temperature=-1)


def test_llm_runs_count_unparseable_replies_of_an_http_backend(monkeypatch):
    from companion.tom import HTTPBackend

    backend = HTTPBackend("http://localhost:1/v1", "fake")
    replies = iter(["paper", "I cannot say", "rock!", "scissors"] * 10)
    monkeypatch.setattr(backend, "complete", lambda prompt: next(replies))
    rows = ex.llm_runs(backend=backend, prompts=["lm"], horizon=4, seeds=[0], label="fake")
    (r,) = rows
    assert r["model"] == "fake" and r["prompt"] == "lm" and r["horizon"] == 4
    # lm prompt: each round asks for the action, then the prediction; "I cannot say" names no action
    assert r["invalid"] + r["invalid_predictions"] == 2
    with pytest.raises(ValueError, match="temperature 0"):
        ex.llm_runs(backend=backend, prompts=["lm"], horizon=2, temperature=1.0)


def test_cli_quick_grid_prints_and_writes_nothing(capsys, tmp_path, monkeypatch):
    from companion.lab import results

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    assert main(["tom", "grid"]) == 0
    out = capsys.readouterr().out
    assert "surrogate" in out and "Δ_F/T" in out
    assert not list(tmp_path.iterdir())


def test_cli_full_writes_results_with_provenance(tmp_path, monkeypatch, capsys):
    from companion.lab import results
    from companion.tom import cli

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setitem(cli.FULL, "horizon", {**cli.QUICK_CLI["horizon"], "horizons": [10, 20]})
    assert main(["tom", "horizon", "--full", "--no-llm"]) == 0
    data = json.loads((tmp_path / "tom" / "horizon.json").read_text())
    assert data["provenance"]["command"] and data["mode"] == "full"
    assert {s["horizon"] for s in data["tabular"]} == {10, 20}


def test_cli_orders_all_writes_a_separate_file_with_every_order(tmp_path, monkeypatch, capsys):
    from companion.lab import results
    from companion.tom import cli

    class Backend(HTTPBackend):  # always answers with the first action listed in the question
        def complete(self, prompt):
            return "Answer: " + prompt.rsplit("the action one of: ", 1)[1].split(",")[0].rstrip(".")

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(cli, "_llm", lambda args: {"model": None, "tokenizer": None, "label": "first-listed",
                                                    "backend": Backend("http://localhost:0/v1", "x")})
    monkeypatch.setitem(cli.FULL, "oracle", {**cli.QUICK_CLI["oracle"], "games": ["ipd"], "horizon": 2})
    assert main(["tom", "oracle", "--full", "--orders", "all"]) == 0
    assert not (tmp_path / "tom" / "oracle.json").exists()
    data = json.loads((tmp_path / "tom" / "oracle-orders.json").read_text())
    assert data["settings"]["orders"] == "all"
    assert sorted(r["order"] for r in data["llm"]) == ["cooperate defect"] * 2 + ["defect cooperate"] * 2
    for r in data["llm"]:  # the first word listed is the move played
        assert r["action_counts"][r["order"].split()[0]] == 2
    assert "[defect cooperate]" in capsys.readouterr().out


@pytest.mark.model
def test_llm_quick_runs_with_smollm(smollm):
    model, tok = smollm
    rows = ex.oracle_diagnostic(model, tok, games=["rps"], partners=["single"], horizon=3)
    assert [r["prompt"] for r in rows] == ["lm", "oracle"]
    for r in rows:
        assert r["invalid"] == 0 and sum(r["action_counts"].values()) == 3 and 0 <= r["br_rate"] <= 1


# ------------------------------------------------------------------------------------ bad input, one way
def test_grid_rejects_a_list_horizon_and_a_lone_seed():
    with pytest.raises(TypeError, match="horizon must be an int"):
        ex.grid(games=["rps"], partners=["single"], agents=["random"], seeds=[0], horizon=[10, 20])  # used 10
    with pytest.raises(TypeError, match=r"seeds must be a list of ints \(e.g. range\(5\)\)"):
        ex.grid(seeds=5)  # was seed 5 alone (arena(seeds=5) was a TypeError)


def test_llm_runs_rejects_nan_temperature_and_a_non_model_early():
    with pytest.raises(ValueError, match="temperature must be a finite number"):
        ex.llm_runs(object(), object(), temperature=float("nan"))
    with pytest.raises(TypeError, match="model must be a causal language model"):
        ex.oracle_diagnostic(object(), object(), horizon=2)  # was AttributeError in the first game


def test_summarize_takes_one_key_as_a_key():
    (s,) = ex.summarize([{"game": "g", "regret": 1.0}], by="game", metrics="regret")  # was split into letters
    assert s == {"game": "g", "regret": 1.0, "regret_std": 0.0, "n": 1}


def test_cli_threads_must_be_a_positive_int(capsys):
    with pytest.raises(SystemExit):
        main(["tom", "grid", "--threads", "0"])
    assert "argument --threads: must be an int >= 1, got 0" in capsys.readouterr().err


def test_cli_counterbalance_runs_every_order_and_summarises_over_orders(tmp_path, monkeypatch, capsys):
    from companion.lab import results
    from companion.tom import cli

    class Backend(HTTPBackend):  # always answers with the first action listed in the question
        def complete(self, prompt):
            return "Answer: " + prompt.rsplit("the action one of: ", 1)[1].split(",")[0].rstrip(".")

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(cli, "_llm", lambda args: {"model": None, "tokenizer": None, "label": "first-listed",
                                                    "backend": Backend("http://localhost:0/v1", "x")})
    monkeypatch.setitem(cli.FULL, "counterbalance", {"horizon": 2, "prompts": ["lm"]})
    monkeypatch.setitem(cli.FULL, "counterbalance-oracle", {"horizon": 2, "cells": [["ipd", "tft", ["oracle"]]]})
    assert main(["tom", "counterbalance", "--full"]) == 0
    data = json.loads((tmp_path / "tom" / "counterbalance.json").read_text())
    assert len(data["llm"]) == 6 and {r["game"] for r in data["llm"]} == {"rps"}
    (s,) = data["over_orders"]
    # vs always-Rock, playing the first-listed word: rock (regret 1), paper (0) or scissors (2), twice each
    assert s["n"] == 6 and s["regret"] == pytest.approx(1.0) and (s["regret_min"], s["regret_max"]) == (0.0, 2.0)
    assert s["regret_sd"] == pytest.approx(np.std([1, 1, 0, 0, 2, 2], ddof=1))
    assert main(["tom", "counterbalance-oracle", "--full"]) == 0
    data = json.loads((tmp_path / "tom" / "counterbalance-oracle.json").read_text())
    assert [r["order"] for r in data["llm"]] == ["cooperate defect", "defect cooperate"]
    assert data["over_orders"][0]["n"] == 2 and data["over_orders"][0]["partner"] == "tft"


def test_cli_roshambo_writes_bots_and_the_oracle_check(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pyspiel")
    from companion.lab import results
    from companion.tom import cli

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    monkeypatch.setitem(cli.FULL, "roshambo", {**cli.QUICK_CLI["roshambo"], "bots": ["rockbot", "randbot"],
                                               "agents": ["fictitious-play"], "horizon": 30})
    assert main(["tom", "roshambo", "--full", "--no-llm"]) == 0
    data = json.loads((tmp_path / "tom" / "roshambo.json").read_text())
    assert data["rps_matches_openspiel"] and data["openspiel_version"]
    assert data["bots"]["rockbot"]["regret_kind"] == "oracle" and data["bots"]["randbot"]["regret_kind"] == "hindsight"
    assert [r["bot"] for r in data["oracle"]] == ["rockbot"] and data["oracle"][0]["regret_oracle"] == 0
    assert "llm" not in data and len(data["summary"]) == 2
