"""The peer check against NVIDIA kvpress, which needs its own environment (it pins transformers < 5.3).

Runs only when ``COMPANION_KVPRESS_PYTHON`` names a Python with kvpress and the companion installed
(``.ci/run`` builds one); see benchmarks/pyramidkv_vs_kvpress.py.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

PYTHON = os.environ.get("COMPANION_KVPRESS_PYTHON")
pytestmark = [pytest.mark.model, pytest.mark.skipif(not PYTHON, reason="COMPANION_KVPRESS_PYTHON not set")]


def test_kvpress_snapkv_and_pyramidkv_keep_the_same_tokens_as_ours(tmp_path):
    script = Path(__file__).parents[1] / "benchmarks" / "pyramidkv_vs_kvpress.py"
    out = tmp_path / "agreement.json"
    subprocess.run([PYTHON, str(script), "--tokens", "512", "--out", str(out)], check=True, timeout=900)
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 10
    for row in rows:
        assert row["kept_per_layer_ours"] == row["kept_per_layer_theirs"], row["press"]
        assert row["identical_share"] == 1.0, (row["press"], row["compression_ratio"], row["mean_jaccard"])
    fell_back = {(r["window"], r["capacity"]): r["kvpress_fell_back_to_uniform"] for r in rows if r["press"] == "pyramidkv"}
    assert fell_back[(8, 128)] and fell_back[(8, 64)] and not fell_back[(8, 256)]  # a pyramid only once C / beta >= w
