"""Board tops: the accelerator, its on-chip memory and the UART host bridge on an FPGA board.

:class:`BoardSystem` is the logic of a board (what ``verif/test_board.py`` simulates)::

    rx/tx pins --- UARTBridge.csr (AXI4-Lite) -----------------------> Accelerator.csr
                   UARTBridge.mem (AXI4) ---> AXI4Arbiter.s[1]
                   Accelerator.mem (AXI4) --> AXI4Arbiter.s[0] --m--> AXI4RAM.bus
                   Accelerator.irq ---------> UARTBridge.irq

:class:`BoardTop` puts it on an ``amaranth-boards`` platform: on the iCEBreaker the 12 MHz
oscillator is the ``sync`` clock with the platform's reset logic (a power-on delay for the
block RAMs); on the ULX3S an ``EHXPLLL`` makes 12.5 MHz from the 25 MHz oscillator and
``sync`` stays in reset (a reset synchronizer) until the PLL locks. The declared clock
(:data:`BOARDS` ``clk_hz``) is what nextpnr must meet. The UART pins of the board's USB serial
bridge (FTDI) are ``rx`` / ``tx`` (``rx`` gets the bridge's two-flop synchronizer,
``hdl.uart.UARTRx``).

Boards (:data:`BOARDS`):

* ``icebreaker``: iCEBreaker (iCE40 UP5K, 12 MHz), ``tiny`` engine, the 128 KiB of SPRAM as
  memory, 115200 baud (divisor 104: 0.16 % fast);
* ``ulx3s-85f``: ULX3S with the 85F (ECP5 LFE5U-85F, 25 MHz oscillator, 12.5 MHz from the
  PLL), ``default`` engine (``fpga.build`` falls back to ``small``, then ``tiny``, if it does
  not fit), 64 KiB of block RAM as memory, 115200 baud (divisor 109: 0.45 % slow).

Both build the accelerator with ``drain_lanes=4`` and ``load_lanes=4``: the BFP8 converter,
sparsity filter, HBM encoders and decoder process 4 values a cycle (a block every 4 cycles),
at a fraction of their 16-wide area, with the same results. The ULX3S also keeps the carry
queues of two engine lanes in block RAM (``carry_bram_lanes``, 40 of the 85F's spare DP16KD
for about 2,000 LUT positions; as many lanes as the engine has if that is fewer). Each board's
``align_share`` (PEs per align unit, :class:`hdl.engine.Engine`) is 1: sharing saves LUTs
(about 7,800 on the ULX3S at 2) but costs sparse cycles and did not make ``default`` route
(``docs/results.md``, "FPGA builds").
"""

from __future__ import annotations

from amaranth import ClockDomain, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.wiring import In, Out

from hdl.accelerator import ADDR_W, DATA_W, Accelerator
from hdl.axi_arbiter import AXI4Arbiter
from hdl.axi_ram import AXI4RAM
from hdl.bfp_layouts import reject
from hdl.config import EngineConfig, get_config
from hdl.csr import CSRBlock
from hdl.regmap import Field, Register, RegisterMap
from hdl.uart_bridge import UARTBridge

__all__ = ["BoardSystem", "LinkSystem", "BoardTop", "BOARDS", "LINK_MAP", "LINK_ID",
           "board_platform"]

#: the register map of the link-only design: one identification register
LINK_MAP = RegisterMap("board link", [
    Register("ident", 0x0, [Field("value", 32, "ro", "LINK_ID: a link-only bitstream")]),
])
LINK_ID = 0x4B4E494C  #: "LINK" in little-endian bytes


#: per board: platform (module, class), engine configuration, memory, clock and baud rate
BOARDS = {
    "icebreaker": {
        "platform": ("amaranth_boards.icebreaker", "ICEBreakerPlatform"),
        "config": "tiny", "mem_bytes": 128 * 1024, "spram": True, "drain_lanes": 4,
        "load_lanes": 4, "carry_bram_lanes": 0, "align_share": 1,
        "clk_hz": 12e6, "baud": 115200, "family": "ice40",
    },
    "ulx3s-85f": {
        "platform": ("amaranth_boards.ulx3s", "ULX3S_85F_Platform"),
        # 64 KiB (32 DP16KD): the digits MLP 64-64-10 at batch 32 takes 60 KiB with default
        "config": "default", "mem_bytes": 64 * 1024, "spram": False, "drain_lanes": 4,
        "load_lanes": 4, "carry_bram_lanes": 2, "align_share": 1,
        # the tiny board top reached 17.1 MHz (nextpnr) against 25 MHz: an EHXPLLL makes
        # 12.5 MHz from the 25 MHz oscillator (yowasp-ecppll -i 25 -o 12.5)
        "clk_hz": 12.5e6, "baud": 115200, "family": "ecp5",
        "pll": {"in": "clk25", "in_mhz": 25, "out_mhz": 12.5, "clki_div": 2, "clkop_div": 48,
                "clkop_cphase": 23, "clkfb_div": 1},
    },
}


def board_platform(board: str):
    """A fresh ``amaranth-boards`` platform instance of ``board``."""
    import importlib

    mod, cls = BOARDS[board]["platform"]
    return getattr(importlib.import_module(mod), cls)()


def divisor_for(clk_hz: float, baud: int) -> int:
    """The UART divisor closest to ``clk_hz / baud``."""
    return max(4, round(clk_hz / baud))


class BoardSystem(wiring.Component):
    """Accelerator + AXI4Arbiter(2) + AXI4RAM + UARTBridge (module docstring).

    Parameters
    ----------
    cfg : EngineConfig
        Engine configuration of the accelerator.
    divisor : int
        Clock cycles per UART bit.
    mem_bytes : int
        Bytes of on-chip memory (the accelerator's DRAM, from address 0).
    spram : bool or "model"
        ``AXI4RAM``'s storage (``True``: four iCE40 ``SB_SPRAM256KA``).
    timeout_bytes, rx_fifo_depth : int
        Of the :class:`hdl.uart_bridge.UARTBridge`.
    **acc_kwargs
        ``max_burst``, ``max_outstanding``, ``decoder_fifo``, ``drain_lanes``, ``load_lanes``,
        ``carry_bram_lanes``, ``align_share``
        of the :class:`hdl.accelerator.Accelerator` (the board tops use 4 for both: the
        converter, filter, encoders and decoder 4 values a cycle, a fraction of their area).

    Attributes
    ----------
    rx : In(1)
        UART line from the host (idle high).
    tx : Out(1)
        UART line to the host (idle high).
    irq : Out(1)
        The accelerator's interrupt (for an LED).
    """

    def __init__(self, cfg: EngineConfig, *, divisor: int, mem_bytes: int, spram=False,
                 timeout_bytes: int = 1024, rx_fifo_depth: int = 16, **acc_kwargs):
        if not isinstance(cfg, EngineConfig):
            reject(self, TypeError(f"cfg must be an EngineConfig, not {cfg!r}"))
        made = []  # a parameter error in one part must not leave the others "unused"
        try:
            for name, make in (
                    ("ram", lambda: AXI4RAM(mem_bytes, DATA_W, ADDR_W, spram=spram)),
                    ("bridge", lambda: UARTBridge(divisor, timeout_bytes=timeout_bytes,
                                                  rx_fifo_depth=rx_fifo_depth)),
                    ("accel", lambda: Accelerator(cfg, **acc_kwargs)),
                    ("arbiter", lambda: AXI4Arbiter(2, ADDR_W, DATA_W))):
                setattr(self, name, make())
                made.append(getattr(self, name))
        except Exception:
            for part in made:
                part._MustUse__silence = True
            self._MustUse__silence = True
            raise
        self._cfg = cfg
        self._mem_bytes = mem_bytes
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "irq": Out(1)})

    cfg = property(lambda self: self._cfg)
    mem_bytes = property(lambda self: self._mem_bytes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = acc = self.accel
        m.submodules.arbiter = arb = self.arbiter
        m.submodules.ram = ram = self.ram
        m.submodules.bridge = br = self.bridge
        wiring.connect(m, br.csr, acc.csr)
        wiring.connect(m, acc.mem, arb.s[0])
        wiring.connect(m, br.mem, arb.s[1])
        wiring.connect(m, arb.m, ram.bus)
        m.d.comb += [br.rx.eq(self.rx), self.tx.eq(br.tx), br.irq.eq(acc.irq),
                     self.irq.eq(acc.irq)]
        return m


class LinkSystem(wiring.Component):
    """The host link alone: UARTBridge + AXI4RAM, and a CSRBlock of :data:`LINK_MAP` (``ident``
    reads :data:`LINK_ID`; other CSRs answer SLVERR) instead of the accelerator.

    What a board that cannot hold the accelerator still runs: the host can ping, read the
    ``ident`` register and test the memory through ``SerialTransport``. Same parameters and
    ports as :class:`BoardSystem` minus the engine configuration (``irq`` is 0).
    """

    def __init__(self, *, divisor: int, mem_bytes: int, spram=False, timeout_bytes: int = 1024,
                 rx_fifo_depth: int = 16):
        self.ram = AXI4RAM(mem_bytes, DATA_W, ADDR_W, spram=spram)
        self.bridge = UARTBridge(divisor, timeout_bytes=timeout_bytes,
                                 rx_fifo_depth=rx_fifo_depth)
        self.csrs = CSRBlock(LINK_MAP, addr_width=12)
        self._mem_bytes = mem_bytes
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "irq": Out(1)})

    mem_bytes = property(lambda self: self._mem_bytes)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = self.ram
        m.submodules.bridge = br = self.bridge
        m.submodules.csrs = csrs = self.csrs
        wiring.connect(m, br.mem, ram.bus)
        wiring.connect(m, br.csr, csrs.bus)
        m.d.comb += [br.rx.eq(self.rx), self.tx.eq(br.tx), br.irq.eq(0),
                     csrs.ident_value.eq(LINK_ID)]
        return m


class BoardTop(wiring.Component):
    """:class:`BoardSystem` on a board's pins (module docstring); build it with the board's
    platform (:func:`board_platform`).

    Parameters
    ----------
    board : str
        A key of :data:`BOARDS`.
    config : str, optional
        Engine configuration name instead of the board's.
    mem_bytes : int, optional
        Memory size instead of the board's.
    link_only : bool
        Build :class:`LinkSystem` (no accelerator) instead of :class:`BoardSystem`.
    """

    def __init__(self, board: str, config: str | None = None, mem_bytes: int | None = None,
                 link_only: bool = False):
        if board not in BOARDS:
            reject(self, ValueError(f"Unknown board {board!r}; choose from {sorted(BOARDS)}"))
        b = BOARDS[board]
        self.board = board
        self.divisor = divisor_for(b["clk_hz"], b["baud"])
        if link_only:
            self.system = LinkSystem(divisor=self.divisor, mem_bytes=mem_bytes or b["mem_bytes"],
                                     spram=b["spram"])
        else:
            cfg = get_config(config or b["config"])
            self.system = BoardSystem(cfg, divisor=self.divisor,
                                      mem_bytes=mem_bytes or b["mem_bytes"], spram=b["spram"],
                                      drain_lanes=b["drain_lanes"],
                                      load_lanes=b["load_lanes"],
                                      carry_bram_lanes=min(b["carry_bram_lanes"], cfg.lanes),
                                      align_share=min(b["align_share"], cfg.rows))
        super().__init__({})

    def _pll(self, m, platform, pll):
        """The ``sync`` domain from an ECP5 EHXPLLL, held in reset until the PLL locks."""
        m.submodules.clk_buf = clk_in = io.Buffer("i", platform.request(pll["in"], 0, dir="-"))
        m.domains.sync = cd = ClockDomain("sync")
        locked = Signal()
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(pll["in_mhz"]), a_FREQUENCY_PIN_CLKOP=str(pll["out_mhz"]),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_OUTDIVIDER_MUXB="DIVB",
            p_OUTDIVIDER_MUXC="DIVC", p_OUTDIVIDER_MUXD="DIVD",
            p_CLKI_DIV=pll["clki_div"], p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=pll["clkop_div"],
            p_CLKOP_CPHASE=pll["clkop_cphase"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            p_CLKFB_DIV=pll["clkfb_div"],
            i_RST=0, i_STDBY=0, i_CLKI=clk_in.i, o_CLKOP=cd.clk, i_CLKFB=cd.clk,
            i_PHASESEL0=0, i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1,
            i_PLLWAKESYNC=0, i_ENCLKOP=0, o_LOCK=locked)
        m.submodules.rst_sync = ResetSynchronizer(~locked, domain="sync")
        platform.add_clock_constraint(cd.clk, pll["out_mhz"] * 1e6)

    def elaborate(self, platform):
        m = Module()
        m.submodules.system = sys_ = self.system
        pll = BOARDS[self.board].get("pll")
        if pll is not None:
            self._pll(m, platform, pll)
        uart = platform.request("uart", 0, dir="-")  # rts, dtr (ULX3S) stay unused
        m.submodules.rx_buf = rx = io.Buffer("i", uart.rx)
        m.submodules.tx_buf = tx = io.Buffer("o", uart.tx)
        m.d.comb += [sys_.rx.eq(rx.i), tx.o.eq(sys_.tx)]
        led = platform.request("led", 0, dir="-")
        m.submodules.led_buf = lb = io.Buffer("o", led)
        m.d.comb += lb.o.eq(sys_.irq)
        return m
