"""The author's later DeMo (github.com/bloc97/torchtitan-lowcomms at commit b530e64,
``torchtitan/components/optimizers/demo.py``: its ``DeMo`` optimizer, ``demo`` function and ``DCTTopKCollective``
with the default settings), batched over parameters.

What changed from the paper's design (:class:`companion.demo.DeMo`), as that code does it, per parameter ``p`` with
gradient ``g`` and learning rate ``η``:

1. every tensor is flattened, zero-padded to a multiple of 64·64 = 4096 entries and cut into 64 x 64 chunks
   *of the flat tensor* (a matrix with 64 columns gets its 64 x 64 tiles, a wider one does not; a 64-entry
   bias becomes one mostly-zero chunk), with the 2-D DCT ``Ĝ = D G Dᵀ`` of each chunk (torch-dct's float32
   ``D``, cast to the parameter's dtype);
2. the momentum lives in the DCT domain: ``m ← β m + η Ĝ`` (``β`` = ``momentum``, default 0.99);
3. top-k per *group of 128 consecutive coefficients* of ``m`` (two rows of a chunk), ``k = int(r · b · 128)`` for a
   compression ratio ``r`` (default 0.01) and ``b`` bytes per parameter value: 5 of 128 in fp32, 2 in bf16;
4. error feedback ``m ← m − f · scatter(idx, val)`` with a feedback strength ``f`` (default 1.0; torchtitan's
   config uses 0.2): only part of the transmitted coefficients may leave the momentum;
5. the wire format: one byte per coefficient, the 7-bit index in its group and the sign of the value in the top
   bit (the value itself is not sent); all parameters are collated into one ``[groups, k]`` uint8 tensor and sent
   with **one** all-gather;
6. aggregate: the mean of the received signs (±1) over the workers that picked each coefficient, inverse DCT,
   ``p ← p − η · sign(·)``;
7. decoupled weight decay ``p ← p (1 − η·wd)`` before the momentum update (default wd = 0.01).

Options of that code, all ported: ``nesterov=True`` adds a local look-ahead, ``p ← p − η sign(IDCT(m))`` after
the step, undone (``+ η_prev sign(IDCT(m))``) at the start of the next; ``overlapped=True`` applies the payload of
the previous step (communication hidden behind the next step's compute; the first step moves no weight), and with
``nesterov`` also delays the error feedback by one step. With ``nesterov`` the replicas differ by design (each
carries its own look-ahead), and after the look-ahead is undone they agree only to float round-off: the code
undoes ``p − η s`` by adding ``η s`` back, and ``(p − a) + a`` is not always ``p`` (tested with 2 gloo workers:
differences below 1e-6 after 4 steps). The author's 1B runs (``configs/llama3_1b_demo.toml``)
use lr 4e-4, ``nesterov`` and ``overlapped``; torchtitan's config defaults are ``feedback_strength`` 0.2 and
``weight_decay`` 0.1; the defaults here are those of the optimizer's own signature.

What differs from that code (same numbers otherwise, tested against the port in
:class:`companion.demo.reference.OfficialLowComms`):

- **the packing of a zero coefficient** (a bug): its fast path packs ``(sign(v) + 1) << 6`` plus the index, so a
  value of exactly 0 (a group of zero momentum, e.g. a parameter whose gradient was 0) puts 1 into bit 6, the top
  bit of the 7-bit index: index ``i < 64`` arrives as ``i + 64`` with sign −1, ``i >= 64`` as ``i − 64`` with
  sign +1. Here the top bit is ``v > 0`` and the index is left alone (what the code's own general 1-bit path
  does: a zero travels as −1 at its own index); ``faithful=True`` packs as the fast path does;
- parameters are batched (one DCT, one top-k, one scatter per dtype for all of them), and the step writes into two
  scratch tensors of the padded parameters' size that it keeps between steps (as :class:`companion.demo.DeMo`);
  several parameter groups (per-group ``lr`` / ``weight_decay``) and mixed dtypes are allowed (the code asserts
  one group, and its collate needs one ``k``, i.e. one dtype); ``p.grad`` is not modified;
- ``overlapped`` runs the all-gather synchronously and keeps its result for the next step (the same numbers;
  the overlap itself is not reproduced);
- the fault checks of :class:`companion.demo.DeMo` (non-finite gradients, layout mismatches, timeouts; module
  :mod:`companion.demo.optimizer`, "Faults") run every step; the code has none.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from companion.lab.checks import check_choice, check_float, check_int, check_tensor, check_type, describe

from .dct import _check_shape, _dct_fft, _idct_fft
from .optimizer import _check_params, _Exchange

#: entries per side of a chunk, and coefficients per top-k group (2**7: the 7-bit index)
CHUNK, GROUP = 64, 128


def lowcomms_topk(compression_ratio: float = 0.01, *, value_bytes: int = 4) -> int:
    """Coefficients kept per group of 128: ``clamp(int(r · value_bytes / 1 · 128), 1, 128)`` (the code's
    ``_compress``; 1 byte per sent coefficient). fp32 (4 bytes), r = 0.01: 5; bf16: 2."""
    r = check_float("compression_ratio", compression_ratio, low=0.0, low_open=True, high=1.0)
    check_choice("value_bytes", check_int("value_bytes", value_bytes, low=1), (1, 2, 4, 8))
    return max(1, min(int(r * (value_bytes / 1) * GROUP), GROUP))


def padded_numel(numel: int) -> int:
    """Entries of a tensor of ``numel`` entries after padding to whole 64 x 64 chunks (the code's
    ``_pad_to_divisible``)."""
    return -(-numel // (CHUNK * CHUNK)) * CHUNK * CHUNK


def lowcomms_wire_bytes(shapes: Iterable[tuple[int, ...]], *, compression_ratio: float = 0.01,
                        value_bytes: int = 4) -> int:
    """Bytes one worker sends per step: ``Σ_p padded(numel_p) / 128 · k`` (one byte per coefficient)."""
    if isinstance(shapes, (str, bytes, torch.Tensor)) or not isinstance(shapes, Iterable):
        raise TypeError(f"shapes must be an iterable of shapes (tuples of ints), got {describe(shapes)}")
    k = lowcomms_topk(compression_ratio, value_bytes=value_bytes)
    total = 0
    for i, s in enumerate(list(shapes)):
        s = _check_shape(f"shapes[{i}]", s)
        if 0 in s:
            raise ValueError(f"shapes[{i}] must not contain 0 (cannot encode an empty tensor), got {s}")
        total += padded_numel(math.prod(s)) // GROUP * k
    return total


def pack(idx: torch.Tensor, val: torch.Tensor, *, faithful: bool = False) -> torch.Tensor:
    """The 1-byte wire format: bits 0-6 the index in its group of 128, bit 7 the sign (1: ``val > 0``).

    Args:
        idx: integer indices in ``[0, 128)``, any shape.
        val: the coefficients, same shape (only their signs travel).
        faithful: pack as the code's fast path, ``((sign(val) + 1) << 6) + idx`` in uint8: the same bytes for
            ``val != 0``; a zero sets bit 6 and corrupts the index (see the module docstring).

    Returns:
        uint8 tensor of ``idx``'s shape.
    """
    check_tensor("idx", idx, dtype="integer")
    check_tensor("val", val, dtype="floating")
    check_type("faithful", faithful, bool)
    if idx.shape != val.shape:
        raise ValueError(f"idx and val must have the same shape, got {tuple(idx.shape)} and {tuple(val.shape)}")
    if idx.numel():
        low, high = (int(v) for v in torch.aminmax(idx))
        if low < 0 or high >= GROUP:
            raise ValueError(f"idx must hold indices in [0, {GROUP}), got indices from {low} to {high}")
    return _pack(idx, val, faithful)


def _pack(idx: torch.Tensor, val: torch.Tensor, faithful: bool) -> torch.Tensor:
    if faithful:
        cv = val.sign().to(dtype=torch.int8).add_(1).view(dtype=torch.uint8).bitwise_left_shift_(6)
        return cv.add_(idx.to(dtype=torch.uint8))
    return idx.to(torch.uint8).bitwise_or_((val > 0).to(torch.uint8).bitwise_left_shift_(7))


def unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`pack` (the code's ``_disperse``): ``(idx, sign)``, int64 indices in ``[0, 128)`` and
    int8 signs ±1."""
    check_tensor("packed", packed)
    if packed.dtype != torch.uint8:
        raise TypeError(f"packed must be a uint8 tensor (the 1-byte wire format), got {describe(packed)}")
    return _unpack(packed)


def _unpack(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    idx = packed.bitwise_and(127).long()
    sign = packed.bitwise_and(128).bitwise_right_shift_(6).view(dtype=torch.int8).sub_(1)
    return idx, sign


def _basis(dtype: torch.dtype, device: torch.device, inverse: bool) -> torch.Tensor:
    """The code's ``f`` (``_dct(eye(64))``) or ``b`` (``_idct(eye(64))``), float32 cast to ``dtype``."""
    key = (dtype, device, inverse)
    if key not in _BASES:
        eye = torch.eye(CHUNK, dtype=torch.float32)
        _BASES[key] = (_idct_fft(eye) if inverse else _dct_fft(eye)).to(dtype).to(device)
    return _BASES[key]


_BASES: dict = {}


def _encode(flat: torch.Tensor, out: torch.Tensor | None = None, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """``[P] -> [P]``: the 2-D DCT of every 64 x 64 chunk (``P`` a multiple of 4096): the code's
    ``einsum("...ab, an, bo -> ...no", x, f, f)`` as two batched matmuls ``fᵀ X f`` (the same bits in fp32, fp64
    and bf16, tests/test_demo_lowcomms.py; 2.7x faster in fp32 on one CPU thread: no permuted copies). ``out``
    (may be ``flat``) and ``tmp`` (``fᵀ X``): preallocated ``[P]`` tensors to write into; the same numbers."""
    return _transform(flat, _basis(flat.dtype, flat.device, False), out, tmp)


def _decode(flat: torch.Tensor, out: torch.Tensor | None = None, tmp: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of :func:`_encode` with the code's ``b``: ``bᵀ X̂ b``."""
    return _transform(flat, _basis(flat.dtype, flat.device, True), out, tmp)


def _transform(flat: torch.Tensor, m: torch.Tensor, out: torch.Tensor | None, tmp: torch.Tensor | None):
    x = flat.reshape(-1, CHUNK, CHUNK)
    if out is None or tmp is None:
        return (m.T @ x @ m).reshape(-1)
    t = torch.matmul(m.T, x, out=tmp.view(x.shape))
    return torch.matmul(t, m, out=out.view(x.shape)).view(-1)


@dataclass
class _Block:
    """The parameters of one dtype, laid out in one flat buffer (each padded to whole chunks)."""

    dtype: torch.dtype
    k: int
    members: list  # [(param, offset, numel)]
    length: int  # padded entries in all

    @property
    def n_groups(self) -> int:
        return self.length // GROUP


class DeMoLowComms(_Exchange):
    """The author's later DeMo (module docstring): momentum in the DCT domain, top-k per 128 coefficients, 1 byte
    (index + sign) per coefficient, one all-gather for all parameters.

    Args:
        params: parameters or parameter groups (per-group ``lr`` and ``weight_decay`` are honoured).
        lr: learning rate η (default 1e-3; the author's 1B runs: 4e-4 with warm-up and cosine decay).
        momentum: β in [0, 1) of ``m ← β m + η Ĝ`` (default 0.99; 0 sends the encoded gradient itself).
        compression_ratio: r in (0, 1]: ``k = int(r · bytes per value · 128)`` per group of 128 (default 0.01:
            k = 5 in fp32, 2 in bf16), so the bytes sent are about ``r`` times those of the raw values.
        feedback_strength: f >= 0, the share of each sent coefficient removed from the momentum (default 1.0).
        weight_decay: decoupled weight decay (default 0.01).
        nesterov: local look-ahead (default False; needs ``momentum > 0``).
        overlapped: apply the previous step's payload (default False).
        faithful: pack a zero coefficient as the code's fast path does (default False; module docstring).
        process_group, world_size, nonfinite, timeout_s: as :class:`companion.demo.DeMo`.

    Raises (in :meth:`step`): as :class:`companion.demo.DeMo`, and ``ValueError`` when ``overlapped`` and the
    parameters with gradients changed since the previous step (its payload cannot be applied).

    State per parameter: ``"momentum_buffer"`` (flat, padded to whole chunks, in the DCT domain), and with
    ``nesterov`` and ``overlapped`` ``"compressed_buffer"`` (the sent coefficients whose feedback is pending).
    ``bytes_sent`` / ``bytes_received`` / totals as :class:`companion.demo.DeMo`.
    """

    def __init__(self, params, lr: float = 1e-3, *, momentum: float = 0.99, compression_ratio: float = 0.01,
                 feedback_strength: float = 1.0, weight_decay: float = 1e-2, nesterov: bool = False,
                 overlapped: bool = False, faithful: bool = False, process_group=None, world_size: int | None = None,
                 nonfinite: str = "raise", timeout_s: float | None = None):
        params = _check_params(params)
        lr = check_float("lr", lr, low=0.0)
        momentum = check_float("momentum", momentum, low=0.0, high=1.0, high_open=True)
        lowcomms_topk(compression_ratio)
        feedback_strength = check_float("feedback_strength", feedback_strength, low=0.0)
        weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        for name, value in (("nesterov", nesterov), ("overlapped", overlapped), ("faithful", faithful)):
            check_type(name, value, bool)
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0, got momentum = 0.0")
        super().__init__(params, dict(lr=float(lr), weight_decay=float(weight_decay)), process_group=process_group,
                         world_size=world_size, nonfinite=nonfinite, timeout_s=timeout_s)
        self.momentum = float(momentum)
        self.compression_ratio = float(compression_ratio)
        self.feedback_strength = float(feedback_strength)
        self.nesterov, self.overlapped, self.faithful = nesterov, overlapped, faithful
        self._layout_key = None
        self._blocks: list[_Block] = []
        self._pending = None  # overlapped: (layout key, gathered payload of the previous step)
        self._work: dict = {}

    def load_state_dict(self, state_dict: dict) -> None:
        """``torch.optim.Optimizer.load_state_dict``; the next step lays the loaded buffers out again as views of
        one buffer per dtype, and a pending ``overlapped`` payload is dropped — as in an optimizer built afresh and
        loaded (the payload is not part of the state)."""
        super().load_state_dict(state_dict)
        self._layout_key = None
        self._pending = None

    def _settings_key(self) -> tuple:
        return (self.momentum, self.compression_ratio, self.feedback_strength, self.nesterov, self.overlapped,
                self.faithful)

    # ---------------------------------------------------------------- layout
    def _layout(self, params: list[torch.Tensor], positions: list[int]) -> list[_Block]:
        key = tuple((i, id(p), tuple(p.shape), p.dtype) for i, p in zip(positions, params))
        if key == self._layout_key:
            return self._blocks
        blocks: dict = {}
        for p in params:
            if p.dtype not in blocks:
                k = lowcomms_topk(self.compression_ratio, value_bytes=p.element_size())
                blocks[p.dtype] = _Block(p.dtype, k, [], 0)
            b = blocks[p.dtype]
            b.members.append((p, b.length, p.numel()))
            b.length += padded_numel(p.numel())
        self._blocks = list(blocks.values())
        self._layout_key = key
        self._work = {}  # the scratch tensors of the old layout go
        desc = ([(i, tuple(p.shape), str(p.dtype)) for i, p in zip(positions, params)],
                [(str(b.dtype), b.k, b.length) for b in self._blocks])
        self._layout_crc = zlib.crc32(repr(desc).encode())
        for name in ("momentum_buffer", "compressed_buffer"):  # the per-parameter state as views of one buffer
            if name == "momentum_buffer" and self.momentum == 0:
                continue
            if name == "compressed_buffer" and not (self.nesterov and self.overlapped):
                continue
            for b in self._blocks:
                flat = torch.zeros(b.length, dtype=b.dtype, device=b.members[0][0].device)
                for p, off, n in b.members:
                    old = self.state[p].get(name)
                    if old is not None:
                        flat[off:off + old.numel()].copy_(old)
                    self.state[p][name] = flat[off:off + padded_numel(n)]
                setattr(b, name, flat)
        return self._blocks

    # ---------------------------------------------------------------- step
    def _payload_bytes(self, layout: list[_Block]) -> int:
        return sum(b.n_groups * b.k for b in layout)

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter with a gradient (module docstring, sub-steps 1-7)."""
        loss, work = self._start_step(closure)
        if work is None:
            return loss
        params, hyper, blocks, device = work
        lrs = {id(p): h for p, h in zip(params, hyper)}
        for group in self.param_groups:
            group.setdefault("last_lr", group["lr"])
        last = {id(p): g["last_lr"] for g in self.param_groups for p in g["params"]}
        beta, fs = self.momentum, self.feedback_strength
        parts = []
        for b in blocks:
            # two [length] scratch tensors kept between steps (a fresh tensor this large costs page faults on the
            # CPU every step): the padded gradients, then their coefficients, then the aggregate; and the products
            grads, work = self._scratch(b, "grads", device), self._scratch(b, "work", device)
            for p, off, n in b.members:
                grads[off:off + n].copy_(p.grad.reshape(-1))
                grads[off + n:off + padded_numel(n)].zero_()  # only the padding needs zeros
            encoded = _encode(grads, out=grads, tmp=work)
            started = {id(p) for p, _, _ in b.members if "momentum_started" in self.state[p]}
            if self.nesterov and started:  # undo the look-ahead of the previous step
                self._each(b, _decode(b.momentum_buffer),
                           lambda p, t: p.add_(t.sign_(), alpha=last[id(p)]) if id(p) in started else None)
            if self.nesterov and self.overlapped and started:  # the delayed error feedback (0 where none)
                b.momentum_buffer.add_(b.compressed_buffer, alpha=-fs)
            for p, off, n in b.members:
                lr, wd = lrs[id(p)]
                if wd != 0.0:
                    p.mul_(1.0 - lr * wd)
            if beta != 0:
                # m ← β m + η Ĝ per parameter; one call for the whole block when every member has the same lr
                # (elementwise, so the same numbers)
                b.momentum_buffer.mul_(beta)
                if len({lrs[id(p)][0] for p, _, _ in b.members}) == 1:
                    b.momentum_buffer.add_(encoded, alpha=lrs[id(b.members[0][0])][0])
                else:
                    for p, off, n in b.members:
                        self.state[p]["momentum_buffer"].add_(encoded[off:off + padded_numel(n)],
                                                              alpha=lrs[id(p)][0])
                for p, _, _ in b.members:
                    self.state[p]["momentum_started"] = True
                encoded = b.momentum_buffer
            rows = encoded.view(-1, GROUP)
            idx = torch.topk(torch.abs(rows, out=work.view(-1, GROUP)), b.k, dim=-1, largest=True,
                             sorted=False).indices
            val = rows.gather(-1, idx)
            if beta != 0:
                if self.nesterov and self.overlapped:
                    b.compressed_buffer.zero_().view(-1, GROUP).scatter_(-1, idx, val)
                elif fs == 1.0:  # m − 1·m is exactly +0 where sent, and m − 1·0 is m elsewhere: same bits
                    rows.scatter_(-1, idx, 0.0)
                else:
                    encoded.add_(torch.zeros_like(rows).scatter_(-1, idx, val).view(-1), alpha=-fs)
            if self.nesterov:  # the new look-ahead
                self._each(b, _decode(encoded), lambda p, t: p.add_(t.sign_(), alpha=-lrs[id(p)][0]))
            parts.append(_pack(idx, val, self.faithful).reshape(-1))
        for group in self.param_groups:
            group["last_lr"] = group["lr"]
        buf = torch.cat(parts)
        if self._distributed:
            gathered = self._gather(buf.to(self._comm_device(device)), "the packed coefficients").to(device)
        else:
            gathered = buf[None]  # [W, nbytes]
        self._count_bytes(buf.numel())
        if self.overlapped:
            pending, self._pending = self._pending, (self._layout_key, gathered)
            if pending is None:
                return loss
            if pending[0] != self._layout_key:
                raise ValueError("DeMoLowComms (overlapped=True): the parameters with gradients changed since the "
                                 "previous step, whose payload is applied now; keep the same parameters with "
                                 "gradients in every step")
            gathered = pending[1]

        W, offset = gathered.shape[0], 0
        for b in blocks:
            n = b.n_groups * b.k
            packed = gathered[:, offset:offset + n].reshape(W, b.n_groups, b.k).permute(1, 0, 2)
            offset += n
            idx, sign = _unpack(packed.reshape(b.n_groups, W * b.k))
            agg, work = self._scratch(b, "grads", device).zero_(), self._scratch(b, "work", device)
            agg.view(b.n_groups, GROUP).scatter_reduce_(-1, idx, sign.to(b.dtype), reduce="mean", include_self=False)
            self._each(b, _decode(agg, out=agg, tmp=work), lambda p, t: p.add_(t.sign_(), alpha=-lrs[id(p)][0]))
        return loss

    def _scratch(self, b: _Block, name: str, device: torch.device) -> torch.Tensor:
        """A ``[length]`` tensor of the block's dtype kept between steps (rebuilt when the layout changes)."""
        key = (id(b), name, device)
        buf = self._work.get(key)
        if buf is None:
            buf = self._work[key] = torch.empty(b.length, dtype=b.dtype, device=device)
        return buf

    @staticmethod
    def _each(b: _Block, flat: torch.Tensor, fn) -> None:
        """``fn(p, t)`` for every member with ``t`` its entries of the flat ``flat`` (padding dropped), p's shape."""
        for p, off, n in b.members:
            fn(p, flat[off:off + n].view(p.shape))
