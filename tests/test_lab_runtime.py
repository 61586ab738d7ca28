import random

import numpy as np
import pytest
import torch

from companion.lab import get_device, load_results, save_results, seed_everything


def test_seed_everything_repeats_all_generators():
    seed_everything(123)
    first = (random.random(), np.random.rand(), torch.rand(3))
    seed_everything(123)
    second = (random.random(), np.random.rand(), torch.rand(3))
    assert first[0] == second[0] and first[1] == second[1] and torch.equal(first[2], second[2])
    seed_everything(124)
    assert random.random() != first[0]


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "3", True])
def test_seed_everything_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        seed_everything(bad)


def test_get_device():
    assert get_device("cpu") == torch.device("cpu")
    assert get_device() == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be like"):
        get_device("gpu-please")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            get_device("cuda")


def test_results_round_trip_with_provenance(tmp_path):
    path = save_results("lab", "demo", {"rows": [1, 2]}, seed=7, command="python -m companion lab demo", folder=tmp_path)
    assert path == tmp_path / "lab" / "demo.json"
    got = load_results("lab", "demo", folder=tmp_path)
    assert got["rows"] == [1, 2]
    prov = got["provenance"]
    assert prov["seed"] == 7 and prov["command"] == "python -m companion lab demo"
    assert {"companion_version", "torch", "python", "date_utc", "machine"} <= set(prov)
    assert load_results("lab", "absent", folder=tmp_path) is None


@pytest.mark.parametrize("chapter,name", [("", "x"), ("lab", "../x"), ("a/b", "x"), ("lab", ".hidden")])
def test_results_reject_path_like_names(tmp_path, chapter, name):
    with pytest.raises(ValueError, match="plain non-empty name"):
        save_results(chapter, name, {}, seed=0, folder=tmp_path)


def test_results_reject_non_dict_payload(tmp_path):
    with pytest.raises(TypeError, match="payload must be a dict"):
        save_results("lab", "x", [1], seed=0, folder=tmp_path)


def test_provenance_names_the_module_command(monkeypatch):
    import companion
    from companion.lab import provenance

    monkeypatch.setattr("sys.argv", [companion.__file__.replace("__init__.py", "__main__.py"), "lab", "perplexity", "--full"])
    assert provenance(seed=0)["command"] == "python -m companion lab perplexity --full"
