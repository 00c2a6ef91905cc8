"""Golden-model demo: one layer's FP, BP and WG in BFP8 with sparsity scaling, and what it costs.

``python -m golden`` (what ``make sim`` runs until the accelerator top exists) takes a batch of
scikit-learn's 8x8 digits through a 64-64 linear layer with ReLU, exactly as the chip would:

1. quantize the input and the weights to BFP8 (``golden.bfp``);
2. FP: ``Y = X W^T`` with the hardware's accumulator (``golden.gemm``), ReLU, BFP8 converter;
3. filter the activations with a threshold the controller steers toward ``--target``
   (``golden.sparsity``), over a few batches so the controller settles;
4. BP and WG on a random error tensor filtered the same way;
5. encode the sparse tensors in HBM v1 (``golden.hbm``) and compare with dense BFP8 and FP16.

It prints a table per tensor and a summary of the MACs the sparse engine can skip.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import gemm, hbm, sparsity
from .bfp import quantize


def _digits(n: int, rng) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32) / 16.0
    return x[rng.permutation(len(x))[:n]]


def _settle(make_tensor, target: float, steps: int):
    """Run the controller over ``steps`` tensors; return the last (unfiltered, filtered, stats)."""
    ctrl = sparsity.ThresholdController(target)
    for _ in range(steps):
        t = make_tensor()
        thr = ctrl.threshold
        out = sparsity.filter(t, thr)
        st = sparsity.stats(t, threshold=thr, base=ctrl.base)
        ctrl.update(st)
    return t, out, st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden", description=__doc__.splitlines()[0])
    ap.add_argument("--target", type=float, default=0.9, help="target sparsity (default 0.9)")
    ap.add_argument("--batch", type=int, default=64, help="samples per batch, a multiple of 16")
    ap.add_argument("--steps", type=int, default=8, help="batches for the controller to settle")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not 0 <= args.target < 1:
        ap.error(f"--target must be in [0, 1), not {args.target}")
    if args.batch <= 0 or args.batch % 16:
        ap.error(f"--batch must be a positive multiple of 16, not {args.batch}")
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, not {args.steps}")

    rng = np.random.default_rng(args.seed)
    w_f = rng.standard_normal((64, 64)).astype(np.float32) * np.float32(np.sqrt(2 / 64))
    w = quantize(w_f)          # Co x K, blocked along K (FP)
    wt = quantize(w_f.T)       # K x Co, blocked along Co (BP)

    def activations():
        x = quantize(_digits(args.batch, rng))
        return gemm.fp(x, w).relu().to_bfp()

    def errors():
        e = rng.standard_normal((args.batch, 64)) * np.exp(rng.standard_normal((args.batch, 1)))
        return quantize(e * 1e-3)

    print(f"golden demo: digits batch {args.batch}, layer 64 -> 64, target sparsity "
          f"{args.target}, seed {args.seed}")
    y, y_f, y_st = _settle(activations, args.target, args.steps)
    e, e_f, e_st = _settle(errors, args.target, args.steps)

    # The three GEMMs of the next layer (64 -> 64, same weights) on the filtered tensors,
    # against float64 of the same BFP8 operands: what the accumulator costs in accuracy.
    errs = {}
    for phase, out, a, b in (
            ("FP", gemm.fp(y_f, w), y_f, w),
            ("BP", gemm.bp(e_f, wt), e_f, wt),
            ("WG", gemm.wg(e_f, y_f), gemm.reblock(e_f), gemm.reblock(y_f))):
        ref = a.dequantize() @ b.dequantize().T
        errs[phase] = np.abs(out.value() - ref).max() / max(np.abs(ref).max(), 1e-300)

    rows = []
    for name, raw, filt, st in (("activations Y", y, y_f, y_st), ("errors dY", e, e_f, e_st)):
        n = raw.mantissas.size
        bits = hbm.size_bits(filt.mantissas.reshape(-1))
        thr = st.threshold
        rows.append((name, n, st.sparsity, st.filtered_sparsity,
                     f"{thr.value:.3g} (tm={thr.tm}, te={thr.te})",
                     bits / n, 8.5, 16.0))
    print()
    print(f"{'tensor':<15}{'values':>8}{'natural':>10}{'filtered':>10}  {'threshold (tau)':<26}"
          f"{'HBM b/v':>9}{'BFP8 b/v':>9}{'FP16 b/v':>9}")
    for r in rows:
        print(f"{r[0]:<15}{r[1]:>8}{r[2]:>10.3f}{r[3]:>10.3f}  {r[4]:<26}{r[5]:>9.2f}"
              f"{r[6]:>9.1f}{r[7]:>9.1f}")

    # Work the sparse engine cannot skip, next layer (same shapes): FP, BP, WG.
    dense = args.batch * 64 * 64
    a_nz = int(np.count_nonzero(y_f.mantissas))
    e_nz = int(np.count_nonzero(e_f.mantissas))
    both = int(np.sum((y_f.mantissas != 0).astype(np.int64).T @ (e_f.mantissas != 0)))
    print()
    print(f"{'phase':<6}{'dense MACs':>12}{'nonzero MACs':>14}{'skipped':>9}")
    for phase, nz in (("FP", a_nz * 64), ("BP", e_nz * 64), ("WG", both)):
        print(f"{phase:<6}{dense:>12}{nz:>14}{1 - nz / dense:>9.1%}")
    print()
    print("GEMM max error against float64 of the same BFP8 operands, relative to max |C|: "
          + ", ".join(f"{p} {v:.1e}" for p, v in errs.items()))
    print("(the RTL top replaces this demo in make sim; see README, Status)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
