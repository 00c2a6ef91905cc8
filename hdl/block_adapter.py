"""Adapters from decoded BFP8 blocks to the GEMM engine's input streams.

The HBM decoder emits every block of a row tile in row-major order (``row``, then ``kb``), zero
blocks included. The engine takes other forms (``hdl/engine_load.py``):

* :class:`BlockAdapter` makes the *block stream* of an operand (``a_in`` or ``b_in``): for
  each nonzero block a header beat ``{hdr=1, row, kb, mask, exp}`` followed by one beat per
  nonzero mantissa in ascending position ``{hdr=0, mant}``; all-zero blocks are dropped. It
  numbers blocks with ``kblocks``, the blocks per row of the tensor (a register the sequencer
  sets before the tensor). A nonzero block with ``n`` mantissas takes ``1 + n`` cycles, a zero
  block one cycle; the next block is taken in the cycle the last beat of the previous one
  leaves, so the output never idles while input is waiting.
* :class:`MaskAdapter` makes the *output-mask words* of BP: the relu' mask of ``dX`` is the
  nonzero pattern of the saved activations (``golden/nn.py``), the same shape as ``dX``. Each
  block ``(row, kb)`` of the saved activations becomes ``16 / R`` words ``{row, grp, bits}``
  with ``grp = kb * 16 / R + j`` and ``bits`` = its nonzero flags ``j * R .. j * R + R - 1``
  (one word per cycle).

Both take ``start`` (one cycle, before the first block of a tensor) to reset the row and block
counters; ``kblocks`` must not change during a tensor and must be at least 1.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .bfp_layouts import BFP_BLOCK, BLOCK
from .engine_load import beat_layout

__all__ = ["BlockAdapter", "MaskAdapter", "mask_word_layout"]


def _check_width(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 16:
        raise ValueError(f"{name} must be an integer from 1 to 16, not {value!r}")


def mask_word_layout(row_w: int, grp_w: int, rows: int) -> data.StructLayout:
    """An output-mask word (``hdl.engine.om_layout``): ``row``, ``grp`` and ``rows`` bits."""
    return data.StructLayout({"row": row_w, "grp": grp_w, "bits": rows})


class _Counter:
    """Row and block-column counters of a row-major block sequence."""

    def __init__(self, m, row_w, kb_w, kblocks, start, advance):
        self.row = Signal(row_w)
        self.kb = Signal(kb_w)
        with m.If(start):
            m.d.sync += [self.row.eq(0), self.kb.eq(0)]
        with m.Elif(advance):
            with m.If(self.kb + 1 >= kblocks):
                m.d.sync += [self.kb.eq(0), self.row.eq(self.row + 1)]
            with m.Else():
                m.d.sync += self.kb.eq(self.kb + 1)


class BlockAdapter(wiring.Component):
    """BFP8 blocks in, the engine's block stream out (module docstring).

    Parameters
    ----------
    row_w : int
        Bits of the ``row`` field (1 to 16).
    kb_w : int
        Bits of the ``kb`` field (1 to 16).

    Attributes
    ----------
    i : In(stream.Signature(BFP_BLOCK))
    o : Out(stream.Signature(beat_layout(row_w, kb_w)))
    kblocks : In(kb_w + 1)
        Blocks per row.
    start : In(1)
        Reset the counters (before a tensor's first block).
    """

    def __init__(self, row_w: int, kb_w: int):
        _check_width("Row width", row_w)
        _check_width("Block-column width", kb_w)
        self._row_w, self._kb_w = row_w, kb_w
        super().__init__({
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(beat_layout(row_w, kb_w))),
            "kblocks": In(kb_w + 1),
            "start": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        blk = self.i.payload
        nz = Signal(BLOCK)
        m.d.comb += nz.eq(Cat(*(blk.mant[k] != 0 for k in range(BLOCK))))

        busy = Signal()  # a nonzero block is being sent
        hdr_pending = Signal()  # its header has not left yet
        left = Signal(BLOCK)  # mantissas still to send
        mant = Signal(data.ArrayLayout(8, BLOCK))
        row = Signal(self._row_w)
        kb = Signal(self._kb_w)
        exp = Signal(8)
        mask = Signal(BLOCK)

        take = Signal()
        cnt = _Counter(m, self._row_w, self._kb_w, self.kblocks, self.start,
                       self.i.valid & self.i.ready)

        # The lowest remaining mantissa.
        low = Signal(BLOCK)  # one-hot of the lowest set bit of `left`
        m.d.comb += low.eq(left & -left)
        cur = Signal(8)
        for k in range(BLOCK):
            with m.If(low[k]):
                m.d.comb += cur.eq(mant[k])
        final = Signal()  # the beat on `o` is the block's last
        m.d.comb += final.eq(~hdr_pending & (left == low))

        m.d.comb += [
            self.o.valid.eq(busy),
            self.o.payload.hdr.eq(hdr_pending),
            self.o.payload.row.eq(row),
            self.o.payload.kb.eq(kb),
            self.o.payload.mask.eq(mask),
            self.o.payload.exp.eq(exp),
            self.o.payload.mant.eq(cur),
            take.eq(~busy | (self.o.ready & final)),
            self.i.ready.eq(take & ~self.start),
        ]
        with m.If(self.o.valid & self.o.ready):
            with m.If(hdr_pending):
                m.d.sync += hdr_pending.eq(0)
            with m.Else():
                m.d.sync += left.eq(left & ~low)
            with m.If(final):
                m.d.sync += busy.eq(0)
        with m.If(self.i.valid & self.i.ready & (nz != 0)):
            m.d.sync += [busy.eq(1), hdr_pending.eq(1), left.eq(nz), mant.eq(blk.mant),
                         row.eq(cnt.row), kb.eq(cnt.kb), exp.eq(blk.exp), mask.eq(nz)]
        return m


class MaskAdapter(wiring.Component):
    """BFP8 blocks of the saved activations in, BP output-mask words out (module docstring).

    Parameters
    ----------
    row_w, grp_w : int
        Bits of the ``row`` and ``grp`` fields (1 to 16).
    rows : int
        R, the engine's PE rows: 1, 2, 4, 8 or 16.

    Attributes
    ----------
    i : In(stream.Signature(BFP_BLOCK))
    o : Out(stream.Signature(mask_word_layout(row_w, grp_w, rows)))
    kblocks : In(grp_w + 1)
        Blocks per row.
    start : In(1)
        Reset the counters (before a tensor's first block).
    """

    def __init__(self, row_w: int, grp_w: int, rows: int):
        _check_width("Row width", row_w)
        _check_width("Group width", grp_w)
        if rows not in (1, 2, 4, 8, 16):
            raise ValueError(f"Rows must be 1, 2, 4, 8 or 16, not {rows!r}")
        self._row_w, self._grp_w, self._rows = row_w, grp_w, rows
        super().__init__({
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(mask_word_layout(row_w, grp_w, rows))),
            "kblocks": In(grp_w + 1),
            "start": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        R = self._rows
        per = BLOCK // R  # words per block
        blk = self.i.payload

        cnt = _Counter(m, self._row_w, self._grp_w, self.kblocks, self.start,
                       self.i.valid & self.i.ready)
        busy = Signal()
        bits = Signal(BLOCK)
        row = Signal(self._row_w)
        grp = Signal(self._grp_w)
        j = Signal(range(per))

        last = Signal()
        m.d.comb += last.eq(j == per - 1)
        m.d.comb += [
            self.o.valid.eq(busy),
            self.o.payload.row.eq(row),
            self.o.payload.grp.eq(grp + j),
            self.o.payload.bits.eq(bits.word_select(j, R) if per > 1 else bits),
            self.i.ready.eq((~busy | (self.o.ready & last)) & ~self.start),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += j.eq(0 if per == 1 else j + 1)
            with m.If(last):
                m.d.sync += [busy.eq(0), j.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            nz = [blk.mant[k] != 0 for k in range(BLOCK)]
            m.d.sync += [busy.eq(1), row.eq(cnt.row), grp.eq(cnt.kb * per), j.eq(0)]
            m.d.sync += [bits[k].eq(nz[k]) for k in range(BLOCK)]
        return m
