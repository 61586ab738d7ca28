"""Print each page's execution time and peak memory from the last book build, against the book's limits.

The numbers come from ``_build/execution-report.json``, written by ``book/_ext/book_execution.py`` while the
build executes each page in a fresh kernel (peak = the largest sum of resident memory of the kernel and the
processes it started, sampled every 0.1 s). Limits (Binder's, on 2 CPU cores): every page under 2 minutes and
2 GB, the whole book under 15 minutes. A page over a limit is marked; the script only reports.

``--save`` also writes the per-page numbers to the results ledger (``results/lab/page_times.json``, with
provenance), which the book's course guide reads.
"""

import json
import os
import sys
from pathlib import Path

PAGE_SECONDS, PAGE_MB, BOOK_SECONDS = 120, 2048, 15 * 60

args = [a for a in sys.argv[1:] if a != "--save"]
path = Path(args[0] if args else "_build/execution-report.json")
if not path.is_file():
    sys.exit(f"no execution report at {path}: build the book first (jupyter-book build .)")
report = json.loads(path.read_text())
print(f"pages executed by the build of {max(r['executed'] for r in report.values())} on {os.cpu_count()} CPU cores")
print(f"{'page':32s} {'seconds':>8s} {'peak MB':>8s}")
for page, r in sorted(report.items()):
    over = [name for name, bad in (("time", r["seconds"] > PAGE_SECONDS), ("memory", r["peak_rss_mb"] > PAGE_MB)) if bad]
    print(f"{page:32s} {r['seconds']:8.1f} {r['peak_rss_mb']:8.0f}" + (f"  OVER the {' and '.join(over)} limit" if over else ""))
total = sum(r["seconds"] for r in report.values())
print(f"{'all ' + str(len(report)) + ' pages':32s} {total:8.1f} {max(r['peak_rss_mb'] for r in report.values()):8.0f}"
      + ("  OVER the whole-book limit" if total > BOOK_SECONDS else ""))
print(f"limits: {PAGE_SECONDS} s and {PAGE_MB} MB per page, {BOOK_SECONDS} s for the book")

if "--save" in sys.argv[1:]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import subprocess

    from companion.lab import save_results

    built = subprocess.run(["git", "-C", str(path.resolve().parents[1]), "rev-parse", "HEAD"], capture_output=True,
                           text=True).stdout.strip() or None  # the commit the book was built from

    pages = {page: {"seconds": r["seconds"], "peak_rss_mb": r["peak_rss_mb"], "executed": r["executed"]}
             for page, r in sorted(report.items())}
    out = save_results("lab", "page_times", {"cpu_cores": os.cpu_count(), "pages": pages,
                                             "limits": {"page_seconds": PAGE_SECONDS, "page_mb": PAGE_MB},
                                             "built_from_commit": built},
                       seed=None, command="python .ci/exec_times.py --save (after jupyter-book build .)")
    print(f"saved {out}")
