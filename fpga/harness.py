"""A few-pin FPGA harness around the GEMM engine that keeps every cell alive.

The engine alone is built inside this harness (the ``engine`` designs of ``fpga.build``: a
resource and Fmax measurement, the second design the iCE40 target tries): all input
ports (streams' payloads and valids, the output ready, the K-segment carry port's
``carry_data`` and ``carry_ready``) are driven from one long shift register
fed by the ``sdi`` pin, and every output bit is XOR-folded into an 8-bit register on the
``sdo`` pins. Nothing is constant and every output bit reaches a pin, so synthesis cannot
remove any logic of the engine; the cell counts are those of the engine plus the shift
register (one flip-flop per input bit) and the fold.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hdl.config import EngineConfig
from hdl.engine import Engine

__all__ = ["EngineHarness"]


class EngineHarness(wiring.Component):
    """Engine + input shift register + output XOR fold.

    Parameters
    ----------
    cfg : EngineConfig
        Engine configuration.

    Attributes
    ----------
    sdi : In(1)
        Serial data shifted into every engine input.
    sdo : Out(8)
        XOR fold of every engine output (registered).
    """

    sdi: In(1)
    sdo: Out(8)

    def __init__(self, cfg: EngineConfig):
        if not isinstance(cfg, EngineConfig):
            self._MustUse__silence = True  # never elaborated: no "created but never used"
            raise TypeError(f"cfg must be an EngineConfig, not {cfg!r}")
        self._cfg = cfg
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        eng = m.submodules.engine = Engine(self._cfg)
        ins = [eng.cmd.payload, eng.cmd.valid, eng.a_in.payload, eng.a_in.valid,
               eng.b_in.payload, eng.b_in.valid, eng.om_in.payload, eng.om_in.valid,
               eng.o.ready, eng.carry_data, eng.carry_ready]
        outs = [eng.cmd.ready, eng.a_in.ready, eng.b_in.ready, eng.om_in.ready,
                eng.o.payload, eng.o.valid, eng.busy, eng.done, eng.status, eng.cycles,
                eng.mac_cycles, eng.lane_macs, eng.macs_nonzero, eng.carry_en, eng.carry_addr]
        vin = Cat(*ins)
        sreg = Signal(len(vin))
        m.d.sync += sreg.eq(Cat(self.sdi, sreg[:-1]))
        m.d.comb += vin.eq(sreg)
        vout = Cat(*outs)
        fold = [0] * 8
        for i in range(len(vout)):
            fold[i % 8] = fold[i % 8] ^ vout[i]
        m.d.sync += self.sdo.eq(Cat(*fold))
        return m
