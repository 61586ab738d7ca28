"""The DeMo optimizer (Peng, Quesnelle & Kingma, 2024, arXiv 2411.19870, Algorithm 1; official code:
github.com/bloc97/DeMo, ``demo.py``).

Per parameter ``p`` with gradient ``g``, learning rate ``η``, every step (as the official code does it):

1. decoupled weight decay ``p ← p · (1 − η·wd)``;
2. momentum ``δ ← β δ + η g`` (``β`` = ``compression_decay`` = 0.999; note ``η g``, not ``(1 − β) g``);
3. encode ``δ`` with the chunked orthonormal DCT (:mod:`companion.demo.dct`) and keep the top-k coefficients of
   every chunk (:func:`companion.demo.compress.topk_compress`);
4. error feedback ``δ ← δ − IDCT(scatter(idx, val))``: the transmitted part leaves the local momentum;
5. all-gather every worker's ``(idx, val)``;
6. aggregate: mean over the workers that picked each coefficient, inverse DCT → ``Q``;
7. ``p ← p − η · sign(Q)``.

What differs from the official code (same numbers, different plumbing):

- all tiles of all parameters with the same tile shape are encoded / decoded in one batched matmul, and all
  parameters travel in **one** ``all_gather`` of a byte buffer per step (the official code issues two per
  parameter); before it, every step, one small all-gather of a few integers checks that every worker sends
  the same layout and settings and tells every worker whether any gradient holds NaN / inf (see "Faults");
- the payload of one step is one uint8 buffer: the indices of every tile-shape group (in first-seen parameter
  order, tiles row-major within a parameter, parameters concatenated), then their values; every worker
  contributes the same number of bytes, so a plain ``all_gather`` of equal-sized tensors carries it;
- with one worker (fp32 / fp64, error feedback on) the update's sparse IDCT is the error feedback's: the mean
  over one worker's picks is its own values, so the two decodes are the same numbers and one is skipped;
- indices go on the wire in the smallest integer dtype (``wire_format="compact"``, default) or as int64
  (``"official"``); the update is identical, only the bytes differ;
- the basis is the official one by default (``basis="official"``: torch-dct's FFT route on ``torch.eye(n)`` in
  float32, cast to the parameter's dtype, a forward and an inverse matrix that are not exact transposes; some true
  zeros come out as exact zeros, some as ±1e-9); ``basis="exact"`` uses closed-form float64 cosines with exact
  zeros. In bf16 / fp16 the error feedback and the aggregate are decoded densely in the official order, so the
  step equals the official one bit for bit (tests/test_demo_precision.py); in fp32 / fp64 a sparse decode is used
  when cheaper (the updates agree; δ differs in the last bits);
- it runs without a process group (one worker: the "gather" is the local payload);
- the step writes its tiles, coefficients, magnitudes and decodes into two scratch tensors per tile shape and
  dtype that it keeps between steps (together twice the parameters' size, besides δ), as a GPU's caching
  allocator would: on the CPU, tensors this large allocated afresh cost page faults in every step;
- parameters whose ``.grad`` is ``None`` are skipped (the official code crashes on them); ``p.grad`` is not
  overwritten with the sign (the official code does, then calls ``SGD.step``);
- ``k`` larger than a chunk is clipped with a warning (the official code clips silently); >= 3-D tensors are
  viewed as ``[shape[0], prod(shape[1:])]`` (the official code fails on them).

Faults (the official code has no checks: a NaN enters δ and stays there, a worker whose layout differs makes the
all-gather fail or mixes coefficients of different parameters, a hung worker blocks the others forever):

- non-finite gradients: with ``nonfinite="raise"`` (default) every worker raises the same ``ValueError`` naming the
  parameter and the rank(s), before anything changes; ``nonfinite="skip"`` skips the step on every worker (the
  replicas and their momenta stay identical; ``skipped_steps`` counts them); ``nonfinite="official"`` does no
  check, as the official code;
- layout: the parameters that have a gradient (by position in ``param_groups``), their shapes and dtypes, the
  compression settings and the per-group ``lr`` / ``weight_decay`` must agree on every worker, every step; if
  not, every worker raises the same ``ValueError`` naming the parameters that lack a gradient on some workers;
- a dead or hung worker: each collective waits at most ``timeout_s`` seconds (default: the process group's own
  timeout), then raises a ``RuntimeError`` that says so.

With torchrun, initialise the default process group (``torch.distributed.init_process_group("nccl" or "gloo")``)
before building the optimizer; with gloo the collectives run on CPU copies, with NCCL on the parameters' GPU.

Ablations: ``error_feedback=False`` (δ keeps the transmitted part), ``transform="identity"`` (top-k in the raw
basis of the same chunks), ``tiling="1d"`` (matrices are flattened into 1-D chunks of <= s² entries instead of
s x s tiles).
"""

from __future__ import annotations

import datetime
import math
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from companion.lab.checks import check_choice, check_float, check_int, check_type, describe

from . import dct as _dct
from .compress import WIRE_FORMATS, _aggregate, clip_topk, index_dtype

TRANSFORMS = ("dct", "identity")
#: what :class:`DeMo` does with a NaN / inf gradient: raise on every worker, skip the step on every worker, or
#: nothing (the official code)
NONFINITE = ("raise", "skip", "official")

#: DeMo's compression settings (keyword arguments of :class:`DeMo` besides ``params``, ``lr``, ``weight_decay``
#: and the process group), as :class:`companion.demo.TrainConfig` passes them in ``demo``
COMPRESSION_OPTIONS = ("compression_decay", "compression_topk", "compression_chunk", "error_feedback", "transform",
                       "tiling", "wire_format")


def _check_compression(compression_decay=0.999, compression_topk=32, compression_chunk=64, error_feedback=True,
                       transform="dct", tiling="2d", wire_format="compact") -> None:
    """Check DeMo's compression settings (shared by :class:`DeMo` and :class:`companion.demo.TrainConfig`)."""
    check_float("compression_decay", compression_decay, low=0.0, high=1.0, high_open=True)
    check_int("compression_topk", compression_topk, low=1)
    check_int("compression_chunk", compression_chunk, low=1)
    check_type("error_feedback", error_feedback, bool)
    check_choice("transform", transform, TRANSFORMS)
    check_choice("tiling", tiling, _dct.TILINGS)
    check_choice("wire_format", wire_format, WIRE_FORMATS)


@dataclass
class _Group:
    """Parameters that share a tile shape and dtype, encoded together."""

    tile: tuple[int, ...]
    dtype: torch.dtype
    k: int
    index_dtype: torch.dtype
    members: list  # [(param, matrix_shape, n_tiles)]

    @property
    def length(self) -> int:
        return math.prod(self.tile)

    @property
    def n_tiles(self) -> int:
        return sum(m[2] for m in self.members)

    def nbytes(self) -> tuple[int, int]:
        n = self.n_tiles * self.k
        return (n * torch.empty((), dtype=self.index_dtype).element_size(),
                n * torch.empty((), dtype=self.dtype).element_size())


def _check_params(params) -> list:
    """``params`` (an iterable of tensors or of parameter-group dicts, not empty) as a list."""
    if isinstance(params, (torch.Tensor, str, bytes, dict)) or not isinstance(params, Iterable):
        raise TypeError(f"params must be an iterable of tensors or of parameter groups (dicts), got "
                        f"{describe(params)}")
    params = list(params)
    if not params:
        raise ValueError("params must not be empty (the optimizer got an empty parameter list)")
    return params


class _Exchange(torch.optim.Optimizer):
    """What :class:`DeMo` and :class:`companion.demo.DeMoLowComms` share: the process group, the all-gather with a
    timeout, and the per-step fault and layout check (module docstring, "Faults"). A subclass sets
    ``_layout_crc`` (a checksum of what it sends) and defines ``_settings_key()`` (its settings, compared across
    workers every step)."""

    def __init__(self, params: list, defaults: dict, *, process_group=None, world_size: int | None = None,
                 nonfinite: str = "raise", timeout_s: float | None = None):
        if process_group is not None:
            check_type("process_group", process_group, dist.ProcessGroup if dist.is_available() else (),
                       what="a torch.distributed ProcessGroup or None")
        if world_size is not None:
            world_size = check_int("world_size", world_size, low=1)
        check_choice("nonfinite", nonfinite, NONFINITE)
        if timeout_s is not None:
            timeout_s = check_float("timeout_s", timeout_s, low=0.0, low_open=True)
        super().__init__(params, defaults)
        self.process_group = process_group
        self.nonfinite = nonfinite
        self.timeout_s = timeout_s
        self.skipped_steps = 0
        if process_group is not None or (dist.is_available() and dist.is_initialized()):
            self.world_size = dist.get_world_size(process_group)
            self.rank = dist.get_rank(process_group)
            self._distributed = True
        else:
            self.world_size, self.rank, self._distributed = 1, 0, False
        if world_size is not None and world_size != self.world_size:
            raise ValueError(f"world_size = {world_size} was requested but the process group has "
                             f"{self.world_size} worker(s)" + ("" if self._distributed else
                                                               " (torch.distributed is not initialised)"))
        self.bytes_sent = 0
        self.bytes_received = 0
        self.total_bytes_sent = 0
        self.total_bytes_received = 0
        self._layout_crc = 0

    def _settings_key(self) -> tuple:
        raise NotImplementedError

    def add_param_group(self, param_group: dict) -> None:
        """``torch.optim.Optimizer.add_param_group`` after checking the group's ``lr`` and ``weight_decay`` (finite,
        >= 0) and that none of its tensors is empty (DeMo cannot encode an empty tensor)."""
        if isinstance(param_group, dict):
            for key in ("lr", "weight_decay"):
                if key in param_group:
                    check_float(key, param_group[key], low=0.0)
            group_params = param_group.get("params")
            if isinstance(group_params, torch.Tensor):
                group_params = [group_params]
            elif isinstance(group_params, Iterable) and not isinstance(group_params, (set, str, bytes)):
                param_group["params"] = group_params = list(group_params)  # as torch does; keeps generators
            else:
                group_params = []  # torch's own check explains what is wrong
            for p in group_params:
                t = p[1] if isinstance(p, tuple) and len(p) == 2 else p  # (name, tensor) pairs
                if isinstance(t, torch.Tensor) and t.numel() == 0:
                    raise ValueError(f"params must not contain empty tensors (DeMo cannot encode them), got "
                                     f"{describe(t)}")
        super().add_param_group(param_group)

    def _with_grads(self) -> tuple[list[torch.Tensor], list[int], list[tuple[float, float]], int]:
        """The parameters that have a gradient, their positions in ``param_groups``, their groups' ``(lr,
        weight_decay)``, and the number of parameters."""
        params, positions, hyper = [], [], []
        n_total = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise TypeError(f"{type(self).__name__} does not support sparse gradients")
                    params.append(p)
                    positions.append(n_total)
                    hyper.append((group["lr"], group["weight_decay"]))
                n_total += 1
        return params, positions, hyper, n_total

    def _layout(self, params: list[torch.Tensor], positions: list[int]) -> list:
        raise NotImplementedError

    def _payload_bytes(self, layout: list) -> int:
        raise NotImplementedError

    def _start_step(self, closure) -> tuple:
        """What every step does first: run ``closure``, collect the parameters with gradients, lay them out and run
        :meth:`_check_step`. Returns ``(loss, work)``; ``work`` is ``(params, hyper, layout, device)``, or None when
        there is nothing to do (no gradients, or a step that every worker skips)."""
        if closure is not None and not callable(closure):
            raise TypeError(f"closure must be a callable or None, got {describe(closure)}")
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, positions, hyper, n_total = self._with_grads()
        layout = self._layout(params, positions) if params else []
        device = params[0].device if params else torch.device("cpu")
        skip = self._check_step(params, positions, n_total, self._payload_bytes(layout), device)
        self.bytes_sent = self.bytes_received = 0
        if skip:
            self.skipped_steps += 1
        return loss, (None if skip or not params else (params, hyper, layout, device))

    def _count_bytes(self, nbytes: int) -> None:
        self.bytes_sent = nbytes
        self.bytes_received = (self.world_size - 1) * nbytes
        self.total_bytes_sent += self.bytes_sent
        self.total_bytes_received += self.bytes_received

    # ---------------------------------------------------------------- comms
    def _comm_device(self, device: torch.device) -> torch.device:
        """Where the collectives run: the parameters' device, except CPU for gloo (CPU tensors only)."""
        return torch.device("cpu") if dist.get_backend(self.process_group) == "gloo" else device

    def _gather(self, buf: torch.Tensor, what: str) -> torch.Tensor:
        """``[n] -> [W, n]``: all-gather ``buf`` (on the communication device), waiting at most ``timeout_s``."""
        out = [torch.empty_like(buf) for _ in range(self.world_size)]
        try:
            work = dist.all_gather(out, buf, group=self.process_group, async_op=True)
            if self.timeout_s is None:
                work.wait()
            else:
                work.wait(timeout=datetime.timedelta(seconds=self.timeout_s))
        except RuntimeError as e:  # DistBackendError, timeouts, closed connections
            limit = (f"timeout_s = {self.timeout_s:g} s" if self.timeout_s is not None
                     else "the process group's timeout")
            raise RuntimeError(f"DeMo: the all_gather of {what} failed on rank {self.rank} of {self.world_size} — "
                               f"a worker probably died, hung or left the group (each collective waits at most "
                               f"{limit}). Cause: {e}") from e
        return torch.stack(out)

    def _param_names(self) -> list[str]:
        """A readable name per parameter position: its name if the optimizer got ``named_parameters()``, its place
        in ``param_groups``, and its shape."""
        names = []
        for gi, group in enumerate(self.param_groups):
            given = group.get("param_names")
            for j, p in enumerate(group["params"]):
                where = f"param_groups[{gi}]['params'][{j}], shape {tuple(p.shape)}"
                names.append(f"'{given[j]}' ({where})" if given else where)
        return names

    def _check_step(self, params: list[torch.Tensor], positions: list[int], n_total: int, nbytes: int,
                    device: torch.device) -> bool:
        """Every step, before anything changes: the non-finite and layout checks, with one small all-gather of
        ``[parameters, with gradient, payload bytes, layout checksum, settings checksum, world size, non-finite
        gradients, first non-finite position]`` per worker. Returns True if the step is to be skipped (the same
        answer on every worker); raises the same ``ValueError`` on every worker otherwise."""
        if self.nonfinite != "official" and params:
            # a sum is finite only if every entry is (15x cheaper than isfinite().all() on one CPU thread); a sum
            # that overflowed, or a real NaN / inf, is then decided entry by entry
            finite = torch.stack([p.grad.sum(dtype=torch.float64 if p.grad.dtype == torch.float64 else torch.float32)
                                  for p in params]).isfinite()
            if not bool(finite.all()):
                finite = torch.stack([torch.isfinite(p.grad).all() for p in params])
            pos = torch.tensor(positions, device=finite.device)
            local = torch.stack([(~finite).sum(), torch.where(finite, n_total, pos).min()])
        else:
            local = torch.tensor([0, n_total])
        if not self._distributed:
            table = [[0] * 6 + local.tolist()]
        else:
            settings = repr((type(self).__name__, self._settings_key(), self.nonfinite,
                             [(g["lr"], g["weight_decay"]) for g in self.param_groups]))
            dev = self._comm_device(device)
            sig = torch.tensor([n_total, len(params), nbytes, self._layout_crc if params else 0,
                                zlib.crc32(settings.encode()), self.world_size], dtype=torch.int64, device=dev)
            table = self._gather(torch.cat([sig, local.to(dev, torch.int64)]), "the per-step check").tolist()
            if any(row[:6] != table[0][:6] for row in table):
                raise ValueError(self._layout_message(table, positions, n_total, dev))
        bad = [(r, row[6], row[7]) for r, row in enumerate(table) if row[6]]
        if not bad:
            return False
        if self.nonfinite == "skip":
            return True
        names = self._param_names()
        where = "; ".join(f"on rank {r} in {names[first]}" + (f" and {n - 1} more parameter(s)" if n > 1 else "")
                          for r, n, first in bad)
        raise ValueError(f"DeMo: non-finite gradient (NaN or inf) {where}. No worker changed "
                         f"anything in this step. Pass nonfinite=\"skip\" to skip such steps on every worker "
                         f"(replicas stay identical), or nonfinite=\"official\" to let it into the momentum as the "
                         f"official code does (it then stays in δ for good).")

    def _layout_message(self, table: list[list[int]], positions: list[int], n_total: int,
                        dev: torch.device) -> str:
        """The layout mismatch, explained the same way on every worker (a second small all-gather of which
        parameters have a gradient, when every worker has the same number of parameters)."""
        head = "DeMo: the workers disagree on what to exchange in this step"
        if len({row[0] for row in table}) > 1:
            return (f"{head}: they hold different numbers of parameters, {[row[0] for row in table]} per rank. "
                    f"Every worker must build the same model and optimizer.")
        mask = torch.zeros(n_total, dtype=torch.int64, device=dev)
        mask[torch.tensor(positions, dtype=torch.int64, device=dev)] = 1
        has = self._gather(mask, "the gradient layout").tolist()
        names = self._param_names()
        lines = []
        for i in range(n_total):
            col = [has[r][i] for r in range(len(has))]
            if len(set(col)) > 1:
                lines.append(f"{names[i]} has a gradient on rank(s) {[r for r, v in enumerate(col) if v]} but "
                             f"not on rank(s) {[r for r, v in enumerate(col) if not v]}")
        if lines:
            return (f"{head}: " + "; ".join(lines) + ". Every worker must compute a gradient for the same "
                    "parameters in every step (a parameter unused on some workers needs a zero gradient there).")
        return (f"{head}: [parameters, with gradient, payload bytes, layout checksum, settings checksum, world "
                f"size] per rank = {[row[:6] for row in table]}. Every worker must build the same model and use the "
                f"same DeMo settings, learning rates and weight decays.")


class DeMo(_Exchange):
    """Decoupled Momentum optimization: exchange only the top-k DCT coefficients of each worker's momentum.

    Args:
        params: parameters or parameter groups (per-group ``lr`` and ``weight_decay`` are honoured).
        lr: learning rate η (paper: 4e-4 with a cosine schedule for OLMo).
        compression_decay: momentum decay β in [0, 1) (paper / official default 0.999).
        compression_topk: coefficients kept per chunk k >= 1 (default 32; clipped to the chunk with a warning).
        compression_chunk: target chunk size s >= 1 (default 64; the real size is the largest divisor <= s).
        weight_decay: decoupled weight decay (default 0.0, as the official code).
        error_feedback: subtract the transmitted part from δ (default True; False is an ablation).
        transform: ``"dct"`` (default) or ``"identity"`` (ablation: top-k of raw momentum entries).
        tiling: ``"2d"`` (default, s x s tiles) or ``"1d"`` (ablation).
        wire_format: ``"compact"`` (default, smallest index dtype) or ``"official"`` (int64 indices).
        process_group: the group to all-gather over; ``None`` uses the default group when ``torch.distributed``
            is initialised, otherwise runs as a single worker.
        world_size: if given, must equal the group's size (guards against a launcher / group mismatch).
        nonfinite: ``"raise"`` (default), ``"skip"`` or ``"official"`` — what a NaN / inf gradient does (see the
            module docstring, "Faults").
        timeout_s: seconds each collective waits for the other workers before raising a ``RuntimeError``
            (> 0; default ``None``: the process group's timeout).
        basis: ``"official"`` (default: the official code's DCT matrices, built in float32 with an FFT and cast to
            the parameter's dtype, a forward and an inverse one) or ``"exact"`` (closed-form cosines built in
            float64, exact zeros, cast); see :data:`companion.demo.dct.BASES`.

    Raises (in :meth:`step`):
        ValueError: a gradient is not finite (``nonfinite="raise"``), or the workers disagree on the parameters
            with gradients, their shapes / dtypes or the settings — the same message on every worker.
        RuntimeError: a collective failed or timed out (a worker died, hung or left the group).

    Counters after each :meth:`step`: ``bytes_sent`` (this worker's payload), ``bytes_received`` (the payloads
    of the W − 1 other workers; the official ``data_receive`` also counts its own, i.e. W · payload), and the
    running totals ``total_bytes_sent`` / ``total_bytes_received``.
    """

    def __init__(self, params, lr: float, *, compression_decay: float = 0.999, compression_topk: int = 32,
                 compression_chunk: int = 64, weight_decay: float = 0.0, error_feedback: bool = True,
                 transform: str = "dct", tiling: str = "2d", wire_format: str = "compact",
                 process_group=None, world_size: int | None = None, nonfinite: str = "raise",
                 timeout_s: float | None = None, basis: str = "official"):
        params = _check_params(params)
        lr = check_float("lr", lr, low=0.0)
        weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        _check_compression(compression_decay, compression_topk, compression_chunk, error_feedback, transform, tiling,
                           wire_format)
        check_choice("basis", basis, _dct.BASES)
        super().__init__(params, dict(lr=float(lr), weight_decay=float(weight_decay)), process_group=process_group,
                         world_size=world_size, nonfinite=nonfinite, timeout_s=timeout_s)
        self.compression_decay = float(compression_decay)
        self.compression_topk = int(compression_topk)
        self.compression_chunk = int(compression_chunk)
        self.error_feedback = bool(error_feedback)
        self.transform = transform
        self.tiling = tiling
        self.wire_format = wire_format
        self.basis = basis
        self._warned: set = set()
        self._layout_key = None
        self._groups: list[_Group] = []
        self._work: dict = {}

    def _settings_key(self) -> tuple:
        return (self.compression_decay, self.compression_topk, self.compression_chunk, self.error_feedback,
                self.transform, self.tiling, self.wire_format, self.basis)

    # ---------------------------------------------------------------- layout
    def _layout(self, params: list[torch.Tensor], positions: list[int]) -> list[_Group]:
        key = tuple((i, id(p), tuple(p.shape), p.dtype) for i, p in zip(positions, params))
        if key == self._layout_key:
            return self._groups
        groups: dict = {}
        for p in params:
            tile = _dct.tile_shape(p.shape, self.compression_chunk, tiling=self.tiling)
            length = math.prod(tile)
            if self.compression_topk > length and (tile, p.dtype) not in self._warned:
                self._warned.add((tile, p.dtype))
                warnings.warn(f"DeMo: compression_topk = {self.compression_topk} is larger than a chunk of {length} "
                              f"coefficients (tile {tile}, e.g. a parameter of shape {tuple(p.shape)}); clipped "
                              f"to {length}: the whole chunk is sent, plus its indices", stacklevel=4)
            gk = (tile, p.dtype)
            if gk not in groups:
                groups[gk] = _Group(tile, p.dtype, clip_topk(self.compression_topk, length, warn=False),
                                    index_dtype(length, wire_format=self.wire_format), [])
            mshape = _dct.matrix_shape(p.shape)
            groups[gk].members.append((p, mshape, math.prod(mshape) // length))
        self._layout_key, self._groups = key, list(groups.values())
        self._work = {}  # the scratch tensors of the old layout go
        desc = ([(i, tuple(p.shape), str(p.dtype)) for i, p in zip(positions, params)],
                [(g.tile, str(g.dtype), g.k, str(g.index_dtype), g.n_tiles) for g in self._groups])
        self._layout_crc = zlib.crc32(repr(desc).encode())
        return self._groups

    def _payload_bytes(self, layout: list[_Group]) -> int:
        return sum(sum(g.nbytes()) for g in layout)

    def _encode(self, tiles: torch.Tensor, out: torch.Tensor | None = None,
                tmp: torch.Tensor | None = None) -> torch.Tensor:
        return _dct._encode(tiles, self.basis, out=out, tmp=tmp) if self.transform == "dct" else tiles

    def _decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        return _dct._decode(coeffs, self.basis) if self.transform == "dct" else coeffs

    # ---------------------------------------------------------------- step
    @torch.no_grad()
    def step(self, closure=None):
        """One DeMo step for every parameter with a gradient (see the module docstring for the 7 sub-steps)."""
        loss, work = self._start_step(closure)
        if work is None:
            return loss
        params, hyper, groups, device = work
        lrs, by_lr = {}, {}
        for p, (lr, wd) in zip(params, hyper):
            state = self.state[p]
            if not state:
                state["step"] = 0
                state["delta"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["step"] += 1
            if wd != 0.0:
                p.mul_(1.0 - lr * wd)  # 1. decoupled weight decay
            lrs[id(p)] = lr
            by_lr.setdefault(lr, []).append(p)
        # 2. δ ← β δ + η g, as δ.mul_(β).add_(g, alpha=η) per parameter, in one call per lr (the same numbers; in
        # bf16 / fp16 torch's foreach product with a scalar rounds differently, so those go one by one)
        deltas = [self.state[p]["delta"] for p in params]
        full = [d for d in deltas if d.dtype in (torch.float32, torch.float64)]
        if full:
            torch._foreach_mul_(full, self.compression_decay)
        for d in deltas:
            if d.dtype not in (torch.float32, torch.float64):
                d.mul_(self.compression_decay)
        for lr, ps in by_lr.items():
            torch._foreach_add_([self.state[p]["delta"] for p in ps], [p.grad for p in ps], alpha=lr)

        # 3.-4. encode, top-k, error feedback — batched per tile shape
        idx_parts, val_parts = [], []
        # with one worker the aggregate is the worker's own (idx, val): the update's sparse IDCT is the error
        # feedback's, bit for bit (a mean over one pick is val / 1), so it is computed once
        own = {} if self.world_size == 1 and self.error_feedback else None
        for g in groups:
            a, b = self._scratch(g, "a", device), self._scratch(g, "b", device)
            tiles = self._gather_tiles(g, lambda p: self.state[p]["delta"], device, out=a)
            if self.transform == "dct" and len(g.tile) == 2:
                coeffs = self._encode(tiles, out=a, tmp=b)  # the coefficients overwrite the tiles
            else:
                coeffs = self._encode(tiles)
            coeffs = coeffs.reshape(g.n_tiles, -1)  # [T, L]
            mags = torch.abs(coeffs, out=b.view(g.n_tiles, -1))
            idx = torch.topk(mags, g.k, dim=-1, largest=True, sorted=False).indices  # [T, k]
            val = coeffs.gather(-1, idx)
            if self.error_feedback:  # δ ← δ − IDCT(scatter(idx, val))
                sent = self._decode_sparse(idx, val, g, coeffs, out=b, free=a if coeffs.data_ptr() == a.data_ptr()
                                           else None)
                torch._foreach_sub_(*self._pairs(g, sent, lambda p: self.state[p]["delta"]))
                if own is not None and self.transform == "dct" and _sparse_pays(g, g.k):
                    own[id(g)] = sent
            idx_parts.append(idx.to(g.index_dtype).reshape(-1).view(torch.uint8))
            val_parts.append(val.contiguous().reshape(-1).view(torch.uint8))
        buf = torch.cat(idx_parts + val_parts)

        # 5. one all-gather for everything
        if self._distributed:
            gathered = self._gather(buf.to(self._comm_device(device)), "the momentum coefficients").to(device)
        else:
            gathered = buf[None]  # [W, nbytes]
        self._count_bytes(buf.numel())

        # 6.-7. aggregate (mean over the workers that picked a coefficient), IDCT, sign update
        W = gathered.shape[0]
        offset = 0
        idx_all = []
        for g in groups:
            nb = g.nbytes()[0]
            idx_all.append(_take(gathered, offset, nb, g.index_dtype)
                           .reshape(W, g.n_tiles, g.k))
            offset += nb
        for g, gidx in zip(groups, idx_all):
            nb = g.nbytes()[1]
            gval = _take(gathered, offset, nb, g.dtype).reshape(W, g.n_tiles, g.k)
            offset += nb
            gidx = gidx.long().permute(1, 0, 2).reshape(g.n_tiles, W * g.k)  # [T, W·k], rank order
            gval = gval.permute(1, 0, 2).reshape(g.n_tiles, W * g.k)
            if own is not None and id(g) in own:
                q = own[id(g)]
            elif self.transform == "dct" and _sparse_pays(g, W * g.k):
                # mean over the workers that picked a coefficient = Σ val / count(idx), decoded sparsely
                count = self._scratch(g, "a", device).view(g.n_tiles, g.length).zero_()  # the tiles are spent
                count.scatter_add_(-1, gidx, torch.ones_like(gval))
                q = _dct._decode_sparse(gidx, gval / count.gather(-1, gidx), g.tile, self.basis)
            else:
                q = self._decode(_aggregate(gidx, gval, g.length).reshape((g.n_tiles, *g.tile)))
            q.sign_()  # the update direction, ±1 or 0 (q is this step's own temporary)
            targets, parts = self._pairs(g, q, lambda p: p)
            for lr in {lrs[id(p)] for p, _, _ in g.members}:  # p ← p − η sign(Q), one call per lr
                pick = [i for i, (p, _, _) in enumerate(g.members) if lrs[id(p)] == lr]
                torch._foreach_add_([targets[i] for i in pick], [parts[i] for i in pick], alpha=-lr)
        return loss

    def _decode_sparse(self, idx, val, g: _Group, coeffs, out: torch.Tensor, free: torch.Tensor | None):
        """The IDCT of the tiles' picked coefficients, ``[T, *tile]``. ``free``: a scratch tensor of ``[T, *tile]``
        whose contents are spent, or None; when the sparse decode's basis rows fit in it (2-D tiles, ``k·(n1 + n2)
        <= n1·n2``), the rows go there and the result into ``out``, otherwise new tensors are made."""
        if self.transform == "dct" and _sparse_pays(g, idx.shape[1]):
            rows = None
            n_rows = g.n_tiles * idx.shape[1] * sum(g.tile)  # [T, k, n1] and [T, k, n2] (1-D: [T, k, n])
            if free is not None and len(g.tile) == 2 and n_rows <= free.numel():
                flat = free.view(-1)
                split = g.n_tiles * idx.shape[1] * g.tile[0]
                rows = (flat[:split], flat[split:n_rows])
            return _dct._decode_sparse(idx, val, g.tile, self.basis, out=out if rows else None, scratch=rows)
        dense = torch.zeros_like(coeffs).scatter_(-1, idx, val).reshape((g.n_tiles, *g.tile))
        return self._decode(dense)

    def _scratch(self, g: _Group, name: str, device: torch.device) -> torch.Tensor:
        """A ``[T, *tile]`` tensor of the group's dtype kept between steps (rebuilt when the layout changes): the step
        writes its tiles, products and decodes into these instead of allocating new ones; on the CPU a fresh
        tensor this large costs page faults in every step."""
        key = (id(g), name, device)
        buf = self._work.get(key)
        if buf is None:
            buf = self._work[key] = torch.empty((g.n_tiles, *g.tile), dtype=g.dtype, device=device)
        return buf

    @staticmethod
    def _gather_tiles(g: _Group, source, device: torch.device, out: torch.Tensor | None = None) -> torch.Tensor:
        """``[T, *tile]``: the tiles of ``source(p)`` for every member of ``g``, copied once into one tensor (``out``
        if given)."""
        tiles = torch.empty((g.n_tiles, *g.tile), dtype=g.dtype, device=device) if out is None else out
        start = 0
        for p, _, n in g.members:
            x = source(p)
            view = _dct._tile_view(x, g.tile)
            if view is None:
                tiles[start:start + n] = _dct._to_tiles(x, g.tile)
            else:
                tiles[start:start + n].view(view.shape).copy_(view)
            start += n
        return tiles

    @staticmethod
    def _pairs(g: _Group, tiles: torch.Tensor, target) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``(xs, ts)``: for every member ``p`` of ``g``, ``x`` is ``target(p)`` (or a view of it) and ``t`` its tiles
        of ``tiles`` in the same layout, for an in-place elementwise update of each ``x`` (the same numbers as on
        the reassembled tensor)."""
        xs, ts = [], []
        start = 0
        for p, _, n in g.members:
            x = target(p)
            view = _dct._tile_view(x, g.tile)
            if view is None:
                xs.append(x)
                ts.append(_dct._from_tiles(tiles[start:start + n], x.shape))
            else:
                xs.append(view)
                ts.append(tiles[start:start + n].view(view.shape))
            start += n
        return xs, ts


def _take(buf: torch.Tensor, offset: int, nbytes: int, dtype: torch.dtype) -> torch.Tensor:
    """Bytes ``[W, offset:offset+nbytes]`` of the gathered buffer, copied to aligned memory and viewed as ``dtype``."""
    out = torch.empty(buf.shape[0], nbytes, dtype=torch.uint8, device=buf.device)
    out.copy_(buf[:, offset:offset + nbytes])
    return out.view(dtype)


def _sparse_pays(g: _Group, m: int) -> bool:
    """Sparse IDCT costs ``2·L·m`` per tile, dense ``2·L·(n1 + n2)`` (2-D) or ``2·L·n`` (1-D); long 1-D chunks
    (the ``tiling="1d"`` ablation) are decoded densely with an FFT, ``O(n log n)``. bf16 / fp16 are always decoded
    densely, in the official order (scatter into zeros, then the two matmuls): a sum in another order rounds
    differently in so few mantissa bits and changes the update."""
    if g.dtype in (torch.float16, torch.bfloat16):
        return False
    if len(g.tile) == 1 and g.tile[0] > _dct.FFT_MIN and g.dtype in (torch.float32, torch.float64):
        return False
    return m < sum(g.tile)
