"""``python -m companion lab ...``: facts about the bench, and the held-out perplexity experiment."""

from __future__ import annotations

import argparse
import json
import platform
import time

from companion.lab.checks import cli_device, cli_int


def _info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import companion
    from companion.lab import cache_dir, get_device, load_corpus

    facts = {
        "companion": companion.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(get_device()),
        "cache": str(cache_dir()),
        "corpus": {s: load_corpus(s).describe() for s in ("train", "validation")},
    }
    print(json.dumps(facts, indent=2))
    return 0


def _perplexity(args: argparse.Namespace) -> int:
    from companion.lab import corpus_tokens, get_device, load_model, perplexity, save_results, seed_everything

    try:
        device = get_device(args.device)
    except ValueError as err:  # e.g. cuda on a machine without CUDA
        raise SystemExit(f"--device {args.device}: {err}") from None
    seed_everything(args.seed)
    model, tokenizer = load_model(args.model, device=device)
    ids = corpus_tokens(tokenizer, "validation")
    max_tokens = None if args.full else args.max_tokens
    rows = []
    for context in args.context:
        start = time.perf_counter()
        ppl = perplexity(model, ids, context=context, max_tokens=max_tokens, desc=f"context {context}")
        n = ids.numel() if max_tokens is None else min(max_tokens, ids.numel())
        rows.append({"context": context, "tokens": n, "perplexity": ppl, "seconds": time.perf_counter() - start})
        print(f"context {context:5d}: perplexity {ppl:.3f} on {n} validation tokens ({rows[-1]['seconds']:.0f} s)")
    if args.full:
        path = save_results("lab", "perplexity", {"model": args.model or "SmolLM2-135M-Instruct (Q4_1 GGUF)",
                                                  "split": "validation", "device": str(device), "rows": rows},
                            seed=args.seed)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    lab = sub.add_parser("lab", help="chapter 0: the lab bench").add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    info = lab.add_parser("info", help="versions, device, cache folder, corpus size")
    info.set_defaults(run=_info)
    ppl = lab.add_parser("perplexity", help="held-out perplexity of the model on the standard-library corpus")
    ppl.add_argument("--full", action="store_true", help="the whole validation split; writes results/lab/perplexity.json")
    ppl.add_argument("--max-tokens", type=cli_int(low=2), default=4096, help="tokens in a quick run (default 4096)")
    ppl.add_argument("--context", type=cli_int(low=2), nargs="+", default=[512, 2048], help="window lengths (default 512 2048)")
    ppl.add_argument("--model", default=None, help="model name or path (default: the book's SmolLM2)")
    ppl.add_argument("--seed", type=cli_int(low=0, high=2**32 - 1), default=0)
    ppl.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
    ppl.set_defaults(run=_perplexity)
