"""Seeds, devices and progress bars: the small things every experiment needs."""

from __future__ import annotations

import os
import random
from typing import Iterable, TypeVar

import numpy as np
import torch

from .checks import check_int, check_type

T = TypeVar("T")


def seed_everything(seed: int, *, deterministic: bool = False) -> int:
    """Seed Python's ``random``, NumPy and PyTorch (CPU and CUDA) with ``seed``; return it.

    With ``deterministic=True`` PyTorch is also asked for deterministic kernels (slower on CUDA;
    operations without a deterministic version then raise instead of silently varying).
    """
    seed = check_int("seed", seed, low=0, high=2**32 - 1)
    check_type("deterministic", deterministic, bool)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this process's hash seed is fixed at start
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return seed


def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: ``device`` if given, else CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be like 'cpu', 'cuda' or 'cuda:0', got {device!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {device} was requested but this machine has {torch.cuda.device_count()} CUDA "
                         f"device(s): use cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def progress(iterable: Iterable[T], *, desc: str | None = None, total: int | None = None, **kwargs) -> Iterable[T]:
    """A tqdm progress bar (a text bar in terminals, a widget in notebooks).

    Set the environment variable ``COMPANION_PROGRESS=0`` to silence every bar.
    """
    from tqdm.auto import tqdm

    if total is not None:
        total = check_int("total", total, low=0)
    disable = os.environ.get("COMPANION_PROGRESS", "1") == "0"
    return tqdm(iterable, desc=desc, total=total, disable=disable, dynamic_ncols=True, **kwargs)
