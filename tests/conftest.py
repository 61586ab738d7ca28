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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is fastest, and avoids thread contention on a busy 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def remoe_data(tmp_path_factory):
    """A small BPE tokenizer (300 tokens) and token ids of the corpus, in a temporary cache."""
    from companion.remoe import corpus_ids, load_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COMPANION_CACHE", str(tmp_path_factory.mktemp("remoe-cache")))
        tok = load_tokenizer(vocab_size=300, max_chars=100_000)
        train_ids = corpus_ids("train", tokenizer=tok, max_chars=100_000)
        val_ids = corpus_ids("validation", tokenizer=tok, max_chars=20_000)
    return tok, train_ids, val_ids
