"""``make sim``: training steps of the digits MLP on the RTL accelerator, checked against the
golden model, with a summary table and ``build/sim/summary.json``.

    python -m verif.sim [--steps N] [--config default] [--seed S]

Builds :class:`hdl.accelerator.Accelerator` under Verilator (``build/sim/sim-<config>``, reused
when the Verilog is unchanged) and runs ``verif/cocotb/sim_tb.py``: per step the FP job, the
loss gradient on the host, the BP job (BP, WG and the fixed-point weight update of
``golden.update`` on the chip: masters, velocities, ``W`` and ``W^T`` never leave DRAM), and
the host's threshold controllers (target sparsity 0.9). After every job the RTL's DRAM image
must equal the golden executor's byte for byte (every tensor) and the counters must agree.

``summary.json``: ``golden_match`` (true only if every job matched), ``tensors_checked``
(tensors written by the jobs and compared), ``cycles`` per phase, ``dram_bytes`` (read,
written, and the same jobs with dense FP16 tensors), ``macs`` per phase, ``sparsity`` of the
interim tensors, ``sim_cycles_per_second`` (simulated clock cycles per wall second of the run,
build excluded), ``build_seconds``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hdl.config import CONFIGS, get_config
from verif.harness import BUILD

__all__ = ["main", "summarize"]


def summarize(raw: dict) -> dict:
    """The summary of the sim bench's raw results."""
    phases = {"fp": 0, "bp": 0, "wg": 0}
    dense = dict.fromkeys(phases, 0)
    done = dict.fromkeys(phases, 0)
    rd = wr = fp16 = 0
    for st in raw["steps"]:
        for job in st["jobs"].values():
            for p in phases:
                phases[p] += job[f"cycles_{p}"]
            rd += job["bytes_read"]
            wr += job["bytes_written"]
            fp16 += job["fp16_bytes"]
        for key, (dn, nz) in st["macs"].items():
            p = key.split(":")[1]
            dense[p] += dn
            done[p] += nz
    last = raw["steps"][-1] if raw["steps"] else {}
    total = sum(phases.values())
    return {
        "config": raw["config"],
        "steps": len(raw["steps"]),
        "golden_match": bool(raw["golden_match"]) and bool(raw["steps"]),
        "mismatch": raw["mismatch"],
        "tensors_checked": raw["tensors_checked"],
        "cycles": {**phases, "total": total},
        "macs": {p: {"dense": dense[p], "done": done[p], "skipped": dense[p] - done[p]}
                 for p in phases},
        "dram_bytes": {"read": rd, "written": wr, "total": rd + wr, "dense_fp16": fp16},
        "sparsity": last.get("sparsity", {}),
        "loss": [s["loss"] for s in raw["steps"]],
        "sim_cycles": raw["sim_cycles"],
        "wall_seconds": raw["wall_seconds"],
        "sim_cycles_per_second": raw["sim_cycles"] / max(raw["wall_seconds"], 1e-9),
    }


def table(s: dict) -> str:
    lines = [f"digits MLP 64-128-64-10, batch 32, config {s['config']}, {s['steps']} step(s) "
             f"(FP, BP, WG and weight update on the RTL)",
             "", "| phase | cycles | MACs dense | MACs done | skipped |",
             "|---|---:|---:|---:|---:|"]
    for p in ("fp", "bp", "wg"):
        mc = s["macs"][p]
        skip = mc["skipped"] / mc["dense"] if mc["dense"] else 0.0
        lines.append(f"| {p.upper()} | {s['cycles'][p]:,} | {mc['dense']:,} | {mc['done']:,} "
                     f"| {skip:.1%} |")
    lines += ["", "| interim tensor | natural sparsity | stored (filtered) | threshold te/tm |",
              "|---|---:|---:|---|"]
    for key, v in sorted(s["sparsity"].items()):
        stage, kind = key.split(":")
        lines.append(f"| {kind} {stage} | {v['natural']:.3f} | {v['filtered']:.3f} | "
                     f"{v['te']}/{v['tm']} |")
    d = s["dram_bytes"]
    lines += ["", f"DRAM: {d['read']:,} B read + {d['written']:,} B written = {d['total']:,} B; "
              f"dense FP16 tensors: {d['dense_fp16']:,} B ({d['total'] / d['dense_fp16']:.2f}x)",
              f"simulation: {s['sim_cycles']:,} cycles in {s['wall_seconds']:.1f} s = "
              f"{s['sim_cycles_per_second']:,.0f} cycles/s (Verilator build "
              f"{s.get('build_seconds', 0):.0f} s)",
              f"tensors checked against the golden model: {s['tensors_checked']}, "
              f"golden_match: {s['golden_match']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m verif.sim", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1, help="training steps (default 1)")
    p.add_argument("--config", default="default", choices=sorted(CONFIGS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=BUILD / "sim" / "summary.json")
    p.add_argument("--cxx-opt", default="-O0",
                   help="C++ optimization of the Verilated model (default -O0: the build "
                        "dominates a few steps; -Os for long runs)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps must be at least 1, not {a.steps}")
    from hdl.accelerator import Accelerator
    from verif.harness import run_cocotb

    a.out.parent.mkdir(parents=True, exist_ok=True)
    raw_path = a.out.with_name("sim_raw.json")
    raw_path.unlink(missing_ok=True)
    print(f"[sim] building the {a.config} accelerator under Verilator and running "
          f"{a.steps} step(s)...", flush=True)
    t0 = time.perf_counter()
    try:
        run_cocotb(Accelerator(get_config(a.config)), name="accelerator",
                   test_module="verif.cocotb.sim_tb", test_id=f"sim-{a.config}", seed=a.seed,
                   extra_env={"CONFIG": a.config, "STEPS": a.steps, "OUT": raw_path.resolve()},
                   cxx_opt=a.cxx_opt)
        failed = None
    except Exception as exc:  # the bench failed: still summarize what it wrote
        failed = exc
    if not raw_path.exists():
        print(f"[sim] the bench wrote no results: {failed}", file=sys.stderr)
        return 1
    s = summarize(json.loads(raw_path.read_text()))
    s["build_seconds"] = max(0.0, time.perf_counter() - t0 - s["wall_seconds"])
    a.out.write_text(json.dumps(s, indent=1) + "\n")
    print(table(s))
    print(f"[sim] wrote {a.out}")
    if not s["golden_match"] or failed is not None:
        print(f"[sim] FAILED: {s['mismatch'] or failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
