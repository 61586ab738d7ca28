"""Print how long each notebook took when the book was last built (from jupyter-cache's records)."""

import sys
from pathlib import Path

from jupyter_cache import get_cache

cache = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/.jupyter_cache")
if not cache.exists():
    sys.exit(f"no execution cache at {cache}: build the book first")
root = Path.cwd()
latest = {}  # the cache keeps a record per executed version of a notebook: show the newest
for record in sorted(get_cache(cache).list_cache_records(), key=lambda r: r.created):
    latest[Path(record.uri).resolve()] = record.data.get("execution_seconds")
rows = sorted(latest.items())
print(f"{'notebook':45s} {'seconds':>8s}")
for uri, seconds in rows:
    name = uri.relative_to(root) if uri.is_relative_to(root) else uri
    print(f"{str(name):45s} {seconds:8.1f}" if seconds is not None else f"{str(name):45s} {'?':>8s}")
