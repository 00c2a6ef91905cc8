"""How fast and how closely :class:`golden.sparsity.ThresholdController` reaches its target.

Run ``python -m golden.controller_study [--seeds S] [--steps T] [--first-seed F]``. For each
target and seed it draws a stream of tensors from one fixed distribution (:func:`stream`),
filters each with the controller's current threshold, measures the filtered sparsity directly
on the filter's output, and feeds the pre-filter statistics back (closed loop:
``stats(t, threshold=ctrl.threshold, base=ctrl.base)``; open loop: ``stats(t)``). It prints,
over all seeds, the worst error of the mean sparsity of tensors 5..T (after 4 updates) and the
worst and 99th-percentile single-tensor errors over the same tensors.

The generator (:func:`stream`): ``x = g * exp(h) * c`` with ``g, h`` standard normal per element
and ``c = exp(standard normal)`` per channel, fixed for the stream; unsigned streams take the
ReLU and zero 10% of the channels (dead, fixed for the stream); scaled by ``2**-8`` and
quantized to BFP8 along the channels. Signed streams (no natural sparsity) serve target 0.5.
``verif/test_sparsity.py`` uses the same generator with the tolerances this study supports.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .bfp import BFPTensor, quantize
from .sparsity import ThresholdController, filter, stats

__all__ = ["TARGETS", "stream", "run", "sweep", "main"]

TARGETS = (0.5, 0.8, 0.9, 0.95, 0.99)


def stream(rng: np.random.Generator, signed: bool, n: int = 128, c: int = 128):
    """Endless tensors (n x c BFP8) from one fixed distribution (module docstring)."""
    colscale = np.exp(rng.standard_normal(c))
    dead = rng.random(c) < 0.1
    while True:
        x = rng.standard_normal((n, c)) * np.exp(rng.standard_normal((n, c))) * colscale
        if not signed:
            x = np.where(dead, 0.0, np.maximum(x, 0.0))
        yield quantize(x * 2.0 ** -8)


def run(target: float, tensors, steps: int = 12, closed_loop: bool = True):
    """Filtered sparsity of ``steps`` tensors and the thresholds the controller chose."""
    ctl = ThresholdController(target)
    measured, thresholds = [], []
    for _ in range(steps):
        t: BFPTensor = next(tensors)
        measured.append(float(np.mean(filter(t, ctl.threshold).mantissas == 0)))
        st = stats(t, ctl.threshold, base=ctl.base) if closed_loop else stats(t)
        thresholds.append(ctl.update(st))
    return np.array(measured), thresholds


def sweep(seeds: int = 100, steps: int = 12, first_seed: int = 0) -> list[dict]:
    """One row per target and loop mode: worst mean error, worst and p99 single errors."""
    rows = []
    for target in TARGETS:
        for closed in (True, False):
            errs = np.array([
                run(target, stream(np.random.default_rng(s), target < 0.6), steps, closed)[0]
                - target for s in range(first_seed, first_seed + seeds)])
            tail = errs[:, 4:]
            rows.append({
                "target": target, "closed_loop": closed,
                "mean_err": float(np.abs(tail.mean(axis=1)).max()),
                "max_err": float(np.abs(tail).max()),
                "p99_err": float(np.quantile(np.abs(tail).max(axis=1), 0.99)),
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden.controller_study",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=100, help="streams per target (default 100)")
    ap.add_argument("--steps", type=int, default=12, help="tensors per stream (default 12)")
    ap.add_argument("--first-seed", type=int, default=0, help="first stream seed (default 0)")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be positive, not {args.seeds}")
    if args.steps < 5:
        ap.error(f"--steps must be at least 5, not {args.steps}")
    t0 = time.perf_counter()
    rows = sweep(args.seeds, args.steps, args.first_seed)
    print(f"# controller study: {args.seeds} streams per target (seeds {args.first_seed}.."
          f"{args.first_seed + args.seeds - 1}), {args.steps} tensors of 128 x 128, errors over "
          f"tensors 5..{args.steps}\n")
    print("| target | loop | worst mean error | worst single error | p99 single error |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {'closed' if r['closed_loop'] else 'open'} | "
              f"{r['mean_err']:.4f} | {r['max_err']:.4f} | {r['p99_err']:.4f} |")
    print(f"\n({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
