# amaranth: UnusedElaboratable=no
"""Board tops (fpga.boards): parameters, elaboration on the board platforms, and the board
logic under Verilator driven through its UART by the host runtime.

``verif/cocotb/board_tb.py`` runs an error job and one MLP training step through the UART
bridge with :class:`runtime.serial_transport.SerialTransport` + :class:`runtime.driver.
Accelerator` (exactly the host code a board user runs) and compares everything the host reads
with :func:`golden.jobs.execute` (through :class:`runtime.transport.GoldenTransport`).
"""

import pytest

from fpga.boards import BOARDS, BoardSystem, BoardTop, divisor_for
from hdl.config import get_config
from verif.harness import run_cocotb


def test_parameters_validated():
    with pytest.raises(TypeError, match=r"^cfg must be an EngineConfig, not 'tiny'$"):
        BoardSystem("tiny", divisor=8, mem_bytes=4096)
    with pytest.raises(ValueError, match=r"Unknown board 'de10'"):
        BoardTop("de10")
    with pytest.raises(ValueError, match=r"Memory size"):
        BoardSystem(get_config("tiny"), divisor=8, mem_bytes=100)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_uart_divisor_within_tolerance(board):
    b = BOARDS[board]
    div = divisor_for(b["clk_hz"], b["baud"])
    err = abs(b["clk_hz"] / div - b["baud"]) / b["baud"]
    # the receiver tolerates (div/2 - 1) / (9.5 div) (docs/architecture.md, UART); keep a
    # margin of 4x for the host's own clock error
    assert err < (div / 2 - 1) / (9.5 * div) / 4, (div, err)


@pytest.mark.cocotb
def test_board_uart_train_step(seed):
    div, mem = 8, 16384
    dut = BoardSystem(get_config("tiny"), divisor=div, mem_bytes=mem, spram="model",
                      timeout_bytes=64, drain_lanes=BOARDS["icebreaker"]["drain_lanes"],
                      load_lanes=BOARDS["icebreaker"]["load_lanes"])
    run_cocotb(dut, name="board", test_module="verif.cocotb.board_tb",
               test_id="board-tiny", seed=seed,
               extra_env={"CONFIG": "tiny", "DIV": div, "MEM": mem, "SIZES": "16,16,10",
                          "BATCH": 16})


def test_icebreaker_link_elaborates_with_pins_and_clock():
    """The iCEBreaker link-only top on its platform: 4 SPRAMs, UART pins 6 (rx) / 9 (tx),
    the 12 MHz clock constraint (the full board tops take minutes: ``make fpga``)."""
    from fpga.boards import board_platform

    plan = board_platform("icebreaker").build(BoardTop("icebreaker", link_only=True),
                                              name="top", do_build=False)
    pcf = plan.files["top.pcf"]
    assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf
    assert "set_frequency clk12_0__io 12.0" in pcf
    assert plan.files["top.il"].count("SB_SPRAM256KA") >= 4


def test_ulx3s_link_elaborates_with_pll_and_pins():
    """The ULX3S link-only top: FTDI pins M1 (rx) / L4 (tx), an EHXPLLL 25 -> 12.5 MHz and the
    12.5 MHz constraint on its output next to the oscillator's 25 MHz."""
    from fpga.boards import board_platform

    plan = board_platform("ulx3s-85f").build(BoardTop("ulx3s-85f", link_only=True),
                                             name="top", do_build=False)
    lpf = plan.files["top.lpf"]
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in lpf
    assert 'LOCATE COMP "uart_0__tx__io" SITE "L4"' in lpf
    assert "12500000.0 HZ" in lpf and 'FREQUENCY PORT "clk25_0__io" 25000000.0 HZ' in lpf
    il = plan.files["top.il"]
    assert "EHXPLLL" in il and "CLKOP_DIV" in il
    assert BOARDS["ulx3s-85f"]["clk_hz"] == 25e6 * 1 / 2  # CLKI_DIV=2, CLKFB_DIV=1 from CLKOP
