"""Sparsity filter with statistics: zeroes small BFP8 values and counts what it saw.

Bit-exact with ``golden.sparsity`` (``filter`` and ``stats``), whose definitions this restates:

Threshold
    ``tau = tm * 2**(te - 133)``, ``te`` and ``tm`` unsigned 8-bit inputs the host sets exactly
    (``golden.sparsity.Threshold``; ``tm = 0`` drops nothing). An element ``m`` of a block with
    exponent ``E`` is dropped iff ``|m| << clamp(E - te, 0, 8) < tm << clamp(te - E, 0, 8)``
    (two 16-bit operands).
Filter
    Dropped mantissas become 0; a block left with no nonzero mantissa gets ``E = 0``; the others
    keep their ``E``.
Statistics (of the unfiltered input)
    ``values`` (elements seen), ``zeros`` (zero input mantissas), ``filtered_zeros`` (zero
    output mantissas) and ``hist``: 32 counters of the nonzero input elements by
    ``clamp(E + floor(log2|m|) - base, 0, 31)``, ``base`` an unsigned 8-bit input. Every counter
    is ``count_w`` (32) bits and saturates at ``2**count_w - 1``.

The threshold and ``base`` are sampled with each block as it is accepted (hold them stable for a
tensor). A pulse on ``clear`` restarts the statistics: after it they count exactly the blocks
accepted in the cycle of the pulse and later.

Hardware: the drop test is rearranged to one 8-bit comparison per element against a per-block
threshold (``|m| < ceil(tm / 2**up)`` or ``|m| < min(tm << down, 256)``); the histogram bin is a
per-block offset ``clamp(E - base, -8, 32)`` plus the element's ``floor(log2|m|)``, clamped.
The statistics go through a two-stage pipeline into saturating counters: stage 1 counts the
nonzero elements of a lane group per ``floor(log2|m|)`` (8 counts) and stage 2 rotates those
counts into the 32 bins by the offset (bins 0 and 31 take the sums of the clamped ends).

Timing, ``lanes = 16`` (the default): the filter takes one block per cycle with a latency of 1
(the output register). A block accepted in cycle ``n`` is in the counters from cycle ``n + 3``
on; ``stats_busy`` is high while accepted blocks are still on their way to the counters. A
clear pulse in cycle ``c`` zeroes the counters from cycle ``c + 2`` on (the blocks accepted in
``c`` and later then add from ``c + 3``).

Timing, ``lanes < 16`` (``P = 16 / lanes`` cycles per block): the output register is the work
register. A block is filtered in place there, ``lanes`` elements per cycle for both the filter
and the statistics: lane group ``j`` (elements ``lanes * j`` to ``lanes * (j + 1) - 1``) in
cycle ``n + j`` for a block accepted in cycle ``n`` (group 0 straight from ``i.payload``).
``i.ready`` is high while no block is being filtered and the output register is empty or being
read (combinationally on ``o.ready``, as with 16 lanes); ``o.valid`` rises in cycle ``n + P``.
So with ``o`` read at once a block is accepted every ``P`` cycles with a latency of ``P``; a
block waiting on ``o`` holds the input (no further buffering). Group ``j`` is in the counters
from cycle ``n + j + 3`` on, the whole block from ``n + P + 2``. A clear pulse in a cycle
``n + 1 .. n + P - 1`` (a block being filtered) waits until that block's last group has been
taken and acts as if pulsed in cycle ``n + P``: that block, accepted before the pulse, is not
counted, the blocks accepted from the pulse on are (none is accepted before ``n + P``).
``stats_busy`` is high while a block is being filtered, a clear waits, or a lane group or clear
is in the statistics pipeline: once it is low the counters are final.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import BFP_BLOCK, BLOCK, popcount, reject

__all__ = ["LANES", "SparsityFilter"]

HIST_BINS = 32  #: histogram counters (``golden.sparsity.HIST_BINS``)
COUNT_W = 32  #: statistics counter width (``golden.sparsity.COUNT_W``)
LANES = (16, 8, 4, 2, 1)  #: allowed ``lanes`` (values processed per cycle)
_ROTATE_LANES = 8  #: from this many lanes the histogram counts per lead and rotates
_SHIFT_CAP = 8  #: comparison shifts clamp here without changing the outcome


class SparsityFilter(wiring.Component):
    """Threshold filter on BFP8 blocks with the controller's statistics (module docstring).

    Parameters
    ----------
    count_w : int
        Width of every statistics counter, 1 to 64 (the hardware uses 32; narrower counters
        exist so that tests can reach saturation).
    lanes : int
        Elements processed per cycle, one of 16, 8, 4, 2, 1 (keyword only). 16 takes one block
        per cycle; fewer lanes take one block every ``16 / lanes`` cycles with a smaller filter
        and histogram datapath (module docstring, timing).

    Attributes
    ----------
    i : In(stream.Signature(BFP_BLOCK))
        Blocks to filter (canonical BFP8).
    o : Out(stream.Signature(BFP_BLOCK))
        Filtered blocks.
    te, tm : In(8)
        Threshold exponent and mantissa registers.
    base : In(8)
        Histogram base register.
    clear : In(1)
        Restart the statistics (a one-cycle pulse, typically at a tensor's start).
    values, zeros, filtered_zeros : Out(count_w)
        Statistics counters.
    hist : Out(data.ArrayLayout(count_w, 32))
        Exponent histogram, bin 0 in the low bits.
    stats_busy : Out(1)
        Accepted blocks not yet counted (with ``lanes < 16`` also a clear not yet applied).

    Raises
    ------
    ValueError
        If ``count_w`` is not an integer from 1 to 64, or ``lanes`` not one of :data:`LANES`.
    """

    def __init__(self, count_w: int = COUNT_W, *, lanes: int = BLOCK):
        if isinstance(count_w, bool) or not isinstance(count_w, int) \
                or not 1 <= count_w <= 64:
            reject(self, ValueError(
                f"Counter width must be an integer in [1, 64], not {count_w!r}"))
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in LANES:
            reject(self, ValueError(
                f"Lanes must be one of {', '.join(map(str, LANES))}, not {lanes!r}"))
        self._count_w = count_w
        self._lanes = lanes
        super().__init__({
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "te": In(8),
            "tm": In(8),
            "base": In(8),
            "clear": In(1),
            "values": Out(count_w),
            "zeros": Out(count_w),
            "filtered_zeros": Out(count_w),
            "hist": Out(data.ArrayLayout(unsigned(count_w), HIST_BINS)),
            "stats_busy": Out(1),
        })

    @property
    def count_w(self) -> int:
        return self._count_w

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        L = self._lanes
        P = BLOCK // L  # cycles per block
        cw = self._count_w

        # ---- where the lanes come from: the input (lanes = 16), else the input or the output
        # register (the block being filtered in place)
        if L == BLOCK:
            exp, te, tm, base = self.i.payload.exp, self.te, self.tm, self.base
            lane_mant = [self.i.payload.mant[k] for k in range(BLOCK)]
            m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
            emit = Signal()  # a lane group enters the statistics
            emit_clear = Signal()
            m.d.comb += [emit.eq(self.i.valid & self.i.ready), emit_clear.eq(self.clear)]
        else:
            # The output register is the work register: a block is filtered in place, lane
            # group 0 straight from the input in the cycle it is accepted.
            w_busy = Signal()  # groups 1 .. P - 1 of the block in o.payload still to do
            w_ph = Signal(range(P))
            w_te, w_tm, w_base = Signal(8), Signal(8), Signal(8)
            w_any = Signal()  # a kept nonzero in the groups done so far
            pend_clear = Signal()  # a clear waits behind the block in work
            accept = Signal()
            clr_req = Signal()
            emit = Signal()
            emit_clear = Signal()
            src = self.o.payload
            m.d.comb += [
                self.i.ready.eq(~w_busy & (~self.o.valid | self.o.ready)),
                accept.eq(self.i.valid & self.i.ready),
                clr_req.eq(self.clear | pend_clear),
                emit.eq(accept | w_busy),
                emit_clear.eq(~w_busy & clr_req),
            ]
            m.d.sync += pend_clear.eq(w_busy & clr_req)
            exp = Mux(w_busy, src.exp, self.i.payload.exp)
            te = Mux(w_busy, w_te, self.te)
            tm = Mux(w_busy, w_tm, self.tm)
            base = Mux(w_busy, w_base, self.base)
            lane_mant = [Mux(w_busy, src.mant[k], self.i.payload.mant[k]) for k in range(L)]
            rest = [Mux(w_busy, src.mant[k], self.i.payload.mant[k]) for k in range(L, BLOCK)]

        # ---- per-block threshold: drop iff |m| < thr (module docstring rule, rearranged)
        # |m| << up < tm  <=>  |m| < ceil(tm / 2**up);  |m| < tm << down, |m| <= 128.
        d = Signal(signed(10))
        up = Signal(range(_SHIFT_CAP + 1))  # clamp(E - te, 0, 8)
        down = Signal(range(_SHIFT_CAP + 1))  # clamp(te - E, 0, 8)
        thr = Signal(9)
        m.d.comb += [
            d.eq(exp - te),
            up.eq(Mux(d > _SHIFT_CAP, _SHIFT_CAP, Mux(d < 0, 0, d[:4]))),
            down.eq(Mux(d < -_SHIFT_CAP, _SHIFT_CAP, Mux(d > 0, 0, (-d)[:4]))),
        ]
        ceil_tm = Signal(9)
        low_mask = Signal(8)
        wide = Signal(17)
        m.d.comb += [
            low_mask.eq(~(Const(0xFF, 8) << up)[:8]),
            ceil_tm.eq((tm >> up) + ((tm & low_mask) != 0)),
            wide.eq(tm << down),
            thr.eq(Mux(down != 0, Mux(wide[9:] != 0, 256, wide[:9]), ceil_tm)),
        ]
        # Histogram offset of the block: clamp(E - base, -8, 32) keeps clamp(. + lead, 0, 31).
        db = Signal(signed(10))
        dbc = Signal(signed(7))
        m.d.comb += [
            db.eq(exp - base),
            dbc.eq(Mux(db < -8, -8, Mux(db > HIST_BINS, HIST_BINS, db[:7]))),
        ]

        nz_in = Signal(L)
        nz_out = Signal(L)
        kept = []
        onehot = [[] for _ in range(8)]  # onehot[l][k]: lane k is nonzero with floor(log2|m|) = l
        bins = []  # (fewer lanes) bin of each lane
        for k in range(L):
            mant = lane_mant[k]
            sign = mant[7]
            mag = Signal(8, name=f"mag{k}")
            drop = Signal(name=f"drop{k}")
            m.d.comb += [
                mag.eq((mant.as_unsigned() ^ sign.replicate(8)) + sign),
                drop.eq(mag < thr),
                nz_in[k].eq(mant != 0),
                nz_out[k].eq((mant != 0) & ~drop),
            ]
            kept.append(Mux(drop, 0, mant))
            if L >= _ROTATE_LANES:
                for b in range(8):
                    onehot[b].append(mag[b] & (mag[b + 1:] == 0) if b < 7 else mag[7])
            else:
                lead = Signal(3, name=f"lead{k}")
                for b in range(8):  # last assignment wins: the leading one
                    with m.If(mag[b]):
                        m.d.comb += lead.eq(b)
                rel = Signal(signed(7), name=f"rel{k}")
                b5 = Signal(5, name=f"bin{k}")
                m.d.comb += [
                    rel.eq(dbc + lead),
                    b5.eq(Mux(rel < 0, 0, Mux(rel > HIST_BINS - 1, HIST_BINS - 1, rel[:5]))),
                ]
                bins.append(b5)

        # ---- filter output register
        if L == BLOCK:
            with m.If(self.i.ready):
                m.d.sync += self.o.valid.eq(self.i.valid)
                with m.If(self.i.valid):
                    m.d.sync += self.o.payload.exp.eq(Mux(nz_out != 0, exp, 0))
                    for k in range(BLOCK):
                        m.d.sync += self.o.payload.mant[k].eq(kept[k])
        else:
            with m.If(self.o.ready):
                m.d.sync += self.o.valid.eq(0)
            with m.If(emit):
                m.d.sync += [
                    self.o.payload.mant.eq(Cat(*rest, *kept)),
                    w_any.eq(Mux(w_busy, w_any, 0) | (nz_out != 0)),
                ]
            with m.If(accept):
                m.d.sync += [
                    w_busy.eq(1),
                    w_ph.eq(1),
                    self.o.payload.exp.eq(self.i.payload.exp),
                    w_te.eq(self.te),
                    w_tm.eq(self.tm),
                    w_base.eq(self.base),
                ]
            with m.If(w_busy):
                m.d.sync += w_ph.eq(w_ph + 1)
                with m.If(w_ph == P - 1):
                    m.d.sync += [
                        w_busy.eq(0),
                        self.o.valid.eq(1),
                        self.o.payload.exp.eq(Mux(w_any | (nz_out != 0), src.exp, 0)),
                    ]

        # ---- statistics, stage 1. Many lanes: the group's nonzero elements counted by
        # floor(log2|m|) (8 counts); few lanes: each lane's bin.
        s1_valid, s1_clear = Signal(), Signal()
        s1_nz_in = Signal(L)
        s1_nz_out = Signal(L)
        m.d.sync += [
            s1_valid.eq(emit),
            s1_clear.eq(emit_clear),
            s1_nz_in.eq(nz_in),
            s1_nz_out.eq(nz_out),
        ]
        s2_valid = Signal()
        s2_count = [Signal(range(L + 1), name=f"s2_count{i}") for i in range(HIST_BINS)]
        s2_zeros = Signal(range(L + 1))
        s2_fzeros = Signal(range(L + 1))
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_zeros.eq(popcount([~s1_nz_in[k] for k in range(L)])),
            s2_fzeros.eq(popcount([~s1_nz_out[k] for k in range(L)])),
        ]
        if L >= _ROTATE_LANES:
            self._rotate_bins(m, L, dbc, onehot, s2_count)
        else:
            s1_bin = [Signal(5, name=f"s1_bin{k}") for k in range(L)]
            m.d.sync += [s1_bin[k].eq(bins[k]) for k in range(L)]
            # ---- stage 2: per-bin counts of the group
            for i in range(HIST_BINS):
                hits = [s1_nz_in[k] & (s1_bin[k] == i) for k in range(L)]
                m.d.sync += s2_count[i].eq(popcount(hits))

        # ---- stage 3: saturating counters. A clear in stage 1 zeroes them (the group in stage 2
        # is older than the clear and is dropped); otherwise they add the stage-2 group. The sum
        # can only overflow once the bits above the low ``lw`` (where any increment <= lanes
        # fits) are all ones: on overflow those hold and the low bits become ones.
        hist = [Signal(cw, name=f"hist{i}") for i in range(HIST_BINS)]
        m.d.comb += self.hist.eq(Cat(hist))
        lw = min(cw, (L - 1).bit_length())

        def count(name, counter, inc):
            total = Signal(max(cw, len(inc)) + 1, name=f"{name}_next")
            ovf = Signal(name=f"{name}_ovf")
            m.d.comb += [total.eq(counter + inc), ovf.eq(total[cw:] != 0)]
            with m.If(s1_clear):
                m.d.sync += counter.eq(0)
            with m.Elif(s2_valid):
                if lw:
                    m.d.sync += counter[:lw].eq(Mux(ovf, (1 << lw) - 1, total[:lw]))
                if lw < cw:
                    with m.If(~ovf):
                        m.d.sync += counter[lw:].eq(total[lw:cw])

        count("values", self.values, Const(L, range(L + 1)))
        count("zeros", self.zeros, s2_zeros)
        count("filtered_zeros", self.filtered_zeros, s2_fzeros)
        for i in range(HIST_BINS):
            count(f"hist{i}", hist[i], s2_count[i])

        if L == BLOCK:
            m.d.comb += self.stats_busy.eq(s1_valid | s2_valid)
        else:
            m.d.comb += self.stats_busy.eq(w_busy | pend_clear | s1_clear | s1_valid | s2_valid)
        return m

    @staticmethod
    def _rotate_bins(m, L, dbc, onehot, s2_count):
        """Stages 1 and 2 of the histogram for many lanes (module docstring)."""
        s1_lead = [Signal(range(L + 1), name=f"s1_lead{b}") for b in range(8)]
        s1_dbc = Signal(signed(7))
        m.d.sync += s1_dbc.eq(dbc)
        for b in range(8):
            m.d.sync += s1_lead[b].eq(popcount(onehot[b]))
        # Stage 2: bin i (1 to 30) gets lead l = i - dbc when that is in 0..7: the lead counts
        # rotated by dbc mod 8, gated by a window; bin 0 gets the leads l <= -dbc, bin 31 the
        # leads l >= 31 - dbc.
        rot = [Signal(range(L + 1), name=f"rot{t}") for t in range(8)]
        with m.Switch(s1_dbc[:3]):
            for r in range(8):
                with m.Case(r):
                    m.d.comb += [rot[t].eq(s1_lead[(t - r) % 8]) for t in range(8)]
        for i in range(1, HIST_BINS - 1):
            inside = (s1_dbc <= i) & (s1_dbc >= i - 7)
            m.d.sync += s2_count[i].eq(Mux(inside, rot[i % 8], 0))
        low = [s1_lead[0]]  # low[j]: leads 0..j
        high = [s1_lead[7]]  # high[j]: leads 7 - j..7
        for b in range(1, 8):
            low.append(low[-1] + s1_lead[b])
            high.append(high[-1] + s1_lead[7 - b])
        with m.Switch(s1_dbc):  # dbc in [-8, 32]
            for v in range(-8, HIST_BINS + 1):
                with m.Case(v):
                    lo = min(-v, 7)  # bin 0: leads 0..lo
                    m.d.sync += s2_count[0].eq(low[lo] if lo >= 0 else 0)
                    hi = max(HIST_BINS - 1 - v, 0)  # bin 31: leads hi..7
                    m.d.sync += s2_count[HIST_BINS - 1].eq(high[7 - hi] if hi <= 7 else 0)
