"""fpga.build's nextpnr watchdog: a run past FPGA_PNR_TIMEOUT is stopped with a clear error,
and a bad limit is refused (no FPGA tools needed: a stand-in command plays nextpnr); the extra
arguments of FPGA_PNR_ARGS."""

import sys
import time

import pytest

from fpga import build


def test_pnr_timeout_stops_a_run_that_does_not_finish(tmp_path, monkeypatch):
    monkeypatch.setenv("FPGA_PNR_TIMEOUT", "1")
    script = tmp_path / "fake_nextpnr.py"
    script.write_text("import sys, time\n"
                      "print('Info:     iter=7 wires=10 overused=4321 overuse=5000', flush=True)\n"
                      "time.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish in 0 min \(router iteration 7: "
                                           r"4321 wires still overused\)"):
        build._run([sys.executable, str(script)], tmp_path, tmp_path / "log.txt",
                   watch_fit=True)
    assert time.monotonic() - t0 < 20


def test_pnr_timeout_lets_a_quick_run_finish(tmp_path, monkeypatch):
    monkeypatch.setenv("FPGA_PNR_TIMEOUT", "30")
    took = build._run([sys.executable, "-c", "print('Info: done')"], tmp_path,
                      tmp_path / "log.txt", watch_fit=True)
    assert took < 30


@pytest.mark.parametrize("raw", ["0", "-5", "soon", "nan"])
def test_pnr_timeout_rejects_bad_values(monkeypatch, raw):
    monkeypatch.setenv("FPGA_PNR_TIMEOUT", raw)
    with pytest.raises(ValueError, match="FPGA_PNR_TIMEOUT"):
        build.pnr_timeout()


def test_pnr_timeout_default(monkeypatch):
    monkeypatch.delenv("FPGA_PNR_TIMEOUT", raising=False)
    assert build.pnr_timeout() == 2700


def test_pnr_extra_args(monkeypatch):
    monkeypatch.setenv("FPGA_PNR_ARGS", "--placer static  --seed 3")
    assert build.pnr_extra_args() == ["--placer", "static", "--seed", "3"]
    monkeypatch.delenv("FPGA_PNR_ARGS")
    assert build.pnr_extra_args() == []
    monkeypatch.setenv("FPGA_PNR_ARGS", "--placer 'static")
    with pytest.raises(ValueError, match="FPGA_PNR_ARGS is not a valid argument line"):
        build.pnr_extra_args()


# ---- the ECP5 floorplan of the engine lanes' multipliers -------------------------------------


def _netlist(lanes, per_lane, others=2):
    cells = {f"system.accel.engine.lane{k}.prod_TRELLIS_FF_Q_{i}_DI_MULT18X18D": {
        "type": "MULT18X18D", "attributes": {}} for k in range(lanes) for i in range(per_lane)}
    cells.update({f"system.accel.update_path.unit.m{i}_MULT18X18D": {
        "type": "MULT18X18D", "attributes": {}} for i in range(others)})
    cells["system.accel.engine.lane0.pacc_TRELLIS_FF_Q"] = {"type": "TRELLIS_FF",
                                                            "attributes": {}}
    return {"modules": {"top": {"cells": cells}}}


def test_ecp5_multiplier_sites():
    # 156 distinct sites (the part's MULT18X18D count), 52 a row, in pairs x, x + 1
    sites = [(y, x, z) for y in build._ECP5_85F_DSP_ROWS for x, z in build._ECP5_85F_DSP_X]
    assert len(set(sites)) == len(sites) == build.TARGETS["ecp5-default"]["capacity"]["dsps"]


@pytest.mark.parametrize("lanes", [1, 2, 4, 6])
def test_floorplan_pins_each_lane_to_one_row_stretch(lanes):
    net = _netlist(lanes, 16)
    lines = build.floorplan_lane_multipliers(net)
    assert len(lines) == lanes
    cells = net["modules"]["top"]["cells"]
    bels = {}
    for name, cell in cells.items():
        if ".engine.lane" in name and cell["type"] == "MULT18X18D":
            lane = int(name.split(".engine.lane")[1].split(".")[0])
            bels.setdefault(lane, []).append(cell["attributes"]["BEL"])
        else:  # the other multipliers and every other cell are left to the placer
            assert "BEL" not in cell["attributes"], name
    every = [b for v in bels.values() for b in v]
    assert len(every) == len(set(every)) == 16 * lanes  # no site twice
    valid = {f"X{x}/Y{y}/{z}" for y in build._ECP5_85F_DSP_ROWS
             for x, z in build._ECP5_85F_DSP_X}
    assert set(every) <= valid
    spans = set()
    for lane, names in bels.items():
        rows = {b.split("/")[1] for b in names}
        xs = [int(b.split("/")[0][1:]) for b in names]
        assert len(rows) == 1, (lane, rows)  # one row
        assert max(xs) - min(xs) < 40, (lane, xs)  # a third of the width, one half
        assert (min(xs) > 66) == (max(xs) > 66)
        spans.add((rows.pop(), min(xs) > 66))
    assert len(spans) == lanes  # every lane its own stretch


def test_floorplan_leaves_what_it_cannot_place():
    for net, why in ((_netlist(0, 0), "no engine lane multipliers"),
                     (_netlist(7, 16), "do not fit the slots"),
                     (_netlist(2, 27), "do not fit the slots")):
        lines = build.floorplan_lane_multipliers(net)
        assert len(lines) == 1 and why in lines[0], lines
        assert all("BEL" not in c["attributes"] for c in net["modules"]["top"]["cells"].values())
