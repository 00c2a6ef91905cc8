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

Area option ``lanes`` (keyword-only; 16, 8, 4, 2 or 1 mantissas expanded per cycle; default
16, everything above). With fewer lanes a nonzero block takes ``P = 16 / lanes`` cycles
(steps): step 0 takes its header (the L1 mask at a superblock's start, the L2 mask, the
exponent) and the nonzero mantissas of elements ``0 .. lanes - 1``, step ``s`` those of elements
``lanes * s ..``, each expanded straight into the output register; step 0 waits for ``o`` to be
free (empty or being read), and the block is valid on ``o`` the cycle after its last step. An
all-zero block still takes one cycle. A bad mantissa is remembered and reported after the
block's last step, so the verdicts (and the blocks emitted before an error) are those above. The
intake is then 8 bytes a cycle with 4 lanes or fewer (one beat on a 64-bit bus, two queues on a
32-bit bus) into a buffer of ``5 + lanes + 8`` bytes (16 bytes into ``5 + lanes + 16`` with 8
lanes), and it takes a beat when the bytes left after this cycle's step leave room for it. So a
nonzero block whose bytes are there is on ``o`` ``P`` cycles after the previous one: one block
every ``P`` cycles (21 bytes at most, which the intake keeps up with). A one-beat nonzero
block accepted on ``i`` in cycle ``n`` is on ``o`` in cycle ``n + 3 + P``.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .bfp_layouts import (
    BFP_BLOCK,
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
LANES = (16, 8, 4, 2, 1)  #: allowed ``lanes`` (mantissas expanded per cycle)
HEADER = 5  #: bytes before a block's mantissas at most: L1 mask, L2 mask, exponent
INTAKE = 16  #: bytes the byte buffer can take from the input queue per cycle (lanes >= 8)
NARROW_INTAKE = 8  #: the same with 4 lanes or fewer
CAPACITY = 40  #: byte buffer size with 16 lanes: a whole block (21 bytes) and a full intake


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
        ``16 / (bus_width / 8)`` queues (``8 / (bus_width / 8)`` with 4 lanes or fewer) of
        ``fifo_depth`` divided by that, rounded up; a count of the beats held keeps the total
        at ``fifo_depth``.
    lanes : int
        Keyword-only: mantissas expanded per cycle, 16 (default: one block per cycle), 8, 4,
        2 or 1 (a nonzero block every ``16 / lanes`` cycles, less area; module docstring).

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
        If ``bus_width`` is not 32 or 64, ``fifo_depth`` is not an even integer >= 2, or
        ``lanes`` is not one of 16, 8, 4, 2, 1.
    """

    def __init__(self, bus_width: int = 64, fifo_depth: int = 256, *, lanes: int = 16):
        try:
            self._bus_width = check_bus_width(bus_width)
        except ValueError as exc:
            reject(self, exc)
        if isinstance(fifo_depth, bool) or not isinstance(fifo_depth, int) \
                or fifo_depth < 2 or fifo_depth % 2:
            reject(self, ValueError(
                f"FIFO depth must be an even integer >= 2, not {fifo_depth!r}"))
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes not in LANES:
            reject(self, ValueError(
                f"Lanes must be one of {', '.join(map(str, LANES))}, not {lanes!r}"))
        self._fifo_depth = fifo_depth
        self._lanes = lanes
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

    @property
    def lanes(self) -> int:
        return self._lanes

    def elaborate(self, platform):
        m = Module()
        nb = self._bus_width // 8
        g_w = self._lanes  # mantissas expanded per cycle
        steps = SUPERBLOCK // g_w  # cycles a nonzero block takes
        window = HEADER + g_w  # bytes a cycle's step may need at most
        intake = INTAKE if g_w >= 8 else NARROW_INTAKE
        n_q = max(1, intake // nb)  # beats the byte buffer can take per cycle
        cap = CAPACITY if g_w == SUPERBLOCK else window + intake  # byte buffer size

        buf = Signal(8 * cap)
        cnt = Signal(range(cap + 1))
        seen_last = Signal()  # the beat with last is in the buffer: no more bytes come
        consumed = Signal(range(window + 1))
        flush = Signal()  # drop the whole buffer (after the last block, after an error)
        running = Signal()  # a tensor's beats are being taken
        base = Signal(range(cap + 1))  # bytes kept in the buffer this cycle (before intake)
        # With 16 lanes the intake looks at the buffer's fill before this cycle's bytes leave
        # (a shorter path); with fewer, after (the narrow buffer stays full enough).
        fill = cnt if g_w == SUPERBLOCK else base

        # ---- input: each beat's kept bytes are compacted on the way in; `n_q` beat queues
        # written in turn, so that up to `n_q` consecutive beats (the heads of all queues)
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
        for q in range(n_q):
            fifo = SyncFIFOBuffered(width=layout.size, depth=-(-self._fifo_depth // n_q))
            m.submodules[f"queue{q}"] = fifo
            queues.append(fifo)
        wsel = Signal(range(n_q))  # queue the next beat goes to
        rsel = Signal(range(n_q))  # queue holding the oldest beat
        room = Const(1)
        if self._fifo_depth % n_q:
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
        heads = Signal(n_q * layout.size)
        heads_valid = Signal(n_q)
        m.d.comb += [
            heads.eq(Cat(*(q.r_data for q in queues), *(q.r_data for q in queues))
                     >> (rsel * layout.size)),
            heads_valid.eq(Cat(*(q.r_rdy for q in queues), *(q.r_rdy for q in queues))
                           >> rsel),
        ]
        take, lasts = [], []
        in_bytes = Const(0, 8 * intake)  # the bytes of the beats taken, in order
        in_n = Const(0, range(intake + 1))  # how many
        for k in range(n_q):  # lane k: the k-th oldest beat
            valid = heads_valid[k]
            beat = Signal(layout, name=f"lane{k}_beat")
            t = Signal(name=f"lane{k}_take")
            m.d.comb += beat.eq(heads[k * layout.size:(k + 1) * layout.size])
            if k == 0:
                m.d.comb += t.eq(valid & running & ~seen_last & (fill <= cap - nb))
            else:
                m.d.comb += t.eq(take[k - 1] & ~lasts[k - 1] & valid
                                 & (fill <= cap - (k + 1) * nb))
            acc_bytes = Signal(8 * intake, name=f"lane{k}_acc_bytes")
            acc_n = Signal(range(intake + 1), name=f"lane{k}_acc_n")
            m.d.comb += [
                acc_bytes.eq(in_bytes | (Mux(t, beat.bytes, 0) << (in_n * 8))),
                acc_n.eq(in_n + Mux(t, beat.count, 0)),
            ]
            in_bytes, in_n = acc_bytes, acc_n
            with m.If(t & beat.last):
                m.d.sync += seen_last.eq(1)
            take.append(t)
            lasts.append(beat.last)
        n_taken = Signal(range(n_q + 1))
        m.d.comb += n_taken.eq(popcount(take))
        # beats with last in the queue (at most one leaves per cycle: the intake stops at last)
        lasts_held = Signal(range(self._fifo_depth + 2))
        last_taken = Signal()
        m.d.comb += last_taken.eq(Cat(t & lst for t, lst in zip(take, lasts, strict=True)).any())
        m.d.sync += lasts_held.eq(lasts_held + (accepted & self.i.payload.last) - last_taken)
        take_q = Signal(n_q)  # take rotated back: by queue
        m.d.comb += take_q.eq(Cat(*take, *take) >> (n_q - rsel).as_unsigned())
        for q, fifo in enumerate(queues):
            m.d.comb += fifo.r_en.eq(take_q[q])
        m.d.sync += rsel.eq(rsel + n_taken)
        if self._fifo_depth % n_q:
            m.d.sync += level.eq(level + accepted - n_taken)

        m.d.comb += base.eq(Mux(flush, 0, cnt - consumed))
        # a beat is taken only if base <= cap - nb: the low bits of base place the bytes taken
        at = base[:(cap - nb).bit_length()]
        m.d.sync += [
            buf.eq(Mux(flush, 0, buf >> (consumed * 8)) | (in_bytes << (at * 8))),
            cnt.eq(base + in_n),
        ]

        # ---- decode the front of the buffer: a nonzero block takes `steps` cycles, the first
        # with its header; each step expands `g_w` mantissas into the output register
        def byte(k):
            return buf[8 * k:8 * k + 8]

        sb_start = Signal()  # the next block is the first of a superblock: L1 comes first
        l1_reg = Signal(SUPERBLOCK)
        budget = Signal()  # the current tensor is read inside a budget
        j = Signal(range(SUPERBLOCK))
        left = Signal(N_BLOCKS_W)  # blocks still to decode
        l1 = Signal(SUPERBLOCK)
        present = Signal(range(SUPERBLOCK + 1))
        step = Signal(range(steps))  # step of the block in progress
        first = Signal()  # step 0: the header is at the front of the buffer
        last_step = Signal()
        m.d.comb += [
            l1.eq(Mux(sb_start, Cat(byte(0), byte(1)), l1_reg)),
            present.eq(Mux(left >= SUPERBLOCK, SUPERBLOCK, left)),
            first.eq(step == 0),
            last_step.eq(step == steps - 1),
        ]
        off = Mux(sb_start, 2, 0)
        l2 = Signal(16)
        exp = Signal(8)
        m.d.comb += [
            l2.eq(Mux(sb_start, buf[16:32], buf[:16])),
            exp.eq(Mux(sb_start, buf[32:40], buf[16:24])),
        ]
        # this step's L2 bits and compacted mantissa bytes
        l2_rest = Signal(max(1, SUPERBLOCK - g_w))  # the L2 bits of the later steps
        grp = Signal(g_w)
        mwin = Signal(8 * g_w)
        head_win = Mux(sb_start, buf[8 * HEADER:8 * (HEADER + g_w)],
                       buf[8 * (HEADER - 2):8 * (HEADER - 2 + g_w)])
        if steps == 1:
            m.d.comb += [grp.eq(l2), mwin.eq(head_win)]
        else:
            m.d.comb += [
                grp.eq(Mux(first, l2[:g_w], l2_rest[:g_w])),
                mwin.eq(Mux(first, head_win, buf[:8 * g_w])),
            ]
        k_nz = Signal(range(g_w + 1))
        m.d.comb += k_nz.eq(popcount(grp))
        grp_before = prefix_counts(grp)
        mbytes = [mwin[8 * k:8 * k + 8] for k in range(g_w)]
        mant = [Signal(8, name=f"mant{i}") for i in range(g_w)]
        for i in range(g_w):
            m.d.comb += mant[i].eq(Mux(grp[i], Array(mbytes[:i + 1])[grp_before[i]], 0))
        # bad mantissas, checked on the compacted bytes: the lowest bad one decides
        first_bad = Signal(DecodeError)
        for k in reversed(range(g_w)):  # last assignment wins: the lowest bad mantissa
            with m.If((k_nz > k) & (mbytes[k] == 0)):
                m.d.comb += first_bad.eq(DecodeError.ZERO_MANTISSA)
            with m.If((k_nz > k) & (mbytes[k] == 0x80)):
                m.d.comb += first_bad.eq(DecodeError.MANTISSA_M128)
        bad_reg = Signal(DecodeError)  # the first bad mantissa of the earlier steps
        bad_code = Signal(DecodeError)
        if steps == 1:
            m.d.comb += bad_code.eq(first_bad)
        else:
            m.d.comb += bad_code.eq(Mux(bad_reg != DecodeError.NONE, bad_reg, first_bad))

        o_free = ~self.o.valid | self.o.ready
        ok = Signal()  # the step's bytes are there and its header is good
        adv = Signal()  # the step is done this cycle
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
                        step.eq(0),
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
                with m.If(~first):
                    with m.If(cnt < k_nz):
                        truncated_if_ended()
                    with m.Else():
                        m.d.comb += ok.eq(1)
                with m.Elif(sb_start & (cnt < 2)):
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
                with m.Else():
                    m.d.comb += ok.eq(1)
                with m.If(ok & last_step & (bad_code != DecodeError.NONE)):
                    fail_with(bad_code)
                with m.Elif(ok):
                    # the first step writes the output register: it must be free
                    m.d.comb += [
                        adv.eq(o_free | ~first),
                        emit.eq((o_free | ~first) & last_step),
                        consumed.eq(Mux(o_free | ~first, Mux(first, off + 3, 0) + k_nz, 0)),
                    ]
                if steps > 1:
                    with m.If(adv):
                        m.d.sync += [
                            step.eq(Mux(last_step, 0, step + 1)),
                            l2_rest.eq(Mux(first, l2[g_w:], l2_rest >> g_w)),
                            bad_reg.eq(Mux(first, first_bad, bad_code)),
                        ]
                    with m.If(adv & first):
                        m.d.sync += [sb_start.eq(0), l1_reg.eq(l1)]
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
                    m.d.sync += [code.eq(fail_code), step.eq(0)]
                    m.next = "DRAIN"

            with m.State("TRAIL"):
                # Everything after the last block: count it and look for nonzero bytes.
                m.d.comb += flush.eq(1)
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
                m.d.comb += flush.eq(1)
                with m.If(seen_last & (cnt == 0)):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

            with m.State("SKIP"):
                # Budget mode, after the last block: drop everything up to last, unchecked.
                m.d.comb += [
                    flush.eq(1),
                    self.tail.eq(~seen_last & (lasts_held == 0)),
                ]
                with m.If(seen_last & (cnt == 0)):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"

        # the output register: written in place, step s writes mantissas g_w*s ..
        with m.If(emit_zero & emit):
            m.d.sync += self.o.payload.exp.eq(0)
            for i in range(SUPERBLOCK):
                m.d.sync += self.o.payload.mant[i].eq(0)
        with m.Elif(adv):
            with m.If(first):
                m.d.sync += self.o.payload.exp.eq(exp)
            for s in range(steps):
                with m.If(step == s):
                    for i in range(g_w):
                        m.d.sync += self.o.payload.mant[s * g_w + i].eq(mant[i])
        with m.If(emit):
            m.d.sync += self.o.valid.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        m.d.comb += self.busy.eq(running | self.o.valid)
        return m
