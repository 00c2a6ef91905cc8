"""BFP8 converter: 16 GEMM accumulators in, one BFP8 block out, bit-exact with the golden model.

The input is a block of 16 outputs of the PE array in the accumulator format of
:mod:`golden.gemm`: a signed 32-bit mantissa ``S`` and a 10-bit exponent ``ea`` per value,
``v = S * 2**(ea - 274)``. The output is ``golden.bfp.quantize_exact`` of those 16 values
(``golden.gemm.Accumulator.to_bfp``):

1. values with ``|v| < 2**-126`` flush to zero;
2. ``e = max floor(log2|v|)``, saturated at 127; the block exponent is ``E = e + 127``
   (``E = 0`` for a block with no nonzero value left);
3. ``m = clamp(round_half_even(v * 2**(6 - e)), -127, 127)``.

In integers: with ``p`` the position of the leading one of ``|S|``, ``t = p + ea`` is the
biased exponent plus 147, so a value survives the flush iff ``S != 0`` and ``t >= 148``, and
``E = min(max t - 147, 254)`` over the survivors. The mantissa is ``|S| * 2**6`` shifted right by
``r = E + 147 - ea`` with round-half-even (guard bit and sticky bits), then clamped; ``r < 0``
only happens for a saturated block and gives 127. Shifts of 40 or more give 0 exactly as a
shift of 40 does, so the shift amount is capped there.

Pipeline (one block per cycle; all stages stall together when the output is not taken):

====== ==================================================================
stage  work
====== ==================================================================
``s1`` ``|S|``, sign, leading-one position ``p``, ``t = p + ea``, flush
``s2`` maximum of ``t`` over the 16 lanes, ``E``
``s3`` shift amount, barrel shift, guard and sticky bits
``s4`` round half to even, clamp to 127, sign: the output register
====== ==================================================================

Latency: a block accepted on ``i`` in cycle ``n`` is valid on ``o`` in cycle ``n + 4``.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import ACC_BLOCK, ACC_EXP_W, ACC_W, BFP_BLOCK, BLOCK

__all__ = ["BFPConverter"]

_T_FLUSH = 148  # t = p + ea below this is |v| < 2**-126
_T_BIAS = 147  # E = t - 147
_E_SAT = 254  # E for e = 127
_MAG_W = ACC_W  # |S| <= 2**31 fits in 32 unsigned bits
_X_W = _MAG_W + 7  # |S| << 6, plus one bit below for the guard bit
_SHIFT_CAP = 40  # shifting _X_W bits by 40 or more leaves nothing: same result as 40


class BFPConverter(wiring.Component):
    """Accumulator block to BFP8 block, pipelined, one block per cycle, latency 4.

    Attributes
    ----------
    i : In(stream.Signature(ACC_BLOCK))
        16 accumulators: ``mant`` (signed 32-bit ``S``) and ``exp`` (unsigned 10-bit ``ea``).
    o : Out(stream.Signature(BFP_BLOCK))
        The BFP8 block: ``exp`` (biased ``E``) and ``mant`` (16 int8 mantissas).
    """

    i: In(stream.Signature(ACC_BLOCK))
    o: Out(stream.Signature(BFP_BLOCK))

    latency = 4  #: cycles from acceptance on ``i`` to valid on ``o`` (no back-pressure)

    def elaborate(self, platform):
        m = Module()

        # All stages advance together whenever the output register is free or being taken.
        en = Signal()
        v1, v2, v3 = Signal(), Signal(), Signal()
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(en),
        ]
        with m.If(en):
            m.d.sync += [
                v1.eq(self.i.valid),
                v2.eq(v1),
                v3.eq(v2),
                self.o.valid.eq(v3),
            ]

        # s1: magnitude, sign, leading one, flush.
        s1_mag = [Signal(_MAG_W, name=f"s1_mag{k}") for k in range(BLOCK)]
        s1_neg = [Signal(name=f"s1_neg{k}") for k in range(BLOCK)]
        s1_ea = [Signal(ACC_EXP_W, name=f"s1_ea{k}") for k in range(BLOCK)]
        s1_t = [Signal(ACC_EXP_W + 1, name=f"s1_t{k}") for k in range(BLOCK)]
        s1_live = [Signal(name=f"s1_live{k}") for k in range(BLOCK)]
        for k in range(BLOCK):
            s = self.i.payload.mant[k]
            ea = self.i.payload.exp[k]
            mag = Signal(_MAG_W, name=f"s0_mag{k}")
            lead = Signal(range(_MAG_W), name=f"s0_lead{k}")
            t = Signal(ACC_EXP_W + 1, name=f"s0_t{k}")
            m.d.comb += mag.eq(Mux(s < 0, -s, s))
            for b in range(_MAG_W):  # last assignment wins: the highest set bit
                with m.If(mag[b]):
                    m.d.comb += lead.eq(b)
            m.d.comb += t.eq(lead + ea)
            with m.If(en):
                m.d.sync += [
                    s1_mag[k].eq(mag),
                    s1_neg[k].eq(s < 0),
                    s1_ea[k].eq(ea),
                    s1_t[k].eq(t),
                    s1_live[k].eq((mag != 0) & (t >= _T_FLUSH)),
                ]

        # s2: block exponent.
        level = [Mux(s1_live[k], s1_t[k], 0) for k in range(BLOCK)]
        depth = 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), 2):
                a = Signal(ACC_EXP_W + 1, name=f"s1_max{depth}_{j // 2}")
                m.d.comb += a.eq(Mux(level[j] > level[j + 1], level[j], level[j + 1]))
                nxt.append(a)
            level = nxt
            depth += 1
        tmax = level[0]
        s2_exp = Signal(8)
        s2_mag = [Signal(_MAG_W, name=f"s2_mag{k}") for k in range(BLOCK)]
        s2_neg = [Signal(name=f"s2_neg{k}") for k in range(BLOCK)]
        s2_ea = [Signal(ACC_EXP_W, name=f"s2_ea{k}") for k in range(BLOCK)]
        s2_live = [Signal(name=f"s2_live{k}") for k in range(BLOCK)]
        with m.If(en):
            with m.If(tmax < _T_FLUSH):
                m.d.sync += s2_exp.eq(0)
            with m.Elif(tmax - _T_BIAS > _E_SAT):
                m.d.sync += s2_exp.eq(_E_SAT)
            with m.Else():
                m.d.sync += s2_exp.eq(tmax - _T_BIAS)
            for k in range(BLOCK):
                m.d.sync += [
                    s2_mag[k].eq(s1_mag[k]),
                    s2_neg[k].eq(s1_neg[k]),
                    s2_ea[k].eq(s1_ea[k]),
                    s2_live[k].eq(s1_live[k]),
                ]

        # s3: shift with guard and sticky bits.
        s3_exp = Signal(8)
        s3_q = [Signal(7, name=f"s3_q{k}") for k in range(BLOCK)]
        s3_guard = [Signal(name=f"s3_guard{k}") for k in range(BLOCK)]
        s3_sticky = [Signal(name=f"s3_sticky{k}") for k in range(BLOCK)]
        s3_sat = [Signal(name=f"s3_sat{k}") for k in range(BLOCK)]
        s3_neg = [Signal(name=f"s3_neg{k}") for k in range(BLOCK)]
        s3_live = [Signal(name=f"s3_live{k}") for k in range(BLOCK)]
        with m.If(en):
            m.d.sync += s3_exp.eq(s2_exp)
        for k in range(BLOCK):
            r = Signal(signed(ACC_EXP_W + 2), name=f"s2_r{k}")
            amt = Signal(range(_SHIFT_CAP + 1), name=f"s2_amt{k}")
            x = Signal(_X_W, name=f"s2_x{k}")
            qg = Signal(_X_W, name=f"s2_qg{k}")
            mask = Signal(_SHIFT_CAP, name=f"s2_mask{k}")
            m.d.comb += [
                r.eq(s2_exp + _T_BIAS - s2_ea[k]),
                amt.eq(Mux(r > _SHIFT_CAP, _SHIFT_CAP, r[:6])),
                x.eq(s2_mag[k] << 7),
                qg.eq(x >> amt),
                mask.eq((Const(1, unsigned(_SHIFT_CAP + 1)) << amt) - 1),
            ]
            with m.If(en):
                m.d.sync += [
                    s3_q[k].eq(qg[1:8]),
                    s3_guard[k].eq(qg[0]),
                    s3_sticky[k].eq((x & mask) != 0),
                    s3_sat[k].eq((r < 0) | (qg[8:] != 0)),
                    s3_neg[k].eq(s2_neg[k]),
                    s3_live[k].eq(s2_live[k]),
                ]

        # s4: round half to even, clamp, sign.
        with m.If(en):
            m.d.sync += self.o.payload.exp.eq(s3_exp)
        for k in range(BLOCK):
            up = s3_guard[k] & (s3_sticky[k] | s3_q[k][0])
            rounded = Signal(8, name=f"s3_rounded{k}")
            mag = Signal(7, name=f"s3_mag{k}")
            m.d.comb += [
                rounded.eq(s3_q[k] + up),
                mag.eq(Mux(s3_sat[k] | rounded[7], 127, rounded[:7])),
            ]
            with m.If(en):
                m.d.sync += self.o.payload.mant[k].eq(
                    Mux(s3_live[k], Mux(s3_neg[k], -mag, mag), 0))

        return m
