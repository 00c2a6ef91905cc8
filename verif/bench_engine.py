"""Cycle benchmark of the sparse GEMM engine in RTL simulation (``make bench``).

Builds the engine (``default`` configuration unless ``--config``) under Verilator, runs the
sweep of ``verif/cocotb/engine_bench_tb.py`` (every phase at sparsities 0, 0.5, 0.75, 0.9,
0.95, outputs checked against golden.gemm) and writes:

* ``build/bench/engine.json``: one record per run (``phase``, ``sparsity``, ``cycles``,
  ``macs_dense``, ``peak_macs_per_cycle``, ``speedup`` over the dense run of the same phase,
  ``ideal`` = 1/(1-s), ``utilization``, lane balance, ...);
* ``build/bench/engine_speedup.png``: speedup against sparsity beside the ideal;
* ``build/bench/engine.md``: the table, with the targets of the issue checked.

Usage: ``python -m verif.bench_engine [--config default] [--tile 64x64x256] [--seed 1]
[--align-share 1]``. ``--align-share S`` measures the engine with S PEs per align unit (the
FPGA area option of :class:`hdl.engine.Engine`); its Verilator build, raw records and
outputs are kept apart from the S = 1 ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from hdl.config import get_config
from hdl.engine import Engine
from verif.harness import BUILD, run_cocotb

__all__ = ["main", "summarize"]

SPARSITIES = (0.0, 0.5, 0.75, 0.9, 0.95)


def summarize(records: list[dict]) -> tuple[list[dict], list[str]]:
    """Add speedup / ideal / utilization / balance to the records; check the targets."""
    dense = {r["phase"]: r["cycles"] for r in records if r["sparsity"] == 0.0}
    for r in records:
        r["speedup"] = dense[r["phase"]] / r["cycles"]
        r["ideal"] = 1.0 / (1.0 - r["sparsity"])
        # the same, from the nonzeros actually drawn (the random draw is not exactly s)
        r["ideal_drawn"] = r["macs_dense"] / max(1, r["macs_nonzero_a"])
        r["utilization"] = r["macs_dense"] / (r["cycles"] * r["peak_macs_per_cycle"])
        lanes = r["lane_mac_cycles"]
        mean = sum(lanes) / len(lanes)
        r["lane_balance"] = (mean / max(lanes)) if max(lanes) else 1.0
    checks = []
    for r in records:
        if r["sparsity"] == 0.0 and r["phase"] != "wg_a":
            ok = r["utilization"] >= 0.9
            checks.append(f"{'PASS' if ok else 'MISS'} {r['phase']} dense utilization "
                          f"{r['utilization']:.3f} (target >= 0.9)")
        if r["sparsity"] == 0.9 and r["phase"] in ("fp", "bp"):
            ok = r["speedup"] >= 0.7 * r["ideal"]
            checks.append(f"{'PASS' if ok else 'MISS'} {r['phase']} speedup at 0.9: "
                          f"{r['speedup']:.2f}x (target >= {0.7 * r['ideal']:.1f}x)")
    both = [r for r in records if r["phase"] == "wg" and r["sparsity"] == 0.9]
    one = [r for r in records if r["phase"] == "wg_a" and r["sparsity"] == 0.9]
    if both and one:
        ok = both[0]["cycles"] < one[0]["cycles"]
        checks.append(f"{'PASS' if ok else 'MISS'} WG both at 0.9: {both[0]['cycles']} cycles "
                      f"< one operand at 0.9: {one[0]['cycles']} cycles "
                      f"({one[0]['cycles'] / both[0]['cycles']:.2f}x faster)")
    return records, checks


def table(records: list[dict]) -> str:
    lines = ["| phase | sparsity A | sparsity B | cycles | MACs (dense) | utilization | "
             "speedup | ideal 1/(1-s) | ideal (drawn A) | speedup / ideal (drawn) | "
             "lane balance |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(
            f"| {r['phase']} | {r['sparsity']:.2f} | {r['sparsity_b']:.2f} | {r['cycles']} | "
            f"{r['macs_dense']} | {r['utilization']:.3f} | {r['speedup']:.2f} | "
            f"{r['ideal']:.1f} | {r['ideal_drawn']:.1f} | "
            f"{r['speedup'] / r['ideal_drawn']:.2f} | {r['lane_balance']:.3f} |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    ss = sorted({r["sparsity"] for r in records})
    ax.plot(ss, [1 / (1 - s) for s in ss], "k--", label="ideal 1/(1-s)")
    for phase, style in (("fp", "o-"), ("bp", "s-"), ("wg", "^-"), ("wg_a", "v:")):
        rs = sorted((r for r in records if r["phase"] == phase), key=lambda r: r["sparsity"])
        if rs:
            label = {"wg": "wg (both operands at s)", "wg_a": "wg (only A at s)"}.get(phase,
                                                                                   phase)
            ax.plot([r["sparsity"] for r in rs], [r["speedup"] for r in rs], style,
                    label=label)
    ax.set_yscale("log")
    ax.set_xlabel("sparsity s (unstructured random)")
    ax.set_ylabel("speedup over the dense tile")
    cfg = records[0]
    ax.set_title(f"GEMM engine '{cfg['config']}', tile {cfg['m']}x{cfg['n']}x{cfg['k']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--tile", default=None, help="MxNxK (default: the config's largest)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--align-share", type=int, default=1,
                    help="PEs per align unit: a power of two from 1 to R (default 1)")
    ap.add_argument("--out", default=None,
                    help="output directory (default build/bench, build/bench_s<S> with "
                         "--align-share S > 1)")
    ap.add_argument("--summarize-only", action="store_true",
                    help="redo the JSON, table and plot from the last run's raw records")
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    share = args.align_share
    try:
        dut = Engine(cfg, align_share=share)
    except ValueError as exc:
        ap.error(str(exc))
    if args.summarize_only:
        dut._MustUse__silence = True  # not simulated: no "created but never used" warning
    suffix = f"_s{share}" if share > 1 else ""
    tag = cfg.name + suffix
    tile = args.tile or f"{cfg.max_m}x{cfg.max_n}x{cfg.max_k}"
    out = Path(args.out or BUILD / f"bench{suffix}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    raw = out / f"engine_raw_{tag}.json"
    if not args.summarize_only:
        print(f"bench: engine '{cfg.name}' (R={cfg.rows}, L={cfg.lanes}, "
              f"align_share={share}), tile {tile}, "
              f"sparsities {SPARSITIES}; Verilator build, then one simulation (progress "
              "below)", flush=True)
    t0 = time.monotonic()
    if not args.summarize_only:
        run_cocotb(dut, name=f"engine_{tag}",
                   test_module="verif.cocotb.engine_bench_tb",
                   test_id=f"engine_{tag}", seed=args.seed,
                   extra_env={"CFG": json.dumps(dataclasses.asdict(cfg)), "TILE": tile,
                              "SPARSITIES": ",".join(map(str, SPARSITIES)),
                              "BENCH_OUT": raw})
    records, checks = summarize(json.loads(raw.read_text()))
    (out / "engine.json").write_text(json.dumps(records, indent=1))
    plot(records, out / "engine_speedup.png")
    md = (f"Engine '{cfg.name}' (R={cfg.rows}, L={cfg.lanes}, align_share={share}, peak "
          f"{cfg.peak_macs_per_cycle} MACs/cycle), tile {tile}, seed {args.seed}\n\n"
          + table(records) + "\n\n" + "\n".join(f"- {c}" for c in checks) + "\n")
    (out / "engine.md").write_text(md)
    print(md)
    print(f"bench: wrote {out}/engine.json, engine_speedup.png, engine.md "
          f"in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
