"""Chapter 0 measurements: cached vs first model load, and the chapter's notebooks on this machine.

    python benchmarks/lab_bench.py            # all three measurements
    python benchmarks/lab_bench.py --load     # only the model-load ratio

1. First load (GGUF -> float32 cache, in a fresh temporary cache folder) vs cached load, in one process:
   prints the ratio (target >= 10x) and whether the logits are identical.
2. Each chapter-0 notebook executed in a fresh kernel limited to 2 threads: wall time (target < 90 s for the
   chapter) and the kernel's peak resident memory (target < 2 GB, Binder's limit).
3. The size of the built chapter-0 pages (run `jupyter-book build .` first).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench_load() -> None:
    import torch

    from companion.lab import model as model_mod

    gguf = model_mod.default_gguf_path()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["COMPANION_CACHE"] = tmp
        (Path(tmp) / "downloads").mkdir()
        shutil.copy(gguf, Path(tmp) / "downloads" / gguf.name)
        model_mod._installed_gguf = lambda: None  # use the copy inside the fresh cache
        t0 = time.perf_counter()
        first, tok = model_mod.load_model(device="cpu")
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        cached, _ = model_mod.load_model(device="cpu")
        t_cached = time.perf_counter() - t0
        ids = tok("def main():\n    return", return_tensors="pt").input_ids
        with torch.no_grad():
            same = torch.equal(first(ids).logits, cached(ids).logits)
    print(f"first load (dequantize GGUF + write cache): {t_first:6.1f} s")
    print(f"cached load:                                 {t_cached:6.1f} s")
    print(f"ratio first / cached:                        {t_first / t_cached:6.1f}x  (target >= 10x)")
    print(f"identical logits:                            {same}")


def bench_notebooks() -> None:
    import jupytext
    from nbclient import NotebookClient

    total = 0.0
    for path in sorted((ROOT / "book" / "lab").glob("*.md")):
        nb = jupytext.read(path)
        if "kernelspec" not in nb.metadata:
            continue
        env_threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=600, resources={"metadata": {"path": str(path.parent)}}).execute()
        seconds = time.perf_counter() - t0
        for k, v in env_threads.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        total += seconds
        # the kernel is a child process that has exited: its peak RSS is in RUSAGE_CHILDREN (KiB on Linux)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        print(f"{path.relative_to(ROOT)}: {seconds:6.1f} s, peak kernel memory so far {peak:.2f} GB")
    print(f"chapter 0 total: {total:.1f} s on {os.cpu_count()} CPUs (target < 90 s, < 2 GB)")


def bench_pages() -> None:
    pages = sorted((ROOT / "_build" / "html" / "book" / "lab").glob("*.html"))
    if not pages:
        print("no built pages: run `jupyter-book build .` first")
        return
    for page in pages:
        print(f"{page.relative_to(ROOT)}: {page.stat().st_size / 1e6:.2f} MB")
    vendored = ROOT / "_build" / "html" / "_static" / "widgets"
    print(f"widget scripts served with the book ({vendored.relative_to(ROOT)}): "
          f"{sum(p.stat().st_size for p in vendored.iterdir()) / 1e6:.2f} MB, loaded only by pages with widget state")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", action="store_true", help="only the model-load measurement")
    args = parser.parse_args()
    bench_load()
    if not args.load:
        bench_notebooks()
        bench_pages()
    sys.exit(0)
