"""The benchmarks' ``--save``: each writes its settings, measurements and ratios with a provenance block.

Only the fastest scripts run here, with the smallest settings, into a temporary results folder
(``companion.lab.results.RESULTS_DIR`` is read at call time). No time and no ratio's value is asserted: they
depend on the machine; only that the file is complete and every ratio a finite positive number.
"""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import companion.lab.results as results_mod

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["demo_step_time", "hqq_speed", "lab_bench", "pyramidkv_overhead", "rebind_speed", "remoe_step_time",
           "tom_speed"]


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(results_mod, "RESULTS_DIR", tmp_path)
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)  # the scripts set their own thread count


def check_saved(path: Path, argv: list[str], ratio_keys: set[str]) -> dict:
    assert path.is_file(), path
    data = json.loads(path.read_text())
    prov = data["provenance"]
    for key in ("command", "companion_version", "git_commit", "python", "torch", "seed", "date_utc", "machine"):
        assert key in prov, key
    assert prov["command"].startswith("python benchmarks/") and prov["command"].endswith(" ".join(argv))
    assert {"cpu_model", "cpu_count"} <= set(prov["machine"])
    assert "save" not in data["settings"]
    assert isinstance(data["threads"], int) and data["threads"] >= 1
    assert set(data["ratios"]) == ratio_keys
    for key, value in data["ratios"].items():
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, value)
    return data


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_offers_save(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        load(name).main(["--help"])
    assert exit_.value.code == 0
    assert "--save" in capsys.readouterr().out


def test_demo_step_time_save(results_dir):
    argv = ["--d-model", "32", "--layers", "1", "--heads", "2", "--seq-len", "16", "--batch-size", "2", "--warmup", "1",
            "--repeats", "2", "--steps-per-repeat", "1", "--no-gloo", "--threads", "1", "--save"]
    load("demo_step_time").main(argv)
    ratios = {f"step_time_{o}_over_adamw" for o in ("adamw_foreach", "demo", "official", "lowcomms",
                                                    "lowcomms_official")}
    ratios |= {"bytes_lowcomms_over_fp32", "bytes_lowcomms_over_compact_k32", "dct_fft_over_matmul",
               "threshold_over_topk"}
    ratios |= {"step_time_demo_over_adamw_foreach", "step_time_official_over_demo"}
    ratios |= {f"bytes_{a}_over_{b}_k{k}" for k in (32, 8, 1)
               for a, b in (("compact", "official"), ("compact", "fp32"), ("official", "fp32"))}
    data = check_saved(results_dir / "demo" / "bench_step_time.json", argv, ratios)
    assert data["settings"]["d_model"] == 32 and data["settings"]["no_gloo"] is True
    assert data["provenance"]["seed"] == 0
    assert len(data["measurements"]["step_s"]["demo"]) == 2  # every repeat kept


def test_hqq_speed_save(results_dir):
    argv = ["--shapes", "64x64", "--repeats", "1", "--solver-shape", "64x64", "--adam-steps", "2", "--threads", "1",
            "--save"]
    load("hqq_speed").main(argv)
    ratios = {"speedup_half_quadratic_over_adam"}
    if importlib.util.find_spec("hqq") is not None:
        ratios.add("time_hqq_over_companion_faithful_64x64")
    data = check_saved(results_dir / "hqq" / "bench_speed.json", argv, ratios)
    assert data["settings"]["shapes"] == [[64, 64]] and data["settings"]["adam_steps"] == 2


def test_tom_speed_arena_save(results_dir):
    pytest.importorskip("axelrod")
    argv = ["--skip-llm", "--arena-horizon", "5", "--arena-repeats", "1", "--tournament-repeats", "1",
            "--threads", "1", "--save"]
    load("tom_speed").main(argv)
    data = check_saved(results_dir / "tom" / "bench_speed.json", argv, {"throughput_ours_over_axelrod"})
    assert data["settings"]["arena_horizon"] == 5 and data["settings"]["skip_llm"] is True
    assert data["measurements"]["arena"]["scores_equal_axelrod"] is True
