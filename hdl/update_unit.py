"""Weight update unit: fixed-point SGD with momentum and weight decay, one element per cycle.

Bit-exact with ``golden.update.update_records`` (the spec is that module's docstring):

1. ``g  = sat(rne(S, 274 - frac_v - ea))``: the WG output's RAW record ``(S, ea)`` aligned to
   the velocity's LSB (left shift for ``ea > 274 - frac_v``), rounded half to even, saturated;
2. ``mv = rne(momentum.mant * v, momentum.shift)``,
   ``wd = rne(weight_decay.mant * w, weight_decay.shift + frac_w - frac_v)``;
3. ``v' = sat(mv + g + wd)``;
4. ``w' = sat(w - rne(lr.mant * v', lr.shift + frac_v - frac_w))``;

with ``sat`` the clamp to ``[-(2**31 - 1), 2**31 - 1]`` (nothing wraps) and ``rne(x, r)`` =
``x * 2**-r`` rounded half to even. Defaults: ``frac_w = frac_v = 24`` (Q8.24 master and
velocity, ``golden.update.W_FRAC`` / ``V_FRAC``).

Rounding shift in hardware (:func:`_rne`): ``x`` is extended by one zero bit below its LSB and
shifted right arithmetically (floor) by ``r`` in a logarithmic shifter; bit 0 of the result is
the guard bit, the rest the floored quotient ``q``; the sticky bit (the OR of the bits shifted
out below the guard) is collected stage by stage. The increment ``up = guard & (sticky |
q[0])`` is not added at once but enters the next adder (``v'``'s sum, ``w - step``). Amount bits
worth the operand's width or more set every stage (same result: 0). A negative net shift
(``frac_v > frac_w`` for the decay term, or the reverse for the step) is a constant left
pre-shift of the product. Saturation needs no comparator: a value fits iff its bits from 31 up
are all equal and it is not ``-2**31``. The gradient's left shift (``ea > 274 - frac_v``) is
built in 32 bits; it saturates unless the top ``d + 1`` bits of ``S`` are equal; its right
shift never saturates (``|result| <= 2**30``).

Pipeline (all stages advance together when the output register is free or being taken; a
stalled output holds every stage):

====== ===================================================================================
stage  work
====== ===================================================================================
``s1`` gradient: shift amount from ``ea``, saturating left shift or rounding right shift of
       ``S``; products ``momentum.mant * v`` and ``weight_decay.mant * w`` (32 x 16 bits)
``s2`` rounding shifts of the two products
``s3`` ``v' = sat(mv + g + wd + increments)`` (one 3-input adder, ~51 bits)
``s4`` product ``lr.mant * v'`` (32 x 16 bits)
``s5`` its rounding shift
``s6`` ``w' = sat(w - q - up)``: the output register
====== ===================================================================================

Latency: an element accepted on ``i`` in cycle ``n`` is valid on ``o`` in cycle ``n + 6``.
The hyper-parameters are sampled with each element as it is accepted (they travel with it), so
the host may change them between tensors without draining the unit.

Re-quantization of the new master into BFP8 is not part of this unit: the master maps onto the
BFP8 converter's accumulator input with ``S = w'``, ``ea = 274 - frac_w`` (250), so
``hdl/bfp_converter.py`` produces ``W`` from 16 consecutive masters along K and ``W^T`` from
16 consecutive masters along Co (``golden.update.requantize``).
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import EXP_OFFSET, GUARD, reject

__all__ = ["UpdateUnit", "UPDATE_IN", "UPDATE_OUT", "HYPER", "WORD_W", "REC_EXP_W"]

WORD_W = 32  #: master and velocity width (``golden.update.WORD_W``)
REC_EXP_W = 16  #: the RAW record's exponent field (``golden.update.REC_EXP_W``)
HP_MANT_W = 16  #: hyper-parameter mantissa (``golden.update.HP_MANT_W``)
HP_SHIFT_W = 6  #: hyper-parameter shift (``golden.update.HP_SHIFT_W``)
_SAT = (1 << (WORD_W - 1)) - 1
_ACC_SHIFT = EXP_OFFSET + GUARD  # 274
_MAX_FRAC_DIFF = 8

#: A hyper-parameter register: value ``mant * 2**-shift``.
HYPER = data.StructLayout({"mant": unsigned(HP_MANT_W), "shift": unsigned(HP_SHIFT_W)})

#: One element in: the RAW record of its gradient, its master weight and its velocity.
UPDATE_IN = data.StructLayout({
    "grad_mant": signed(WORD_W),  # S of the WG accumulator (int32)
    "grad_exp": unsigned(REC_EXP_W),  # ea (the record's uint16)
    "w": signed(WORD_W),  # master weight, in [-(2**31 - 1), 2**31 - 1]
    "v": signed(WORD_W),  # velocity, same range
})

#: One element out: the new master weight and the new velocity.
UPDATE_OUT = data.StructLayout({"w": signed(WORD_W), "v": signed(WORD_W)})


def _sat(m, x, name):
    """``x`` clamped to ``[-SAT, SAT]`` as a signed ``WORD_W``-bit signal (sign-bit logic, no
    comparators: ``x`` fits iff its bits from ``WORD_W - 1`` up are all equal, and is not
    ``-2**31``)."""
    out = Signal(signed(WORD_W), name=name)
    sign = x[-1]
    hi = x[WORD_W - 1:]
    ovf = Signal(name=f"{name}_ovf")
    m.d.comb += ovf.eq(Mux(sign, ~hi.all() | ~x[:WORD_W - 1].any(), hi.any()))
    m.d.comb += out.eq(Mux(ovf, Mux(sign, -_SAT, _SAT), x[:WORD_W]))
    return out


def _rne(m, x, amt, name):
    """``x * 2**-amt`` rounded half to even as ``(q, up)``: ``q`` the floored quotient (signed,
    ``len(x)`` bits), ``up`` the rounding increment (module docstring); ``amt`` unsigned.

    A logarithmic arithmetic right shift of ``x`` extended by a zero guard position; every
    stage ORs the bits it drops into the sticky bit. Amount bits worth the whole width or more
    set every stage (the shift saturates to the sign, the sticky to ``x != 0``).
    """
    width = len(x) + 1
    nst = width.bit_length()  # stages 1, 2, ..., 2**(nst-1): together >= width
    a = Signal(nst, name=f"{name}_a")
    if len(amt) > nst:
        big = amt[nst:].any()
        m.d.comb += a.eq(amt[:nst] | big.replicate(nst))
    else:
        m.d.comb += a.eq(amt)
    cur = Signal(signed(width), name=f"{name}_x2")
    m.d.comb += cur.eq(x << 1)
    sticky = Const(0, 1)
    for k in range(nst):
        s = 1 << k
        nxt = Signal(signed(width), name=f"{name}_s{k}")
        m.d.comb += nxt.eq(Mux(a[k], cur >> s, cur))
        sticky = sticky | (a[k] & cur[:min(s, width)].any())
        cur = nxt
    q = Signal(signed(width - 1), name=f"{name}_q")
    up = Signal(name=f"{name}_up")
    m.d.comb += [q.eq(cur[1:]), up.eq(cur[0] & (sticky | q[0]))]
    return q, up


class UpdateUnit(wiring.Component):
    """Streaming fixed-point SGD update, one element per cycle, latency 6 (module docstring).

    Parameters
    ----------
    frac_w, frac_v : int
        Fraction bits of the master weight and of the velocity, each 0 to 31, differing by at
        most 8 (default 24 and 24, ``golden.update``).

    Attributes
    ----------
    i : In(stream.Signature(UPDATE_IN))
        Per element: ``grad_mant`` (signed 32-bit ``S``) and ``grad_exp`` (unsigned 16-bit
        ``ea``) of the gradient's RAW record, ``w`` and ``v`` (signed 32-bit).
    o : Out(stream.Signature(UPDATE_OUT))
        Per element, in order: the new ``w`` and ``v`` (signed 32-bit, never ``-2**31``).
    lr, momentum, weight_decay : In(HYPER)
        Hyper-parameter registers (``mant`` unsigned 16-bit, ``shift`` unsigned 6-bit; value
        ``mant * 2**-shift``), sampled with each element as it is accepted.

    Raises
    ------
    TypeError
        If ``frac_w`` or ``frac_v`` is not an integer.
    ValueError
        If either is out of range, or they differ by more than 8.
    """

    latency = 6  #: cycles from acceptance on ``i`` to valid on ``o`` (no back-pressure)

    def __init__(self, frac_w: int = 24, frac_v: int = 24):
        for name, val in (("frac_w", frac_w), ("frac_v", frac_v)):
            if isinstance(val, bool) or not isinstance(val, int):
                reject(self, TypeError(f"{name} must be an integer, not {val!r}"))
            if not 0 <= val < WORD_W:
                reject(self, ValueError(f"{name} must be in [0, {WORD_W - 1}], not {val!r}"))
        if abs(frac_w - frac_v) > _MAX_FRAC_DIFF:
            reject(self, ValueError(f"frac_w and frac_v may differ by at most "
                                    f"{_MAX_FRAC_DIFF}, not {frac_w} and {frac_v}"))
        self.frac_w = frac_w
        self.frac_v = frac_v
        super().__init__({
            "i": In(stream.Signature(UPDATE_IN)),
            "o": Out(stream.Signature(UPDATE_OUT)),
            "lr": In(HYPER),
            "momentum": In(HYPER),
            "weight_decay": In(HYPER),
        })

    def elaborate(self, platform):
        m = Module()
        fw, fv = self.frac_w, self.frac_v
        # Net right shifts: decay term by wd.shift + (fw - fv), step by lr.shift + (fv - fw);
        # a negative constant becomes a left pre-shift of the product.
        wd_pre, wd_add = max(0, fv - fw), fw - fv + max(0, fv - fw)
        lr_pre, lr_add = max(0, fw - fv), fv - fw + max(0, fw - fv)

        en = Signal()
        valid = [Signal(name=f"v{k}") for k in range(1, 6)]
        m.d.comb += [
            en.eq(~self.o.valid | self.o.ready),
            self.i.ready.eq(en),
        ]
        with m.If(en):
            m.d.sync += valid[0].eq(self.i.valid)
            for a, b in zip(valid, valid[1:], strict=False):
                m.d.sync += b.eq(a)
            m.d.sync += self.o.valid.eq(valid[-1])

        p = self.i.payload

        # s1: gradient alignment (d = ea - (274 - frac_v): left shift by d >= 0, rounding right
        # shift by -d); the two products.
        s = p.grad_mant
        d = Signal(signed(REC_EXP_W + 2))
        m.d.comb += d.eq(p.grad_exp - (_ACC_SHIFT - fv))
        dneg = d[-1]
        # left: s << d fits in 32 bits iff s's top d + 1 bits are equal (ok[d]); d >= 32 only
        # for s == 0; a fitting -2**31 becomes -SAT
        left_amt = d[:5]
        ok = Signal(WORD_W)
        okb = [Const(1, 1)]
        for k in range(1, WORD_W):
            okb.append(okb[-1] & ~(s[WORD_W - 1 - k] ^ s[WORD_W - 1]))
        m.d.comb += ok.eq(Cat(*okb))
        fits = Signal()
        m.d.comb += fits.eq(Mux(d[5:].any(), ok[-1] & ~s[-1], ok.bit_select(left_amt, 1)))
        y = Signal(WORD_W)
        m.d.comb += y.eq(s << left_amt)
        y_min = y[-1] & ~y[:-1].any()
        g_left = Mux(fits, Cat(y[0] | y_min, y[1:]).as_signed(), Mux(s[-1], -_SAT, _SAT))
        # right (|result| <= 2**30: never saturates)
        right_amt = Signal(REC_EXP_W + 2)
        m.d.comb += right_amt.eq(-d)
        g_q, g_up = _rne(m, s, right_amt, "s0_gr")
        s1_g = Signal(signed(WORD_W))
        s1_gup = Signal()
        s1_pm = Signal(signed(WORD_W + HP_MANT_W + 1))
        s1_pw = Signal(signed(WORD_W + HP_MANT_W + 1))
        s1_w = Signal(signed(WORD_W))
        s1_lr = Signal(HYPER)
        s1_ms = Signal(HP_SHIFT_W)
        s1_ws = Signal(HP_SHIFT_W)
        with m.If(en):
            m.d.sync += [
                s1_g.eq(Mux(dneg, g_q, g_left)),
                s1_gup.eq(dneg & g_up),
                s1_pm.eq(self.momentum.mant * p.v),
                s1_pw.eq(self.weight_decay.mant * p.w),
                s1_w.eq(p.w),
                s1_lr.eq(self.lr),
                s1_ms.eq(self.momentum.shift),
                s1_ws.eq(self.weight_decay.shift),
            ]

        # s2: round the products to the velocity's LSB (increments kept apart).
        mv_q, mv_up = _rne(m, s1_pm, s1_ms, "s1_mv")
        pw = Signal(signed(len(s1_pw) + wd_pre))
        m.d.comb += pw.eq(s1_pw << wd_pre)
        wd_amt = Signal(HP_SHIFT_W + 1)
        m.d.comb += wd_amt.eq(s1_ws + wd_add)
        wd_q, wd_up = _rne(m, pw, wd_amt, "s1_wd")
        s2_g = Signal(signed(WORD_W))
        s2_mv = Signal.like(mv_q)
        s2_wd = Signal.like(wd_q)
        s2_up = Signal(2)  # the three increments, at most 3
        s2_w = Signal(signed(WORD_W))
        s2_lr = Signal(HYPER)
        with m.If(en):
            m.d.sync += [
                s2_g.eq(s1_g),
                s2_mv.eq(mv_q),
                s2_wd.eq(wd_q),
                s2_up.eq(mv_up + wd_up + s1_gup),
                s2_w.eq(s1_w),
                s2_lr.eq(s1_lr),
            ]

        # s3: the new velocity.
        total = Signal(signed(max(len(s2_mv), len(s2_wd)) + 2))
        m.d.comb += total.eq(s2_mv + s2_g + s2_wd + s2_up)
        s3_v = Signal(signed(WORD_W))
        s3_w = Signal(signed(WORD_W))
        s3_lr = Signal(HYPER)
        with m.If(en):
            m.d.sync += [
                s3_v.eq(_sat(m, total, "s2_vsat")),
                s3_w.eq(s2_w),
                s3_lr.eq(s2_lr),
            ]

        # s4: lr * v'.
        s4_pl = Signal(signed(WORD_W + HP_MANT_W + 1))
        s4_v = Signal(signed(WORD_W))
        s4_w = Signal(signed(WORD_W))
        s4_ls = Signal(HP_SHIFT_W)
        with m.If(en):
            m.d.sync += [
                s4_pl.eq(s3_lr.mant * s3_v),
                s4_v.eq(s3_v),
                s4_w.eq(s3_w),
                s4_ls.eq(s3_lr.shift),
            ]

        # s5: round the step to the master's LSB (increment kept apart).
        pl = Signal(signed(len(s4_pl) + lr_pre))
        m.d.comb += pl.eq(s4_pl << lr_pre)
        lr_amt = Signal(HP_SHIFT_W + 1)
        m.d.comb += lr_amt.eq(s4_ls + lr_add)
        st_q, st_up = _rne(m, pl, lr_amt, "s4_step")
        s5_q = Signal.like(st_q)
        s5_up = Signal()
        s5_v = Signal(signed(WORD_W))
        s5_w = Signal(signed(WORD_W))
        with m.If(en):
            m.d.sync += [s5_q.eq(st_q), s5_up.eq(st_up), s5_v.eq(s4_v), s5_w.eq(s4_w)]

        # s6: the new master, into the output register.
        diff = Signal(signed(max(len(s5_q), WORD_W) + 2))
        m.d.comb += diff.eq(s5_w - s5_q - s5_up)
        with m.If(en):
            m.d.sync += [
                self.o.payload.w.eq(_sat(m, diff, "s5_wsat")),
                self.o.payload.v.eq(s5_v),
            ]

        return m
