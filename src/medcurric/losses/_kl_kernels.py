"""Compiled (numba) CPU kernel behind ``attention_kl_loss(aggregate="kl_per_row")``.

One sweep over the attention ``[B, R, P]`` computes, row by row while the row is in
the L1 cache, the weighted per-sample loss terms ``sum_r w_r (log(s_r + P eps) - c_r)``
with ``s_r = sum_p a_p`` and ``c_r = sum_p t_p log(a_p + eps)`` (the logarithm only
where ``t_p > 0``), and the gradient of that sum with respect to the attention,
``scale_b w_r (1 / (s_r + P eps) - t_p / (a_p + eps))``, written straight into the
gradient tensor. bf16 input is read and written through its 16-bit pattern (exact
upcast; the gradient is rounded to nearest even, as ``Tensor.to(torch.bfloat16)``).
"""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True, nogil=True, fastmath=True)
def _kl_rows(a, ptr, idx, tv, w, scale, eps, peps, out, grad, need_grad):  # type: ignore[no-untyped-def]
    b, rows, p = a.shape
    for i in range(b):
        lo, hi = ptr[i], ptr[i + 1]
        acc = 0.0
        for r in range(rows):
            row = a[i, r]
            wr = w[i, r]
            if wr == 0.0:
                if need_grad:
                    g = grad[i, r]
                    for j in range(p):
                        g[j] = 0.0
                continue
            s = eps - eps
            for j in range(p):
                s += row[j]
            c = eps - eps
            for k in range(lo, hi):
                c += tv[k] * np.log(row[idx[k]] + eps)
            acc += wr * (np.log(s + peps) - c)
            if need_grad:
                g = grad[i, r]
                ws = wr * scale[i]
                gs = ws / (s + peps)
                for j in range(p):
                    g[j] = gs
                for k in range(lo, hi):
                    j = idx[k]
                    g[j] = gs - ws * tv[k] / (row[j] + eps)
        out[i] = acc


@nb.njit(cache=True, nogil=True, fastmath=True)
def _kl_rows_bf16(a, ptr, idx, tv, w, scale, eps, out, grad, need_grad):  # type: ignore[no-untyped-def]
    # ``a`` and ``grad`` are int16 views of bf16 tensors.
    b, rows, p = a.shape
    peps = np.float32(p * eps)
    eps32 = np.float32(eps)
    bits = np.empty(p, dtype=np.uint32)
    row = bits.view(np.float32)
    gbits = np.empty(p, dtype=np.uint32)
    grow = gbits.view(np.float32)
    for i in range(b):
        lo, hi = ptr[i], ptr[i + 1]
        acc = 0.0
        for r in range(rows):
            wr = w[i, r]
            if wr == 0.0:
                if need_grad:
                    g = grad[i, r]
                    for j in range(p):
                        g[j] = 0
                continue
            src = a[i, r]
            for j in range(p):
                bits[j] = (np.uint32(src[j]) & np.uint32(0xFFFF)) << np.uint32(16)
            s = np.float32(0.0)
            for j in range(p):
                s += row[j]
            c = np.float32(0.0)
            for k in range(lo, hi):
                c += tv[k] * np.log(row[idx[k]] + eps32)
            acc += wr * (np.log(s + peps) - c)
            if need_grad:
                ws = wr * scale[i]
                gs = ws / (s + peps)
                for j in range(p):
                    grow[j] = gs
                for k in range(lo, hi):
                    j = idx[k]
                    grow[j] = gs - ws * tv[k] / (row[j] + eps32)
                g = grad[i, r]
                for j in range(p):
                    u = gbits[j]
                    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
                    g[j] = np.int16(np.uint16(u))
        out[i] = acc
