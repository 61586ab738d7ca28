"""``python -m companion pyramidkv ...``: the chapter's larger runs."""

from __future__ import annotations

import argparse

from companion.lab.checks import cli_device, cli_int

FULL = {"capacities": [16, 32, 64, 128, 256], "depths": [0.0, 0.25, 0.5, 0.75, 1.0], "seeds": [0, 1, 2, 3],
        "context_tokens": 2048}
QUICK = {"capacities": [32, 64, 128, 256], "depths": [0.1, 0.5, 0.9], "seeds": [0], "context_tokens": 1024}
# `pyramidkv long`: 385 prompts per cell bound the 95% Wilson interval by ± 5 points (worst case, 50%)
LONG_FULL = {"lengths": [2048, 4096, 8192], "prompts": 385, "capacities": [64, 256]}
LONG_QUICK = {"lengths": [512], "prompts": 2, "capacities": [64, 256]}


RUNS = {  # name -> (question placement, selection granularity, methods, PyramidKV schedule)
    "inside/kv": ("inside", "kv", ("full", "streaming", "h2o", "snapkv", "pyramidkv"), "official"),
    "after/kv": ("after", "kv", ("full", "streaming", "h2o", "snapkv", "pyramidkv"), "official"),
    # only the selecting methods depend on the granularity
    "inside/query": ("inside", "query", ("full", "snapkv", "pyramidkv"), "official"),
    # PyramidKV without the official schedule's overspend
    "inside/kv/exact": ("inside", "kv", ("pyramidkv",), "exact"),
}


def _retrieval(args: argparse.Namespace) -> int:
    from companion.lab import get_device, load_model, load_results, save_results, seed_everything
    from companion.pyramidkv.experiments import accuracy_table, retrieval_sweep

    try:
        device = get_device(args.device)
    except ValueError as err:  # e.g. cuda on a machine without CUDA
        raise SystemExit(f"--device {args.device}: {err}") from None
    seed_everything(0)
    model, tokenizer = load_model(device=device)
    grid = FULL if args.full else QUICK
    settings = {"window": 8, "kernel": 7, "pooling": "maxpool", "kv_granularity": args.kv_granularity}
    payload = {"model": "SmolLM2-135M-Instruct", "task": "pass key in standard-library code", **grid, **settings,
               "device": str(device), "runs": {}}
    if args.full and args.resume:  # keep the runs a previous (interrupted) full run finished
        previous = load_results("pyramidkv", "retrieval")
        if previous and all(previous.get(k) == v for k, v in {**grid, **settings}.items()):
            payload["runs"] = previous["runs"]
    for name, (question, granularity, methods, schedule) in RUNS.items():
        if name in payload["runs"]:
            continue
        if granularity == "kv":
            granularity = args.kv_granularity
        rows = retrieval_sweep(model, tokenizer, **grid, window=8, kernel=7, pooling="maxpool", methods=methods,
                               question=question, granularity=granularity, schedule=schedule)
        payload["runs"][name] = rows
        print(f"question {question}, {granularity}-head selection, {schedule} PyramidKV schedule:")
        for (method, capacity), acc in accuracy_table(rows).items():
            print(f"  {method:10s} C={capacity or 'all':>4}: {acc:.0%}")
        if args.full:  # saved after every run, so an interrupted full run can --resume
            print("wrote", save_results("pyramidkv", "retrieval", payload, seed=0))
    return 0


def _long(args: argparse.Namespace) -> int:
    import time

    from companion.lab import get_device, load_model, load_results, save_results, seed_everything
    from companion.pyramidkv.experiments import long_retrieval, long_summary

    try:
        device = get_device(args.device)
    except ValueError as err:
        raise SystemExit(f"--device {args.device}: {err}") from None
    if args.resume and not args.full:
        raise SystemExit("--resume: only a full run is saved, so only --full --resume can resume")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seed_everything(0)
    model, tokenizer = load_model(device=device)
    grid = dict(LONG_FULL if args.full else LONG_QUICK)
    grid.update({k: v for k, v in (("lengths", args.lengths), ("prompts", args.prompts)) if v is not None})
    previous = load_results("pyramidkv", "long_retrieval") if args.resume else None
    started = time.perf_counter()

    def saved(payload: dict) -> None:  # after every prompt, so an interrupted full run can --resume
        n = len({(r["length"], r["prompt"]) for r in payload["rows"]})
        print(f"{n} prompts done ({time.perf_counter() - started:.0f} s in this run)", flush=True)
        if args.full:
            save_results("pyramidkv", "long_retrieval", {"model": "SmolLM2-135M-Instruct", "device": str(device),
                                                          **payload}, seed=0)

    payload = long_retrieval(model, tokenizer, **grid, previous=previous, on_prompt=saved)
    for c in long_summary(payload["rows"], layers=payload["layers"]):
        print(f"{c['length']:5d} {c['question']:6s} {c['method']:9s} C={c['capacity'] or 'all':>4}: "
              f"{c['found']:3d}/{c['n']:<3d} = {c['accuracy']:4.0%} [{c['low']:.0%}, {c['high']:.0%}]; "
              f"needle in {c['needle_layers']:.1f} of {payload['layers']} layers")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pkv = sub.add_parser("pyramidkv", help="chapter 5: PyramidKV KV-cache compression").add_subparsers(
        dest="experiment", metavar="EXPERIMENT", required=True)
    ret = pkv.add_parser("retrieval", help="pass-key accuracy vs KV budget for every method, question inside/after, "
                                           "KV-head and query-head selection")
    ret.add_argument("--full", action="store_true", help=f"2048-token haystacks, 20 prompts, C = {FULL['capacities']}; "
                                                          "writes results/pyramidkv/retrieval.json")
    ret.add_argument("--resume", action="store_true", help="with --full: keep the runs already in the results file")
    ret.add_argument("--kv-granularity", choices=("kv", "kv_pool_first"), default="kv",
                     help="KV-head scoring of the */kv runs: 'kv' (KVCache-Factory: group mean, then pooling; "
                          "default) or 'kv_pool_first' (pooling, then group mean: kvpress's order)")
    ret.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
    ret.set_defaults(run=_retrieval)
    long = pkv.add_parser("long", help="pass-key retrieval at 2k, 4k and 8k tokens, every method, question "
                                       "inside/after, with the needle's survival per layer")
    long.add_argument("--full", action="store_true",
                      help=f"lengths {LONG_FULL['lengths']}, {LONG_FULL['prompts']} prompts each, C = "
                           f"{LONG_FULL['capacities']}; writes results/pyramidkv/long_retrieval.json after every prompt")
    long.add_argument("--resume", action="store_true",
                      help="with --full: keep the prompts already in the results file and run only the missing ones")
    long.add_argument("--lengths", type=cli_int(low=64), nargs="+",
                      help="tokens per prompt, question and answer included (default: 2048 4096 8192 with --full, "
                           "512 without)")
    long.add_argument("--prompts", type=cli_int(low=1),
                      help=f"prompts per length (default: {LONG_FULL['prompts']} with --full, "
                           f"{LONG_QUICK['prompts']} without)")
    long.add_argument("--threads", type=cli_int(low=0), default=0,
                      help="torch threads (default: torch's choice; 1 is fastest for decoding on a busy CPU)")
    long.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
    long.set_defaults(run=_long)
