"""Bad-input table of ``companion.lab`` (see tests/badinput.py)."""

from __future__ import annotations

import functools

import torch

from badinput import Choice, Custom, Float, Int, NoArguments, Spec, Tensor, cli_spec
from companion import lab


@functools.cache
def tiny_lm():
    """A two-layer random Llama (no download): enough to exercise argument checks of model functions."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


class ByteTokenizer:
    """The two tokenizer methods the lab functions use, on bytes modulo 32."""

    def __call__(self, text, return_tensors="pt"):
        from types import SimpleNamespace

        return SimpleNamespace(input_ids=torch.tensor([[b % 32 for b in text.encode()]]))

    def convert_ids_to_tokens(self, ids):
        return [str(i) for i in ids]


@functools.cache
def smollm_tokenizer():
    """The book's tokenizer (its validation-split tokens are cached once per machine)."""
    return lab.load_model(device="cpu")[1]


def _attn():
    a = torch.rand(2, 2, 4, 4).tril()
    return a / a.sum(-1, keepdim=True)


_NOT_A_MODEL = Custom(("model", None, 3, object()))

SPECS = {
    "DEFAULT_MODEL": NoArguments("a constant (the default model's name)"),
    "Corpus": NoArguments("a frozen record returned by load_corpus (tested through load_corpus)"),
    "ModelUnavailableError": NoArguments("an exception class"),
    "Spread": NoArguments("a frozen record returned by spread (tested through spread)"),
    "spread": Spec(
        lambda **kw: lab.spread(**kw), lambda: {"values": [1.0, 2.0, 3.0], "confidence": 0.95},
        {"values": Custom(([], "123", None, [1.0, float("nan")], [1.0, "2"])),
         "confidence": Float(low=0.0, high=1.0, low_open=True, high_open=True)}),
    "wilson_interval": Spec(
        lambda **kw: lab.wilson_interval(**kw), lambda: {"successes": 3, "n": 10, "confidence": 0.95},
        {"successes": Custom((-1, 11, 2.0, True, None)), "n": Int(low=1),
         "confidence": Float(low=0.0, high=1.0, low_open=True, high_open=True)}),
    "mcnemar_exact": Spec(
        lambda **kw: lab.mcnemar_exact(**kw), lambda: {"b": 3, "c": 1}, {"b": Int(low=0), "c": Int(low=0)}),
    "attention_maps": Spec(
        lambda **kw: lab.attention_maps(**kw),
        lambda: {"model": tiny_lm(), "tokenizer": ByteTokenizer(), "text": "def f(x):", "max_tokens": 8},
        {"model": _NOT_A_MODEL, "text": Custom(("", None, 3, b"bytes")), "max_tokens": Int(low=1)}),
    "attention_summary": Spec(
        lambda **kw: lab.attention_summary(**kw), lambda: {"attn": _attn()},
        {"attn": Tensor(_attn, ndim=4, dtype="floating")}),
    "cache_dir": Spec(
        lambda **kw: lab.cache_dir(*kw["parts"]), lambda: {"parts": ("tokens",)},
        {"parts": Custom(((3,), ("..",), ("a/b",), ("",), (None,)))}),
    "cache_kwargs": Spec(
        lambda **kw: lab.cache_kwargs(**kw), lambda: {"model": tiny_lm(), "cache": None},
        {"model": _NOT_A_MODEL}),
    "corpus_tokens": Spec(
        lambda **kw: lab.corpus_tokens(**kw),
        lambda: {"tokenizer": smollm_tokenizer(), "split": "validation", "max_tokens": 10},
        {"split": Choice(lab.corpus.SPLITS), "max_tokens": Int(low=1, optional=True)}),
    "distinct_per_block": Spec(
        lambda **kw: lab.distinct_per_block(**kw), lambda: {"weight": torch.randn(4, 64), "block": 32},
        {"weight": Tensor(lambda: torch.randn(4, 64)), "block": Int(low=1)}),
    "eager_attention": Spec(
        lambda **kw: lab.eager_attention(**kw).__enter__(), lambda: {"model": tiny_lm()},
        {"model": _NOT_A_MODEL}),
    "get_device": Spec(
        lambda **kw: lab.get_device(**kw), lambda: {"device": "cpu"},
        {"device": Custom(("gpu", "cpu:x", 3.5, object()))}),
    "load_corpus": Spec(
        lambda **kw: lab.load_corpus(**kw), lambda: {"split": "validation"},
        {"split": Choice(lab.corpus.SPLITS)}),
    "load_model": Spec(
        lambda **kw: lab.load_model(**kw),
        lambda: {"name": None, "dtype": torch.float32, "device": "cpu", "rebuild": False},
        {"name": Custom((3, 2.5, object())), "dtype": Custom((torch.int64, "float32", torch.bool)),
         "device": Custom(("gpu", 3.5, object())), "rebuild": Custom((1, "yes", None))}),
    "load_results": Spec(
        lambda **kw: lab.load_results(**kw), lambda: {"chapter": "lab", "name": "perplexity"},
        {"chapter": Custom(("", "../x", 3, None)), "name": Custom(("", "a/b", ".hidden", 3))}),
    "perplexity": Spec(
        lambda **kw: lab.perplexity(**kw),
        lambda: {"model": tiny_lm(), "token_ids": torch.arange(20) % 32, "context": 8, "stride": 4},
        {"model": _NOT_A_MODEL, "token_ids": Tensor(lambda: torch.arange(20) % 32, dtype="integer"),
         "context": Int(low=2), "stride": Int(low=1, high=8, optional=True)}),
    "progress": Spec(
        lambda **kw: list(lab.progress(**kw)), lambda: {"iterable": range(3), "total": 3},
        {"total": Int(low=0, optional=True)}),
    "provenance": Spec(
        lambda **kw: lab.provenance(**kw), lambda: {"seed": 0, "command": "python -m companion"},
        {"seed": Int(optional=True), "command": Custom((3, b"x", ["python"]))}),
    "save_results": Spec(
        lambda **kw: lab.save_results(**kw),
        lambda: {"chapter": "sweep", "name": "x", "payload": {"a": 1}, "seed": 0, "folder": _tmp()},
        {"chapter": Custom(("", "a/b", 3)), "name": Custom(("", ".x", None)), "payload": Custom(([1], "x", None)),
         "seed": Int(optional=True)}),
    "seed_everything": Spec(
        lambda **kw: lab.seed_everything(**kw), lambda: {"seed": 0, "deterministic": False},
        {"seed": Int(low=0, high=2**32 - 1), "deterministic": Custom((1, "yes", None))}),
}


@functools.cache
def _tmp():
    import tempfile

    return tempfile.mkdtemp(prefix="companion-sweep-")


CLI_SPECS = {
    "lab perplexity": cli_spec(["lab", "perplexity"], {"max_tokens": "64", "context": "32", "seed": "0",
                                                       "device": "cpu"},
                               {"max_tokens": Int(low=2), "context": Int(low=2), "seed": Int(low=0, high=2**32 - 1),
                                "device": Custom(("gpu", "cuda:x", "meta"))}),
}
