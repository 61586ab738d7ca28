import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm():
    """The book's model from the user cache (converted once per machine, then ~1 s)."""
    import torch

    from companion.lab import load_model

    torch.manual_seed(0)
    return load_model(device="cpu")
