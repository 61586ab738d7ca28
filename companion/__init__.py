"""``companion``: the working code of the executable textbook.

One subpackage per paper (``tom``, ``rebind``, ``demo``, ``hqq``, ``pyramidkv``, ``remoe``) plus the shared
bench ``companion.lab`` (model, corpus, seeds, devices, results) and ``companion.viz`` (plot style and
widgets that stay alive in the static book). Subpackages load on first access::

    import companion
    model, tokenizer = companion.lab.load_model()
"""

from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.1.0"


def __getattr__(name: str):
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'companion' has no attribute {name!r}")
