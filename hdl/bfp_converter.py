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

``lanes = 16`` (the default): a pipeline, one block per cycle, all stages stalling together when
the output is not taken:

====== ==================================================================
stage  work
====== ==================================================================
``s1`` ``|S|``, sign, leading-one position ``p``, ``t = p + ea``, flush
``s2`` maximum of ``t`` over the 16 lanes, ``E``
``s3`` shift amount, barrel shift, guard and sticky bits
``s4`` round half to even, clamp to 127, sign: the output register
====== ==================================================================

Latency: a block accepted on ``i`` in cycle ``n`` is valid on ``o`` in cycle ``n + 4``.

``lanes = L < 16`` (8, 4, 2 or 1; ``N = 16 / L`` groups of ``L`` values per block) saves area:
the per-value logic exists ``L`` times instead of 16 and a block takes ``N`` cycles. It splits the
work differently from the pipeline: a value is first *normalized* (``|S|`` as ``1.frac`` with 7
bits below the leading one, plus ``low``, whether any bit further below is set), so that the
block-dependent second half only shifts 8 bits. With ``d = E + 147 - t = r - p``, ``|S| << 6``
shifted right by ``r`` is ``1.frac`` shifted right by ``d``, ``low`` joining the sticky bits;
``d < 0`` happens only in a saturated block (127), ``d >= 8`` leaves only sticky bits. Three
registers advance together by one *step*:

* ``A`` holds an accepted input block. Each step, phase 1 reads group ``g`` of ``A`` (an
  ``N``-to-1 multiplexer per lane), computes ``|S|``, sign, ``p``, ``t``, the flush and the
  normalized value, accumulates the running maximum of ``t`` and pushes the group into ``B``.
  After group ``N - 1`` the block exponent ``E`` is latched and ``A`` is free; a new block can be
  accepted in that same cycle.
* ``B`` is a shift register of the 16 normalized values (``frac``, ``low``, sign, ``t``,
  survivor flag: 21 bits) with a valid bit per group; it moves down by one group per step. Each
  step, phase 2 shifts, rounds and clamps the bottom group (with ``E`` of its block) and pushes
  the ``L`` mantissas into the output register, itself a shift register; after the block's last
  group ``o.valid`` rises.
* A step happens in every cycle except when ``B``'s bottom group is valid and the output register
  holds a block that is not being taken (``o.valid & ~o.ready``): the payload on ``o`` never
  changes while it waits.

Throughput: one block every ``N`` cycles. Latency: a block accepted in cycle ``n`` is valid on
``o`` in cycle ``n + 2N + 1`` when the output is not back-pressured. ``BFPConverter.interval``
and ``BFPConverter.latency`` give both numbers for an instance.

In both forms ``i.ready`` depends combinationally on ``o.ready`` (a block is accepted in the
cycle the output frees room); ``o.valid`` and ``o.payload`` are registers.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import ACC_BLOCK, ACC_EXP_W, ACC_W, BFP_BLOCK, BLOCK, reject

__all__ = ["BFPConverter", "LANES"]

LANES = (16, 8, 4, 2, 1)  #: allowed values of ``BFPConverter(lanes=...)``

_T_FLUSH = 148  # t = p + ea below this is |v| < 2**-126
_T_BIAS = 147  # E = t - 147
_E_SAT = 254  # E for e = 127
_MAG_W = ACC_W  # |S| <= 2**31 fits in 32 unsigned bits
_X_W = _MAG_W + 7  # |S| << 6, plus one bit below for the guard bit
_SHIFT_CAP = 40  # shifting _X_W bits by 40 or more leaves nothing: same result as 40
_T_W = ACC_EXP_W + 1


def _front(m, s, ea, name):
    """``(|S|, S < 0, t, survives, p)`` of one value, combinational."""
    mag = Signal(_MAG_W, name=f"{name}_mag")
    lead = Signal(range(_MAG_W), name=f"{name}_lead")
    t = Signal(_T_W, name=f"{name}_t")
    live = Signal(name=f"{name}_live")
    m.d.comb += mag.eq(Mux(s < 0, -s, s))
    for b in range(_MAG_W):  # last assignment wins: the highest set bit
        with m.If(mag[b]):
            m.d.comb += lead.eq(b)
    m.d.comb += [
        t.eq(lead + ea),
        live.eq((mag != 0) & (t >= _T_FLUSH)),
    ]
    return mag, s < 0, t, live, lead


def _max_tree(m, values, name):
    """Maximum of unsigned ``_T_W``-bit values, a balanced tree of comparators."""
    level = list(values)
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            a = Signal(_T_W, name=f"{name}{depth}_{j // 2}")
            m.d.comb += a.eq(Mux(level[j] > level[j + 1], level[j], level[j + 1]))
            nxt.append(a)
        level = nxt + level[len(level) & ~1:]  # an odd one out goes up unchanged
        depth += 1
    return level[0]


def _block_exp(tmax):
    """Biased block exponent ``E`` from the largest surviving ``t`` (0 if none survives)."""
    return Mux(tmax < _T_FLUSH, 0, Mux(tmax - _T_BIAS > _E_SAT, _E_SAT, tmax - _T_BIAS))


def _shift(m, exp, mag, ea, name):
    """``(q, guard, sticky, saturated)``: ``|S| << 6`` shifted right by ``E + 147 - ea``."""
    r = Signal(signed(ACC_EXP_W + 2), name=f"{name}_r")
    amt = Signal(range(_SHIFT_CAP + 1), name=f"{name}_amt")
    x = Signal(_X_W, name=f"{name}_x")
    qg = Signal(_X_W, name=f"{name}_qg")
    mask = Signal(_SHIFT_CAP, name=f"{name}_mask")
    m.d.comb += [
        r.eq(exp + _T_BIAS - ea),
        amt.eq(Mux(r > _SHIFT_CAP, _SHIFT_CAP, r[:6])),
        x.eq(mag << 7),
        qg.eq(x >> amt),
        mask.eq((Const(1, unsigned(_SHIFT_CAP + 1)) << amt) - 1),
    ]
    return qg[1:8], qg[0], (x & mask) != 0, (r < 0) | (qg[8:] != 0)


def _round(m, q, guard, sticky, sat, neg, live, name):
    """The int8 mantissa: round half to even, clamp to 127, sign, 0 for a flushed value."""
    up = guard & (sticky | q[0])
    rounded = Signal(8, name=f"{name}_rounded")
    mag = Signal(7, name=f"{name}_mag")
    m.d.comb += [
        rounded.eq(q + up),
        mag.eq(Mux(sat | rounded[7], 127, rounded[:7])),
    ]
    return Mux(live, Mux(neg, -mag, mag), 0)


# A value of the serial form between its two phases: the 7 bits of |S| below its leading one
# (zeros past the end), whether any bit below those is set, sign, t, survives the flush.
_NORM = data.StructLayout({
    "frac": unsigned(7),
    "low": unsigned(1),
    "neg": unsigned(1),
    "t": unsigned(_T_W),
    "live": unsigned(1),
})


def _normalize(m, s, ea, name):
    """One value as a :data:`_NORM` (combinational)."""
    mag, neg, t, live, lead = _front(m, s, ea, name)
    top = Signal(_MAG_W, name=f"{name}_top")  # |S| with its leading one moved to bit 31
    m.d.comb += top.eq(mag << ~lead)  # ~p is 31 - p
    # A bit k below the 8 kept ones is set iff bit k and one at k + 8 or above are set.
    above = [Signal(name=f"{name}_above{k}") for k in range(_MAG_W)]
    for k in reversed(range(_MAG_W)):
        m.d.comb += above[k].eq(mag[k] | above[k + 1] if k + 1 < _MAG_W else mag[k])
    low = Signal(name=f"{name}_low")
    m.d.comb += low.eq(Cat(mag[k] & above[k + 8] for k in range(_MAG_W - 8)).any())
    out = Signal(_NORM, name=f"{name}_norm")
    m.d.comb += [
        out.frac.eq(top[_MAG_W - 8:_MAG_W - 1]),
        out.low.eq(low),
        out.neg.eq(neg),
        out.t.eq(t),
        out.live.eq(live),
    ]
    return out


def _denormalize(m, exp, v, name):
    """The int8 mantissa of a :data:`_NORM` value in a block with exponent ``exp``.

    With ``d = E + 147 - t``, ``|S| << 6 >> (E + 147 - ea)`` is ``1.frac`` (8 bits) shifted right
    by ``d``; ``low`` joins the sticky bits. ``d < 0`` happens only in a saturated block and
    gives 127; shifts of 8 or more leave only sticky bits, as a shift of 8 does.
    """
    d = Signal(signed(_T_W + 2), name=f"{name}_d")
    amt = Signal(range(9), name=f"{name}_amt")
    n = Signal(8, name=f"{name}_n")
    qg = Signal(8, name=f"{name}_qg")
    mask = Signal(8, name=f"{name}_mask")
    m.d.comb += [
        d.eq(exp + _T_BIAS - v.t),
        amt.eq(Mux(d > 8, 8, d[:4])),
        n.eq(Cat(v.frac, 1)),
        qg.eq(n >> amt),
        mask.eq((Const(1, unsigned(9)) << amt) - 1),
    ]
    sticky = v.low | ((n & mask) != 0)
    return _round(m, qg[1:8], qg[0], sticky, d < 0, v.neg, v.live, name)


class BFPConverter(wiring.Component):
    """Accumulator block to BFP8 block (module docstring for the algorithm and the timing).

    Parameters
    ----------
    lanes : int
        Values processed per cycle: 16 (default; pipelined, one block per cycle, latency 4),
        or 8, 4, 2, 1 (one block every ``16 // lanes`` cycles, about ``lanes / 16`` of the
        per-value logic).

    Attributes
    ----------
    i : In(stream.Signature(ACC_BLOCK))
        16 accumulators: ``mant`` (signed 32-bit ``S``) and ``exp`` (unsigned 10-bit ``ea``).
    o : Out(stream.Signature(BFP_BLOCK))
        The BFP8 block: ``exp`` (biased ``E``) and ``mant`` (16 int8 mantissas).
    lanes : int
        The ``lanes`` parameter.
    interval : int
        Cycles per block at full rate, ``16 // lanes`` (the class attribute is the default's 1).
    latency : int
        Cycles from acceptance on ``i`` to valid on ``o`` without back-pressure: 4 for
        ``lanes = 16`` (the class attribute), ``2 * interval + 1`` otherwise.
    """

    i: In(stream.Signature(ACC_BLOCK))
    o: Out(stream.Signature(BFP_BLOCK))

    latency = 4  #: cycles from acceptance on ``i`` to valid on ``o`` (no back-pressure)
    interval = 1  #: cycles per block at full rate

    def __init__(self, lanes: int = 16):
        if isinstance(lanes, bool) or not isinstance(lanes, int):
            reject(self, TypeError(f"Lanes must be an integer, not {lanes!r}"))
        if lanes not in LANES:
            reject(self, ValueError(f"Lanes must be 16, 8, 4, 2 or 1, not {lanes!r}"))
        self._lanes = lanes
        self.interval = BLOCK // lanes
        self.latency = 4 if lanes == BLOCK else 2 * self.interval + 1
        super().__init__()

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        if self._lanes == BLOCK:
            self._elaborate_pipeline(m)
        else:
            self._elaborate_serial(m)
        return m

    def _elaborate_pipeline(self, m):
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
        s1_t = [Signal(_T_W, name=f"s1_t{k}") for k in range(BLOCK)]
        s1_live = [Signal(name=f"s1_live{k}") for k in range(BLOCK)]
        for k in range(BLOCK):
            ea = self.i.payload.exp[k]
            mag, neg, t, live, _ = _front(m, self.i.payload.mant[k], ea, f"s0_{k}")
            with m.If(en):
                m.d.sync += [
                    s1_mag[k].eq(mag),
                    s1_neg[k].eq(neg),
                    s1_ea[k].eq(ea),
                    s1_t[k].eq(t),
                    s1_live[k].eq(live),
                ]

        # s2: block exponent.
        tmax = _max_tree(m, [Mux(s1_live[k], s1_t[k], 0) for k in range(BLOCK)], "s1_max")
        s2_exp = Signal(8)
        s2_mag = [Signal(_MAG_W, name=f"s2_mag{k}") for k in range(BLOCK)]
        s2_neg = [Signal(name=f"s2_neg{k}") for k in range(BLOCK)]
        s2_ea = [Signal(ACC_EXP_W, name=f"s2_ea{k}") for k in range(BLOCK)]
        s2_live = [Signal(name=f"s2_live{k}") for k in range(BLOCK)]
        with m.If(en):
            m.d.sync += s2_exp.eq(_block_exp(tmax))
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
            q, guard, sticky, sat = _shift(m, s2_exp, s2_mag[k], s2_ea[k], f"s2_{k}")
            with m.If(en):
                m.d.sync += [
                    s3_q[k].eq(q),
                    s3_guard[k].eq(guard),
                    s3_sticky[k].eq(sticky),
                    s3_sat[k].eq(sat),
                    s3_neg[k].eq(s2_neg[k]),
                    s3_live[k].eq(s2_live[k]),
                ]

        # s4: round half to even, clamp, sign.
        with m.If(en):
            m.d.sync += self.o.payload.exp.eq(s3_exp)
        for k in range(BLOCK):
            mant = _round(m, s3_q[k], s3_guard[k], s3_sticky[k], s3_sat[k], s3_neg[k],
                          s3_live[k], f"s3_{k}")
            with m.If(en):
                m.d.sync += self.o.payload.mant[k].eq(mant)

    def _elaborate_serial(self, m):
        L, N = self._lanes, self.interval

        # Register A: the accepted block, read one group of L values per step.
        a_blk = Signal(ACC_BLOCK)
        a_full = Signal()
        a_grp = Signal(range(N))
        t_acc = Signal(_T_W)  # running maximum of t over the survivors read so far

        # Register B: 16 normalized values shifting down by one group per step; group 0 is at
        # the bottom.
        b = [Signal(_NORM, name=f"b{k}") for k in range(BLOCK)]
        b_valid = Signal(N)  # per group
        b_exp = Signal(8)  # E of the block whose groups reach the bottom next
        o_grp = Signal(range(N))  # groups of the next block already in the output register

        step = Signal()
        a_last = Signal()
        m.d.comb += [
            step.eq(~b_valid[0] | ~self.o.valid | self.o.ready),
            a_last.eq(a_full & (a_grp == N - 1)),
            self.i.ready.eq(~a_full | (a_last & step)),
        ]

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # Phase 1: group a_grp of A -> normalized -> top of B, running maximum of t.
        fronts, ts = [], []
        for j in range(L):
            s = Signal(signed(ACC_W), name=f"a_s{j}")
            ea = Signal(ACC_EXP_W, name=f"a_ea{j}")
            m.d.comb += [
                s.eq(Array(a_blk.mant[g * L + j] for g in range(N))[a_grp]),
                ea.eq(Array(a_blk.exp[g * L + j] for g in range(N))[a_grp]),
            ]
            fronts.append(_normalize(m, s, ea, f"a_{j}"))
            ts.append(Mux(fronts[-1].live, fronts[-1].t, 0))
        tnew = _max_tree(m, ts + [t_acc], "a_max")

        # Phase 2: bottom group of B -> top of the output register.
        mants = [_denormalize(m, b_exp, b[j], f"b_{j}") for j in range(L)]

        with m.If(step):
            top = BLOCK - L
            m.d.sync += [b[k].eq(b[k + L]) for k in range(top)]
            m.d.sync += [b[top + j].eq(front) for j, front in enumerate(fronts)]
            m.d.sync += b_valid.eq(b_valid >> 1 | a_full << (N - 1))

            with m.If(a_full):
                m.d.sync += [
                    a_grp.eq(Mux(a_last, 0, a_grp + 1)),
                    t_acc.eq(Mux(a_last, 0, tnew)),
                ]
                with m.If(a_last):
                    m.d.sync += [
                        b_exp.eq(_block_exp(tnew)),
                        a_full.eq(0),
                    ]

            with m.If(b_valid[0]):
                for k in range(top):
                    m.d.sync += self.o.payload.mant[k].eq(self.o.payload.mant[k + L])
                for j, mant in enumerate(mants):
                    m.d.sync += self.o.payload.mant[top + j].eq(mant)
                m.d.sync += o_grp.eq(Mux(o_grp == N - 1, 0, o_grp + 1))
                with m.If(o_grp == N - 1):
                    m.d.sync += [
                        self.o.payload.exp.eq(b_exp),
                        self.o.valid.eq(1),
                    ]

        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                a_blk.eq(self.i.payload),
                a_full.eq(1),
            ]
