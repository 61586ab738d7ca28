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


# ---------------------------------------------------------------------------------------------------------------
# The author's later implementation (github.com/bloc97/torchtitan-lowcomms at commit b530e64,
# ``torchtitan/components/optimizers/demo.py``), ported as written: the ``DeMo`` optimizer, its ``demo`` function
# and ``DCTTopKCollective`` with its default settings (``dct_chunk=64``, ``dct_dim_num=2``, ``indices_bits=7``,
# ``quantize_values_1bit=True``, i.e. the "fast collate" 1-byte path, the only one ported: the other paths need
# einops). One worker runs without a process group (the all-gather is the local payload), or with one
# (``dp_replicate_group``) in a real multi-process run. The tests check :class:`companion.demo.DeMoLowComms`
# against it.


class OfficialLowCommsCollective:
    """``DCTTopKCollective`` (default settings) as written: encode / decode over flat chunks of 64·64 entries,
    top-k per group of 128 coefficients, the 1-byte index+sign packing, the all-gather."""

    def __init__(self, dp_replicate_group=None):
        from collections import deque

        from companion.demo.dct import _dct_fft, _idct_fft

        self.dct_chunk, self.dct_dim_num = 64, 2
        self.dct_pad_multiple = 64 ** 2
        self.dp_replicate_group = dp_replicate_group
        eye = torch.eye(64, dtype=torch.float32)
        self.f, self.b = _dct_fft(eye), _idct_fft(eye)  # torch-dct's _dct / _idct (norm="ortho") of eye(64)
        self.reshape_tuple = (64, 64)
        self.einsum_str = "...ab, an, bo -> ...no"  # _build_einsum_dot_str(2)
        self.indices_bits, self.indices_size = 7, 128
        self.sync_queue = deque()

    def _encode(self, input):
        f = self.f.to(input.dtype).to(input.device)
        x, size = _pad_to_divisible(input.flatten(), self.dct_pad_multiple)
        x = torch.einsum(self.einsum_str, x.reshape(-1, *self.reshape_tuple), f, f)
        return x.flatten(), {"size": size, "shape": input.shape}

    def _decode(self, input, size, shape):
        b = self.b.to(input.dtype).to(input.device)
        x = torch.einsum(self.einsum_str, input.reshape(-1, *self.reshape_tuple), b, b)
        return x.flatten()[:size].reshape(shape)

    def _compress(self, input, compression_ratio):
        model_bytes = input.element_size()
        compress_bytes = _bits_to_bytes(self.indices_bits + 1)
        target_topk = int(compression_ratio * (model_bytes / compress_bytes) * self.indices_size)
        target_topk = max(1, min(target_topk, self.indices_size))
        x, size = _pad_to_divisible(input.flatten(), self.indices_size)
        x = x.reshape(-1, self.indices_size)
        idx = torch.topk(x.abs(), k=target_topk, dim=-1, largest=True, sorted=False).indices
        val = torch.gather(x, dim=-1, index=idx)
        idx = idx.to(dtype=torch.uint8)
        return [idx, val], {"size": size, "input_shape": input.shape, "scatter_shape": x.shape, "dtype": input.dtype,
                            "device": input.device}

    def _decompress(self, input, size, input_shape, scatter_shape, dtype, device):
        idx, val = input
        x = torch.zeros(scatter_shape, dtype=dtype, device=device)
        x.scatter_reduce_(dim=-1, index=idx.to(dtype=torch.int64, device=device),
                          src=val.to(dtype=dtype, device=device), reduce="mean", include_self=False)
        return x.flatten()[:size].reshape(input_shape)

    def _collate(self, input):
        idx, val = input
        cv = val.sign().to(dtype=torch.int8).add_(1).view(dtype=torch.uint8).bitwise_left_shift_(6)
        cv.add_(idx.to(dtype=torch.uint8))
        return cv[..., None], {}

    def _disperse(self, input):
        idx = input[..., 0].bitwise_and(127)
        val = input[..., 0].bitwise_and(128).bitwise_right_shift_(6).view(dtype=torch.int8).sub_(1)
        return [idx, val]

    def _synchronize_send(self, input):
        import torch.distributed as dist

        if self.dp_replicate_group is None:
            self.sync_queue.append(input)
        else:
            tensor_list = [torch.zeros_like(input) for _ in range(self.dp_replicate_group.size())]
            handle = dist.all_gather(tensor_list, input, group=self.dp_replicate_group, async_op=True)
            self.sync_queue.append((tensor_list, handle))

    def _synchronize_receive(self):
        if not self.sync_queue:
            return None
        if self.dp_replicate_group is None:
            return self.sync_queue.popleft()
        tensor_list, handle = self.sync_queue.popleft()
        handle.wait()
        return torch.concatenate(tensor_list, dim=-2)


def _pad_to_divisible(tensor, divisor):
    size = tensor.size(0)
    remainder = size % divisor
    if remainder != 0:
        return torch.nn.functional.pad(tensor, (0, divisor - remainder), mode="constant", value=0), size
    return tensor, None


def _bits_to_bytes(bits):
    return bits // 8 + (1 if bits % 8 > 0 else 0)


class OfficialLowComms(torch.optim.Optimizer):
    """The later ``DeMo`` optimizer as written (one parameter group; defaults of its signature). ``step`` runs its
    ``demo`` function; ``last_payload`` keeps the collated bytes this worker sent in the last step."""

    def __init__(self, params, lr=1e-3, momentum=0.99, compression_ratio=0.01, feedback_strength=1.0,
                 weight_decay=1e-2, nesterov=False, overlapped=False, collective=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, compression_ratio=compression_ratio,
                                      feedback_strength=feedback_strength, weight_decay=weight_decay,
                                      nesterov=nesterov, overlapped=overlapped))
        self.collective = collective or OfficialLowCommsCollective()
        self.custom_state = {}
        self.last_payload = None

    @torch.no_grad()
    def step(self):
        assert len(self.param_groups) <= 1
        for group in self.param_groups:
            params, weights, grads, momenta, compressed = [], [], [], [], []
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    weights.append(p.data)
                    grads.append(p.grad)
                    if group["momentum"] != 0:
                        momenta.append(self.state[p].get("momentum_buffer"))
                    if group["nesterov"] and group["overlapped"]:
                        compressed.append(self.custom_state.setdefault(p, {}).get("compressed_buffer"))
            group.setdefault("last_lr", group["lr"])
            self._demo(weights, grads, momenta, compressed, group)
            group["last_lr"] = group["lr"]
            if group["momentum"] != 0:
                for p, m in zip(params, momenta):
                    self.state[p]["momentum_buffer"] = m
            if group["nesterov"] and group["overlapped"]:
                for p, c in zip(params, compressed):
                    self.custom_state[p]["compressed_buffer"] = c

    def _demo(self, weights, grads, momentum_buffer_list, compressed_buffer_list, group):
        c = self.collective
        lr, momentum, fs = group["lr"], group["momentum"], group["feedback_strength"]
        nesterov, overlapped, last_lr = group["nesterov"], group["overlapped"], group["last_lr"]
        all_encoded_meta, all_compressed, all_compressed_meta, all_size = [], [], [], []
        for i, (weight, grad) in enumerate(zip(weights, grads)):
            encoded, encoded_meta = c._encode(grad)
            if nesterov and momentum_buffer_list[i] is not None:
                weight.add_(c._decode(momentum_buffer_list[i], **encoded_meta).sign_(), alpha=last_lr)
            if overlapped and nesterov and compressed_buffer_list[i] is not None:
                cd, cm = compressed_buffer_list[i]
                momentum_buffer_list[i].add_(c._decompress(cd, **cm), alpha=-fs)
            if group["weight_decay"] != 0.0:
                weight.mul_(1.0 - lr * group["weight_decay"])
            if momentum != 0:
                if momentum_buffer_list[i] is None:
                    momentum_buffer_list[i] = torch.zeros_like(encoded).detach()
                momentum_buffer_list[i].mul_(momentum).add_(encoded, alpha=lr)
                encoded = momentum_buffer_list[i]
            compressed_data, compressed_meta = c._compress(encoded, group["compression_ratio"])
            if overlapped and nesterov:
                compressed_buffer_list[i] = (compressed_data, compressed_meta)
            elif momentum != 0:
                encoded.add_(c._decompress(compressed_data, **compressed_meta), alpha=-fs)
            if nesterov:
                weight.add_(c._decode(encoded, **encoded_meta).sign_(), alpha=-lr)
            for k in range(len(compressed_data)):
                if len(all_compressed) <= k:
                    all_compressed.append([])
                    all_size.append([])
                all_compressed[k].append(compressed_data[k])
                all_size[k].append(compressed_data[k].shape[0])
            all_encoded_meta.append(encoded_meta)
            all_compressed_meta.append(compressed_meta)
        for i in range(len(all_compressed)):
            all_compressed[i] = torch.concatenate(all_compressed[i], dim=0)
        collated, _ = c._collate(all_compressed)
        self.last_payload = collated
        if overlapped:
            synchronized = c._synchronize_receive()
            c._synchronize_send(collated)
        else:
            c._synchronize_send(collated)
            synchronized = c._synchronize_receive()
        if synchronized is None:
            return
        all_synchronized = c._disperse(synchronized)
        for i in range(len(all_synchronized)):
            all_synchronized[i] = torch.split(all_synchronized[i], all_size[i], dim=0)
        for i, (weight, encoded_meta, compressed_meta) in enumerate(zip(weights, all_encoded_meta,
                                                                        all_compressed_meta)):
            data = [all_synchronized[k][i] for k in range(len(all_synchronized))]
            new_grad = c._decode(c._decompress(data, **compressed_meta), **encoded_meta)
            weight.add_(new_grad.sign_(), alpha=-lr)
