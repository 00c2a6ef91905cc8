"""Test top: the HBM v1 encoder and decoder side by side, optionally wired back to back.

With ``loop`` high the encoder's byte stream feeds the decoder (``bus_o`` idles and ``bus_i``
is not taken): blocks in on ``i`` come back on ``o``. With ``loop`` low the two units are
independent (``bus_o`` is the encoder's output, ``bus_i`` the decoder's input), so one Verilator
build serves the loopback test and the throughput measurement of each unit.
"""

from amaranth import Module, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hdl.bfp_layouts import BFP_BLOCK, bus_beat, check_bus_width
from hdl.hbm_decoder import DECODER_CMD, DecodeError, HBMDecoder
from hdl.hbm_encoder import HBMEncoder

__all__ = ["CodecLoopback"]


class CodecLoopback(wiring.Component):
    """Encoder and decoder of one bus width; ``loop`` connects them (module docstring).

    Parameters
    ----------
    bus_width : int
        32 or 64.
    """

    def __init__(self, bus_width: int = 64):
        self._bus_width = check_bus_width(bus_width)
        beat = bus_beat(bus_width)
        super().__init__({
            "loop": In(1),
            "enc_cmd": In(stream.Signature(unsigned(32))),
            "dec_cmd": In(stream.Signature(DECODER_CMD)),  # blocks (low bits), budget
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "bus_o": Out(stream.Signature(beat)),
            "bus_i": In(stream.Signature(beat)),
            "enc_busy": Out(1),
            "dec_busy": Out(1),
            "code": Out(DecodeError),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.enc = enc = HBMEncoder(self._bus_width)
        m.submodules.dec = dec = HBMDecoder(self._bus_width)
        wiring.connect(m, wiring.flipped(self.enc_cmd), enc.cmd)
        wiring.connect(m, wiring.flipped(self.dec_cmd), dec.cmd)
        wiring.connect(m, wiring.flipped(self.i), enc.i)
        wiring.connect(m, wiring.flipped(self.o), dec.o)
        m.d.comb += [
            self.enc_busy.eq(enc.busy),
            self.dec_busy.eq(dec.busy),
            self.code.eq(dec.code),
            self.error.eq(dec.error),
            self.bus_o.payload.eq(enc.o.payload),
        ]
        with m.If(self.loop):
            m.d.comb += [
                dec.i.payload.eq(enc.o.payload),
                dec.i.valid.eq(enc.o.valid),
                enc.o.ready.eq(dec.i.ready),
            ]
        with m.Else():
            m.d.comb += [
                self.bus_o.valid.eq(enc.o.valid),
                enc.o.ready.eq(self.bus_o.ready),
                dec.i.payload.eq(self.bus_i.payload),
                dec.i.valid.eq(self.bus_i.valid),
                self.bus_i.ready.eq(dec.i.ready),
            ]
        return m
