import json
import subprocess
import sys

import pytest
import torch

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


# one experiment of each chapter whose CLI runs a model or trains one on a device
DEVICE_CLIS = [["hqq", "perplexity"], ["pyramidkv", "retrieval"], ["remoe", "compare"], ["rebind", "compare"],
               ["rebind", "edges"]]


@pytest.mark.parametrize("argv", DEVICE_CLIS, ids=" ".join)
def test_device_is_accepted_and_defaults_to_the_cpu(argv):
    parser = build_parser()
    assert parser.parse_args(argv).device == "cpu"
    for device in ("cpu", "cuda", "cuda:1"):  # parsing does not need the GPU; running checks it is there
        assert parser.parse_args([*argv, "--device", device]).device == device


@pytest.mark.parametrize("argv", DEVICE_CLIS, ids=" ".join)
def test_an_invalid_device_is_a_parser_error_naming_device(argv, capsys):
    for bad in ("gpu", "cuda:x", "meta"):
        with pytest.raises(SystemExit) as exc:
            build_parser().parse_args([*argv, "--device", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "argument --device" in err and repr(bad) in err and "cpu, cuda or cuda:N" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_stops_with_a_message_naming_device():
    with pytest.raises(SystemExit, match="--device cuda: .*CUDA is not available"):
        main(["remoe", "compare", "--device", "cuda"])
