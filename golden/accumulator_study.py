"""Accumulator width and guard bits: what ``ACC_W = 32, GUARD = 8`` buys, measured.

Run ``python -m golden.accumulator_study [--seed S]``. It takes the tensors of
:func:`golden.orientation.train_and_capture` (a digits MLP, filtered at 90% as in the
orientation study), runs the FP, BP and WG GEMMs of every layer in the project's orientation
with the accumulation rule of :mod:`golden.gemm` at other widths ``(ACC_W, GUARD)``
(:func:`matmul_param`, checked equal to :func:`golden.gemm.matmul` at (32, 8)), and compares each
output with the exact product (``math.fsum`` of the exact elementwise products):

- ``max err``: largest ``|value - exact|`` in units of the BFP8 LSB of the output's block,
  ``2**(e - 6)`` (the quantization step every output meets next);
- ``BFP8 differs``: share of outputs whose BFP8 mantissa (``to_bfp``) differs from the BFP8 of
  the exact product (``quantize_exact``) -- the accumulator's visible cost.

Besides the MLP it runs two synthetic stress GEMMs (32 x 32 outputs): ``K = 1024`` with signed
Gaussian values scaled by ``2**u`` per 16-block, ``u`` uniform in [-20, 0] (wide exponent gaps,
cancellation), and ``K = 4096`` with ``|Gaussian|`` values at one scale (256 same-sign
partials: headroom and renormalization).
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from .bfp import BFPTensor, quantize, quantize_exact
from .gemm import EXP_OFFSET, matmul, reblock
from .orientation import _filter90, train_and_capture

__all__ = ["VARIANTS", "matmul_param", "study", "main"]

VARIANTS = ((24, 0), (24, 4), (28, 4), (28, 8), (32, 4), (32, 8), (32, 12), (40, 16))


def matmul_param(a: BFPTensor, b: BFPTensor, acc_w: int, guard: int, out_mask=None):
    """The rule of :mod:`golden.gemm` with another width and guard; returns (S, ea) arrays."""
    if not (8 <= acc_w <= 48 and 0 <= guard <= 16):
        raise ValueError(f"Need 8 <= acc_w <= 48 and 0 <= guard <= 16, not {acc_w}, {guard}")
    lo, hi = -(1 << (acc_w - 1)), (1 << (acc_w - 1)) - 1
    m, n = a.shape[0], b.shape[0]
    acc = np.zeros((m, n), dtype=np.int64)
    ea = np.zeros((m, n), dtype=np.int64)
    ma = a.blocks().astype(np.float64).transpose(1, 0, 2)
    mb = b.blocks().astype(np.float64).transpose(1, 2, 0)
    for kb in range(a.exponents.shape[1]):
        p = np.matmul(ma[kb], mb[kb]).astype(np.int64)
        s = a.exponents[:, kb, None].astype(np.int64) + b.exponents[None, :, kb]
        live = p != 0
        if out_mask is not None:
            live &= out_mask
        q = p << guard  # |q| < 2**34, |acc| < 2**47: int64 holds every step
        up = s > ea
        t = np.where(up, (acc >> np.minimum(s - ea, 63)) + q,
                     acc + (q >> np.minimum(np.maximum(ea - s, 0), 63)))
        new_ea = np.where(up, s, ea)
        over = (t < lo) | (t > hi)
        t = np.where(over, t >> 1, t)
        acc = np.where(live, t, acc)
        ea = np.where(live, new_ea + over, ea)
    return acc, ea


def _value(acc, ea, guard) -> np.ndarray:
    return np.ldexp(acc.astype(np.float64), ea - EXP_OFFSET - guard)


def _exact(a: BFPTensor, b: BFPTensor, out_mask=None) -> np.ndarray:
    x, y = a.dequantize(), b.dequantize()
    out = np.empty((x.shape[0], y.shape[0]))
    for i in range(x.shape[0]):
        prod = x[i][None, :] * y
        for j in range(y.shape[0]):
            out[i, j] = math.fsum(prod[j])
    return out if out_mask is None else np.where(out_mask, out, 0.0)


def _gemms(layers):
    """The (A, B, mask) operand pairs of every phase and layer, in the project's orientation."""
    cases = []
    for li, layer in enumerate(layers):
        x, w, dy, mask = layer["X"], layer["W"], _filter90(layer["dY"]), layer["mask"]
        if li:
            x = _filter90(x)
        pad = (-w.shape[0]) % 16
        xq = quantize(x)
        wq = quantize(np.pad(w, ((0, pad), (0, 0))))
        wtq = quantize(np.pad(w.T, ((0, 0), (0, pad))))
        dyq = quantize(np.pad(dy, ((0, 0), (0, pad))))
        cases.append(("FP", xq, wq, None))
        if mask is not None:
            cases.append(("BP", dyq, wtq, mask))
        cases.append(("WG", reblock(dyq), reblock(xq), None))
    return cases


def _stress(seed: int):
    """Synthetic GEMMs that stress alignment and headroom (module docstring)."""
    rng = np.random.default_rng(seed)
    cases = []
    for k, spread in ((1024, 20), (4096, 0)):
        def operand(rows, k=k, spread=spread):
            scale = np.exp2(rng.integers(-spread, 1, size=(rows, k // 16)).repeat(16, axis=1))
            g = rng.standard_normal((rows, k))
            return quantize(np.abs(g) * scale if spread == 0 else g * scale)
        cases.append((f"K={k}", operand(32), operand(32), None))
    return cases


def _measure(cases, acc_w, guard):
    worst, differ, total = 0.0, 0, 0
    for _, a, b, mk, exact in cases:
        acc, ea = matmul_param(a, b, acc_w, guard, mk)
        val = _value(acc, ea, guard)
        if (acc_w, guard) == (32, 8):  # the model of this study is the golden rule
            ref = matmul(a, b, out_mask=mk)
            if not (np.array_equal(ref.mant, acc) and np.array_equal(ref.exp, ea)):
                raise AssertionError("matmul_param(32, 8) differs from golden.gemm.matmul")
        qe = quantize_exact(exact)
        e = np.repeat(qe.exponents.astype(np.int64) - 127, 16, axis=-1)
        lsb = np.ldexp(1.0, e - 6)
        nz = qe.exponents.repeat(16, axis=-1) != 0
        worst = max(worst, float(np.max(np.where(nz, np.abs(val - exact) / lsb, 0.0))))
        differ += int(np.sum(quantize_exact(val).mantissas != qe.mantissas))
        total += val.size
    return worst, differ / total


def study(seed: int = 0) -> list[dict]:
    """One row per variant: max error in output LSBs and share of differing BFP8 outputs, for
    the MLP's GEMMs and for the synthetic stress GEMMs."""
    layers, _ = train_and_capture(seed)
    mlp = [(ph, a, b, mk, _exact(a, b, mk)) for ph, a, b, mk in _gemms(layers)]
    stress = [(ph, a, b, mk, _exact(a, b, mk)) for ph, a, b, mk in _stress(seed)]
    rows = []
    for acc_w, guard in VARIANTS:
        m_err, m_diff = _measure(mlp, acc_w, guard)
        s_err, s_diff = _measure(stress, acc_w, guard)
        rows.append({"acc_w": acc_w, "guard": guard, "mlp_err": m_err, "mlp_diff": m_diff,
                     "stress_err": s_err, "stress_diff": s_diff})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden.accumulator_study",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    rows = study(args.seed)
    print(f"# accumulator study: digits MLP of golden.orientation, seed {args.seed}, FP/BP/WG of "
          f"every layer, X and dY filtered at 90%\n")
    print("| ACC_W | GUARD | MLP: max error (output LSBs) | MLP: BFP8 differs | stress: max "
          "error | stress: BFP8 differs |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['acc_w']} | {r['guard']} | {r['mlp_err']:.2e} | "
              f"{100 * r['mlp_diff']:.3f}% | {r['stress_err']:.2e} | "
              f"{100 * r['stress_diff']:.3f}% |")
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
