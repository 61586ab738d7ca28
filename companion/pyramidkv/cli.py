"""``python -m companion pyramidkv ...``: the chapter's larger runs."""

from __future__ import annotations

import argparse

from companion.lab.checks import cli_device

FULL = {"capacities": [16, 32, 64, 128, 256], "depths": [0.0, 0.25, 0.5, 0.75, 1.0], "seeds": [0, 1, 2, 3],
        "context_tokens": 2048}
QUICK = {"capacities": [32, 64, 128, 256], "depths": [0.1, 0.5, 0.9], "seeds": [0], "context_tokens": 1024}


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
