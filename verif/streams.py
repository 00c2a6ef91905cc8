"""Stimulus, payload packing, reference models and stream drivers shared by the RTL tests.

Used by the fast Amaranth-simulator tests (``verif/test_*.py``) and by the cocotb benches
(``verif/cocotb/*_tb.py``) alike, so both check the same cases the same way:

* packing: Python integers in the bit order Amaranth gives a payload (first field / element in
  the low bits), which is also the order of the flattened Verilog ports;
* stimulus: random accumulator blocks and BFP8 tensors over the sparsity range, with clustered or
  scattered zeros, exponent extremes, saturation, ties for round-half-even, all-zero and dense
  blocks, all from a ``numpy.random.Generator`` so a seed replays a run;
* references: thin wrappers over the golden model (the contract);
* flow control: :class:`Pacer` (random bubbles on inputs, back-pressure on outputs) and the
  async Amaranth-simulator drivers :func:`stream_put` / :func:`stream_get`.
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Value

from golden.gemm import Accumulator
from hdl.bfp_layouts import ACC_BLOCK, ACC_EXP_W, ACC_W, BFP_BLOCK, BLOCK

__all__ = [
    "pack_acc_block",
    "pack_bfp_block",
    "unpack_bfp_block",
    "pack_beat",
    "unpack_beat",
    "bytes_to_beats",
    "beats_to_bytes",
    "acc_random",
    "acc_edge_cases",
    "ref_convert",
    "bfp_tensor",
    "bfp_edge_tensor",
    "ref_filter",
    "unpack_counters",
    "scatter_beats",
    "golden_decode",
    "block_spans",
    "malformed_streams",
    "Pacer",
    "stream_put",
    "stream_get",
    "stream_through",
    "stream_get_packets",
]

_ACC_EXP_OFF = ACC_BLOCK["exp"].offset
_ACC_MANT_OFF = ACC_BLOCK["mant"].offset
_BFP_EXP_OFF = BFP_BLOCK["exp"].offset
_BFP_MANT_OFF = BFP_BLOCK["mant"].offset


def _pack_lanes(values, width: int) -> int:
    mask = (1 << width) - 1
    word = 0
    for k, v in enumerate(values):
        word |= (int(v) & mask) << (k * width)
    return word


def pack_acc_block(mant, exp) -> int:
    """One :data:`~hdl.bfp_layouts.ACC_BLOCK` payload from 16 ``S`` and 16 ``ea``."""
    return (_pack_lanes(mant, ACC_W) << _ACC_MANT_OFF) | \
        (_pack_lanes(exp, ACC_EXP_W) << _ACC_EXP_OFF)


def pack_bfp_block(exp, mant) -> int:
    """One :data:`~hdl.bfp_layouts.BFP_BLOCK` payload from ``E`` and 16 mantissas."""
    return ((int(exp) & 0xFF) << _BFP_EXP_OFF) | (_pack_lanes(mant, 8) << _BFP_MANT_OFF)


def unpack_bfp_block(word: int):
    """``(E, mantissas)`` from a :data:`~hdl.bfp_layouts.BFP_BLOCK` payload."""
    exp = (word >> _BFP_EXP_OFF) & 0xFF
    raw = ((word >> _BFP_MANT_OFF) & ((1 << (8 * BLOCK)) - 1)).to_bytes(BLOCK, "little")
    return exp, np.frombuffer(raw, dtype=np.int8).copy()


def pack_beat(bus_width: int, data: int, keep: int, last: int) -> int:
    """One :func:`~hdl.bfp_layouts.bus_beat` payload."""
    return data | (keep << bus_width) | (int(last) << (bus_width + bus_width // 8))


def unpack_beat(bus_width: int, word: int):
    """``(data, keep, last)`` from a :func:`~hdl.bfp_layouts.bus_beat` payload."""
    nbytes = bus_width // 8
    return (word & ((1 << bus_width) - 1), (word >> bus_width) & ((1 << nbytes) - 1),
            (word >> (bus_width + nbytes)) & 1)


def bytes_to_beats(stream: bytes, bus_width: int):
    """Split a byte stream into ``(data, keep, last)`` beats, the last one partial.

    An empty stream is one beat with ``keep = 0`` and ``last = 1``.
    """
    nbytes = bus_width // 8
    if not stream:
        return [(0, 0, 1)]
    beats = []
    for at in range(0, len(stream), nbytes):
        chunk = stream[at:at + nbytes]
        last = at + nbytes >= len(stream)
        beats.append((int.from_bytes(chunk, "little"), (1 << len(chunk)) - 1, int(last)))
    return beats


def beats_to_bytes(beats, bus_width: int) -> bytes:
    """Join ``(data, keep, last)`` beats into bytes, checking that ``keep`` is contiguous.

    Raises ``AssertionError`` if a beat other than the last is partial or ``keep`` has a hole.
    """
    nbytes = bus_width // 8
    out = bytearray()
    for n, (data, keep, last) in enumerate(beats):
        count = keep.bit_length()
        assert keep == (1 << count) - 1, f"beat {n}: keep {keep:#x} is not contiguous"
        assert last or count == nbytes, f"beat {n}: partial beat (keep {keep:#x}) before last"
        out += data.to_bytes(nbytes, "little")[:count]
    return bytes(out)


# -- accumulator blocks (BFP converter) ---------------------------------------------------------

def _signed_of_width(rng, n, bits):
    """Random signed integers with magnitude below ``2**bits`` (bits per element)."""
    mag = np.floor(rng.random(n) * np.exp2(bits)).astype(np.int64)
    sign = np.where(rng.random(n) < 0.5, -1, 1)
    return sign * mag


def acc_random(rng, n: int, sparsity: float = 0.0, exp_spread: int = 8):
    """``n`` random accumulator blocks: ``(mant, exp)``, each ``(n, 16)`` int64.

    Mantissas have random magnitudes over the whole 32-bit range; each block's exponents sit
    around a random base (spread ``exp_spread``) drawn over the full 10-bit field, so flushed,
    normal and saturated blocks all occur. A fraction ``sparsity`` of the outputs is in the
    reset state ``(0, 0)``.
    """
    bits = rng.integers(0, ACC_W, size=(n, BLOCK))
    mant = _signed_of_width(rng, (n, BLOCK), bits)
    mant = np.clip(mant, -(1 << (ACC_W - 1)), (1 << (ACC_W - 1)) - 1)
    base = rng.integers(0, 1 << ACC_EXP_W, size=(n, 1))
    # Most blocks near the interesting band (flush at t = 148, saturation at t = 401).
    band = rng.integers(100, 440, size=(n, 1))
    base = np.where(rng.random((n, 1)) < 0.8, band, base)
    exp = np.clip(base + rng.integers(-exp_spread, exp_spread + 1, size=(n, BLOCK)),
                  0, (1 << ACC_EXP_W) - 1)
    zero = rng.random((n, BLOCK)) < sparsity
    return np.where(zero, 0, mant), np.where(zero, 0, exp)


def acc_edge_cases(rng):
    """Hand-made accumulator blocks: ``(mant, exp)``, each ``(n, 16)`` int64.

    All-zero blocks, single values, the extreme mantissas, the flush and saturation
    boundaries, round-half-even ties (to even and to odd), values that round up to 128, and
    mixes of flushed and live values.
    """
    big, small = (1 << (ACC_W - 1)) - 1, -(1 << (ACC_W - 1))
    blocks = []

    def add(mant, exp):
        mant = np.broadcast_to(np.asarray(mant, dtype=np.int64), (BLOCK,)).copy()
        assert np.all((mant >= small) & (mant <= big)), mant
        exp = np.broadcast_to(np.asarray(exp, dtype=np.int64), (BLOCK,)).copy()
        blocks.append((mant, exp))

    add(0, 0)  # reset state
    add(0, 1023)  # zero mantissas with any exponent are zero
    add([small] + [0] * 15, 300)
    add([big] + [0] * 15, 300)
    add([small, big] * 8, 300)
    add([1] + [-1] * 15, 300)
    for lead in (0, 1, 5, 6, 7, 30, 31):
        one = 1 << lead if lead < ACC_W - 1 else small  # +2**31 does not exist
        # flush boundary: t = lead + ea = 147 is flushed, 148 is kept
        add([one] + [3] * 15, 147 - lead)
        add([one] + [3] * 15, 148 - lead)
        add([-one if lead < 31 else one] + [0] * 15, np.r_[148 - lead, np.zeros(15, int)])
        # saturation boundary: t = 401 is E = 254, 402 and beyond saturate
        add([one] + list(range(-7, 8)), 401 - lead)
        add([one] + list(range(-7, 8)), 402 - lead)
        add([-one if lead < 31 else one, 1, -1, 5] * 4, 1023)
    # ties: max lane 2**20 (q = 64), others (2j+1) * 2**13 / 2 -> exact halves
    for j in range(8):
        add([1 << 20] + [(2 * j + 1) << 13, -((2 * j + 1) << 13)] * 7 + [0], 300)
    # just below and above ties, sticky bits far below
    add([1 << 20] + [(3 << 13) - 1, (3 << 13) + 1, (5 << 13) + 1, -(5 << 13) - 1] * 3
        + [1, -1, 0], 300)
    # rounds up to 128 and clamps: 2**21 - 1 scaled by 2**-14 is 127.99...
    add([(1 << 21) - 1, -((1 << 21) - 1), (1 << 21) - (1 << 13)] + [0] * 13, 300)
    # a live value next to one that flushes (different exponents in one block)
    add([1 << 10, 1 << 10] + [0] * 14, np.r_[140, 137, np.zeros(14, int)])
    # shift amounts 37 and 38 on -2**31 (r = E + 147 - ea, E = 173 from the first lane)
    add([1 << 20, small] + [0] * 14, np.r_[300, 283, np.zeros(14, int)])
    add([1 << 20, small] + [0] * 14, np.r_[300, 282, np.zeros(14, int)])
    # different exponents: shifts beyond the whole width
    add([1 << 30, 1 << 30, 1, -1] * 4, [400, 300, 200, 150] * 4)
    # random ties over many positions
    for _ in range(16):
        lead = int(rng.integers(8, 31))
        others = (2 * rng.integers(0, 64, size=15) + 1) << (lead - 7)
        signs = np.where(rng.random(15) < 0.5, -1, 1)
        add(np.r_[1 << lead, signs * others], int(rng.integers(150, 400)))
    mant = np.stack([b[0] for b in blocks])
    exp = np.stack([b[1] for b in blocks])
    return mant, exp


def ref_convert(mant, exp):
    """Golden BFP8 conversion of accumulator blocks: ``(E (n,), m (n, 16))``."""
    t = Accumulator(np.asarray(mant, dtype=np.int64), np.asarray(exp, dtype=np.int64))
    b = t.to_bfp()
    return b.exponents.reshape(-1), b.mantissas.reshape(-1, BLOCK)


# -- BFP8 tensors (filter, encoder, decoder) ----------------------------------------------------

def bfp_tensor(rng, n_blocks: int, sparsity: float, clustered: bool = False,
               extremes: bool = False):
    """A random canonical BFP8 tensor of ``n_blocks`` blocks: ``(E (n,), m (n, 16))``.

    ``sparsity`` is the fraction of zero mantissas. Unclustered: each mantissa is zero
    independently. Clustered: zeros come in whole blocks and whole runs of blocks (dead
    features), with the rest at a lower sparsity, so the overall fraction stays near
    ``sparsity``. ``extremes`` draws exponents from {1, 2, 253, 254} and mantissas from
    {+-1, +-64, +-127} more often.
    """
    n = n_blocks
    if clustered:
        # Runs of dead blocks of random length; live blocks carry density 0.5..1.
        inner = float(rng.uniform(0.0, min(0.5, sparsity))) if sparsity < 1 else 1.0
        dead_frac = 0.0 if inner >= 1 else max(0.0, 1 - (1 - sparsity) / (1 - inner))
        dead = np.zeros(n, dtype=bool)
        at = 0
        while at < n:
            run = int(rng.integers(1, 40))
            dead[at:at + run] = rng.random() < dead_frac
            at += run
        zero = (rng.random((n, BLOCK)) < inner) | dead[:, None]
    else:
        zero = rng.random((n, BLOCK)) < sparsity
    mant = rng.integers(1, 128, size=(n, BLOCK)) * np.where(rng.random((n, BLOCK)) < 0.5, -1, 1)
    if extremes:
        pick = np.array([1, -1, 64, -64, 127, -127])
        mant = np.where(rng.random((n, BLOCK)) < 0.5, pick[rng.integers(0, 6, (n, BLOCK))], mant)
    mant = np.where(zero, 0, mant).astype(np.int8)
    exp = rng.integers(1, 255, size=n)
    if extremes:
        ext = np.array([1, 2, 253, 254])
        exp = np.where(rng.random(n) < 0.5, ext[rng.integers(0, 4, n)], exp)
    exp = np.where(np.any(mant != 0, axis=1), exp, 0).astype(np.uint8)
    return exp, mant


def bfp_edge_tensor():
    """Hand-made blocks: all zero, fully dense, single values at each lane, extremes."""
    blocks = [(0, np.zeros(BLOCK, np.int8))]
    blocks.append((254, np.full(BLOCK, 127, np.int8)))
    blocks.append((1, np.full(BLOCK, -127, np.int8)))
    for k in range(BLOCK):
        m = np.zeros(BLOCK, np.int8)
        m[k] = 1 if k % 2 else -1
        blocks.append((127 + k, m))
    blocks.append((200, np.array([(-1) ** k * (k + 1) for k in range(BLOCK)], np.int8)))
    blocks.append((0, np.zeros(BLOCK, np.int8)))
    exp = np.array([b[0] for b in blocks], np.uint8)
    mant = np.stack([b[1] for b in blocks])
    return exp, mant


def ref_filter(exp, mant, te: int, tm: int, base: int, count_w: int = 32):
    """Golden filter and statistics of one tensor: ``(E_out, m_out (n, 16), stats)``.

    ``stats`` is a dict with ``values``, ``zeros``, ``filtered_zeros`` and ``hist`` (list).
    """
    from golden.bfp import BFPTensor
    from golden.sparsity import Threshold, filter, stats

    t = BFPTensor(np.asarray(exp, np.uint8), np.asarray(mant, np.int8).reshape(-1))
    thr = Threshold(te, tm)
    out = filter(t, thr)
    st = stats(t, thr, base, count_w)
    return (out.exponents, out.mantissas.reshape(-1, BLOCK),
            {"values": st.values, "zeros": st.zeros, "filtered_zeros": st.filtered_zeros,
             "hist": list(st.hist)})


def unpack_counters(word: int, count_w: int, n: int):
    """Split a flat vector of ``n`` counters of ``count_w`` bits (counter 0 in the low bits)."""
    mask = (1 << count_w) - 1
    return [(word >> (k * count_w)) & mask for k in range(n)]


def scatter_beats(rng, stream: bytes, bus_width: int, null_prob: float = 0.3):
    """Like :func:`bytes_to_beats`, but with random ``keep`` holes and null beats.

    Every beat keeps a random subset of its byte lanes (empty with probability ``null_prob``
    / 4); the unkept lanes hold random garbage, which the receiver must ignore.
    """
    nbytes = bus_width // 8
    beats, at = [], 0
    while True:
        if rng.random() < null_prob / 4:
            keep = 0
        else:
            keep = int(rng.integers(1, 1 << nbytes))
            if rng.random() > null_prob:
                keep = (1 << nbytes) - 1
        lanes = [int(v) for v in rng.integers(0, 256, nbytes)]
        for lane in range(nbytes):
            if keep >> lane & 1:
                if at < len(stream):
                    lanes[lane] = stream[at]
                    at += 1
                else:
                    keep &= ~(1 << lane)
        last = at >= len(stream)
        beats.append((int.from_bytes(bytes(lanes), "little"), keep, int(last)))
        if last:
            return beats


_GOLDEN_ERRORS = (
    (r"^Truncated HBM stream", "TRUNCATED"),
    (r"^Superblock \d+ L1 mask .* beyond the last block", "L1_BEYOND_END"),
    (r"^Block \d+ has its L1 bit set but an empty L2 mask", "EMPTY_L2"),
    (r"^Block \d+ exponent byte is 0", "ZERO_EXPONENT"),
    (r"^Block \d+ mantissa \d+ is the byte 0x00", "ZERO_MANTISSA"),
    (r"^Block \d+ mantissa \d+ is the byte 0x80", "MANTISSA_M128"),
    (r"^Trailing data after the HBM stream", "TRAILING_DATA"),
    (r"^Trailing bytes after the HBM stream are not zero padding", "BAD_PADDING"),
)


def golden_decode(data: bytes, n_blocks: int):
    """``golden.hbm.decode`` with its verdict as a :class:`~hdl.hbm_decoder.DecodeError` name.

    Returns ``(name, exponents, mantissas (n, 16))``; the arrays are None on an error. The
    error message is classified by its wording; an unknown message fails the test.
    """
    import re

    import golden.hbm

    try:
        e, m = golden.hbm.decode(data, n_blocks)
    except ValueError as exc:
        for pattern, name in _GOLDEN_ERRORS:
            if re.search(pattern, str(exc)):
                return name, None, None
        raise AssertionError(f"unclassified golden.hbm error: {exc}") from exc
    return "NONE", e, m.reshape(-1, BLOCK)


def block_spans(exp, mant):
    """Byte positions of a tensor's HBM v1 stream, computed from the tensor.

    Returns ``(ready, l1_at, rec_at)``: ``ready[b]`` is the offset after the last byte block
    ``b`` needs (its superblock's L1 mask, and its own record if nonzero), ``l1_at[s]`` the
    offset of superblock ``s``'s L1 mask, ``rec_at[b]`` the offset of block ``b``'s record
    (None for an all-zero block).
    """
    n = len(exp)
    nz = mant != 0
    ready, l1_at, rec_at = [], [], []
    pos = 0
    for b in range(n):
        if b % 16 == 0:
            l1_at.append(pos)
            pos += 2
        if nz[b].any():
            rec_at.append(pos)
            pos += 3 + int(nz[b].sum())
            ready.append(pos)
        else:
            rec_at.append(None)
            ready.append(l1_at[-1] + 2)
    return ready, l1_at, rec_at


def emitted_before(ready, p: int) -> int:
    """Blocks a streaming decoder can emit, in order, when bytes from ``p`` on are bad."""
    count = 0
    for r in ready:
        if r > p:
            break
        count += 1
    return count


def malformed_streams(rng, exp, mant):
    """Corruptions of one tensor's stream: ``[(kind, data, emitted)]``.

    ``kind`` names the error each corruption is meant to cause (the tests check that the
    golden model agrees, so the cases stay meaningful); ``emitted`` is how many blocks a
    streaming decoder emits before it finds the error (every block whose bytes all precede the
    corrupted byte). Also returns well-formed streams with zero padding of 1 to 7 bytes (kind
    ``NONE``).
    """
    import golden.hbm

    data = golden.hbm.encode(exp, mant)
    n = len(exp)
    ready, l1_at, rec_at = block_spans(exp, mant)
    nonzero = [b for b in range(n) if rec_at[b] is not None]
    out = []

    def put(kind, d, p):
        out.append((kind, bytes(d), emitted_before(ready, p) if p is not None else n))

    for p in sorted({0, 1, len(data) - 1, int(rng.integers(0, max(1, len(data))))}):
        if 0 <= p < len(data):
            put("TRUNCATED", data[:p], p)
    if nonzero:
        b = int(rng.choice(nonzero))
        at = rec_at[b]
        k = int((mant[b] != 0).sum())
        d = bytearray(data)
        d[at:at + 2] = b"\0\0"
        put("EMPTY_L2", d, at)
        d = bytearray(data)
        d[at + 2] = 0
        put("ZERO_EXPONENT", d, at + 2)
        i = int(rng.integers(0, k))
        d = bytearray(data)
        d[at + 3 + i] = 0
        put("ZERO_MANTISSA", d, at + 3 + i)
        d = bytearray(data)
        d[at + 3 + i] = 0x80
        put("MANTISSA_M128", d, at + 3 + i)
        # A bad mantissa in a block cut short: the truncation wins, as in the golden model.
        if k >= 2:
            d = bytearray(data[:at + 3 + k - 1])
            d[at + 3] = 0
            put("TRUNCATED", d, at + 3)
    if n % 16 and n:
        d = bytearray(data)
        d[l1_at[-1] + 1] |= 0x80  # bit 15 of the last (short) superblock
        put("L1_BEYOND_END", d, l1_at[-1])
    pad = int(rng.integers(1, 8))
    put("NONE", data + bytes(pad), None)
    put("TRAILING_DATA", data + bytes(8), None)
    put("TRAILING_DATA", data + bytes(rng.integers(0, 256, int(rng.integers(8, 40)))
                                       .astype(np.uint8)), None)
    d = bytearray(data + bytes(pad))
    d[len(data) + int(rng.integers(0, pad))] = int(rng.integers(1, 256))
    put("BAD_PADDING", d, None)
    return out


# -- flow control --------------------------------------------------------------------------------

class Pacer:
    """Random per-cycle decisions: bubbles on an input or back-pressure on an output.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (seeded by the test).
    prob : float
        Probability that a cycle is a bubble / stall; 0 disables it.
    burst : bool
        If True, stalls come in bursts (a two-state Markov chain with the same mean).
    """

    def __init__(self, rng, prob: float = 0.0, burst: bool = False):
        if not 0.0 <= prob < 1.0:
            raise ValueError(f"Stall probability must be in [0, 1), not {prob!r}")
        self._rng = rng
        self._prob = prob
        self._burst = burst
        self._stalled = False

    def stall(self) -> bool:
        """Whether this cycle is a bubble (input) or a stall (output)."""
        if self._prob == 0.0:
            return False
        if not self._burst:
            return bool(self._rng.random() < self._prob)
        # Leave a stall with probability 1/4, enter with p/(4(1-p)): mean fraction p.
        if self._stalled:
            self._stalled = bool(self._rng.random() >= 0.25)
        else:
            self._stalled = bool(self._rng.random() < self._prob / (4 * (1 - self._prob)))
        return self._stalled


async def stream_put(ctx, port, words, pacer: Pacer | None = None):
    """Drive integer payloads ``words`` into the Amaranth stream ``port`` (an ``In`` stream).

    ``valid`` never waits for ``ready``; with ``pacer`` random bubbles separate the words.
    """
    for word in words:
        while pacer is not None and pacer.stall():
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(Value.cast(port.payload), word)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def stream_get(ctx, port, count: int, pacer: Pacer | None = None, timeout: int = 100_000):
    """Take ``count`` integer payloads from the Amaranth stream ``port`` (an ``Out`` stream).

    Returns ``(words, cycles)``: the payloads and the cycle (counted from the call) at which
    each was taken. Fails after ``timeout`` cycles without a transfer.
    """
    words, cycles = [], []
    cycle = idle = 0
    while len(words) < count:
        ready = pacer is None or not pacer.stall()
        ctx.set(port.ready, int(ready))
        _, _, valid, payload = await ctx.tick().sample(port.valid, Value.cast(port.payload))
        if valid and ready:
            words.append(payload)
            cycles.append(cycle)
            idle = 0
        else:
            idle += 1
            assert idle < timeout, f"no output for {timeout} cycles ({len(words)}/{count} taken)"
        cycle += 1
    ctx.set(port.ready, 0)
    return words, cycles


async def stream_get_packets(ctx, port, packets: int, pacer: Pacer | None = None,
                             timeout: int = 100_000):
    """Take words from the Amaranth stream ``port`` until ``packets`` words had ``last`` set.

    ``port.payload`` must have a ``last`` field. Returns ``(packets, cycles)``: a list of lists
    of integer payloads, and the cycle at which each word was taken (flat).
    """
    out, cur, cycles = [], [], []
    cycle = idle = 0
    while len(out) < packets:
        ready = pacer is None or not pacer.stall()
        ctx.set(port.ready, int(ready))
        _, _, valid, payload, last = await ctx.tick().sample(
            port.valid, Value.cast(port.payload), port.payload.last)
        if valid and ready:
            cur.append(payload)
            cycles.append(cycle)
            idle = 0
            if last:
                out.append(cur)
                cur = []
        else:
            idle += 1
            assert idle < timeout, f"no output for {timeout} cycles ({len(out)} packets done)"
        cycle += 1
    ctx.set(port.ready, 0)
    return out, cycles


async def stream_through(ctx, i_port, o_port, words, count: int, in_pacer=None,
                         out_pacer=None, idle_limit: int = 1000):
    """Feed ``words`` into ``i_port`` while taking ``count`` words from ``o_port``, one loop.

    For units whose output can start before their input has ended (so that ``stream_put`` and
    ``stream_get`` cannot run one after the other). Returns ``(words_out, cycles)``: the
    payloads taken, the cycle (from the call) at which each was taken, and as third element
    the number of cycles the loop ran. Fails after ``idle_limit`` cycles with no transfer on
    either side.
    """
    pending = list(words)
    out, cycles = [], []
    cycle = idle = 0
    while len(out) < count or pending:
        offer = bool(pending) and not (in_pacer is not None and in_pacer.stall())
        ctx.set(i_port.valid, int(offer))
        if offer:
            ctx.set(Value.cast(i_port.payload), pending[0])
        ready = not (out_pacer is not None and out_pacer.stall())
        ctx.set(o_port.ready, int(ready))
        _, _, i_ready, o_valid, payload = await ctx.tick().sample(
            i_port.ready, o_port.valid, Value.cast(o_port.payload))
        moved = False
        if offer and i_ready:
            pending.pop(0)
            moved = True
        if o_valid and ready:
            out.append(payload)
            cycles.append(cycle)
            moved = True
        idle = 0 if moved else idle + 1
        assert idle < idle_limit, f"stuck: {len(out)}/{count} out, {len(pending)} to send"
        cycle += 1
    ctx.set(i_port.valid, 0)
    return out, cycles, cycle
