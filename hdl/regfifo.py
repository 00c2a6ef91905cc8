"""A small synchronous FIFO in flip-flops, for shallow and wide queues.

``amaranth.lib.fifo.SyncFIFO`` keeps its entries in a memory with an asynchronous read port,
which Yosys maps to distributed RAM. On the ECP5 a ``TRELLIS_DPR16X4`` (16 x 4 bits) occupies
three slices, six LUT positions, whatever the depth: a 672-bit queue costs about 1,000 LUT
positions at depth 2. :class:`RegFIFO` holds its ``depth`` entries in registers written with a
clock enable and reads through a ``depth``-to-1 multiplexer: at depth 2 one LUT per bit.

The interface is the subset of ``SyncFIFO`` the engine uses, with the same timing:
``w_en & w_rdy`` writes, ``r_en & r_rdy`` reads, ``r_data`` shows the head combinationally
(first-word fall-through), and an entry written in a cycle can be read in the next one.
"""

from amaranth import Array, Elaboratable, Module, Mux, Signal
from amaranth.lib.memory import Memory
from amaranth.utils import ceil_log2

__all__ = ["BlockRAMQueue", "RegFIFO"]


class _Queue(Elaboratable):
    """The ``SyncFIFO``-like ports, their checks and the pointer and level logic shared by
    :class:`RegFIFO` and :class:`BlockRAMQueue`."""

    def __init__(self, width, depth, min_depth, max_depth=None):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"width must be a positive integer, not {width!r}")
        if (not isinstance(depth, int) or isinstance(depth, bool) or depth < min_depth
                or (max_depth is not None and depth > max_depth)):
            rule = (f"from {min_depth} to {max_depth}" if max_depth is not None
                    else f"of at least {min_depth}")
            raise ValueError(f"depth must be an integer {rule}, not {depth!r}")
        self.width = width
        self.depth = depth
        self.w_data = Signal(width)
        self.w_en = Signal()
        self.w_rdy = Signal()
        self.r_data = Signal(width)
        self.r_en = Signal()
        self.r_rdy = Signal()
        self.level = Signal(range(depth + 1))

    def _pointers(self, m):
        """Flags and level; the write and read pointers (advanced on a write, a read) and the
        write and read strobes."""
        d = self.depth
        wp = Signal(max(1, ceil_log2(d)))
        rp = Signal(max(1, ceil_log2(d)))
        do_w = Signal()
        do_r = Signal()
        m.d.comb += [
            self.w_rdy.eq(self.level != d),
            self.r_rdy.eq(self.level != 0),
            do_w.eq(self.w_en & self.w_rdy),
            do_r.eq(self.r_en & self.r_rdy),
        ]
        with m.If(do_w):
            m.d.sync += wp.eq(_next(wp, d))
        with m.If(do_r):
            m.d.sync += rp.eq(_next(rp, d))
        m.d.sync += self.level.eq(self.level + do_w - do_r)
        return wp, rp, do_w, do_r


class RegFIFO(_Queue):
    """First-word fall-through FIFO of ``depth`` entries of ``width`` bits, in flip-flops.

    Parameters
    ----------
    width : int
        Bits per entry (at least 1).
    depth : int
        Entries (at least 1; at most 8: deeper queues belong in RAM).

    Attributes
    ----------
    w_data, w_en, w_rdy, r_data, r_en, r_rdy, level :
        As ``amaranth.lib.fifo.SyncFIFO``.
    """

    def __init__(self, *, width: int, depth: int):
        super().__init__(width, depth, 1, 8)

    def elaborate(self, platform):
        m = Module()
        d = self.depth
        store = Array(Signal(self.width, name=f"entry{i}") for i in range(d))
        wp, rp, do_w, do_r = self._pointers(m)
        m.d.comb += self.r_data.eq(store[rp])
        with m.If(do_w):
            m.d.sync += store[wp].eq(self.w_data)
        return m


def _next(ptr, depth):
    """``ptr + 1`` modulo ``depth``."""
    if depth == 1:
        return 0
    if depth & (depth - 1) == 0:
        return ptr + 1
    return Mux(ptr == depth - 1, 0, ptr + 1)


class BlockRAMQueue(_Queue):
    """First-word fall-through FIFO of ``depth`` entries of ``width`` bits in block RAM, for a
    queue whose entries are always written at least two cycles before they are read.

    The interface is :class:`RegFIFO`'s. ``r_data`` is the block RAM's registered read port,
    whose address is the read pointer after this cycle's read (so the next entry is there the
    cycle after a read); an entry becomes visible in ``r_data`` two cycles after the cycle it
    was written in, and until then ``r_data`` shows stale data (``r_rdy`` does not wait for
    it: the user guarantees the two cycles). In exchange the memory carries Yosys's
    ``ram_style = "block"`` and ``no_rw_check``: no read-during-write logic, one DP16KD per
    36 bits of width on the ECP5 (up to 512 entries), no LUTs or flip-flops for the storage.

    Parameters
    ----------
    width : int
        Bits per entry (at least 1).
    depth : int
        Entries (at least 2).
    """

    def __init__(self, *, width: int, depth: int):
        super().__init__(width, depth, 2)

    def elaborate(self, platform):
        m = Module()
        d = self.depth
        mem = Memory(shape=self.width, depth=d, init=[],
                     attrs={"ram_style": "block", "no_rw_check": 1})
        m.submodules.storage = mem
        wport = mem.write_port()
        # an asynchronous read port and a register: Yosys folds the register into the block
        # RAM's read port, and no_rw_check applies to it
        rport = mem.read_port(domain="comb")
        wp, rp, do_w, do_r = self._pointers(m)
        m.d.comb += [
            wport.addr.eq(wp), wport.data.eq(self.w_data), wport.en.eq(do_w),
            rport.addr.eq(Mux(do_r, _next(rp, d), rp)),
        ]
        m.d.sync += self.r_data.eq(rport.data)
        return m
