"""Loaders of the GEMM engine's operand buffers: the block stream in, the buffers filled.

Both operands arrive as the same *block stream* (what the HBM decoder delivers): a header beat
per nonzero block, ``{hdr=1, row, kb, mask, exp}``, followed by one beat per nonzero mantissa,
``{hdr=0, mant}``, in ascending position. All-zero blocks are simply not sent.

* :class:`ALoader` (sparse operand A, M x K): blocks must come row by row and, within a row,
  in ascending ``kb`` (the accumulation order of :mod:`golden.gemm`). Headers are appended to
  the header buffer (``kb``, mask, exponent, address of the first nonzero), mantissas packed
  into the nonzero buffer, and each row's (first header, count) into the row table. Rows
  without blocks are filled in as empty, one table write per cycle.
* :class:`BLoader` (operand B, N x K, dense weights or, in WG, sparse): blocks in any order;
  each is expanded into the dense B buffer (word ``(g, k)`` holds ``B[g*R + r, k]`` in byte
  ``r``), 16 cycles per nonzero block, while its exponent goes to byte ``r`` of the B exponent
  word ``(g, kb)`` and its mask is ORed into that word's column mask. A block never written has
  exponent 0 there, which disables its PE: a cleared B buffer is all zero.

Malformed input (order, range, capacity, a non-canonical block, a mantissa count that does not
match its mask) is reported on ``err`` for one cycle; the engine latches it as its status.
"""

import enum as py_enum

from amaranth import Cat, Const, Module, Signal, signed
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import BLOCK, EngineConfig
from .engine_lane import bexp_layout, hdr_layout, row_layout, widths

__all__ = ["Status", "beat_layout", "ALoader", "BLoader"]


class Status(enum.Enum, shape=4):
    """Engine status: the first error since the last clear (sticky)."""

    OK = 0
    A_ORDER = 1  #: A block for an earlier row, or kb not ascending within a row
    A_RANGE = 2  #: A row >= max_m or kb >= max_k / 16
    A_FULL = 3  #: A header or nonzero buffer full
    A_BLOCK = 4  #: A block not canonical (mask 0, exponent 0, mantissa 0 or -128) or count
    B_RANGE = 5  #: B row >= max_n or kb >= max_k / 16
    B_BLOCK = 6  #: B block not canonical or mantissa count wrong
    M_RANGE = 7  #: output-mask word out of range
    SHAPE = 8  #: RUN with m or n out of range, or A holds rows >= m
    CMD = 9  #: unknown command


def beat_layout(row_w: int, kb_w: int):
    """One beat of the block stream (header fields or one mantissa, selected by ``hdr``)."""
    return data.StructLayout({
        "hdr": 1, "row": row_w, "kb": kb_w, "mask": BLOCK, "exp": 8, "mant": signed(8)})


def _bad_mant(v):
    return (v == 0) | (v == -128)


class ALoader(wiring.Component):
    """Fills the compressed A buffers from the block stream (see the module docstring).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout(...)))
        Block stream of A.
    active : In(1)
        Accept beats (engine idle).
    drop : In(1)
        An error is pending: accept and discard beats.
    clear : In(1)
        Empty the buffers.
    run, m : In
        Seal the row table up to row ``m - 1`` (multi-cycle; ``fin_busy`` while it runs).
    err : Out(Status)
        Error detected this cycle (``OK`` otherwise).
    hdr_w, nz_w, row_w : Out
        Write ports (``*_en``, ``*_addr``, ``*_data``) into the three A buffers.
    """

    def __init__(self, cfg: EngineConfig):
        self._cfg = cfg
        w = widths(cfg)
        super().__init__({
            "i": In(stream.Signature(beat_layout(w["m"], w["kb"]))),
            "active": In(1), "drop": In(1), "clear": In(1), "run": In(1),
            "m": In(w["m"] + 1),
            "fin_busy": Out(1),
            "err": Out(Status),
            "hdr_en": Out(1), "hdr_addr": Out(w["hdr"]), "hdr_data": Out(hdr_layout(cfg)),
            "nz_en": Out(1), "nz_addr": Out(w["nz"]), "nz_data": Out(signed(8)),
            "row_en": Out(1), "row_addr": Out(w["m"]), "row_data": Out(row_layout(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = widths(cfg)
        hptr = Signal(w["hdr"] + 1)
        nzptr = Signal(w["nz"] + 1)
        cur_row = Signal(w["m"] + 1)
        cur_start = Signal(w["hdr"] + 1)
        cur_count = Signal(w["cnt"])
        last_kb = Signal(w["kb"])
        pending = Signal(range(BLOCK + 1))
        fin = Signal()
        fin_m = Signal(w["m"] + 1)
        b = self.i.payload
        popc = sum(b.mask[j] for j in range(BLOCK))

        m.d.comb += [
            self.fin_busy.eq(fin),
            self.hdr_addr.eq(hptr), self.nz_addr.eq(nzptr), self.row_addr.eq(cur_row),
            self.row_data.start.eq(cur_start), self.row_data.count.eq(cur_count),
            self.hdr_data.kb.eq(b.kb), self.hdr_data.mask.eq(b.mask),
            self.hdr_data.exp.eq(b.exp), self.hdr_data.nz.eq(nzptr),
            self.nz_data.eq(b.mant),
        ]

        def next_row():
            m.d.comb += self.row_en.eq(1)
            m.d.sync += [cur_row.eq(cur_row + 1), cur_start.eq(hptr), cur_count.eq(0)]

        with m.If(self.clear):
            m.d.sync += [hptr.eq(0), nzptr.eq(0), cur_row.eq(0), cur_start.eq(0),
                         cur_count.eq(0), pending.eq(0), fin.eq(0)]
        with m.Elif(fin):
            with m.If(pending != 0):
                m.d.comb += self.err.eq(Status.A_BLOCK)
                m.d.sync += fin.eq(0)
            with m.Elif((cur_row > fin_m) | ((cur_row == fin_m) & (cur_count != 0))):
                m.d.comb += self.err.eq(Status.SHAPE)
                m.d.sync += fin.eq(0)
            with m.Elif(cur_row < fin_m):
                next_row()
            with m.Else():
                m.d.sync += fin.eq(0)
        with m.Elif(self.run):
            m.d.sync += [fin.eq(1), fin_m.eq(self.m)]
        with m.Elif(self.drop):
            m.d.comb += self.i.ready.eq(1)
        with m.Elif(self.active & self.i.valid):
            with m.If(b.hdr):
                with m.If((b.row >= cfg.max_m) | (b.kb >= cfg.k_blocks)):
                    m.d.comb += [self.err.eq(Status.A_RANGE), self.i.ready.eq(1)]
                with m.Elif(b.row > cur_row):
                    next_row()  # catch up over rows without blocks
                with m.Elif((b.row < cur_row) | ((cur_count != 0) & (b.kb <= last_kb))):
                    m.d.comb += [self.err.eq(Status.A_ORDER), self.i.ready.eq(1)]
                with m.Elif((b.mask == 0) | (b.exp == 0) | (pending != 0)):
                    m.d.comb += [self.err.eq(Status.A_BLOCK), self.i.ready.eq(1)]
                with m.Elif((hptr == cfg.a_hdr_depth) | (nzptr + popc > cfg.a_nz_depth)):
                    m.d.comb += [self.err.eq(Status.A_FULL), self.i.ready.eq(1)]
                with m.Else():
                    m.d.comb += [self.i.ready.eq(1), self.hdr_en.eq(1)]
                    m.d.sync += [hptr.eq(hptr + 1), cur_count.eq(cur_count + 1),
                                 last_kb.eq(b.kb), pending.eq(popc)]
            with m.Else():
                m.d.comb += self.i.ready.eq(1)
                with m.If((pending == 0) | _bad_mant(b.mant)):
                    m.d.comb += self.err.eq(Status.A_BLOCK)
                with m.Else():
                    m.d.comb += self.nz_en.eq(1)
                    m.d.sync += [nzptr.eq(nzptr + 1), pending.eq(pending - 1)]
        return m


class _BState(py_enum.Enum):
    IDLE = 0
    RMW = 1
    MANT = 2
    CLEAR = 3


class BLoader(wiring.Component):
    """Expands the block stream of B into the dense B buffers (see the module docstring).

    Attributes
    ----------
    i : In(stream.Signature(beat_layout(...)))
        Block stream of B (``row`` is the row j of B, i.e. the output column).
    active, drop : In(1)
        As for :class:`ALoader`.
    clear : In(1)
        Zero the exponent buffer (multi-cycle; ``busy`` while it runs).
    abort : In(1)
        Drop a block in progress (a command arrived in the middle of it).
    busy : Out(1)
        In the middle of a block or of a clear.
    waiting : Out(1)
        In the middle of a block, waiting for a mantissa beat.
    err : Out(Status)
        Error detected this cycle.
    bm_*, bexp_* :
        Write ports of the mantissa and exponent buffers (byte enables), and the read port
        of the exponent buffer used for the column-mask read-modify-write.
    """

    def __init__(self, cfg: EngineConfig):
        self._cfg = cfg
        w = widths(cfg)
        r = cfg.rows
        super().__init__({
            "i": In(stream.Signature(beat_layout(w["n"], w["kb"]))),
            "active": In(1), "drop": In(1), "clear": In(1), "abort": In(1),
            "busy": Out(1), "waiting": Out(1),
            "err": Out(Status),
            "bm_en": Out(r), "bm_addr": Out(w["g"] + w["kb"] + 4), "bm_data": Out(8 * r),
            "bexp_en": Out(r + 2), "bexp_addr": Out(w["g"] + w["kb"]),
            "bexp_data": Out(bexp_layout(cfg)),
            "bexp_raddr": Out(w["g"] + w["kb"]), "bexp_rdata": In(bexp_layout(cfg)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        w = widths(cfg)
        R = cfg.rows
        lg = R.bit_length() - 1
        state = Signal(_BState)
        g = Signal(w["g"])
        r = Signal(range(R))
        kb = Signal(w["kb"])
        mask = Signal(BLOCK)
        exp = Signal(8)
        k = Signal(4)
        caddr = Signal(w["g"] + w["kb"] + 1)
        b = self.i.payload
        m.d.comb += [
            self.busy.eq(state != _BState.IDLE),
            self.waiting.eq((state == _BState.MANT) & mask.bit_select(k, 1)),
            self.bexp_raddr.eq(Cat(b.kb, b.row[lg:])),
            self.bexp_addr.eq(Cat(kb, g)),
            self.bm_addr.eq(Cat(k, kb, g)),
        ]
        with m.Switch(state):
            with m.Case(_BState.CLEAR):
                m.d.comb += [self.bexp_addr.eq(caddr), self.bexp_en.eq(-1),
                             self.bexp_data.eq(0)]
                m.d.sync += caddr.eq(caddr + 1)
                with m.If(caddr == (1 << (w["g"] + w["kb"])) - 1):
                    m.d.sync += state.eq(_BState.IDLE)
            with m.Case(_BState.IDLE):
                with m.If(self.clear):
                    m.d.sync += [state.eq(_BState.CLEAR), caddr.eq(0)]
                with m.Elif(self.drop):
                    m.d.comb += self.i.ready.eq(1)
                with m.Elif(self.active & self.i.valid):
                    m.d.comb += self.i.ready.eq(1)
                    with m.If(~b.hdr):
                        m.d.comb += self.err.eq(Status.B_BLOCK)
                    with m.Elif((b.row >= cfg.max_n) | (b.kb >= cfg.k_blocks)):
                        m.d.comb += self.err.eq(Status.B_RANGE)
                    with m.Elif((b.mask == 0) | (b.exp == 0)):
                        m.d.comb += self.err.eq(Status.B_BLOCK)
                    with m.Else():
                        m.d.sync += [
                            state.eq(_BState.RMW), g.eq(b.row[lg:]), r.eq(b.row[:lg]),
                            kb.eq(b.kb), mask.eq(b.mask), exp.eq(b.exp),
                        ]
            with m.Case(_BState.RMW):
                m.d.comb += [
                    self.bexp_en.eq((Const(1, R + 2) << r) | (3 << R)),
                    self.bexp_data.cmask.eq(self.bexp_rdata.cmask | mask),
                ]
                for j in range(R):
                    m.d.comb += self.bexp_data.exp[j].eq(exp)
                m.d.sync += [state.eq(_BState.MANT), k.eq(0)]
                with m.If(self.abort):
                    m.d.sync += state.eq(_BState.IDLE)
            with m.Case(_BState.MANT):
                with m.If(self.abort):
                    m.d.sync += state.eq(_BState.IDLE)
                with m.Elif(self.drop):
                    m.d.sync += state.eq(_BState.IDLE)
                with m.Elif(mask.bit_select(k, 1)):
                    with m.If(self.i.valid):
                        m.d.comb += self.i.ready.eq(1)
                        with m.If(b.hdr | _bad_mant(b.mant)):
                            m.d.comb += self.err.eq(Status.B_BLOCK)
                            m.d.sync += state.eq(_BState.IDLE)
                        with m.Else():
                            m.d.comb += [self.bm_en.eq(Const(1, R) << r),
                                         self.bm_data.eq(b.mant.replicate(R))]
                            m.d.sync += k.eq(k + 1)
                            with m.If(k == BLOCK - 1):
                                m.d.sync += state.eq(_BState.IDLE)
                with m.Else():
                    m.d.comb += [self.bm_en.eq(Const(1, R) << r), self.bm_data.eq(0)]
                    m.d.sync += k.eq(k + 1)
                    with m.If(k == BLOCK - 1):
                        m.d.sync += state.eq(_BState.IDLE)
        return m
