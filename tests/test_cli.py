import json
import subprocess
import sys

import pytest

from companion.__main__ import build_parser, main


def test_help_lists_the_lab_chapter():
    out = subprocess.run([sys.executable, "-m", "companion", "--help"], capture_output=True, text=True, check=True).stdout
    assert "lab" in out and "--full" in out


def test_lab_info_prints_facts(capsys):
    assert main(["lab", "info"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert {"torch", "transformers", "device", "cache", "corpus"} <= set(facts)


def test_unknown_chapter_is_rejected():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["no-such-chapter"])


@pytest.mark.model
def test_quick_perplexity_run_prints_and_writes_nothing(capsys, tmp_path, monkeypatch):
    from companion.lab import results

    monkeypatch.setattr(results, "RESULTS_DIR", tmp_path)
    assert main(["lab", "perplexity", "--max-tokens", "300", "--context", "128"]) == 0
    out = capsys.readouterr().out
    assert "context   128: perplexity" in out and "on 300 validation tokens" in out
    assert not list(tmp_path.iterdir())  # only --full writes results
