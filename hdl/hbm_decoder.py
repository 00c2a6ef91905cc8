"""HBM v1 decoder: the byte stream in on a 32- or 64-bit bus, BFP8 blocks out, with error codes.

The reverse of :mod:`hdl.hbm_encoder` and ``golden.hbm.decode``: for each tensor (one word on
``cmd``, :data:`DECODER_CMD`: its number of blocks and the ``budget`` flag) the decoder takes
beats up to and including the one with ``last`` and emits the tensor's blocks on ``o`` in order,
all-zero blocks (``E = 0``) included.

Budget mode (``budget = 1``, the operand streams of ``golden.jobs.read_stream``): the byte
stream is a budget that holds the HBM stream at its start. Once the tensor's last block has been
emitted, every further byte up to and including the beat with ``last`` is dropped without any
check (no ``TRAILING_DATA`` / ``BAD_PADDING``; ``code`` stays ``NONE``); ``last`` before the
last block is still ``TRUNCATED``, and every other error is found as without a budget. ``tail``
is high from the cycle after the last block was emitted (the cycle it is valid on ``o``; for
0 blocks the cycle after the ``cmd``) up to and including the cycle in which the beat with
``last`` is accepted on ``i``; it never rises if that beat was accepted earlier. Wired to
:class:`hdl.dma.DMAReader` ``stop``, it ends the DRAM read soon after the stream's end instead
of at the end of the budget. ``budget = 0`` is the plain HBM v1 check below.

Input path. The kept bytes of a beat (``keep`` set; null bytes anywhere are skipped, as
AXI4-Stream allows) are compacted on the way in, and the beat enters a queue of ``fifo_depth``
beats, built as ``16 / (bus_width / 8)`` queues written in turn (4 on a 32-bit bus, 2 on a
64-bit bus) so that their heads, as many consecutive beats, can be read in one cycle. Up to that
many beats (16 bytes) per cycle are appended to a byte buffer of 40 bytes, room for a whole
block (21 bytes at most) and a full intake.

Decoding. Each cycle the decoder looks at the front of the buffer and emits one block if the
bytes it needs are there: the 2 bytes of the L1 mask at the start of a superblock, nothing more
for a block whose L1 bit is clear, ``3 + k`` for a block with ``k`` nonzero mantissas (21 bytes
at most with the L1 mask). So a block costs one cycle or its bytes' share of the bus, whichever
is more; the queue banks bus beats while runs of all-zero blocks (which need no bytes) go out,
and the 16-bytes-per-cycle intake, about one live block, spends them afterwards, which brings
clustered tensors close to the bus bound as well, up to the queue's depth (measured in
``docs/architecture.md``).

Errors are the ones ``golden.hbm.decode`` rejects, found in the same order (stream order) and
reported as a :class:`DecodeError` on ``code``:

================== ========================================================================
``TRUNCATED``      the stream (``last``) ended before the tensor's last block
``L1_BEYOND_END``  the last superblock's L1 mask sets a bit beyond the tensor's last block
``EMPTY_L2``       a set L1 bit with an empty L2 mask
``ZERO_EXPONENT``  exponent byte 0 for a nonzero block
``ZERO_MANTISSA``  a mantissa byte 0 (the first bad mantissa of a block decides)
``MANTISSA_M128``  a mantissa byte 0x80 (-128)
``TRAILING_DATA``  more than 7 bytes after the tensor's last block
``BAD_PADDING``    a nonzero byte among up to 7 bytes after the tensor's last block
================== ========================================================================

Up to 7 zero bytes after the last block are padding and accepted. As with the golden model, a
truncated stream is reported as ``TRUNCATED`` even if the bytes that did arrive of the block in
progress hold a bad mantissa; errors in its L2 mask or exponent, which come first, win.

On an error the decoder emits no further block of that tensor (the blocks before the error
have been emitted and were valid), drops the rest of the stream up to and including the beat
with ``last``, and is then ready for the next ``cmd``. ``code`` holds the result of the current
or most recent tensor until the next ``cmd`` is accepted; ``error`` is ``code != NONE``.
Trailing-data errors are known only at ``last``. A tensor is finished when ``busy`` falls.
On an error ``tail`` stays low (a top that wants to cut the read short then as well can stop the
reader on ``error`` too).

Latency: a beat accepted on ``i`` in cycle ``n`` can be read from the queue in cycle ``n + 2``
and is in the byte buffer in cycle ``n + 3``; a block whose bytes are in the buffer is on ``o``
the next cycle. Beats of the next tensor may enter the queue before its ``cmd``.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bfp_layouts import (
    BFP_BLOCK,
    BLOCK,
    bus_beat,
    check_bus_width,
    popcount,
    prefix_counts,
    reject,
)

__all__ = ["HBMDecoder", "DecodeError", "DECODER_CMD", "decoder_cmd_layout"]

SUPERBLOCK = 16  #: blocks per superblock
MAX_PADDING = 7  #: zero bytes accepted after the last block (``golden.hbm.MAX_PADDING``)
N_BLOCKS_W = 32  #: width of the per-tensor block count on ``cmd``
#: ``cmd`` payload: the tensor's block count (low bits) and the budget flag (bit 32)
DECODER_CMD = data.StructLayout({"blocks": unsigned(N_BLOCKS_W), "budget": unsigned(1)})
INTAKE = 16  #: bytes the byte buffer can take from the input queue per cycle
CAPACITY = 40  #: byte buffer size: a whole block (21 bytes) and a full intake fit in it


def decoder_cmd_layout() -> data.StructLayout:
    """The layout of :class:`HBMDecoder`'s ``cmd`` payload (:data:`DECODER_CMD`).

    ``blocks`` (32 bits, the low bits: an integer payload ``n`` is ``n`` blocks without a
    budget) and ``budget`` (1 bit, bit 32): the stream is read inside a byte budget, so
    whatever follows its last block up to ``last`` is dropped unchecked.
    """
    return DECODER_CMD


class DecodeError(enum.Enum, shape=4):
    """What was wrong with a tensor's stream (``NONE``: nothing)."""
    NONE = 0
    TRUNCATED = 1
    L1_BEYOND_END = 2
    EMPTY_L2 = 3
    ZERO_EXPONENT = 4
    ZERO_MANTISSA = 5
    MANTISSA_M128 = 6
    TRAILING_DATA = 7
    BAD_PADDING = 8


class HBMDecoder(wiring.Component):
    """Streaming HBM v1 decoder (module docstring).

    Parameters
    ----------
    bus_width : int
        Width of the input bus in bits: 32 or 64.
    fifo_depth : int
        Beats the input queue holds, an even number >= 2 (default 256: enough to bank the
        bytes that arrive during long runs of empty blocks on a 32-bit bus). The queue is
        ``16 / (bus_width / 8)`` queues of ``fifo_depth`` divided by that, rounded up; a count
        of the beats held keeps the total at ``fifo_depth``.

    Attributes
    ----------
    cmd : In(stream.Signature(DECODER_CMD))
        One word per tensor: ``blocks``, its number of blocks (0 is allowed: the stream is then
        empty or up to 7 zero bytes, or anything with ``budget``), and ``budget`` (module
        docstring).
    i : In(stream.Signature(bus_beat(bus_width)))
        The byte stream: ``data``, ``keep`` (byte enables), ``last``.
    o : Out(stream.Signature(BFP_BLOCK))
        Decoded blocks.
    busy : Out(1)
        A tensor was accepted on ``cmd`` and is not finished (input drained, blocks out).
    code : Out(DecodeError)
        Result of the current or most recent tensor.
    error : Out(1)
        ``code != DecodeError.NONE``.
    tail : Out(1)
        Budget mode: the last block is out and the beat with ``last`` has not been accepted
        on ``i`` yet (module docstring): the rest of the input is dropped.

    Raises
    ------
    ValueError
        If ``bus_width`` is not 32 or 64, or ``fifo_depth`` is not an even integer >= 2.
    """

    def __init__(self, bus_width: int = 64, fifo_depth: int = 256):
        try:
            self._bus_width = check_bus_width(bus_width)
        except ValueError as exc:
            reject(self, exc)
        if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) \
                or fifo_depth < 2 or fifo_depth % 2:
            reject(self, ValueError(
                f"FIFO depth must be an even integer >= 2, not {fifo_depth!r}"))
        self._fifo_depth = fifo_depth
        super().__init__({
            "cmd": In(stream.Signature(DECODER_CMD)),
            "i": In(stream.Signature(bus_beat(bus_width))),
            "o": Out(stream.Signature(BFP_BLOCK)),
            "busy": Out(1),
            "code": Out(DecodeError),
            "error": Out(1),
            "tail": Out(1),
        })

    @property
    def bus_width(self) -> int:
        return self._bus_width

    @property
    def fifo_depth(self) -> int:
        return self._fifo_depth

    def elaborate(self, platform):
        m = Module()
        nb = self._bus_width // 8
        lanes = INTAKE // nb  # beats the byte buffer can take per cycle
        cap = CAPACITY  # byte buffer size (see the module docstring)

        buf = Signal(8 * cap)
        cnt = Signal(range(cap + 1))
        seen_last = Signal()  # the beat with last is in the buffer: no more bytes come
        consumed = Signal(range(cap + 1))
        running = Signal()  # a tensor's beats are being taken

        # ---- input: each beat's kept bytes are compacted on the way in; `lanes` beat queues
        # written in turn, so that up to `lanes` consecutive beats (the heads of all queues)
        # can enter the byte buffer in one cycle
        layout = data.StructLayout({
            "bytes": unsigned(8 * nb),  # the kept bytes, from byte 0
            "count": range(nb + 1),  # how many
            "last": unsigned(1),
        })
        keep = self.i.payload.keep
        before = prefix_counts(keep)
        packed = []
        for s in range(nb):
            byte_s = Const(0, 8)
            for k in range(s, nb):
                byte_s = byte_s | Mux(keep[k] & (before[k] == s),
                                      self.i.payload.data[8 * k:8 * k + 8], 0)
            packed.append(byte_s)
        entry = Signal(layout)
        m.d.comb += [
            entry.bytes.eq(Cat(packed)),
            entry.count.eq(popcount(keep)),
            entry.last.eq(self.i.payload.last),
        ]
        queues = []
        for q in range(lanes):
            fifo = SyncFIFOBuffered(width=layout.size, depth=-(-self._fifo_depth // lanes))
            m.submodules[f"queue{q}"] = fifo
            queues.append(fifo)
        wsel = Signal(range(lanes))  # queue the next beat goes to
        rsel = Signal(range(lanes))  # queue holding the oldest beat
        room = Const(1)
        if self._fifo_depth % lanes:
            # the queues hold more than fifo_depth beats together: count the beats held
            level = Signal(range(self._fifo_depth + 1))
            room = level < self._fifo_depth
        m.d.comb += self.i.ready.eq(Array(q.w_rdy for q in queues)[wsel] & room)
        accepted = self.i.valid & self.i.ready
        for q, fifo in enumerate(queues):
            m.d.comb += [
                fifo.w_data.eq(entry),
                fifo.w_en.eq(accepted & (wsel == q)),
            ]
        with m.If(accepted):
            m.d.sync += wsel.eq(wsel + 1)

        # the queues' heads rotated so that lane k holds the k-th oldest beat
        heads = Signal(lanes * layout.size)
        heads_valid = Signal(lanes)
        m.d.comb += [
            heads.eq(Cat(*(q.r_data for q in queues), *(q.r_data for q in queues))
                     >> (rsel * layout.size)),
            heads_valid.eq(Cat(*(q.r_rdy for q in queues), *(q.r_rdy for q in queues))
                           >> rsel),
        ]
        take, lasts = [], []
        in_bytes = Const(0, 8 * INTAKE)  # the bytes of the beats taken, in order
        in_n = Const(0, range(INTAKE + 1))  # how many
        for k in range(lanes):  # lane k: the k-th oldest beat
            valid = heads_valid[k]
            beat = Signal(layout, name=f"lane{k}_beat")
            t = Signal(name=f"lane{k}_take")
            m.d.comb += beat.eq(heads[k * layout.size:(k + 1) * layout.size])
            if k == 0:
                m.d.comb += t.eq(valid & running & ~seen_last & (cnt <= cap - nb))
            else:
                m.d.comb += t.eq(take[k - 1] & ~lasts[k - 1] & valid
                                 & (cnt <= cap - (k + 1) * nb))
            acc_bytes = Signal(8 * INTAKE, name=f"lane{k}_acc_bytes")
            acc_n = Signal(range(INTAKE + 1), name=f"lane{k}_acc_n")
            m.d.comb += [
                acc_bytes.eq(in_bytes | (Mux(t, beat.bytes, 0) << (in_n * 8))),
                acc_n.eq(in_n + Mux(t, beat.count, 0)),
            ]
            in_bytes, in_n = acc_bytes, acc_n
            with m.If(t & beat.last):
                m.d.sync += seen_last.eq(1)
            take.append(t)
            lasts.append(beat.last)
        n_taken = Signal(range(lanes + 1))
        m.d.comb += n_taken.eq(popcount(take))
        # beats with last in the queue (at most one leaves per cycle: the intake stops at last)
        lasts_held = Signal(range(self._fifo_depth + 2))
        last_taken = Signal()
        m.d.comb += last_taken.eq(Cat(t & lst for t, lst in zip(take, lasts, strict=True)).any())
        m.d.sync += lasts_held.eq(lasts_held + (accepted & self.i.payload.last) - last_taken)
        take_q = Signal(lanes)  # take rotated back: by queue
        m.d.comb += take_q.eq(Cat(*take, *take) >> (lanes - rsel).as_unsigned())
        for q, fifo in enumerate(queues):
            m.d.comb += fifo.r_en.eq(take_q[q])
        m.d.sync += rsel.eq(rsel + n_taken)
        if self._fifo_depth % lanes:
            m.d.sync += level.eq(level + accepted - n_taken)

        base = Signal(range(cap + 1))
        m.d.comb += base.eq(cnt - consumed)
        m.d.sync += [
            buf.eq((buf >> (consumed * 8)) | (in_bytes << (base * 8))),
            cnt.eq(base + in_n),
        ]

        # ---- decode the front of the buffer
        def byte(k):
            return buf[8 * k:8 * k + 8]

        sb_start = Signal()  # the next block is the first of a superblock: L1 comes first
        l1_reg = Signal(SUPERBLOCK)
        budget = Signal()  # the current tensor is read inside a budget
        j = Signal(range(SUPERBLOCK))
        left = Signal(N_BLOCKS_W)  # blocks still to decode
        l1 = Signal(SUPERBLOCK)
        present = Signal(range(SUPERBLOCK + 1))
        win = Signal(8 * (3 + BLOCK))  # the record of the next nonzero block
        m.d.comb += [
            l1.eq(Mux(sb_start, Cat(byte(0), byte(1)), l1_reg)),
            present.eq(Mux(left >= SUPERBLOCK, SUPERBLOCK, left)),
            win.eq(Mux(sb_start, buf[16:16 + len(win)], buf[:len(win)])),
        ]
        off = Mux(sb_start, 2, 0)
        l2 = win[:16]
        exp = win[16:24]
        mbytes = Array(win[24 + 8 * k:32 + 8 * k] for k in range(BLOCK))
        k_nz = Signal(range(BLOCK + 1))
        m.d.comb += k_nz.eq(popcount(l2))
        l2_before = prefix_counts(l2)
        mant = [Signal(8, name=f"mant{i}") for i in range(BLOCK)]
        bad_zero, bad_m128 = [], []
        for i in range(BLOCK):
            m.d.comb += mant[i].eq(Mux(l2[i], mbytes[l2_before[i]], 0))
            bad_zero.append(l2[i] & (mant[i] == 0))
            bad_m128.append(l2[i] & (mant[i] == 0x80))
        any_bad = Cat(bad_zero).any() | Cat(bad_m128).any()
        first_bad = Signal(DecodeError)
        for i in reversed(range(BLOCK)):  # last assignment wins: the lowest bad mantissa
            with m.If(bad_zero[i]):
                m.d.comb += first_bad.eq(DecodeError.ZERO_MANTISSA)
            with m.If(bad_m128[i]):
                m.d.comb += first_bad.eq(DecodeError.MANTISSA_M128)

        o_free = ~self.o.valid | self.o.ready
        emit = Signal()
        emit_zero = Signal()
        fail = Signal()
        fail_code = Signal(DecodeError)
        trail_n = Signal(range(MAX_PADDING + 2))
        trail_nz = Signal()
        code = Signal(DecodeError)
        m.d.comb += [
            self.code.eq(code),
            self.error.eq(code != DecodeError.NONE),
        ]

        def truncated_if_ended():
            with m.If(seen_last):
                m.d.comb += [fail.eq(1), fail_code.eq(DecodeError.TRUNCATED)]

        def fail_with(c):
            m.d.comb += [fail.eq(1), fail_code.eq(c)]

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [
                        left.eq(self.cmd.payload.blocks),
                        budget.eq(self.cmd.payload.budget),
                        j.eq(0),
                        sb_start.eq(1),
                        seen_last.eq(0),
                        code.eq(DecodeError.NONE),
                        trail_n.eq(0),
                        trail_nz.eq(0),
                        running.eq(1),
                    ]
                    with m.If((self.cmd.payload.blocks == 0) & self.cmd.payload.budget):
                        m.next = "SKIP"
                    with m.Elif(self.cmd.payload.blocks == 0):
                        m.next = "TRAIL"
                    with m.Else():
                        m.next = "DECODE"

            with m.State("DECODE"):
                with m.If(sb_start & (cnt < 2)):
                    truncated_if_ended()
                with m.Elif(sb_start & ((l1 >> present) != 0)):
                    fail_with(DecodeError.L1_BEYOND_END)
                with m.Elif(~l1.bit_select(j, 1)):
                    m.d.comb += [
                        emit.eq(o_free),
                        emit_zero.eq(1),
                        consumed.eq(Mux(o_free, off, 0)),
                    ]
                with m.Elif(cnt < off + 2):
                    truncated_if_ended()
                with m.Elif(l2 == 0):
                    fail_with(DecodeError.EMPTY_L2)
                with m.Elif(cnt < off + 3):
                    truncated_if_ended()
                with m.Elif(exp == 0):
                    fail_with(DecodeError.ZERO_EXPONENT)
                with m.Elif(cnt < off + 3 + k_nz):
                    truncated_if_ended()
                with m.Elif(any_bad):
                    fail_with(first_bad)
                with m.Else():
                    m.d.comb += [emit.eq(o_free), consumed.eq(Mux(o_free, off + 3 + k_nz, 0))]
                with m.If(emit):
                    m.d.sync += [
                        j.eq(j + 1),
                        left.eq(left - 1),
                        sb_start.eq(j == SUPERBLOCK - 1),
                        l1_reg.eq(l1),
                    ]
                    with m.If((left == 1) & budget):
                        m.next = "SKIP"
                    with m.Elif(left == 1):
                        m.next = "TRAIL"
                with m.If(fail):
                    m.d.sync += code.eq(fail_code)
                    m.next = "DRAIN"

            with m.State("TRAIL"):
                # Everything after the last block: count it and look for nonzero bytes.
                m.d.comb += consumed.eq(cnt)
                with m.If(trail_n + cnt > MAX_PADDING):
                    m.d.sync += trail_n.eq(MAX_PADDING + 1)
                with m.Else():
                    m.d.sync += trail_n.eq(trail_n + cnt)
                with m.If(buf != 0):
                    m.d.sync += trail_nz.eq(1)
                with m.If(seen_last & (cnt == 0)):
                    with m.If(trail_n > MAX_PADDING):
                        m.d.sync += code.eq(DecodeError.TRAILING_DATA)
                    with m.Elif(trail_nz):
                        m.d.sync += code.eq(DecodeError.BAD_PADDING)
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

            with m.State("DRAIN"):
                m.d.comb += consumed.eq(cnt)
                with m.If(seen_last & (cnt == 0)):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

            with m.State("SKIP"):
                # Budget mode, after the last block: drop everything up to last, unchecked.
                m.d.comb += [
                    consumed.eq(cnt),
                    self.tail.eq(~seen_last & (lasts_held == 0)),
                ]
                with m.If(seen_last & (cnt == 0)):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

        with m.If(emit):
            m.d.sync += [
                self.o.valid.eq(1),
                self.o.payload.exp.eq(Mux(emit_zero, 0, exp)),
            ]
            for i in range(BLOCK):
                m.d.sync += self.o.payload.mant[i].eq(Mux(emit_zero, 0, mant[i]))
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        m.d.comb += self.busy.eq(running | self.o.valid)
        return m
