"""Peer check: do NVIDIA kvpress's SnapKV and PyramidKV presses keep the same tokens as companion.pyramidkv?

kvpress pins transformers < 5.3, so it runs in an environment of its own:

    python -m venv .venv-kvpress
    .venv-kvpress/bin/pip install "kvpress==0.5.5" -e .
    .venv-kvpress/bin/python benchmarks/pyramidkv_vs_kvpress.py [--tokens 512] [--save]

Both sides see the same SmolLM2 prompt (standard-library validation text). Each press runs inside a real
forward pass (``with press(model): model(...)``); ours runs ``prefill`` → ``compress`` at KV-head granularity
with average pooling (kvpress's scoring). Neither side's internals are trusted: every kept key vector is
looked up in the uncompressed cache to recover which token positions each (layer, KV head) kept.

Prints, per press and compression ratio, the share of (layer, head) pairs whose kept token sets are
identical and the mean overlap; ``--save`` writes them to results/pyramidkv/kvpress_agreement.json.

The ratios are dyadic (0.5, 0.75, 0.875) on purpose: kvpress truncates ``q·(1 − ratio)`` in SnapKV but rounds
it (as a float) in PyramidKV's fallback, so for e.g. q = 400 and ratio 0.9 its two presses keep 39 and 40 tokens.
"""

from __future__ import annotations

import argparse
import json
from importlib.metadata import version

import torch
from transformers import DynamicCache

from companion import lab
from companion.pyramidkv import compress, layer_budgets, prefill
from companion.lab import cache_kwargs


def kept_positions(kept: torch.Tensor, full: torch.Tensor) -> list[set[int]]:
    """Token positions, per head, of the key vectors in ``kept [1, H, n, d]`` within ``full [1, H, q, d]``."""
    out = []
    for h in range(full.shape[1]):
        match = (kept[0, h][:, None, :] == full[0, h][None, :, :]).all(-1)  # [n, q]
        if not bool(match.any(-1).all()):
            raise AssertionError(f"head {h}: a kept key is not in the uncompressed cache")
        out.append(set(match.float().argmax(-1).tolist()))
    return out


def agreement(ours, theirs, full) -> dict:
    same, overlaps, sizes = 0, [], []
    for L_ours, L_theirs, L_full in zip(ours.layers, theirs.layers, full.layers):
        a, b = kept_positions(L_ours.keys, L_full.keys), kept_positions(L_theirs.keys, L_full.keys)
        for x, y in zip(a, b):
            same += x == y
            overlaps.append(len(x & y) / max(len(x | y), 1))
            sizes.append((len(x), len(y)))
    return {"identical_share": same / len(overlaps), "mean_jaccard": sum(overlaps) / len(overlaps),
            "kept_ours_theirs_layer0": sizes[0], "kept_ours_theirs_last": sizes[-1]}


@torch.no_grad()
def main() -> None:
    from kvpress import PyramidKVPress, SnapKVPress
    from kvpress.utils import compute_n_kept

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--save", action="store_true", help="write results/pyramidkv/kvpress_agreement.json")
    parser.add_argument("--out", help="write the JSON here instead (for tests)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = lab.load_model(device="cpu")
    ids = lab.corpus_tokens(tokenizer, "validation", max_tokens=args.tokens)[None]
    q, layers = ids.shape[1], model.config.num_hidden_layers
    pre = prefill(model, ids)

    rows = []
    for window, ratios in ((8, (0.5, 0.75, 0.875)), (64, (0.5, 0.75))):
        for name, press_cls in (("snapkv", SnapKVPress), ("pyramidkv", PyramidKVPress)):
            for ratio in ratios:
                press = press_cls(compression_ratio=ratio, window_size=window, kernel_size=5)
                theirs = DynamicCache(config=model.config)
                with press(model):
                    model(ids, use_cache=True, **cache_kwargs(model, theirs))
                capacity = compute_n_kept(q, ratio)
                schedule = {"schedule": "kvpress"} if name == "pyramidkv" else {}
                ours, kept = compress(pre, name, capacity=capacity, window=window, kernel=5, pooling="avgpool",
                                      **schedule)
                row = {"press": name, "window": window, "compression_ratio": ratio, "capacity": capacity,
                       "kept_per_layer_theirs": [L.keys.shape[2] for L in theirs.layers], "kept_per_layer_ours": kept,
                       **agreement(ours, theirs, pre.cache)}
                if name == "pyramidkv":
                    budgets = layer_budgets(capacity, window=window, num_layers=layers, prompt_len=q, schedule="kvpress")
                    row["kvpress_fell_back_to_uniform"] = len(set(budgets)) == 1
                rows.append(row)
                print(f"{name:9s} w={window:2d} ratio={ratio:.2f} C={capacity:3d}: identical (layer, head) sets "
                      f"{row['identical_share']:.1%}, mean Jaccard {row['mean_jaccard']:.4f}, kept layer 0 / last "
                      f"{row['kept_ours_theirs_layer0']} / {row['kept_ours_theirs_last']} (ours, kvpress)")
    payload = {"kvpress_version": version("kvpress"), "transformers": version("transformers"), "prompt_tokens": q,
               "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=1)
    if args.save:
        print("saved", lab.save_results("pyramidkv", "kvpress_agreement", payload, seed=None))


if __name__ == "__main__":
    main()
