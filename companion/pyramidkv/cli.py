"""``python -m companion pyramidkv ...``: the chapter's larger runs."""

from __future__ import annotations

import argparse

FULL = {"capacities": [16, 32, 64, 128, 256], "depths": [0.0, 0.25, 0.5, 0.75, 1.0], "seeds": [0, 1, 2, 3],
        "context_tokens": 2048}
QUICK = {"capacities": [32, 64, 128, 256], "depths": [0.1, 0.5, 0.9], "seeds": [0], "context_tokens": 1024}


def _retrieval(args: argparse.Namespace) -> int:
    from companion.lab import load_model, save_results, seed_everything
    from companion.pyramidkv.experiments import accuracy_table, retrieval_sweep

    seed_everything(0)
    model, tokenizer = load_model()
    grid = FULL if args.full else QUICK
    settings = {"window": 8, "kernel": 7, "pooling": "maxpool", "schedule": "official"}
    runs = {}
    for question in ("inside", "after"):
        for granularity in ("kv", "query"):
            rows = retrieval_sweep(model, tokenizer, **grid, **settings, question=question, granularity=granularity)
            runs[f"{question}/{granularity}"] = rows
            print(f"question {question}, {granularity}-head selection:")
            for (method, capacity), acc in accuracy_table(rows).items():
                print(f"  {method:10s} C={capacity or 'all':>4}: {acc:.0%}")
    if args.full:
        payload = {"model": "SmolLM2-135M-Instruct", "task": "pass key in standard-library code", **grid,
                   **settings, "runs": runs}
        print("wrote", save_results("pyramidkv", "retrieval", payload, seed=0))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    pkv = sub.add_parser("pyramidkv", help="chapter 5: PyramidKV KV-cache compression").add_subparsers(
        dest="experiment", metavar="EXPERIMENT", required=True)
    ret = pkv.add_parser("retrieval", help="pass-key accuracy vs KV budget for every method, question inside/after, "
                                           "KV-head and query-head selection")
    ret.add_argument("--full", action="store_true", help=f"2048-token haystacks, 20 prompts, C = {FULL['capacities']}; "
                                                          "writes results/pyramidkv/retrieval.json")
    ret.set_defaults(run=_retrieval)
