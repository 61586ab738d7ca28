"""Chapter 0 measurements: cached vs first model load, and the chapter's notebooks on this machine.

    python benchmarks/lab_bench.py            # all three measurements
    python benchmarks/lab_bench.py --load     # only the model-load ratio
    python benchmarks/lab_bench.py --save     # all three, written to results/lab/bench_chapter0.json

1. First load (GGUF -> float32 cache, in a fresh temporary cache folder) vs cached load, in one process:
   prints the ratio first / cached (the cache is worth keeping when it is well above 1; 10x or more on a
   laptop) and whether the logits of both models are identical.
2. Each chapter-0 notebook executed in a fresh kernel limited to 2 threads: its wall time (the chapter is meant
   to run in under 90 s) and the kernels' peak resident memory so far (Binder's limit is 2 GB).
3. The size of the built chapter-0 pages (run `jupyter-book build .` first).

``--save`` writes results/lab/bench_chapter0.json with its provenance: ``settings`` (every option),
``threads``, ``measurements`` (load times and identical logits; per notebook seconds and peak memory; page
sizes) and ``ratios``: ``load_time_first_over_cached``.
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


def bench_load() -> dict:
    import torch

    from companion.lab import model as model_mod

    gguf = model_mod.default_gguf_path()
    saved_env, saved_installed = os.environ.get("COMPANION_CACHE"), model_mod._installed_gguf
    try:
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
    finally:  # the notebooks that follow (fresh kernels inherit the environment) use the user's cache again
        model_mod._installed_gguf = saved_installed
        if saved_env is None:
            os.environ.pop("COMPANION_CACHE", None)
        else:
            os.environ["COMPANION_CACHE"] = saved_env
    print(f"first load (dequantize GGUF + write cache): {t_first:6.1f} s")
    print(f"cached load:                                 {t_cached:6.1f} s")
    print(f"ratio first / cached:                        {t_first / t_cached:6.1f}x")
    print(f"identical logits:                            {same}")
    return {"gguf": gguf.name, "first_load_s": t_first, "cached_load_s": t_cached, "identical_logits": same}


def bench_notebooks() -> dict:
    import jupytext
    from nbclient import NotebookClient

    total, rows = 0.0, []
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
        rows.append({"notebook": str(path.relative_to(ROOT)), "seconds": seconds, "peak_kernel_memory_so_far_gb": peak})
    print(f"chapter 0 total: {total:.1f} s on {os.cpu_count()} CPUs (the book aims at < 2 min and < 2 GB per page)")
    return {"notebooks": rows, "total_s": total, "kernel_threads": 2}


def bench_pages() -> dict | None:
    pages = sorted((ROOT / "_build" / "html" / "book" / "lab").glob("*.html"))
    if not pages:
        print("no built pages: run `jupyter-book build .` first")
        return None
    for page in pages:
        print(f"{page.relative_to(ROOT)}: {page.stat().st_size / 1e6:.2f} MB")
    vendored = ROOT / "_build" / "html" / "_static" / "widgets"
    widgets = sum(p.stat().st_size for p in vendored.iterdir())
    print(f"widget scripts served with the book ({vendored.relative_to(ROOT)}): "
          f"{widgets / 1e6:.2f} MB, loaded only by pages with widget state")
    return {"pages_mb": {str(p.relative_to(ROOT)): p.stat().st_size / 1e6 for p in pages},
            "widget_scripts_mb": widgets / 1e6}


def main(argv: list[str] | None = None) -> dict:
    """Run the measurements; return the payload that ``--save`` writes."""
    from companion.lab.results import benchmark_payload, save_benchmark

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", action="store_true", help="only the model-load measurement")
    parser.add_argument("--save", action="store_true", help="write results/lab/bench_chapter0.json (with provenance)")
    args = parser.parse_args(argv)
    load = bench_load()
    measurements = {"load": load}
    if not args.load:
        measurements["notebooks"] = bench_notebooks()
        measurements["pages"] = bench_pages()
    ratios = {"load_time_first_over_cached": load["first_load_s"] / load["cached_load_s"]}
    payload = benchmark_payload("lab_bench", vars(args), measurements, ratios)
    if args.save:
        print("saved", save_benchmark("lab", "bench_chapter0", payload, argv=argv))
    return payload


if __name__ == "__main__":
    main()
    sys.exit(0)
