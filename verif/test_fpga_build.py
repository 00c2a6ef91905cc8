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
