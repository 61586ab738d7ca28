"""``companion.pyramidkv``: PyramidKV KV-cache compression (Cai et al., 2024). Work in progress: so far the
per-layer budget schedules (:func:`layer_budgets`); scoring, selection on a real cache and the chapter follow.
"""

from .budgets import SCHEDULES, layer_budgets, overspend, regime

__all__ = ["SCHEDULES", "layer_budgets", "overspend", "regime"]
