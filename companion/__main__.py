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
    rep = sub.add_parser("report", help="the results table, generated from the committed results (results/)")
    rep.add_argument("--chapter", choices=CHAPTERS, default=None, help="one chapter's rows only")
    group = rep.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", help="replace the generated table in this README")
    group.add_argument("--check", metavar="README", help="exit 1 if this README's table differs from the ledger's")
    rep.set_defaults(run=_report)
    return parser


def _report(args: argparse.Namespace) -> int:
    from companion import report

    if args.write:
        changed = report.write_readme(args.write)
        print(f"{args.write}: results table {'updated' if changed else 'already up to date'}")
        return 0
    if args.check:
        if report.readme_section(args.check) != report.markdown():
            print(f"{args.check}: the results table differs from the ledger; run "
                  f"python -m companion report --write {args.check}", file=sys.stderr)
            return 1
        print(f"{args.check}: the results table equals what the ledger gives")
        return 0
    print(report.markdown(args.chapter), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
