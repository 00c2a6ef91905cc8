"""fpga.build's nextpnr watchdog: a run past FPGA_PNR_TIMEOUT or with a stalled router
(FPGA_PNR_STALL) is stopped with a clear error, and a bad limit is refused (no FPGA tools
needed: a stand-in command plays nextpnr); the progress lines; the extra arguments of
FPGA_PNR_ARGS."""

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


def test_pnr_extra_args(monkeypatch):
    monkeypatch.setenv("FPGA_PNR_ARGS", "--placer static  --seed 3")
    assert build.pnr_extra_args() == ["--placer", "static", "--seed", "3"]
    monkeypatch.delenv("FPGA_PNR_ARGS")
    assert build.pnr_extra_args() == []
    monkeypatch.setenv("FPGA_PNR_ARGS", "--placer 'static")
    with pytest.raises(ValueError, match="FPGA_PNR_ARGS is not a valid argument line"):
        build.pnr_extra_args()


def _router_log(counts, start=1):
    return "".join(f"Info:     iter={i} wires=900000 overused={c} overuse={c + 7} archfail=NA\n"
                   for i, c in enumerate(counts, start))


def test_pnr_watch_progress_lines():
    w = build.PnRWatch(8)
    text = ("Info: \t        TRELLIS_COMB:   51594/  83640    61%\n"
            "Info:   at iteration #35: temp = 0.000000, timing cost = 4806, wirelen = 552992\n"
            "Info: Max frequency for clock '$glbnet$clk': 21.62 MHz (PASS at 12.50 MHz)\n")
    assert w.update(text) == ["    packed: TRELLIS_COMB 51,594 of 83,640 (61 %)",
                              "    placed: wirelength 552,992, estimated 21.62 MHz"]
    assert w.update(text) == []  # said once
    text += _router_log([80437, 50000, 40000, 30000, 21615, 20000])
    assert w.update(text) == ["    router2 iteration 1: 80,437 wires overused",
                              "    router2 iteration 5: 21,615 wires overused"]
    assert w.stalled is None


def test_pnr_watch_declares_a_stall():
    # least 7,307 at iteration 13, then higher: stalled 8 iterations later, at 21
    counts = [70000 - 5000 * i for i in range(12)] + [7307] + [7400 + 50 * i for i in range(20)]
    w = build.PnRWatch(8)
    for n in range(1, len(counts) + 1):  # the log grows one iteration at a time
        w.update(_router_log(counts[:n]))
        if w.stalled:
            break
    assert n == 21
    assert w.stalled.startswith("router2 stalled: least 7,307 overused wires at iteration 13, "
                                "none fewer in the 8 iterations since")


def test_pnr_watch_stops_a_diverging_router():
    # least 120 at iteration 50, then climbing: 980 at iteration 79, 1,010 at 80
    counts = [50000 // i for i in range(1, 50)] + [120] + [140 + 30 * i for i in range(40)]
    w = build.PnRWatch(8)
    w.update(_router_log(counts[:79]))
    assert w.stalled is None  # still under STALL_FLOOR
    w.update(_router_log(counts[:80]))
    assert w.stalled.startswith("router2 stalled: least 120 overused wires at iteration 50, "
                                "none fewer in the 30 iterations since (1,010 now;")


@pytest.mark.parametrize("counts, patience", [
    ([50000 - 2000 * i for i in range(19)] + [9000] * 30, 0),  # check off
    ([60000, 30000, 900] + [950] * 40, 8),                    # below STALL_FLOOR
    ([60000, 20000, 5000] + [5100] * 16, 8),                  # before STALL_FROM
    ([60000 - 1000 * i for i in range(50)], 8),               # still falling
])
def test_pnr_watch_leaves_a_router_alone(counts, patience):
    w = build.PnRWatch(patience)
    w.update(_router_log(counts))
    assert w.stalled is None


def test_pnr_stall_stops_nextpnr(tmp_path, monkeypatch):
    monkeypatch.setenv("FPGA_PNR_TIMEOUT", "60")
    monkeypatch.setenv("FPGA_PNR_STALL", "3")
    script = tmp_path / "fake_nextpnr.py"
    script.write_text("import time\n"
                      f"print({_router_log([40000 - 1000 * i for i in range(20)] + [9000] * 5)!r},"
                      " flush=True)\n"
                      "time.sleep(60)\n")
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not finish: router2 stalled: least 9,000 "
                                           r"overused wires at iteration 21, none fewer in "
                                           r"the 3 iterations since"):
        build._run([sys.executable, str(script)], tmp_path, tmp_path / "log.txt",
                   watch_fit=True)
    assert time.monotonic() - t0 < 30


BAD = [("FPGA_PNR_TIMEOUT", raw, "pnr_timeout", "FPGA_PNR_TIMEOUT must be a positive number")
       for raw in ["0", "-5", "soon", "nan"]]
BAD += [("FPGA_PNR_STALL", raw, "pnr_stall", "FPGA_PNR_STALL must be a whole number")
        for raw in ["-1", "soon", "2.5", ""]]


@pytest.mark.parametrize("var, raw, read, message", BAD)
def test_pnr_limits_reject_bad_values(monkeypatch, var, raw, read, message):
    monkeypatch.setenv(var, raw)
    with pytest.raises(ValueError, match=message):
        getattr(build, read)()


def test_pnr_limit_defaults(monkeypatch):
    monkeypatch.delenv("FPGA_PNR_TIMEOUT", raising=False)
    monkeypatch.delenv("FPGA_PNR_STALL", raising=False)
    assert build.pnr_timeout() == 2700
    assert build.pnr_stall() == 8
    monkeypatch.setenv("FPGA_PNR_STALL", "0")
    assert build.pnr_stall() == 0
