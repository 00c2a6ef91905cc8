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

Timing: the filter takes one block per cycle with a latency of 1 (the output register). The
statistics follow the accepted blocks through a two-stage pipeline that never stalls: a block
accepted in cycle ``n`` is in the counters from cycle ``n + 3`` on; ``stats_busy`` is high while
blocks are still on their way to the counters.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import BFP_BLOCK, BLOCK, popcount, reject

__all__ = ["SparsityFilter"]

HIST_BINS = 32  #: histogram counters (``golden.sparsity.HIST_BINS``)
COUNT_W = 32  #: statistics counter width (``golden.sparsity.COUNT_W``)
_SHIFT_CAP = 8  #: comparison shifts clamp here without changing the outcome


class SparsityFilter(wiring.Component):
    """Threshold filter on BFP8 blocks with the controller's statistics (module docstring).

    Parameters
    ----------
    count_w : int
        Width of every statistics counter, 1 to 64 (the hardware uses 32; narrower counters
        exist so that tests can reach saturation).

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
        Accepted blocks not yet counted.

    Raises
    ------
    ValueError
        If ``count_w`` is not an integer from 1 to 64.
    """

    def __init__(self, count_w: int = COUNT_W):
        if isinstance(count_w, bool) or not isinstance(count_w, int) \
                or not 1 <= count_w <= 64:
            reject(self, ValueError(
                f"Counter width must be an integer in [1, 64], not {count_w!r}"))
        self._count_w = count_w
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

    def elaborate(self, platform):
        m = Module()
        blk = self.i.payload
        accept = Signal()
        m.d.comb += [
            self.i.ready.eq(~self.o.valid | self.o.ready),
            accept.eq(self.i.valid & self.i.ready),
        ]

        # ---- filter: one comparison per element, straight into the output register
        d = Signal(signed(10))
        up = Signal(range(_SHIFT_CAP + 1))  # clamp(E - te, 0, 8)
        down = Signal(range(_SHIFT_CAP + 1))  # clamp(te - E, 0, 8)
        rhs = Signal(16)
        m.d.comb += [
            d.eq(blk.exp - self.te),
            up.eq(Mux(d > _SHIFT_CAP, _SHIFT_CAP, Mux(d < 0, 0, d[:4]))),
            down.eq(Mux(d < -_SHIFT_CAP, _SHIFT_CAP, Mux(d > 0, 0, (-d)[:4]))),
            rhs.eq(self.tm << down),
        ]
        nz_in = Signal(BLOCK)
        nz_out = Signal(BLOCK)
        mags = []
        kept = []
        for k in range(BLOCK):
            mant = blk.mant[k]
            mag = Signal(8, name=f"mag{k}")
            lhs = Signal(16, name=f"lhs{k}")
            drop = Signal(name=f"drop{k}")
            m.d.comb += [
                mag.eq(Mux(mant < 0, -mant, mant)),
                lhs.eq(mag << up),
                drop.eq((self.tm != 0) & (lhs < rhs)),
                nz_in[k].eq(mant != 0),
                nz_out[k].eq((mant != 0) & ~drop),
            ]
            mags.append(mag)
            kept.append(Mux(drop, 0, mant))
        with m.If(self.i.ready):
            m.d.sync += self.o.valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += self.o.payload.exp.eq(Mux(nz_out != 0, blk.exp, 0))
                for k in range(BLOCK):
                    m.d.sync += self.o.payload.mant[k].eq(kept[k])

        # ---- statistics, stage 1: element exponent bins and masks of the accepted block
        s1_valid, s1_clear = Signal(), Signal()
        s1_bin = [Signal(range(HIST_BINS), name=f"s1_bin{k}") for k in range(BLOCK)]
        s1_nz_in = Signal(BLOCK)
        s1_nz_out = Signal(BLOCK)
        m.d.sync += [
            s1_valid.eq(accept),
            s1_clear.eq(self.clear),
            s1_nz_in.eq(nz_in),
            s1_nz_out.eq(nz_out),
        ]
        for k in range(BLOCK):
            lead = Signal(3, name=f"lead{k}")
            for b in range(8):  # last assignment wins: the leading one
                with m.If(mags[k][b]):
                    m.d.comb += lead.eq(b)
            rel = Signal(signed(11), name=f"rel{k}")
            m.d.comb += rel.eq(blk.exp + lead - self.base)
            m.d.sync += s1_bin[k].eq(
                Mux(rel < 0, 0, Mux(rel > HIST_BINS - 1, HIST_BINS - 1, rel[:5])))

        # ---- stage 2: per-bin counts of the block
        s2_valid, s2_clear = Signal(), Signal()
        s2_count = [Signal(range(BLOCK + 1), name=f"s2_count{i}") for i in range(HIST_BINS)]
        s2_nnz_in = Signal(range(BLOCK + 1))
        s2_nnz_out = Signal(range(BLOCK + 1))
        m.d.sync += [
            s2_valid.eq(s1_valid),
            s2_clear.eq(s1_clear),
            s2_nnz_in.eq(popcount(s1_nz_in)),
            s2_nnz_out.eq(popcount(s1_nz_out)),
        ]
        for i in range(HIST_BINS):
            hits = [s1_nz_in[k] & (s1_bin[k] == i) for k in range(BLOCK)]
            m.d.sync += s2_count[i].eq(popcount(hits))

        # ---- stage 3: saturating counters
        cw = self._count_w
        top = Const((1 << cw) - 1, cw)
        hist = [Signal(cw, name=f"hist{i}") for i in range(HIST_BINS)]
        m.d.comb += self.hist.eq(Cat(hist))

        def count(name, counter, inc):
            start = Mux(s2_clear, 0, counter)
            total = Signal(cw + 6, name=f"s2_{name}_next")
            m.d.comb += total.eq(start + Mux(s2_valid, inc, 0))
            m.d.sync += counter.eq(Mux(total > top, top, total))

        with m.If(s2_valid | s2_clear):
            count("values", self.values, BLOCK)
            count("zeros", self.zeros, BLOCK - s2_nnz_in)
            count("filtered_zeros", self.filtered_zeros, BLOCK - s2_nnz_out)
            for i in range(HIST_BINS):
                count(f"hist{i}", hist[i], s2_count[i])

        m.d.comb += self.stats_busy.eq(s1_valid | s2_valid)
        return m
