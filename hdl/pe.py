"""The processing element's block-alignment step: a block partial joins the accumulator.

Within one 16-value block, a PE sums its integer products exactly (``|p| < 2**18``); at the
block's end the partial, with exponent ``s = EA + EB`` (a biased sum), joins the accumulator
``(S, ea)`` with the rule of :mod:`golden.gemm` (the contract):

* ``q = p << GUARD``; a partial with ``p == 0`` changes nothing;
* if ``s > ea``: ``T = (S >> (s - ea)) + q`` and ``ea = s``; else ``T = S + (q >> (ea - s))``,
  flooring shifts, capped at ``ACC_W - 1`` (the result is then 0 or -1);
* if ``T`` does not fit ``ACC_W`` signed bits: ``T >>= 1`` and ``ea += 1``; ``S = T``.

Only one operand is shifted at a time, so the unit has one barrel shifter, one adder, one
exponent subtractor and a one-bit renormalization; it is combinational, one block per cycle.

The unit has no hold multiplexer: a zero partial (or a disabled PE) must come as the *idle
step* ``(p, s) = (0, 0)``, for which the arithmetic itself returns ``(S, ea)`` unchanged
(``s = 0`` is never above ``ea``, so ``T = S + (0 >> d) = S``, which fits). The lane zeroes
``s`` with the partial's register (a synchronous reset, no logic), saving 42 LUTs per PE.
"""

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.gemm import ACC_W, GUARD

__all__ = ["ACC_W", "GUARD", "EXP_W", "P_W", "S_W", "AlignUnit"]

EXP_W = 10  #: accumulator exponent width (unsigned)
P_W = 19  #: block partial width (signed): 16 * 127**2 < 2**18
S_W = 9  #: width of the biased exponent sum EA + EB


class AlignUnit(wiring.Component):
    """Combinational accumulate step ``(S, ea), (p, s) -> (S', ea')`` of one PE.

    Attributes
    ----------
    acc_s : In(signed(32))
        Accumulator mantissa ``S``.
    acc_e : In(unsigned(10))
        Accumulator exponent ``ea``.
    p : In(signed(19))
        Block partial (exact integer sum of the block's products).
    s : In(unsigned(9))
        Exponent of the partial, ``EA + EB``; must be 0 when ``p == 0`` (the idle step).
    new_s : Out(signed(32))
        ``S`` after the step.
    new_e : Out(unsigned(10))
        ``ea`` after the step.
    """

    acc_s: In(signed(ACC_W))
    acc_e: In(unsigned(EXP_W))
    p: In(signed(P_W))
    s: In(unsigned(S_W))
    new_s: Out(signed(ACC_W))
    new_e: Out(unsigned(EXP_W))

    def elaborate(self, platform):
        m = Module()
        assert ACC_W == 32  # the cap of 31 below is an OR of five ones
        q = (self.p << GUARD).as_signed()
        # up = s > ea is the sign of ea - s (no separate comparator). One subtractor: with
        # up, s - ea = ~down + 1, so S is shifted by 1 in the swap multiplexer (free) and then
        # by ~down (floor shifts compose). The shift amount is capped at 31 = 0b11111 by
        # OR-ing in "d >= 32" (no comparator either; with up, (S >> 1) >> 31 is S's sign, as
        # is S >> 32 and beyond)
        down = Signal(signed(EXP_W + 1))
        m.d.comb += down.eq(self.acc_e - self.s)
        up = down[EXP_W]
        d = down[:EXP_W] ^ up.replicate(EXP_W)
        dc = d[:5] | d[5:].any().replicate(5)
        x = Mux(up, self.acc_s >> 1, q)
        y = Mux(up, q, self.acc_s)
        t = ((x >> dc) + y)[:ACC_W + 1].as_signed()
        over = t[ACC_W] != t[ACC_W - 1]
        ts = Mux(over, t[1:ACC_W + 1], t[:ACC_W]).as_signed()
        te = (Mux(up, self.s, self.acc_e) + over)[:EXP_W]
        m.d.comb += [self.new_s.eq(ts), self.new_e.eq(te)]
        return m
