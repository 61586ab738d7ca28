"""The official DeMo step (github.com/bloc97/DeMo, ``demo.py``) ported line by line: per parameter, per worker,
with the official einsum layouts, and W workers simulated in one process (the all-gather is a concatenation).

It is slow on purpose (one Python iteration per parameter and worker) and supports only 1-D and 2-D tensors, like
the original. The basis matrices are the official ones (torch-dct's FFT route applied to ``torch.eye(n)`` in
float32, cast to the tensor's dtype: a forward and an inverse matrix), and every step runs in the tensor's dtype, so
bf16 / fp16 round where the official code rounds. The tests check :class:`companion.demo.DeMo` against it; the
book can use it to show that the batched optimizer computes the same update.
"""

import torch

from companion.demo import chunk_size
from companion.demo.dct import _official
from companion.lab.checks import check_float, check_int, check_same_dtype, check_tensor, describe


def _check_replicas(params, grads, deltas) -> None:
    """``params``, ``grads``, ``deltas``: ``W >= 1`` lists of the same ``n >= 1`` CPU tensors (1-D or 2-D, floating,
    one shape per parameter ``j``; every ``deltas[w][j]`` of ``params[0][j]``'s dtype); ``params`` and ``deltas``
    must not require grad (they change in place)."""
    lists = {"params": params, "grads": grads, "deltas": deltas}
    for name, value in lists.items():
        if not isinstance(value, (list, tuple)) or not all(isinstance(row, (list, tuple)) for row in value):
            raise TypeError(f"{name} must be a list (one per worker) of lists of tensors, got {describe(value)}")
        if not value or not all(value):
            raise ValueError(f"{name} must hold at least one worker and one tensor per worker, got {value!r}")
    W, n = len(params), len(params[0])
    for name, value in lists.items():
        if len(value) != W or any(len(row) != n for row in value):
            raise ValueError(f"{name} must hold {W} worker(s) x {n} tensor(s) like params, got "
                             f"{[len(row) for row in value]} tensors per worker")
    for j in range(n):
        shape = None
        for w in range(W):
            for name, value in lists.items():
                t = check_tensor(f"{name}[{w}][{j}]", value[w][j], ndim=(1, 2), dtype="floating")
                if t.device.type != "cpu":
                    raise ValueError(f"{name}[{w}][{j}] must be on the CPU (the reference runs there), got "
                                     f"{describe(t)}")
                if shape is None:
                    shape = t.shape
                elif t.shape != shape:
                    raise ValueError(f"{name}[{w}][{j}] must have the shape of params[0][{j}], {tuple(shape)}, got "
                                     f"{describe(t)}")
                if name != "grads" and t.requires_grad and t.is_leaf and torch.is_grad_enabled():
                    raise ValueError(f"{name}[{w}][{j}] requires grad and changes in place: call official_step "
                                     f"under torch.no_grad() or pass detached tensors")
            # the aggregate is scattered into a tensor of params[0][j]'s dtype (grads may differ: they are cast)
            check_same_dtype(**{f"params[0][{j}]": params[0][j], f"deltas[{w}][{j}]": deltas[w][j]})


def _f(n, dtype):
    """The official ``f_dict[n]``: row i is the DCT of the i-th unit vector."""
    return _official(n, False).T.to(dtype)


def _b(n, dtype):
    """The official ``b_dict[n]``: row i is the inverse DCT of the i-th unit vector."""
    return _official(n, True).to(dtype)


def _encode(x, s):
    if x.dim() > 1:
        n1, n2 = chunk_size(x.shape[0], s), chunk_size(x.shape[1], s)
        f1, f2 = _f(n1, x.dtype), _f(n2, x.dtype)
        x = x.reshape(x.shape[0] // n1, n1, x.shape[1] // n2, n2)
        return torch.einsum("...ijkl, jb, ld -> ...ikbd", x, f1, f2)
    n1 = chunk_size(x.shape[0], s)
    return torch.einsum("...ij, jb -> ...ib", x.reshape(-1, n1), _f(n1, x.dtype))


def _decode(x):
    if x.dim() > 2:
        b1, b2 = _b(x.shape[2], x.dtype), _b(x.shape[3], x.dtype)
        x = torch.einsum("...ijkl, kb, ld -> ...ibjd", x, b1, b2)
        return x.reshape(x.shape[0] * x.shape[1], x.shape[2] * x.shape[3])
    return torch.einsum("...ij, jb -> ...ib", x, _b(x.shape[1], x.dtype)).reshape(-1)


def _compress(x, topk):
    xshape = x.shape
    if x.dim() > 2:
        x = x.reshape(xshape[0], xshape[1], -1)
    topk = max(1, min(topk, x.shape[-1]))
    idx = torch.topk(x.abs(), k=topk, dim=-1, largest=True, sorted=False).indices
    return idx, torch.gather(x, -1, idx), xshape


def _decompress(idx, val, xshape, dtype):
    x = torch.zeros(xshape, dtype=dtype)
    if len(xshape) > 2:
        x = x.reshape(xshape[0], xshape[1], -1)
    x.scatter_reduce_(-1, idx, val, reduce="mean", include_self=False)
    return x.reshape(xshape)


def official_step(params: list[list[torch.Tensor]], grads: list[list[torch.Tensor]],
                  deltas: list[list[torch.Tensor]], *, lr: float, beta: float = 0.999, topk: int = 32,
                  chunk: int = 64, wd: float = 0.0) -> None:
    """One DeMo step of W simulated workers.

    Args:
        params: ``params[w][j]``, parameter j of worker w (updated in place; the replicas start equal and stay so).
        grads: ``grads[w][j]``, worker w's gradient of parameter j.
        deltas: ``deltas[w][j]``, worker w's momentum δ (updated in place; start from zeros).
        lr, beta, topk, chunk, wd: η, ``compression_decay``, ``compression_topk``, ``compression_chunk``,
            ``weight_decay``.

    Every argument is checked before anything changes (1-D and 2-D CPU tensors only, like the original).
    """
    lr = check_float("lr", lr, low=0.0)
    beta = check_float("beta", beta, low=0.0, high=1.0, high_open=True)
    topk = check_int("topk", topk, low=1)
    chunk = check_int("chunk", chunk, low=1)
    wd = check_float("wd", wd, low=0.0)
    _check_replicas(params, grads, deltas)
    W, n = len(params), len(params[0])
    for j in range(n):
        idxs, vals = [], []
        for w in range(W):
            p, d = params[w][j], deltas[w][j]
            if wd:
                p.mul_(1.0 - lr * wd)
            d.mul_(beta).add_(grads[w][j], alpha=lr)
            idx, val, xshape = _compress(_encode(d, chunk), topk)
            d.sub_(_decode(_decompress(idx, val, xshape, d.dtype)).reshape(d.shape))
            idxs.append(idx)
            vals.append(val)
        idx, val = torch.cat(idxs, -1), torch.cat(vals, -1)
        q = _decode(_decompress(idx, val, xshape, params[0][j].dtype)).reshape(params[0][j].shape)
        for w in range(W):
            params[w][j].add_(q.sign(), alpha=-lr)
