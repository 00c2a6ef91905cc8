"""A tiny saturating accumulator: the component the harness smoke test builds under Verilator.

It exists so that the Amaranth -> Verilog -> Verilator -> cocotb path is exercised in CI from
the first commit; it is not part of the accelerator.
"""

from amaranth import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["SmokeAccumulator"]


class SmokeAccumulator(wiring.Component):
    """Sums a stream of unsigned words, saturating at ``2**width - 1``.

    Parameters
    ----------
    width : int
        Width of the input words and of the sum.

    Attributes
    ----------
    i : In(stream.Signature(width))
        Words to add; always ready.
    total : Out(width)
        The saturating sum so far.
    """

    def __init__(self, width: int = 8):
        if not isinstance(width, int) or width <= 0:
            raise TypeError(f"Width must be a positive integer, not {width!r}")
        self._width = width
        super().__init__({"i": In(stream.Signature(unsigned(width))), "total": Out(width)})

    @property
    def width(self):
        return self._width

    def elaborate(self, platform):
        m = Module()
        top = (1 << self._width) - 1
        nxt = Signal(self._width + 1)
        m.d.comb += [self.i.ready.eq(1), nxt.eq(self.total + self.i.payload)]
        with m.If(self.i.valid):
            with m.If(nxt > top):
                m.d.sync += self.total.eq(top)
            with m.Else():
                m.d.sync += self.total.eq(nxt)
        return m
