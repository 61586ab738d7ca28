"""``python -m companion tom <experiment> [--full]``: the chapter's larger runs.

Quick mode (the default) runs a small version and prints a summary; ``--full`` runs the larger version and
writes ``results/tom/<experiment>.json`` with its provenance (:func:`companion.lab.save_results`).

=========== ====================================================================================================
experiment  full mode
=========== ====================================================================================================
table1      RPS vs always-Rock, T = 100: tabular agents over 20 seeds; SmolLM2 with the ``lm`` and ``social``
            prompts, greedy (seed 0) and sampled at temperature 1 (seeds 0, 1, 2)
grid        3 games x 4 partners x 5 tabular agents, T = 100, 20 seeds
horizon     tabular agents at T = 10, 30, 100, 300, 1000 (RPS vs single action and switching, 10 seeds);
            SmolLM2 (``lm``, greedy) at T = 10, 30, 100, 300 vs always-Rock
oracle      SmolLM2 told its partner's next move (``oracle``) vs the plain ``lm`` prompt, 3 games x
            (single, TFT), T = 100
counter-    every listing order of the action words (6 for RPS), SmolLM2 at temperature 0, T = 15: RPS vs
balance     always-Rock with the ``lm``, ``social`` and ``chat`` prompts; per-order rows, mean ± spread over orders
counter-    the oracle diagnostic over every listing order (6 for RPS, 2 for IPD and BoS), T = 10: the ``oracle``
balance-    prompt vs always-Rock in RPS (its ``lm`` rows are counterbalance's), ``lm`` and ``oracle`` in IPD vs
oracle      always-cooperate and TFT and in BoS vs always-opera
roshambo    OpenSpiel's 43 RoShamBo competition bots as RPS partners (:mod:`companion.tom.roshambo`): R-max,
            fictitious play and the surrogate, T = 1000, 3 seeds (and the per-bot oracle on the deterministic
            bots); SmolLM2 (``lm`` and ``chat`` prompts, temperature 0) against 6 of the bots at T = 20
=========== ====================================================================================================

A larger model: ``--model <Hugging Face id or folder>`` scores it locally instead of SmolLM2; ``--base-url URL
--api-model NAME`` asks an OpenAI-compatible endpoint instead (the key is read from the environment variable named
by ``--api-key-env``, default ``OPENAI_API_KEY``, and never printed). ``--tag`` names the results file
``<experiment>-<tag>.json`` so the committed SmolLM2 results stay. ``--orders all`` runs the language model with
every listing order of the action words (6 for RPS, 2 for IPD and BoS; :func:`companion.tom.action_orders`) instead
of the book's order only, and writes ``<experiment>-orders.json`` unless ``--tag`` is given.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from companion.lab.checks import cli_device, cli_int

#: the full-mode settings of each experiment (also written into the results file)
FULL: dict[str, dict[str, Any]] = {
    "table1": {"seeds": list(range(20)), "horizon": 100, "llm_prompts": ["lm", "social"], "llm_greedy_seeds": [0],
               "llm_sampled_seeds": [0, 1, 2], "llm_temperature": 1.0},
    "grid": {"seeds": list(range(20)), "horizon": 100},
    "horizon": {"horizons": [10, 30, 100, 300, 1000], "seeds": list(range(10)), "partners": ["single", "switching"],
                "llm_horizons": [10, 30, 100, 300], "llm_prompt": "lm"},
    "oracle": {"games": ["rps", "ipd", "bos"], "partners": ["single", "tft"], "prompts": ["lm", "oracle"],
               "horizon": 100},
    "counterbalance": {"horizon": 15, "prompts": ["lm", "social", "chat"]},
    "counterbalance-oracle": {"horizon": 10, "cells": [["rps", "single", ["oracle"]], ["ipd", "single", ["lm", "oracle"]],
                                                       ["ipd", "tft", ["lm", "oracle"]], ["bos", "single", ["lm", "oracle"]]]},
    "roshambo": {"horizon": 1000, "seeds": [0, 1, 2], "agents": ["rmax", "fictitious-play", "surrogate"],
                 "bots": "all", "llm_bots": ["rockbot", "rotatebot", "copybot", "freqbot2", "randbot", "iocainebot"],
                 "llm_horizon": 20, "llm_prompts": ["lm", "chat"]},
}
#: the quick versions: a smoke run of the same code
QUICK_CLI: dict[str, dict[str, Any]] = {
    "table1": {"seeds": [0, 1, 2], "horizon": 100, "llm_prompts": ["lm", "social"], "llm_greedy_seeds": [0],
               "llm_sampled_seeds": [0], "llm_temperature": 1.0, "llm_horizon": 5},
    "grid": {"seeds": [0, 1], "horizon": 50},
    "horizon": {"horizons": [10, 30, 100], "seeds": [0, 1], "partners": ["single"], "llm_horizons": [5],
                "llm_prompt": "lm"},
    "oracle": {"games": ["rps"], "partners": ["single"], "prompts": ["lm", "oracle"], "horizon": 5},
    "counterbalance": {"horizon": 3, "prompts": ["lm", "chat"]},
    "counterbalance-oracle": {"horizon": 3, "cells": [["ipd", "tft", ["oracle"]]]},
    "roshambo": {"horizon": 50, "seeds": [0], "agents": ["rmax", "fictitious-play", "surrogate"],
                 "bots": ["rockbot", "rotatebot", "randbot", "iocainebot"], "llm_bots": ["rotatebot"],
                 "llm_horizon": 3, "llm_prompts": ["lm"]},
}
HELP = {
    "table1": "the paper's Table-1 setting (RPS vs always-Rock, T = 100): tabular agents and the LLM",
    "grid": "3 games x 4 partners x 5 tabular agents: regret, rationalized regret, accuracy",
    "horizon": "regret per round as the horizon T grows (tabular to T = 1000, the LLM shorter)",
    "oracle": "the LLM told its partner's next move: does it exploit it?",
    "counterbalance": "the Table-1 LLM runs over every listing order of the action words, with the chat template",
    "counterbalance-oracle": "the oracle diagnostic over every listing order of the action words",
    "roshambo": "OpenSpiel's RoShamBo competition bots as RPS partners (needs pip install open-spiel)",
}
NEEDS_LLM = ("table1", "horizon", "oracle", "counterbalance", "counterbalance-oracle", "roshambo")


def _line(r: dict) -> str:
    who = r.get("prompt", r["agent"])
    if "temperature" in r:
        who = f"{r.get('model', 'llm')} {who} (temp {r['temperature']:g}, seed {r['seed']})"
    if "order" in r:
        who += f" [{r['order']}]"
    extra = f", best-response rate {r['br_rate']:.2f}" if "br_rate" in r else ""
    extra += f", unparseable {r['invalid']}" if "invalid" in r and "temperature" in r else ""
    one = f" (one-step {r['tom_regret_one_step']:6.3f})" if "tom_regret_one_step" in r else ""
    return (f"{r.get('game', ''):>4s} {r.get('partner', ''):>10s} {who:>40s}: Δ_F/T {r['regret']:6.3f}, "
            f"Δ_ToM/T {r['tom_regret']:6.3f}{one}, accuracy {r['accuracy']:6.1%}" + extra)


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return None


def _llm(args: argparse.Namespace) -> dict[str, Any]:
    """``{"model": ..., "tokenizer": ..., "backend": ..., "label": ...}`` from the command line."""
    if args.base_url:
        from .llm import HTTPBackend

        backend = HTTPBackend(args.base_url, args.api_model or "default", api_key_env=args.api_key_env)
        return {"model": None, "tokenizer": None, "backend": backend, "label": args.api_model or args.base_url}
    from companion.lab import load_model

    model, tokenizer = load_model(args.model, device=args.device)
    label = "SmolLM2-135M-Instruct (Q4_1 GGUF)" if args.model is None else str(args.model)
    return {"model": model, "tokenizer": tokenizer, "backend": None, "label": label}


def _run(args: argparse.Namespace) -> int:
    import torch

    from companion.lab import save_results

    from . import experiments as ex

    torch.set_num_threads(args.threads)
    spec = (FULL if args.full else QUICK_CLI)[args.experiment]
    name, start = args.experiment, time.perf_counter()
    llm = _llm(args) if name in NEEDS_LLM and not args.no_llm else None
    orders = None if args.orders == "book" else "all"
    kw = {} if llm is None else {"model": llm["model"], "tokenizer": llm["tokenizer"], "backend": llm["backend"],
                                 "label": llm["label"], "orders": orders}
    temp_ok = llm is None or llm["backend"] is None  # the HTTP backend asks at temperature 0 only
    result: dict[str, Any] = {"settings": {**spec, "orders": args.orders}}
    if name == "table1":
        tab = ex.table1(seeds=spec["seeds"], horizon=spec["horizon"])
        result |= {"tabular": tab["summary"], "paper": ex.PAPER_TABLE1}
        for s in tab["summary"]:
            print(_line(s))
        if llm is not None:
            T = spec.get("llm_horizon", spec["horizon"])
            rows = ex.llm_runs(**kw, prompts=spec["llm_prompts"], horizon=T, seeds=spec["llm_greedy_seeds"])
            if temp_ok:
                rows += ex.llm_runs(**kw, prompts=spec["llm_prompts"], horizon=T, seeds=spec["llm_sampled_seeds"],
                                    temperature=spec["llm_temperature"])
            result["llm"] = rows
            result["llm_summary"] = ex.summarize(rows, by=("prompt", "temperature"),
                                                 metrics=(*ex.TOM_METRICS, "br_rate"))
            if orders is not None:
                result["llm_summary_by_order"] = ex.summarize(rows, by=("prompt", "temperature", "order"),
                                                              metrics=(*ex.TOM_METRICS, "br_rate"))
            for r in rows:
                print(_line(r))
    elif name == "grid":
        res = ex.grid(seeds=spec["seeds"], horizon=spec["horizon"])
        result |= {"summary": res["summary"], "single_action": ex.SINGLE_ACTION}
        for s in res["summary"]:
            print(_line(s))
    elif name == "horizon":
        res = ex.horizon_sweep(horizons=spec["horizons"], seeds=spec["seeds"], partners=spec["partners"])
        result["tabular"] = res["summary"]
        for s in res["summary"]:
            print(f"T = {s['horizon']:5d} " + _line(s))
        if llm is not None:
            rows = []
            for T in spec["llm_horizons"]:
                rows += ex.llm_runs(**kw, prompts=[spec["llm_prompt"]], horizon=T, seeds=[0])
                print(f"T = {T:5d} " + _line(rows[-1]))
            result["llm"] = rows
    elif name == "roshambo":
        from . import roshambo as rs

        bots = list(rs.BOT_NAMES) if spec["bots"] == "all" else spec["bots"]
        det = {b: rs.is_deterministic(b, horizon=spec["horizon"]) for b in bots}
        agents = [*spec["agents"]]
        tab = rs.roshambo_table(agents, bots, horizon=spec["horizon"], seeds=spec["seeds"], deterministic=det)
        oracle_rows = [rs.play_bot(rs.BotOracle(b), b, horizon=spec["horizon"]) for b in bots if det[b]]
        for r in oracle_rows:
            del r["actions"], r["bot_actions"]
        result |= {"bots": tab["bots"], "summary": tab["summary"], "rows": tab["rows"], "oracle": oracle_rows,
                   "rps_matches_openspiel": rs.rps_matches_openspiel(), "openspiel_version": _version("open_spiel")}
        for s_ in tab["summary"]:
            print(f"{s_['agent']:>16s} vs {s_['bot']:>15s} ({s_['regret_kind']:9s}): Δ_F/T {s_['regret']:6.3f}, "
                  f"accuracy {s_['accuracy']:6.1%}")
        if llm is not None:
            from .llm import LLMAgent

            lrows = []
            T = spec["llm_horizon"]
            for prompt in spec["llm_prompts"]:
                agent = LLMAgent(llm["model"], llm["tokenizer"], prompt=prompt)
                for b in spec["llm_bots"]:
                    start = time.perf_counter()
                    r = rs.play_bot(agent, b, horizon=T)
                    r |= {"prompt": prompt, "model": llm["label"], "seconds": time.perf_counter() - start,
                          "regret_kind": tab["bots"][b]["regret_kind"] if b in tab["bots"] else
                          ("oracle" if rs.is_deterministic(b) else "hindsight")}
                    r["regret"] = r["regret_oracle"] if r["regret_kind"] == "oracle" else r["regret_hindsight"]
                    print(f"SmolLM2 {prompt:5s} vs {b:>12s} ({r['regret_kind']:9s}): Δ_F/T {r['regret']:6.3f}, "
                          f"accuracy {r['accuracy']:6.1%}, moves {r['actions']}")
                    lrows.append(r)
            result["llm"] = lrows
    elif name in ("counterbalance", "counterbalance-oracle"):
        if llm is None:
            raise SystemExit(f"the {name} experiment needs the language model (drop --no-llm)")
        kw["orders"] = "all"
        T = spec["horizon"]
        cells = spec.get("cells", [["rps", "single", spec.get("prompts")]])
        rows = []
        for game, partner, prompts in cells:
            for r in ex.llm_runs(**kw, game=game, partner=partner, prompts=prompts, horizon=T, seeds=[0]):
                rows.append({**r, "game": game})
                print(_line(rows[-1]), flush=True)
        metrics = (*ex.TOM_METRICS, "br_rate", "copy_rate")
        result |= {"llm": rows, "over_orders": ex.order_spread(rows, metrics=metrics), "model": llm["label"]}
    else:
        if llm is None:
            raise SystemExit("the oracle experiment needs the language model (drop --no-llm)")
        rows = ex.oracle_diagnostic(**kw, games=spec["games"], partners=spec["partners"], prompts=spec["prompts"],
                                    horizon=spec["horizon"])
        result["llm"] = rows
        result["paper"] = ex.PAPER_ORACLE
        for r in rows:
            print(_line(r))
    result["seconds"] = time.perf_counter() - start
    result["threads"] = args.threads
    print(f"[{name}: {result['seconds']:.0f} s on {args.threads} thread(s)]")
    if args.full:
        tag = args.tag or ("orders" if orders is not None and llm is not None and not name.startswith("counterbalance") else None)
        fname = name if not tag else f"{name}-{tag}"
        path = save_results("tom", fname, {"experiment": name, "mode": "full", **result}, seed=0)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    tom = sub.add_parser("tom", help="chapter 1: literal vs functional theory of mind in repeated games")
    experiments = tom.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    for name, text in HELP.items():
        p = experiments.add_parser(name, help=text)
        p.add_argument("--full", action="store_true",
                       help=f"the larger run; writes results/tom/{name}.json with its provenance")
        p.add_argument("--threads", type=cli_int(low=1), default=1, help="torch threads (default 1)")
        p.add_argument("--no-llm", action="store_true", help="tabular agents only (no model is loaded)")
        p.add_argument("--model", default=None, help="a Hugging Face id or local folder instead of SmolLM2")
        p.add_argument("--device", type=cli_device, default="cpu", help="where to run the local model (cpu, cuda, cuda:N)")
        p.add_argument("--base-url", default=None,
                       help="an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) instead of a local model")
        p.add_argument("--api-model", default=None, help="the endpoint's model name")
        p.add_argument("--api-key-env", default="OPENAI_API_KEY",
                       help="the environment variable holding the API key (read per request, never printed)")
        p.add_argument("--tag", default=None, help="write results/tom/<experiment>-<tag>.json")
        p.add_argument("--orders", choices=("book", "all"), default="book",
                       help="listing orders of the action words in the LLM's prompt: the book's only (default) or "
                            "all of them (writes <experiment>-orders.json unless --tag is given)")
        p.set_defaults(run=_run, experiment=name)
