"""Transposer: re-blocks a BFP8 row tile along its other axis, bit-exact with ``gemm.reblock``.

WG reduces over the samples ``N`` (``golden.gemm.wg``), but activations and errors are stored
blocked along their channels: ``t`` is ``N x C`` with blocks of 16 along ``C``. The transposer
takes such a tile in row-major block order and emits ``golden.gemm.reblock(t)``, the ``C x N``
tensor blocked along ``N`` (``N`` zero-padded to a multiple of 16), also in row-major block
order: the form the engine's loaders take for WG.

How: the tile is written into 16 banks, bank ``n % 16`` holding row ``n``'s blocks (one
128-bit word of mantissas and its exponent per block). Output block ``(c, nb)`` needs column
``c`` of rows ``16 nb .. 16 nb + 15``: one word from each bank at the same address, byte lane
``c % 16``. Its 16 values ``m * 2**(E - 133)`` go to a :class:`~hdl.bfp_converter.BFPConverter`
as accumulators ``S = m, ea = E + 141`` (the same value, ``S * 2**(ea - 274)``), which
re-quantizes them exactly as ``quantize_exact`` does. Rows at or beyond ``rows`` read as zero.

Phases: *fill* takes ``rows * cblocks`` blocks (one per cycle), then *drain* emits
``16 * cblocks * ceil(rows / 16)`` blocks (one per cycle, latency 1 + the converter's 4), ``busy``
falls after the last block has left. ``start`` begins the next tile (it must not come while
``busy``). ``rows`` and ``cblocks`` must be
set before ``start`` and held during the tile.
"""

from amaranth import Cat, Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .bfp_converter import BFPConverter
from .bfp_layouts import BFP_BLOCK, BLOCK

__all__ = ["Transposer"]

_WORD = data.StructLayout({"exp": 8, "mant": data.ArrayLayout(8, BLOCK)})


class Transposer(wiring.Component):
    """Re-blocks an ``N x C`` BFP8 tile into ``C x N`` blocked along ``N`` (module docstring).

    Parameters
    ----------
    max_rows : int
        Largest ``N`` (a multiple of 16).
    max_cblocks : int
        Largest ``C / 16``.

    Attributes
    ----------
    i : In(stream.Signature(BFP_BLOCK))
        The input tile, row-major blocks.
    o : Out(stream.Signature(BFP_BLOCK))
        The re-blocked tile, row-major blocks.
    rows : In(range(max_rows + 1))
        ``N`` of this tile (1 .. max_rows).
    cblocks : In(range(max_cblocks + 1))
        ``C / 16`` of this tile (1 .. max_cblocks).
    start : In(1)
        Begin a tile (one cycle).
    busy : Out(1)
        A tile is being filled or drained.
    """

    def __init__(self, max_rows: int, max_cblocks: int):
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 16 \
                or max_rows % 16:
            raise ValueError(f"Maximum rows must be a positive multiple of 16, not {max_rows!r}")
        if isinstance(max_cblocks, bool) or not isinstance(max_cblocks, int) \
                or max_cblocks < 1:
            raise ValueError(f"Maximum column blocks must be a positive integer, not "
                             f"{max_cblocks!r}")
        self._max_rows = max_rows
        self._max_cblocks = max_cblocks
        super().__init__({
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "rows": In(range(max_rows + 1)),
            "cblocks": In(range(max_cblocks + 1)),
            "start": In(1),
            "busy": Out(1),
        })

    @property
    def max_rows(self):
        return self._max_rows

    @property
    def max_cblocks(self):
        return self._max_cblocks

    def elaborate(self, platform):
        m = Module()
        nbs = self._max_rows // BLOCK
        depth = nbs * self._max_cblocks
        m.submodules.conv = conv = BFPConverter()
        wiring.connect(m, conv.o, wiring.flipped(self.o))

        banks = []
        for r in range(BLOCK):
            mem = Memory(shape=_WORD, depth=depth, init=[])
            m.submodules[f"bank{r}"] = mem
            banks.append((mem.write_port(), mem.read_port()))

        filling = Signal()
        draining = Signal()
        inflight = Signal(range(8))  # blocks inside the converter's pipeline
        m.d.comb += self.busy.eq(filling | draining | (inflight != 0))
        c_in = conv.i.valid & conv.i.ready
        c_out = self.o.valid & self.o.ready
        m.d.sync += inflight.eq(inflight + c_in - c_out)

        # ---- fill: row n, block cb --------------------------------------------------------
        n = Signal(range(self._max_rows + 1))
        cb = Signal(range(self._max_cblocks + 1))
        m.d.comb += self.i.ready.eq(filling)
        waddr = Signal(range(depth))
        m.d.comb += waddr.eq((n >> 4) * self._max_cblocks + cb)
        for r, (wp, _) in enumerate(banks):
            m.d.comb += [wp.addr.eq(waddr), wp.data.exp.eq(self.i.payload.exp),
                         wp.data.mant.eq(self.i.payload.mant.as_value()),
                         wp.en.eq(self.i.valid & filling & (n[:4] == r))]

        # ---- drain: output block (c, nb), c = 16 * ccb + lane --------------------------------
        nb_total = Signal(range(nbs + 1))
        m.d.comb += nb_total.eq((self.rows + BLOCK - 1) >> 4)
        ccb = Signal(range(self._max_cblocks + 1))
        lane = Signal(4)
        nb = Signal(range(nbs + 1))
        more = Signal()  # a read is still to be issued
        rd_valid = Signal()  # the read ports hold an entry for the converter
        rd_lane = Signal(4)
        rd_nb = Signal(range(nbs + 1))
        advance = Signal()
        m.d.comb += advance.eq(~rd_valid | conv.i.ready)

        raddr = Signal(range(depth))
        m.d.comb += raddr.eq(nb * self._max_cblocks + ccb)
        for _, rp in banks:
            m.d.comb += [rp.addr.eq(raddr), rp.en.eq(advance)]

        with m.If(advance):
            m.d.sync += [rd_valid.eq(draining & more), rd_lane.eq(lane), rd_nb.eq(nb)]
            with m.If(draining & more):
                # next position: nb fastest, then lane, then ccb
                with m.If(nb + 1 < nb_total):
                    m.d.sync += nb.eq(nb + 1)
                with m.Else():
                    m.d.sync += nb.eq(0)
                    with m.If(lane == BLOCK - 1):
                        m.d.sync += lane.eq(0)
                        with m.If(ccb + 1 < self.cblocks):
                            m.d.sync += ccb.eq(ccb + 1)
                        with m.Else():
                            m.d.sync += more.eq(0)
                    with m.Else():
                        m.d.sync += lane.eq(lane + 1)

        for r, (_, rp) in enumerate(banks):
            word = rp.data
            live = (rd_nb * BLOCK + r) < self.rows
            mant = Signal(8, name=f"mant{r}")
            m.d.comb += mant.eq(word.mant.as_value().word_select(rd_lane, 8))
            s = Signal(32, name=f"s{r}")
            m.d.comb += s.eq(Cat(mant, mant[7].replicate(24)))
            m.d.comb += [
                conv.i.payload.mant[r].eq(live.replicate(32) & s),
                conv.i.payload.exp[r].eq(word.exp + 141),
            ]
        m.d.comb += conv.i.valid.eq(rd_valid)

        # ---- control -----------------------------------------------------------------------
        with m.If(self.start):
            m.d.sync += [filling.eq(1), draining.eq(0), n.eq(0), cb.eq(0), rd_valid.eq(0)]
        with m.Elif(filling & self.i.valid):
            with m.If(cb + 1 < self.cblocks):
                m.d.sync += cb.eq(cb + 1)
            with m.Else():
                m.d.sync += cb.eq(0)
                m.d.sync += n.eq(n + 1)
                with m.If(n + 1 >= self.rows):
                    m.d.sync += [filling.eq(0), draining.eq(1), more.eq(1), ccb.eq(0),
                                 lane.eq(0), nb.eq(0)]
        with m.Elif(draining & ~more & ~rd_valid):
            m.d.sync += draining.eq(0)
        return m
