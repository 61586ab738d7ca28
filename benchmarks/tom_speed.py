"""ToM-games speed, in one process: (1) the LLM agent scoring actions with the reused KV cache vs re-encoding the
whole prompt for every option (``LLMAgent(reuse_cache=True)`` vs ``reuse_cache=False``, same model, game, partner
and seed); (2) the arena's throughput in rounds per second on IPD pairings of deterministic strategies, against
``axelrod.Match`` on the same pairings when the ``axelrod`` package is importable.

    python benchmarks/tom_speed.py [--horizon 20] [--prompt lm] [--partner tft] [--arena-horizon 200] [--save]
    python benchmarks/tom_speed.py --horizon 100      # the re-encoding path alone takes ~15 min on 2 CPU
                                                      # cores (~400k tokens); the default T = 20 finishes
                                                      # in ~1-3 min
    python benchmarks/tom_speed.py --skip-llm         # only the arena part (no model needed)

How to read it: the speed-up (re-encoding time / cached time) is what the reused KV cache saves; the chapter
quotes it at T = 100, where 5x or more makes the cache worth its bookkeeping. It is only meaningful because the
action (and prediction) log-probabilities of the two paths agree to 1e-4 — checked here, the script exits with
an error otherwise (and saves nothing). The speed-up grows with T: the uncached path runs O(T) tokens per option
per round (O(T^2) per episode), the cached one O(1) per round. For the arena, rounds/s over all pairings (and the
median episode time) is printed; with axelrod, the ratio ours / axelrod (above 1, ours is faster) and a check that
both give the same total scores (axelrod's default game has R, S, T, P = 3, 0, 5, 1, our IPD); then R-max enters
an Axelrod tournament against ``axl.basic_strategies`` (``companion.tom.peers.axelrod_player``) and its rank is
printed. Our rounds include the per-episode bookkeeping of :func:`companion.tom.play` (the oracle's plan, cached
across episodes by the partner's plan key, and the regret/accuracy summary). Wall-clock times are printed, never
asserted.

``--save`` writes results/tom/bench_speed.json with its provenance: ``settings`` (every option), ``threads``,
``measurements`` (every timed episode's seconds and their medians, tokens encoded, the largest log-probability
differences; the arena's and axelrod's times, rounds and rounds/s; the tournament's ranking) and ``ratios``:
``speedup_cached_vs_reencoding`` (re-encoding time / cached time; absent with ``--skip-llm``) and
``throughput_ours_over_axelrod`` (axelrod's time / ours; absent without axelrod).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from companion.lab.results import benchmark_payload, save_benchmark

from companion.tom import Agent, LLMAgent, arena, get_game, make_partner, play
from companion.tom.partners import Cyclic, TitForTat

TOL = 1e-4


# ------------------------------------------------------------------------------- deterministic IPD row players
class Strategy(Agent):
    """A deterministic IPD strategy as a row player (0 = cooperate, 1 = defect); ``rule(history) -> action``."""

    def __init__(self, name: str, rule) -> None:
        self.name, self.rule = name, rule

    def reset(self, game, *, horizon, rng, partner=None):
        super().reset(game, horizon=horizon, rng=rng)
        self.history: list[tuple[int, int]] = []

    def act(self, history, t):
        return self.rule(self.history)

    def observe(self, a, b, r, t):
        self.history.append((a, b))


def _grudger(h):
    return int(any(b == 1 for _, b in h))


AGENT_RULES = {  # label -> (rule, axelrod class name)
    "cooperator": (lambda h: 0, "Cooperator"),
    "defector": (lambda h: 1, "Defector"),
    "tit-for-tat": (lambda h: h[-1][1] if h else 0, "TitForTat"),
    "suspicious-tft": (lambda h: h[-1][1] if h else 1, "SuspiciousTitForTat"),
    "alternator": (lambda h: len(h) % 2, "Alternator"),
    "grudger": (_grudger, "Grudger"),
}
PARTNER_SPECS = {  # label -> (factory, axelrod class name)
    "single-cooperate": (lambda: make_partner("single-cooperate"), "Cooperator"),
    "single-defect": (lambda: make_partner("single-defect"), "Defector"),
    "tft": (lambda: TitForTat(first="cooperate"), "TitForTat"),
    "suspicious-tft": (lambda: TitForTat(first="defect"), "SuspiciousTitForTat"),
    "cyclic-cd": (lambda: Cyclic(["cooperate", "defect"]), "Alternator"),
}


# ------------------------------------------------------------------------------------------------- LLM part
def llm_episode(model, tokenizer, *, reuse_cache, args):
    agent = LLMAgent(model, tokenizer, prompt=args.prompt, reuse_cache=reuse_cache)
    start = time.perf_counter()
    ep = play(args.game, agent, args.partner, horizon=args.horizon, seed=args.seed)
    return time.perf_counter() - start, ep, agent


def bench_llm(args) -> dict:
    from companion import lab

    model, tokenizer = lab.load_model(device="cpu")
    # warm-up (first-call overheads of both paths), untimed
    warm = argparse.Namespace(**{**vars(args), "horizon": 2})
    llm_episode(model, tokenizer, reuse_cache=True, args=warm)
    llm_episode(model, tokenizer, reuse_cache=False, args=warm)

    t_cache, t_full, results = [], [], {}
    for i in range(max(args.repeats, args.cached_repeats)):  # interleaved: a noisy neighbour slows both alike
        for reuse, times, n in ((True, t_cache, args.cached_repeats), (False, t_full, args.repeats)):
            if i < n:
                t, ep, agent = llm_episode(model, tokenizer, reuse_cache=reuse, args=args)
                times.append(t)
                results[reuse] = (ep, agent)
    (ep_c, ag_c), (ep_f, ag_f) = results[True], results[False]
    lp_c, lp_f = np.array(ag_c.action_logprobs), np.array(ag_f.action_logprobs)
    pr_c, pr_f = np.array(ag_c.prediction_logprobs), np.array(ag_f.prediction_logprobs)
    d_act = float(np.abs(lp_c - lp_f).max())
    d_pred = float(np.abs(pr_c - pr_f).max()) if pr_c.size else 0.0
    same_actions = bool(np.array_equal(ep_c.actions, ep_f.actions))
    tc, tf = statistics.median(t_cache), statistics.median(t_full)
    print(f"== LLM scoring: {args.game}, prompt {args.prompt!r} vs {ep_c.partner}, T = {args.horizon}, "
          f"seed {args.seed}, {args.threads} threads, median of {args.cached_repeats} (cached) / {args.repeats} "
          f"(re-encoded) episodes")
    print(f"reused KV cache:    {tc:8.2f} s  ({tc / args.horizon * 1e3:7.1f} ms/round, "
          f"{ag_c.lm.tokens_encoded:7d} tokens encoded)")
    print(f"re-encode prompt:   {tf:8.2f} s  ({tf / args.horizon * 1e3:7.1f} ms/round, "
          f"{ag_f.lm.tokens_encoded:7d} tokens encoded)")
    print(f"speed-up (re-encode / cached): {tf / tc:.1f}x")
    print(f"max |Δ log p| actions {d_act:.2e}, predictions {d_pred:.2e} (tolerance {TOL:g}); "
          f"same actions: {same_actions}; return {ep_c.total_reward:g} vs {ep_f.total_reward:g}")
    if not (d_act <= TOL and d_pred <= TOL and same_actions):
        sys.exit(f"FAIL: the cached and uncached paths disagree (Δ actions {d_act:.2e}, Δ predictions "
                 f"{d_pred:.2e}, same actions {same_actions})")
    return {"partner": str(ep_c.partner), "cached_s": tc, "cached_all_s": t_cache, "reencoding_s": tf,
            "reencoding_all_s": t_full, "cached_tokens_encoded": int(ag_c.lm.tokens_encoded),
            "reencoding_tokens_encoded": int(ag_f.lm.tokens_encoded), "max_abs_diff_action_logprob": d_act,
            "max_abs_diff_prediction_logprob": d_pred, "same_actions": same_actions,
            "return_cached": float(ep_c.total_reward), "return_reencoding": float(ep_f.total_reward)}


# ----------------------------------------------------------------------------------------------- arena part
def bench_arena(args) -> dict:
    T, reps = args.arena_horizon, args.arena_repeats
    agents = {label: (lambda label=label: Strategy(label, AGENT_RULES[label][0])) for label in AGENT_RULES}
    partners = {label: spec[0] for label, spec in PARTNER_SPECS.items()}
    arena("ipd", agents, partners, horizon=T, seeds=[0])  # warm-up: the oracle plans get cached
    times, rows = [], None
    for _ in range(reps):
        start = time.perf_counter()
        rows = arena("ipd", agents, partners, horizon=T, seeds=[0], episodes=True)
        times.append(time.perf_counter() - start)
    t_ours = statistics.median(times)
    n_rounds = len(rows) * T
    print(f"\n== arena: IPD, {len(agents)} strategies x {len(partners)} partners = {len(rows)} pairings, "
          f"T = {T}, median of {reps}")
    per_pair = {}
    for row in rows:
        per_pair[(row["agent"], row["partner_label"])] = row
    episode_s = statistics.median(r["seconds"] for r in rows)
    print(f"ours: {t_ours * 1e3:8.1f} ms for {n_rounds} rounds = {n_rounds / t_ours:10.0f} rounds/s "
          f"({episode_s * 1e3:.2f} ms per episode, median)")
    out = {"pairings": len(rows), "rounds": n_rounds, "ours_s": t_ours, "ours_all_s": times,
           "ours_rounds_per_s": n_rounds / t_ours, "ours_episode_s_median": episode_s}

    try:
        import axelrod as axl
    except ImportError:
        print("axelrod: not importable, comparison with axl.Match skipped")
        return out

    def axl_all():
        scores = {}
        for a_label, (_, a_cls) in AGENT_RULES.items():
            for p_label, (_, p_cls) in PARTNER_SPECS.items():
                match = axl.Match((getattr(axl, a_cls)(), getattr(axl, p_cls)()), turns=T)
                match.play()
                scores[(a_label, p_label)] = match.final_score()
        return scores

    axl_all()  # warm-up
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        scores = axl_all()
        times.append(time.perf_counter() - start)
    t_axl = statistics.median(times)
    print(f"axelrod {getattr(axl, '__version__', '?')}: {t_axl * 1e3:8.1f} ms for {n_rounds} rounds = "
          f"{n_rounds / t_axl:10.0f} rounds/s")
    print(f"throughput ours / axelrod: {t_axl / t_ours:.2f}x")
    out.update(axelrod_version=getattr(axl, "__version__", None), axelrod_s=t_axl, axelrod_all_s=times,
               axelrod_rounds_per_s=n_rounds / t_axl)
    bad = []
    for key, row in per_pair.items():
        ep = row["episode"]
        ours = (float(ep.rewards.sum()), float(ep.partner_rewards.sum()))
        theirs = tuple(float(s) for s in scores[key])
        if ours != theirs:
            bad.append(f"{key[0]} vs {key[1]}: ours {ours}, axelrod {theirs}")
    if bad:
        sys.exit("FAIL: scores differ from axelrod's:\n  " + "\n  ".join(bad))
    print(f"scores equal to axelrod's on all {len(per_pair)} pairings")
    out["scores_equal_axelrod"] = True
    out["tournament"] = bench_tournament(args)
    return out


def bench_tournament(args) -> dict:
    """R-max (``companion.tom.peers.axelrod_player``) in an Axelrod tournament against ``axl.basic_strategies``."""
    import axelrod as axl

    from companion.tom.peers import axelrod_player

    players = [axelrod_player("rmax", seed=0)] + [s() for s in axl.basic_strategies]
    start = time.perf_counter()
    results = axl.Tournament(players, turns=args.arena_horizon, repetitions=args.tournament_repeats,
                             seed=0).play(progress_bar=False)
    took = time.perf_counter() - start
    scores = {name: float(np.mean(s)) for name, s in zip(results.players, results.normalised_scores)}
    print(f"\n== axelrod tournament: R-max vs the {len(players) - 1} basic strategies, {args.arena_horizon} turns, "
          f"{args.tournament_repeats} repetitions ({took:.1f} s)")
    for rank, name in enumerate(results.ranked_names, 1):
        print(f"{rank:2d}. {name:45s} mean score per turn {scores[name]:.3f}")
    return {"players": len(players), "seconds": took, "ranked": list(results.ranked_names),
            "mean_score_per_turn": scores}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; return the payload that ``--save`` writes."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--horizon", type=int, default=20, help="LLM episode length T (the speed-up is quoted at 100)")
    parser.add_argument("--game", default="ipd")
    parser.add_argument("--partner", default="tft")
    parser.add_argument("--prompt", default="lm", help="prompt family (see companion.tom.PROMPTS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="timed re-encoding LLM episodes (median)")
    parser.add_argument("--cached-repeats", type=int, default=3, help="timed cached LLM episodes (median; cheap)")
    parser.add_argument("--arena-horizon", type=int, default=200)
    parser.add_argument("--arena-repeats", type=int, default=5)
    parser.add_argument("--tournament-repeats", type=int, default=5, help="repetitions of the axelrod tournament")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-llm", action="store_true", help="only the arena part (no model needed)")
    parser.add_argument("--save", action="store_true", help="write results/tom/bench_speed.json (with provenance)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    get_game(args.game)  # fail early on a bad name
    measurements, ratios = {}, {}
    if not args.skip_llm:
        measurements["llm"] = llm = bench_llm(args)
        ratios["speedup_cached_vs_reencoding"] = llm["reencoding_s"] / llm["cached_s"]
    measurements["arena"] = arena_out = bench_arena(args)
    if "axelrod_s" in arena_out:
        ratios["throughput_ours_over_axelrod"] = arena_out["axelrod_s"] / arena_out["ours_s"]
    payload = benchmark_payload("tom_speed", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("tom", "bench_speed", payload, argv=argv, seed=args.seed))
    return payload


if __name__ == "__main__":
    main()
