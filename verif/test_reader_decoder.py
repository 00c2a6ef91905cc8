"""DMA reader feeding the HBM decoder in budget mode, ``stop`` = ``tail``, under Verilator.

Operand streams stored in DRAM with random bytes after them, read inside a byte budget: the
blocks and verdicts match ``golden.jobs.read_stream`` and the DRAM read stops about the
stream's size plus the bursts in flight into the budget, not at its end
(``verif/cocotb/reader_decoder_tb.py``).
"""

import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.axi import AXI4Signature
from hdl.bfp_layouts import BFP_BLOCK
from hdl.dma import DMAError, DMAReader, dma_command
from hdl.hbm_decoder import DECODER_CMD, DecodeError, HBMDecoder
from verif.harness import run_cocotb


class ReaderDecoder(wiring.Component):
    """``DMAReader.out`` -> ``HBMDecoder.i``, ``reader.stop = decoder.tail``."""

    def __init__(self, addr_width=16, data_width=64, max_burst=16, max_outstanding=4,
                 fifo_depth=16):
        self.rd = DMAReader(addr_width, data_width, max_burst, max_outstanding)
        self.dec = HBMDecoder(data_width, fifo_depth)
        super().__init__({
            "rd_cmd": In(stream.Signature(dma_command(addr_width))),
            "dec_cmd": In(stream.Signature(DECODER_CMD)),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "rd_done": Out(1), "rd_error": Out(DMAError), "rd_busy": Out(1),
            "beats_read": Out(32),
            "dec_busy": Out(1), "code": Out(DecodeError), "tail": Out(1),
            "axi": Out(AXI4Signature(addr_width, data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd = rd = self.rd
        m.submodules.dec = dec = self.dec
        wiring.connect(m, wiring.flipped(self.rd_cmd), rd.cmd)
        wiring.connect(m, wiring.flipped(self.dec_cmd), dec.cmd)
        wiring.connect(m, rd.out, dec.i)
        wiring.connect(m, dec.o, wiring.flipped(self.o))
        wiring.connect(m, rd.axi, wiring.flipped(self.axi))
        m.d.comb += [
            rd.stop.eq(dec.tail),
            self.rd_done.eq(rd.done), self.rd_error.eq(rd.error), self.rd_busy.eq(rd.busy),
            self.beats_read.eq(rd.beats_read),
            self.dec_busy.eq(dec.busy), self.code.eq(dec.code), self.tail.eq(dec.tail),
        ]
        return m


@pytest.mark.cocotb
@pytest.mark.parametrize("dw,burst,outstanding", [(64, 16, 4), (32, 8, 2)])
def test_reader_decoder_verilator(seed, dw, burst, outstanding):
    aw, mem, fifo = 16, 1 << 15, 16
    run_cocotb(ReaderDecoder(aw, dw, burst, outstanding, fifo),
               name=f"reader_decoder_{dw}_{burst}_{outstanding}",
               test_module="verif.cocotb.reader_decoder_tb",
               test_id=f"reader_decoder_{dw}_{burst}_{outstanding}", seed=seed,
               extra_env={"DW": dw, "AW": aw, "MEM": mem, "BURST": burst,
                          "OUTSTANDING": outstanding, "FIFO": fifo})
