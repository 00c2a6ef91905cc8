"""Which 16 values form a BFP8 block: a measurement behind the orientation choice.

Run ``python -m golden.orientation [--seed S] [--steps T] [--batch N] [--detail]``. It trains a
small ReLU MLP (64-128-128-10) in float64 on scikit-learn's 8x8 digits for ``T`` SGD steps,
captures one more step's tensors per layer -- activations ``X`` (N x K), weights ``W``
(Co x K), errors ``dY`` (N x Co, the gradient at the pre-activation) and the ReLU mask of the
layer below -- and compares four storage schemes:

``a``  1x16 blocks along the axis the consumer reduces (the project's choice,
       ``docs/numerics.md``): ``X`` along K, ``dY`` along Co, ``W`` twice (along K for FP,
       ``W^T`` along Co for BP); WG re-blocks the stored ``X`` and ``dY`` along N with
       :func:`golden.gemm.reblock` (a second rounding). GEMMs are :func:`golden.gemm.matmul`.
``a2`` as ``a`` but ``X`` and ``dY`` also stored a second time, quantized from float along N,
       for WG (two stored copies, no re-blocking).
``b``  4x4 tiles of the stored 2-D layout, one copy of every tensor, used by all phases.
``c``  1x16 blocks along the other axis: ``X`` and ``dY`` along N, one ``W`` along Co.

For ``b`` and ``c`` (operands not blocked along the reduction), and for the float reference,
the GEMM is float64 of the dequantized operands (exact accumulation: that favours ``b`` and
``c``). Error = ``||C - C_ref||_F / ||C_ref||_F`` with ``C_ref`` the float64 GEMM of the
unquantized operands, averaged over the layers where the phase exists (BP: layers 2 and 3).
HBM bits per value is the exact HBM v1 size (:func:`golden.hbm.size_bits`) of every stored
copy of a tensor over its number of real values (blocks padded with zeros to a multiple of 16
or 4 count in the stream). Two cases: the tensors as produced, and after a magnitude filter
at 90% sparsity applied in float before quantization (``X`` of layers 2-3 and every ``dY``;
the same zeros in every scheme), the operating point of sparsity scaling.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from .bfp import BFPTensor, quantize
from .gemm import matmul, reblock
from .hbm import size_bits as _hbm_size_bits

__all__ = ["SCHEMES", "train_and_capture", "measure", "format_table", "main"]

SCHEMES = ("a", "a2", "b", "c")
SCHEME_NAMES = {
    "a": "1x16 along reduction, W x2, WG reblock (ours)",
    "a2": "1x16 along reduction, X/dY/W x2",
    "b": "4x4 tiles, one copy",
    "c": "1x16 along the other axis, one copy",
}
LAYERS = (64, 128, 128, 10)


def train_and_capture(seed: int = 0, steps: int = 60, batch: int = 256, lr: float = 0.1):
    """Train the MLP in float64; return per-layer tensors of one more step and the accuracy.

    Returns
    -------
    layers : list of dict
        Per layer ``X`` (N x K), ``W`` (Co x K), ``dY`` (N x Co) and ``mask`` (N x K, the ReLU
        derivative of the layer below, None for the first layer).
    accuracy : float
        Training-batch accuracy at the captured step.
    """
    from sklearn.datasets import load_digits  # local: the rest of the module needs no sklearn

    digits = load_digits()
    data = digits.data.astype(np.float64) / 16.0
    labels = digits.target
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal((co, k)) * np.sqrt(2.0 / k)
          for k, co in zip(LAYERS[:-1], LAYERS[1:], strict=True)]
    bs = [np.zeros(co) for co in LAYERS[1:]]

    def step(idx, update):
        x, y = data[idx], labels[idx]
        xs, zs = [x], []
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = xs[-1] @ w.T + b
            zs.append(z)
            if i < len(ws) - 1:
                xs.append(np.maximum(z, 0.0))
        z = zs[-1] - zs[-1].max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        acc = float(np.mean(p.argmax(axis=1) == y))
        dz = p
        dz[np.arange(len(y)), y] -= 1.0
        dz /= len(y)
        out = [None] * len(ws)
        for i in reversed(range(len(ws))):
            mask = (zs[i - 1] > 0) if i else None
            out[i] = {"X": xs[i], "W": ws[i].copy(), "dY": dz, "mask": mask}
            dw, db = dz.T @ xs[i], dz.sum(axis=0)
            if i:
                dz = (dz @ ws[i]) * mask
            if update:
                ws[i] -= lr * dw
                bs[i] -= lr * db
        return out, acc

    for _ in range(steps):
        step(rng.choice(len(data), batch, replace=False), True)
    return step(rng.choice(len(data), batch, replace=False), False)


def _pad(x, rows: int, cols: int) -> np.ndarray:
    return np.pad(x, ((0, -x.shape[0] % rows), (0, -x.shape[1] % cols)))


def _q16(x) -> BFPTensor:
    """1x16 blocks along the last axis (zero-padded)."""
    return quantize(_pad(x, 1, 16))


def _tiles(x):
    """4x4 tiles: (quantized tensor whose blocks are the tiles, dequantized values of ``x``)."""
    r, c = x.shape
    xp = _pad(x, 4, 4)
    rp, cp = xp.shape
    blocks = xp.reshape(rp // 4, 4, cp // 4, 4).transpose(0, 2, 1, 3).reshape(rp // 4, -1)
    t = quantize(blocks)
    back = t.dequantize().reshape(rp // 4, cp // 4, 4, 4).transpose(0, 2, 1, 3).reshape(rp, cp)
    return t, back[:r, :c]


def _deq(t: BFPTensor, rows: int, cols: int) -> np.ndarray:
    return t.dequantize()[:rows, :cols]


def _rel(c, ref) -> float:
    den = np.linalg.norm(ref)
    return float(np.linalg.norm(c - ref) / den) if den else 0.0


def _filter90(x) -> np.ndarray:
    """Zero the values whose magnitude is below the 90th percentile of ``|x|``."""
    tau = np.quantile(np.abs(x), 0.9)
    return np.where(np.abs(x) < tau, 0.0, x)


def measure(layers, filtered: bool) -> dict:
    """Errors and bits per value of every scheme; see the module docstring."""
    err = {s: {"FP": [], "BP": [], "WG": []} for s in SCHEMES}
    bits = {s: {"X": [0, 0], "dY": [0, 0], "W": [0, 0]} for s in SCHEMES}
    shape_stats = {"dead_channels": [], "zero_rows_dY": [], "sparsity_X": [], "sparsity_dY": []}
    for li, layer in enumerate(layers):
        x, w, dy, mask = layer["X"], layer["W"], layer["dY"], layer["mask"]
        if filtered:
            dy = _filter90(dy)
            if li:
                x = _filter90(x)
        n, k = x.shape
        co = w.shape[0]
        if li:
            shape_stats["dead_channels"].append(float(np.mean(~np.any(x != 0, axis=0))))
        shape_stats["zero_rows_dY"].append(float(np.mean(~np.any(dy != 0, axis=1))))
        shape_stats["sparsity_X"].append(float(np.mean(x == 0)))
        shape_stats["sparsity_dY"].append(float(np.mean(dy == 0)))
        ref = {"FP": x @ w.T, "WG": dy.T @ x}
        if mask is not None:
            ref["BP"] = (dy @ w) * mask

        counts = {"X": n * k, "dY": n * co, "W": co * k}

        def record(s, fp, bp, wg, tx, tdy, tw, ref=ref, mask=mask, counts=counts):
            err[s]["FP"].append(_rel(fp, ref["FP"]))
            if mask is not None:
                err[s]["BP"].append(_rel(bp * mask, ref["BP"]))
            err[s]["WG"].append(_rel(wg, ref["WG"]))
            for name, ts in (("X", tx), ("dY", tdy), ("W", tw)):
                bits[s][name][0] += sum(_hbm_size_bits(t.mantissas.reshape(-1)) for t in ts)
                bits[s][name][1] += counts[name]

        # (a) ours: the hardware GEMMs
        xq, wq, wtq, dyq = _q16(x), _q16(w), _q16(w.T), _q16(dy)
        fp_a = matmul(xq, wq).value()[:n, :co]
        bp_a = None if mask is None else matmul(dyq, wtq, out_mask=mask).value()[:n, :k]
        wg_a = matmul(reblock(dyq), reblock(xq)).value()[:co, :k]
        record("a", fp_a, bp_a, wg_a, [xq], [dyq], [wq, wtq])
        # (a2) two stored copies of X and dY: WG from copies quantized along N
        xnq, dynq = _q16(x.T), _q16(dy.T)
        wg_a2 = matmul(dynq, xnq).value()[:co, :k]
        record("a2", fp_a, bp_a, wg_a2, [xq, xnq], [dyq, dynq], [wq, wtq])
        # (b) 4x4 tiles
        xt, xb = _tiles(x)
        wt_, wb = _tiles(w)
        dyt, dyb = _tiles(dy)
        record("b", xb @ wb.T, None if mask is None else dyb @ wb, dyb.T @ xb,
               [xt], [dyt], [wt_])
        # (c) 1x16 along the other axis: X, dY along N; one W along Co
        xc, dyc = _deq(xnq, k, n).T, _deq(dynq, co, n).T
        wcq = wtq
        wc = _deq(wcq, k, co).T
        record("c", xc @ wc.T, None if mask is None else dyc @ wc, dyc.T @ xc,
               [xnq], [dynq], [wcq])
    return {
        "err": {s: {p: float(np.mean(v)) for p, v in ph.items()} for s, ph in err.items()},
        "bits": {s: {t: b / c for t, (b, c) in d.items()} for s, d in bits.items()},
        "shape": {key: float(np.mean(v)) if v else 0.0 for key, v in shape_stats.items()},
    }


def format_table(result: dict, title: str) -> str:
    """A Markdown table of one :func:`measure` result."""
    sh = result["shape"]
    lines = [
        f"{title} (X sparsity {sh['sparsity_X']:.2f}, dY sparsity {sh['sparsity_dY']:.2f}, "
        f"dead hidden channels {sh['dead_channels']:.2f}, all-zero dY rows "
        f"{sh['zero_rows_dY']:.2f})",
        "",
        "| scheme | FP rel. err | BP rel. err | WG rel. err | X bits/value | dY bits/value "
        "| W bits/value (all copies) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in SCHEMES:
        e, b = result["err"][s], result["bits"][s]
        lines.append(
            f"| {s}: {SCHEME_NAMES[s]} | {e['FP']:.2e} | {e['BP']:.2e} | {e['WG']:.2e} | "
            f"{b['X']:.2f} | {b['dY']:.2f} | {b['W']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m golden.orientation", description=__doc__.split(
        "\n")[0])
    ap.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    ap.add_argument("--steps", type=int, default=60, help="float SGD steps before capture")
    ap.add_argument("--batch", type=int, default=256, help="batch size N (multiple of 16)")
    args = ap.parse_args(argv)
    if args.batch <= 0 or args.batch % 16:
        ap.error(f"--batch must be a positive multiple of 16, not {args.batch}")
    if args.steps < 0:
        ap.error(f"--steps must be non-negative, not {args.steps}")
    t0 = time.perf_counter()
    layers, acc = train_and_capture(args.seed, args.steps, args.batch)
    print(f"# orientation study: MLP {'-'.join(map(str, LAYERS))} on digits, seed {args.seed}, "
          f"{args.steps} float SGD steps, batch {args.batch}, batch accuracy {acc:.2f}\n")
    for filtered, title in ((False, "As produced"),
                            (True, "Filtered at 90% (X of layers 2-3, dY)")):
        print(format_table(measure(layers, filtered), title))
        print()
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
