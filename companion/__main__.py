"""Command line of the companion: ``python -m companion <chapter> <experiment> [--full]``.

Each chapter subpackage that has experiments provides ``cli.py`` with ``register(subparsers)``, adding its
own sub-command; full-mode runs write JSON results with provenance under ``results/<chapter>/``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

import companion

#: chapter subpackages, in book order; those without a ``cli`` module are skipped
CHAPTERS = ("lab", "tom", "rebind", "demo", "hqq", "pyramidkv", "remoe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m companion",
        description="Reproduce the book's experiments. Quick runs are what the notebooks execute; --full runs "
        "the larger experiment and writes its results, with provenance, under results/<chapter>/.",
    )
    parser.add_argument("--version", action="version", version=f"companion {companion.__version__}")
    sub = parser.add_subparsers(dest="chapter", metavar="CHAPTER", required=True)
    for chapter in CHAPTERS:
        if importlib.util.find_spec(f"companion.{chapter}") and importlib.util.find_spec(f"companion.{chapter}.cli"):
            importlib.import_module(f"companion.{chapter}.cli").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
