"""Drain throughput of the output path (Amaranth simulator), every drain checked against golden.

``python -m verif.bench_output_path [--seed N]`` drains a full ``default`` tile (64 x 64
accumulators: 256 BFP8 blocks) with i.i.d. zeros at several sparsities, on a 32- and a 64-bit
bus, without back-pressure, in three modes: the unfiltered copy alone, both copies (the
filtered one with a threshold at the median magnitude of the block values), and RAW. It reports
cycles from the command's acceptance to ``done``, blocks per cycle, and the bound the output
bus sets (each encoder sends one beat per cycle: ``blocks / max(blocks, beats)``, plus the
fixed latency of 13 cycles measured by ``verif/test_output_path.py``). Writes
``build/bench/output_path.md``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from golden.gemm import Accumulator
from golden.sparsity import Threshold
from hdl.config import get_config
from verif.output_path_model import Bench, Drain, StatsModel, check_drain, padded, task_beats

__all__ = ["sparse_tile", "main"]

ROOT = Path(__file__).resolve().parent.parent
SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.95, 1.0)
FIXED = 13  #: cycles from acceptance to done beyond one block per cycle (measured)


def sparse_tile(rng, m: int, n: int, sparsity: float) -> Accumulator:
    """Accumulators of about one magnitude (no flushes), a fraction ``sparsity`` in reset state."""
    mant = rng.integers(1 << 16, 1 << 24, size=(m, n)) * np.where(rng.random((m, n)) < .5, -1, 1)
    exp = 300 + rng.integers(-2, 3, size=(m, n))
    zero = rng.random((m, n)) < sparsity
    return Accumulator(np.where(zero, 0, mant), np.where(zero, 0, exp))


def _median_threshold(acc: Accumulator) -> Threshold:
    v = np.abs(padded(acc, False).to_bfp().dequantize())
    nz = v[v != 0]
    return Threshold.from_float(float(np.median(nz))) if nz.size else Threshold(0, 0)


def measure(seed: int = 1):
    cfg = get_config("default")
    rows = []
    for bus in (32, 64):
        rng = np.random.default_rng([seed, bus])
        bench = Bench(cfg, bus, rng)
        plan = []
        for s in SPARSITIES:
            acc = sparse_tile(rng, cfg.max_m, cfg.max_n, s)
            thr = _median_threshold(acc)
            plan.append((s, acc, [
                ("fwd", Drain(m=64, n=64, fwd=True, clear_stats=True)),
                ("fwd+filt", Drain(m=64, n=64, fwd=True, filt=True, te=thr.te, tm=thr.tm,
                                   clear_stats=True)),
            ]))
        plan[2][2].append(("raw", Drain(m=64, n=64, raw=True)))
        results = []
        model = StatsModel()

        async def body(ctx, bench=bench, plan=plan, results=results, rng=rng, model=model):
            for s, acc, drains in plan:
                await bench.write_beats(ctx, task_beats(cfg, acc, rng))
                for mode, d in drains:
                    got = await bench.command(ctx, d)
                    check_drain(len(results), d, acc, got, model)
                    results.append((s, mode, got))

        bench.run(body)
        nb = bus // 8
        for s, mode, got in results:
            blocks = 64 * 4
            beats = max(-(-len(got[k]) // nb) if got[k] is not None else 0
                        for k in ("fwd", "filt"))
            units = 64 * 64 if mode == "raw" else blocks
            bound = units / (max(units, beats) + FIXED)
            fz = None
            if got["stats"]["values"]:
                fz = got["stats"]["filtered_zeros"] / got["stats"]["values"]
            rows.append({"bus": bus, "mode": mode, "sparsity": s,
                         "bfp_sparsity": None if mode == "raw" else
                         got["stats"]["zeros"] / got["stats"]["values"],
                         "filt_sparsity": fz if mode == "fwd+filt" else None,
                         "bytes_fwd": len(got["fwd"]) if got["fwd"] is not None else 0,
                         "bytes_filt": len(got["filt"]) if got["filt"] is not None else 0,
                         "cycles": got["done_at"], "per_cycle": units / got["done_at"],
                         "bound": bound})
    return rows


def table(rows) -> str:
    lines = ["| bus | mode | zeros (BFP8) | zeros (filtered) | bytes fwd | bytes filt | cycles "
             "| blocks/cycle | bus bound |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        unit = "records" if r["mode"] == "raw" else "blocks"
        bs = "-" if r["bfp_sparsity"] is None else f"{r['bfp_sparsity']:.3f}"
        fs = "-" if r["filt_sparsity"] is None else f"{r['filt_sparsity']:.3f}"
        lines.append(f"| {r['bus']} | {r['mode']} | {bs} | {fs} | {r['bytes_fwd']} | "
                     f"{r['bytes_filt']} | {r['cycles']} | {r['per_cycle']:.3f} {unit} | "
                     f"{r['bound']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    text = table(measure(a.seed))
    out = ROOT / "build" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "output_path.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
