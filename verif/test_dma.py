# amaranth: UnusedElaboratable=no
"""AXI4 DMA reader and writer (hdl.dma) under Verilator with cocotbext-axi's AxiRam."""

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature
from hdl.bfp_layouts import bus_beat
from hdl.dma import LEN_W, DMAError, DMAReader, DMAWriter, dma_command
from verif.harness import run_cocotb


class DMAPair(wiring.Component):
    """A reader and a writer sharing one AXI4 port (read channels / write channels)."""

    def __init__(self, addr_width, data_width, max_burst):
        self.rd = DMAReader(addr_width, data_width, max_burst)
        self.wr = DMAWriter(addr_width, data_width, max_burst)
        cmd = dma_command(addr_width)
        super().__init__({
            "rd_cmd": In(stream.Signature(cmd)),
            "rd_out": Out(stream.Signature(bus_beat(data_width))),
            "rd_done": Out(1), "rd_error": Out(DMAError), "rd_bus_resp": Out(2),
            "rd_stop": In(1), "rd_busy": Out(1), "rd_beats_read": Out(32),
            "wr_cmd": In(stream.Signature(cmd)),
            "wr_inp": In(stream.Signature(bus_beat(data_width))),
            "wr_done": Out(1), "wr_error": Out(DMAError), "wr_bus_resp": Out(2),
            "wr_written": Out(LEN_W),
            "axi": Out(AXI4Signature(addr_width, data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd = rd = self.rd
        m.submodules.wr = wr = self.wr
        wiring.connect(m, wiring.flipped(self.rd_cmd), rd.cmd)
        wiring.connect(m, rd.out, wiring.flipped(self.rd_out))
        wiring.connect(m, wiring.flipped(self.wr_cmd), wr.cmd)
        wiring.connect(m, wiring.flipped(self.wr_inp), wr.inp)
        m.d.comb += [rd.stop.eq(self.rd_stop), self.rd_busy.eq(rd.busy),
                     self.rd_beats_read.eq(rd.beats_read),
                     self.rd_done.eq(rd.done), self.rd_error.eq(rd.error),
                     self.rd_bus_resp.eq(rd.bus_resp), self.wr_done.eq(wr.done),
                     self.wr_error.eq(wr.error), self.wr_bus_resp.eq(wr.bus_resp),
                     self.wr_written.eq(wr.written)]
        for name in self.axi.signature.members:
            if name[:2] in ("ar", "r") or name[0] == "r":
                src = rd.axi
            else:
                src = wr.axi
            port = self.axi.signature.members[name]
            if port.flow == Out:
                m.d.comb += getattr(self.axi, name).eq(getattr(src, name))
            else:
                m.d.comb += getattr(rd.axi, name).eq(getattr(self.axi, name))
                m.d.comb += getattr(wr.axi, name).eq(getattr(self.axi, name))
        return m


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Bus width must be 32 or 64, not 48$"):
        DMAReader(32, 48)
    with pytest.raises(ValueError, match=r"^Maximum burst must be a power of two from 2 to "
                                         r"256 beats, not 3$"):
        DMAWriter(32, 64, 3)
    with pytest.raises(ValueError, match=r"^Address width must be an integer from 12 to 64, "
                                         r"not 8$"):
        DMAReader(8)
    with pytest.raises(ValueError, match=r"^Outstanding bursts must be an integer from 1 to 16"):
        DMAReader(32, 64, 16, 0)


@pytest.mark.cocotb
@pytest.mark.parametrize("dw,burst", [(64, 16), (32, 4)])
def test_dma_verilator(dw, burst, seed):
    aw, mem = 16, 1 << 14
    run_cocotb(DMAPair(aw, dw, burst), name=f"dma_pair_{dw}_{burst}",
               test_module="verif.cocotb.dma_tb", test_id=f"dma_{dw}_{burst}", seed=seed,
               extra_env={"DW": dw, "AW": aw, "MEM": mem})
