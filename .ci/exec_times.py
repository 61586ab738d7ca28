"""Print how long each notebook took when the book was last built (from jupyter-cache's records)."""

import sys
from pathlib import Path

from jupyter_cache import get_cache

cache = Path(sys.argv[1] if len(sys.argv) > 1 else "_build/.jupyter_cache")
if not cache.exists():
    sys.exit(f"no execution cache at {cache}: build the book first")
root = Path.cwd()
rows = sorted((Path(r.uri).resolve(), r.data.get("execution_seconds")) for r in get_cache(cache).list_cache_records())
print(f"{'notebook':45s} {'seconds':>8s}")
for uri, seconds in rows:
    name = uri.relative_to(root) if uri.is_relative_to(root) else uri
    print(f"{str(name):45s} {seconds:8.1f}" if seconds is not None else f"{str(name):45s} {'?':>8s}")
