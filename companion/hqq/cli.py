"""``python -m companion hqq ...``: the chapter's larger runs."""

from __future__ import annotations

import argparse

from companion.lab.checks import cli_device, cli_int

FULL_CONFIGS = [
    {"label": "RTN 8-bit g128", "nbits": 8, "group_size": 128, "optimize": False},
    {"label": "HQQ 8-bit g128", "nbits": 8, "group_size": 128},
    {"label": "RTN 4-bit g64", "nbits": 4, "group_size": 64, "optimize": False},
    {"label": "HQQ 4-bit g64", "nbits": 4, "group_size": 64},
    {"label": "HQQ 4-bit g64, blog recipe", "nbits": 4, "group_size": 64, "round_zero": True, "quant_zero": True},
    {"label": "RTN 3-bit g64", "nbits": 3, "group_size": 64, "optimize": False},
    {"label": "HQQ 3-bit g64", "nbits": 3, "group_size": 64},
    {"label": "HQQ 3-bit g64, blog recipe", "nbits": 3, "group_size": 64, "quant_zero": True},
    {"label": "RTN 2-bit g16", "nbits": 2, "group_size": 16, "optimize": False},
    {"label": "HQQ 2-bit g16", "nbits": 2, "group_size": 16},
    {"label": "HQQ 2-bit g16, blog recipe", "nbits": 2, "group_size": 16, "quant_zero": True, "quant_scale": True},
]
"""The blog's settings (8-bit g128, 4-bit g64, 3-bit g64, 2-bit g16; axis 0), each with a float zero and scale
(hqq 0.2.8's defaults) and, as "blog recipe", with the meta-data of the hqq release the blog ran: its
``hqq_base_quant_config`` defaulted to ``quant_zero=True`` (the zero to 8 bits, one min/max per tensor) and
``round_zero=True`` at 4 bits; the 2-bit g16 setting added ``quant_scale=True`` (8-bit scales in groups of 128)."""


def _perplexity(args: argparse.Namespace) -> int:
    from companion.hqq.experiments import perplexity_table
    from companion.lab import corpus_tokens, get_device, load_model, save_results, seed_everything

    try:
        device = get_device(args.device)
    except ValueError as err:  # e.g. cuda on a machine without CUDA
        raise SystemExit(f"--device {args.device}: {err}") from None
    seed_everything(args.seed)
    model, tokenizer = load_model(device=device)
    ids = corpus_tokens(tokenizer, "validation")
    tokens = args.tokens if args.full else min(args.tokens, 1024)
    configs = FULL_CONFIGS if args.full else FULL_CONFIGS[2:4]
    rows = perplexity_table(model, ids, [dict(c, axis=0) for c in configs], context=args.context, max_tokens=tokens)
    for r in rows:
        print(f"{r['label']:28s} perplexity {r['perplexity']:10.2f}  {r['bits_per_weight']:5.2f} bits/weight  "
              f"quantized in {r['seconds_quantize']:.1f} s")
    if args.full:
        path = save_results("hqq", "perplexity", {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)",
                                                  "split": "validation", "tokens": tokens, "context": args.context,
                                                  "axis": 0, "rows": rows, "device": str(device)}, seed=args.seed)
        print(f"wrote {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    hqq = sub.add_parser("hqq", help="chapter 4: HQQ quantization").add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    ppl = hqq.add_parser("perplexity", help="held-out perplexity after quantizing every linear layer (RTN vs HQQ)")
    ppl.add_argument("--full", action="store_true", help="all eleven configurations on --tokens tokens; writes results/hqq/perplexity.json")
    ppl.add_argument("--tokens", type=cli_int(low=2), default=16384, help="validation tokens in a full run (default 16384)")
    ppl.add_argument("--context", type=cli_int(low=2), default=512)
    ppl.add_argument("--seed", type=cli_int(low=0, high=2**32 - 1), default=0)
    ppl.add_argument("--device", type=cli_device, default="cpu", help="where to run (cpu, cuda, cuda:N)")
    ppl.set_defaults(run=_perplexity)
