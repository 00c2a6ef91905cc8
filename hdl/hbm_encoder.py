"""HBM v1 encoder: BFP8 blocks in, the HBM v1 byte stream out on a 32- or 64-bit bus.

The format is ARCHITECTURE.md section 2 and ``golden.hbm``: per superblock of 16 blocks the L1
mask (uint16 LE), then for each nonzero block its L2 mask (uint16 LE), its exponent byte and its
nonzero mantissas in ascending order. The output is byte for byte ``golden.hbm.encode`` of the
tensor, with no padding: the last beat of a tensor is partial (``keep``) and has ``last`` set;
a tensor of 0 blocks is one beat with ``keep = 0`` and ``last = 1``.

Tensors are framed by the ``cmd`` stream: one word per tensor, its number of blocks. The
encoder accepts exactly that many blocks on ``i`` for it.

Structure:

* **input side** (one block per cycle): the L2 mask and the *record* of a nonzero block
  (``L2, E`` and its nonzero mantissas compacted to the front, zeros behind, by a log-depth
  compaction network; with ``lanes < 16`` the mantissas as they are) go into a 64-deep
  record queue; all-zero blocks only set a bit of the L1 mask. When a superblock is complete
  (16 blocks, or the tensor's last block) its L1 mask goes into a 16-deep L1 queue. The L1
  mask is known only at the end of a superblock, so at least a superblock of records waits
  here; the depth beyond that lets the input run ahead through runs of all-zero blocks while
  the bus is still busy with the bytes of earlier dense blocks (clustered zeros).
* **output side** (one *chunk* per cycle): a chunk is either an L1 mask together with the first
  record of its superblock (2 + 19 bytes at most), or one further record (19 bytes at most).
  A superblock with ``k`` nonzero blocks takes ``max(1, k)`` cycles, never more than the 16
  cycles its blocks took to come in, so the encoder keeps up with one block per cycle as long
  as the bus can carry the bytes.
* **packer**: chunks are appended to a 32-byte buffer behind the bytes already there, and the
  buffer's front leaves as one beat of ``bus_width / 8`` bytes per cycle through the output
  register. A chunk waits only if it does not fit, which cannot starve the output (32 >= 21 +
  bytes per beat).

Input blocks must be canonical BFP8 (what the converter and the filter produce): an all-zero
block has ``E = 0``, no mantissa is -128. The encoder does not check this; ``E`` of a nonzero
block is copied as it is.

**Fewer lanes** (``lanes`` = 8, 4, 2 or 1, ``P = 16 / lanes``): the input side is the same
(one block per cycle into the queues), but the output side sends a record in ``P`` chunks:
chunk ``j`` is group ``j`` of its mantissas (``lanes`` of them) compacted, behind the header
(``L2, E``, with the L1 mask in front for a superblock's first record) in chunk 0, so a chunk
is at most ``5 + lanes`` bytes and the packer buffer ``bus_width / 8 + 4 + lanes`` bytes. A
record ends with its last group that holds a nonzero mantissa (its trailing all-zero groups
are skipped, so no chunk is empty and a tensor's final chunk always carries its last byte). A
superblock with ``k`` nonzero blocks takes at most ``max(1, k * P)`` output cycles: the
encoder sustains one nonzero block every ``P`` cycles (all-zero blocks cost no time), or the bus
rate if that is lower; the record queue absorbs bursts, and ``i.ready`` drops only when it is
full. A superblock's first beat is valid 4 cycles after its last block was accepted if its
first chunk fills a beat, later otherwise (a tensor of one dense block: its last beat ``P + 3``
cycles after the block).

Latency (``lanes = 16``): the first beat of a superblock is valid on ``o`` 4 cycles after its
last block was accepted (2 cycles through the queues, 1 into the buffer, 1 into the output
register). A tensor's first block is accepted the cycle after its ``cmd`` word, so
consecutive tensors are separated by one idle input cycle.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bfp_converter import LANES
from .bfp_layouts import (
    BFP_BLOCK,
    BLOCK,
    bus_beat,
    check_bus_width,
    popcount,
    prefix_counts,
    reject,
)

__all__ = ["HBMEncoder"]

SUPERBLOCK = 16  #: blocks per superblock (bits in an L1 mask)
BUFFER_BYTES = 32  #: packer buffer: a 21-byte chunk plus a beat of up to 8 bytes must fit
RECORD_DEPTH = 64  #: record queue: four superblocks of nonzero blocks
N_BLOCKS_W = 32  #: width of the per-tensor block count on ``cmd``
L1_DEPTH = 16  #: L1 queue: superblocks the input side may run ahead of the output side

_RECORD = data.StructLayout({
    "l2": unsigned(BLOCK),
    "exp": unsigned(8),
    "mant": unsigned(8 * BLOCK),  # nonzero mantissas compacted to byte 0 upwards
})
_L1_ENTRY = data.StructLayout({
    "l1": unsigned(SUPERBLOCK),
    "last": unsigned(1),  # the tensor's last superblock
    "empty": unsigned(1),  # a tensor of 0 blocks: no superblock, one empty beat
})
_CHUNK_MAX = 2 + 3 + BLOCK


class HBMEncoder(wiring.Component):
    """Streaming HBM v1 encoder (module docstring).

    Parameters
    ----------
    bus_width : int
        Width of the output bus in bits: 32 or 64.
    lanes : int
        Mantissas the output side handles per cycle: 16 (the default, one record a cycle), or
        8, 4, 2, 1 for a smaller encoder that sends a record in ``16 / lanes`` cycles.

    Attributes
    ----------
    cmd : In(stream.Signature(unsigned(32)))
        One word per tensor: its number of blocks (0 is allowed).
    i : In(stream.Signature(BFP_BLOCK))
        The tensor's blocks, in order.
    o : Out(stream.Signature(bus_beat(bus_width)))
        The byte stream: ``data`` (first byte in bits 0..7), ``keep`` (contiguous from byte 0;
        all ones except in a tensor's last beat) and ``last``.
    busy : Out(1)
        A tensor is in flight (accepted on ``cmd``, its last beat not yet taken).

    Raises
    ------
    ValueError
        If ``bus_width`` is not 32 or 64, or ``lanes`` not one of :data:`LANES`.
    """

    def __init__(self, bus_width: int = 64, *, lanes: int = BLOCK):
        try:
            self._bus_width = check_bus_width(bus_width)
        except ValueError as exc:
            reject(self, exc)
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in LANES:
            reject(self, ValueError(
                f"Lanes must be one of {', '.join(map(str, LANES))}, not {lanes!r}"))
        self._lanes = lanes
        super().__init__({
            "cmd": In(stream.Signature(unsigned(N_BLOCKS_W))),
            "i": In(stream.Signature(BFP_BLOCK)),
            "o": Out(stream.Signature(bus_beat(bus_width))),
            "busy": Out(1),
        })

    @property
    def bus_width(self) -> int:
        return self._bus_width

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        nb = self._bus_width // 8
        L = self._lanes
        P = BLOCK // L  # output cycles per record
        chunk_max = _CHUNK_MAX if L == BLOCK else 5 + L
        buffer_bytes = BUFFER_BYTES if L == BLOCK else nb + chunk_max - 1

        m.submodules.records = records = SyncFIFOBuffered(
            width=_RECORD.size, depth=RECORD_DEPTH)
        m.submodules.l1s = l1s = SyncFIFOBuffered(width=_L1_ENTRY.size, depth=L1_DEPTH)
        rec_w = data.View(_RECORD, records.w_data)
        rec_r = data.View(_RECORD, records.r_data)
        l1_w = data.View(_L1_ENTRY, l1s.w_data)
        l1_r = data.View(_L1_ENTRY, l1s.r_data)

        # ---- input side: blocks to records and L1 masks
        in_active = Signal()  # a tensor's blocks are being taken
        n_left = Signal(N_BLOCKS_W)
        sb_pos = Signal(range(SUPERBLOCK))
        l1_acc = Signal(SUPERBLOCK)
        tensors_in = Signal(2)  # tensors accepted on cmd minus tensors whose last beat left

        m.d.comb += self.cmd.ready.eq(~in_active & l1s.w_rdy & (tensors_in != 3))
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(self.cmd.payload == 0):
                m.d.comb += [
                    l1s.w_en.eq(1),
                    l1_w.empty.eq(1),
                    l1_w.last.eq(1),
                ]
            with m.Else():
                m.d.sync += [
                    in_active.eq(1),
                    n_left.eq(self.cmd.payload),
                    sb_pos.eq(0),
                    l1_acc.eq(0),
                ]

        blk = self.i.payload
        nz = Signal(BLOCK)
        m.d.comb += nz.eq(Cat(blk.mant[k] != 0 for k in range(BLOCK)))
        mants = [blk.mant[k].as_unsigned() for k in range(BLOCK)]
        l1_new = Signal(SUPERBLOCK)
        last_block = n_left == 1
        sb_end = (sb_pos == SUPERBLOCK - 1) | last_block
        m.d.comb += [
            self.i.ready.eq(in_active & records.w_rdy & l1s.w_rdy),
            rec_w.l2.eq(nz),
            rec_w.exp.eq(blk.exp),
            # 16 lanes: compacted here; fewer: as they are, compacted on the output side
            rec_w.mant.eq(Cat(_compact(m, mants, nz, "in")) if L == BLOCK else blk.mant),
            l1_new.eq(l1_acc | ((nz != 0) << sb_pos)),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.comb += records.w_en.eq(nz != 0)
            m.d.sync += [
                n_left.eq(n_left - 1),
                sb_pos.eq(sb_pos + 1),
                l1_acc.eq(Mux(sb_end, 0, l1_new)),
            ]
            with m.If(sb_end):
                m.d.comb += [
                    l1s.w_en.eq(1),
                    l1_w.l1.eq(l1_new),
                    l1_w.last.eq(last_block),
                ]
            with m.If(last_block):
                m.d.sync += in_active.eq(0)

        # ---- packer state and output register
        buf = Signal(8 * buffer_bytes)
        cnt = Signal(range(buffer_bytes + 1))
        ending = Signal()  # the tensor's final chunk is in the buffer, its last beat not out
        o_free = ~self.o.valid | self.o.ready
        emit = Signal()
        emit_n = Signal(range(nb + 1))
        emit_last = Signal()
        m.d.comb += [
            emit.eq(o_free & ((cnt >= nb) | ending)),
            emit_n.eq(Mux(emit, Mux(cnt >= nb, nb, cnt), 0)),
            emit_last.eq(emit & ending & (cnt <= nb)),
        ]
        with m.If(emit):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.data.eq(buf[:8 * nb]),
                self.o.payload.keep.eq(Mux(cnt >= nb, (1 << nb) - 1,
                                           (Const(1, nb + 1) << cnt) - 1)),
                self.o.payload.last.eq(emit_last),
            ]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # ---- output side: pick this cycle's chunk
        in_sb = Signal()  # inside a superblock: records (or groups of one) still to send
        remaining = Signal(range(SUPERBLOCK + 1))
        sb_last = Signal()
        base = Signal(range(buffer_bytes + 1))
        chunk = Signal(8 * chunk_max)
        chunk_n = Signal(range(chunk_max + 1))
        take = Signal()
        final = Signal()  # this chunk ends the tensor
        l1_k = Signal(range(SUPERBLOCK + 1))
        m.d.comb += [
            base.eq(cnt - emit_n),
            l1_k.eq(popcount(l1_r.l1)),
        ]
        fits = base + chunk_n <= buffer_bytes
        if L == BLOCK:
            # one chunk a cycle: an L1 mask and its superblock's first record, or a record
            k_rec = Signal(range(BLOCK + 1))
            rec_bytes = Cat(rec_r.l2, rec_r.exp, rec_r.mant)
            m.d.comb += k_rec.eq(popcount(rec_r.l2))
            rec_chunk = [rec_bytes, 3 + k_rec]
            l1_chunk = [Cat(l1_r.l1, rec_bytes), 5 + k_rec]
            rec_end = Const(1)
        else:
            # a record in P chunks: group j of its mantissas compacted, behind the header
            # (L2, E, and the L1 mask before a superblock's first record) in group 0
            grp = Signal(range(P))
            g_mask = rec_r.l2.word_select(grp, L)
            g_vals = rec_r.mant.word_select(grp, 8 * L)
            g_bytes = Cat(_compact(m, [g_vals[8 * k:8 * k + 8] for k in range(L)],
                                   g_mask, "out"))
            g_n = Signal(range(L + 1))
            m.d.comb += g_n.eq(popcount(g_mask))
            rec_chunk = [Mux(grp == 0, Cat(rec_r.l2, rec_r.exp, g_bytes), g_bytes),
                         Mux(grp == 0, 3, 0) + g_n]
            l1_chunk = [Cat(l1_r.l1, rec_r.l2, rec_r.exp, g_bytes), 5 + g_n]
            # a record ends with its last group that has a nonzero mantissa (or group 0): no
            # chunk is ever empty, so a tensor's final chunk always carries its last byte and
            # the beat holding it gets `last` (an empty final chunk after a beat that was
            # already sent gave an extra empty beat)
            rest = Signal(BLOCK)
            m.d.comb += rest.eq(rec_r.l2 >> ((grp + 1) * L))
            rec_end = (grp == P - 1) | (rest == 0)
        with m.If(~ending):
            with m.If(in_sb):
                m.d.comb += [
                    chunk.eq(rec_chunk[0]),
                    chunk_n.eq(rec_chunk[1]),
                    take.eq(records.r_rdy & fits),
                    records.r_en.eq(take & rec_end),
                    final.eq(sb_last & (remaining == 1) & rec_end),
                ]
                with m.If(take):
                    if L != BLOCK:
                        m.d.sync += grp.eq(Mux(rec_end, 0, grp + 1))
                    with m.If(rec_end):
                        m.d.sync += remaining.eq(remaining - 1)
                        with m.If(remaining == 1):
                            m.d.sync += in_sb.eq(0)
            with m.Elif(l1s.r_rdy):
                with m.If(l1_r.empty):
                    m.d.comb += [
                        take.eq(1),
                        l1s.r_en.eq(1),
                        final.eq(1),
                    ]
                with m.Elif(l1_r.l1 == 0):
                    m.d.comb += [
                        chunk.eq(l1_r.l1),
                        chunk_n.eq(2),
                        take.eq(fits),
                        l1s.r_en.eq(take),
                        final.eq(l1_r.last),
                    ]
                with m.Else():
                    m.d.comb += [
                        chunk.eq(l1_chunk[0]),
                        chunk_n.eq(l1_chunk[1]),
                        take.eq(records.r_rdy & fits),
                        l1s.r_en.eq(take),
                    ]
                    if L == BLOCK:
                        # the superblock's first record is sent whole with its L1 mask
                        m.d.comb += [
                            records.r_en.eq(take),
                            final.eq(l1_r.last & (l1_k == 1)),
                        ]
                        with m.If(take & (l1_k != 1)):
                            m.d.sync += [
                                in_sb.eq(1),
                                remaining.eq(l1_k - 1),
                                sb_last.eq(l1_r.last),
                            ]
                    else:
                        # group 0 of the first record: its other groups (if any has a nonzero
                        # mantissa) follow from in_sb
                        m.d.comb += [
                            records.r_en.eq(take & rec_end),
                            final.eq(l1_r.last & (l1_k == 1) & rec_end),
                        ]
                        with m.If(take & rec_end):
                            m.d.sync += [
                                in_sb.eq(l1_k != 1),
                                remaining.eq(l1_k - 1),
                                sb_last.eq(l1_r.last),
                            ]
                        with m.Elif(take):
                            m.d.sync += [
                                in_sb.eq(1),
                                grp.eq(1),
                                remaining.eq(l1_k),
                                sb_last.eq(l1_r.last),
                            ]

        # ---- packer update
        kept = Mux(emit, buf >> (8 * nb), buf)
        with m.If(take):
            m.d.sync += [
                buf.eq(kept | (chunk << (base * 8))),
                cnt.eq(base + chunk_n),
            ]
        with m.Else():
            m.d.sync += [
                buf.eq(kept),
                cnt.eq(base),
            ]
        with m.If(take & final):
            m.d.sync += ending.eq(1)
        with m.Elif(emit_last):
            m.d.sync += ending.eq(0)

        # ---- busy: tensors accepted and not yet fully sent
        accepted = self.cmd.valid & self.cmd.ready
        finished = self.o.valid & self.o.ready & self.o.payload.last
        with m.If(accepted & ~finished):
            m.d.sync += tensors_in.eq(tensors_in + 1)
        with m.Elif(finished & ~accepted):
            m.d.sync += tensors_in.eq(tensors_in - 1)
        m.d.comb += self.busy.eq(tensors_in != 0)

        return m


def _compact(m, vals, nz, name):
    """The nonzero values of ``vals`` (8-bit, zero where ``nz`` is 0) moved to the front, in
    order, zeros behind: a list of 8-bit signals.

    A network of log2(n) stages: value ``k`` moves down by the number of zeros before it, the
    stage of bit ``b`` moving it by ``2**b`` if that bit is set (low bits first). Two nonzero
    values never meet in a slot (their distance never drops below 1), and zero values stay where
    they are with data 0 and no move, so a slot is the OR of what stays and what arrives.
    """
    n = len(vals)
    gaps = prefix_counts([~nz[k] for k in range(n)])
    amt_w = max(1, (n - 1).bit_length())
    cur = []
    for k in range(n):
        amt = Signal(amt_w, name=f"{name}_amt{k}")
        m.d.comb += amt.eq(Mux(nz[k], gaps[k], 0))
        cur.append((vals[k], amt))
    for b in range(amt_w if n > 1 else 0):
        s = 1 << b
        nxt = []
        for j in range(n):
            stay_d, stay_a = cur[j]
            keep = ~stay_a[b]
            d = Mux(keep, stay_d, 0)
            a = Mux(keep, stay_a, 0)
            if j + s < n:
                in_d, in_a = cur[j + s]
                d = d | Mux(in_a[b], in_d, 0)
                a = a | Mux(in_a[b], in_a, 0)
            sd = Signal(8, name=f"{name}_s{b}_d{j}")
            sa = Signal(amt_w, name=f"{name}_s{b}_a{j}")
            m.d.comb += [sd.eq(d), sa.eq(a)]
            nxt.append((sd, sa))
        cur = nxt
    return [d for d, _ in cur]
