"""The job level of the accelerator: a reference executor for descriptor lists (the contract).

:func:`execute` runs a list of descriptors (:mod:`hdl.descriptor`) on a DRAM image exactly as
the hardware sequencer must: it validates each descriptor, reads its HBM v1 operand streams,
runs :func:`golden.gemm.matmul` (carrying the accumulators between the K segments of a tile),
and drains the result through ReLU, the BFP8 converter, the sparsity filter and the HBM encoder
(or as RAW records) into DRAM, with a statistics record per descriptor. The RTL sequencer,
output path and DMA are verified against it; the host runtime (:mod:`runtime`) uses it as the
in-memory accelerator of :class:`runtime.transport.GoldenTransport`.

Tiles
    A GEMM descriptor computes one output tile ``C (m x n) = A (m x K) @ B (n x K).T`` with
    ``K = 16 * kblocks``; ``m``, ``n`` and ``kblocks`` are at least 1 and at most ``max_m``,
    ``max_n`` and ``max_k / 16`` of the engine configuration. Every operand is an HBM v1 stream
    of a row-major tile, blocks of 16 along the stream's last axis:

    * ``A``: ``m`` rows of ``kblocks`` blocks (``m * kblocks`` blocks); with ``A_REBLOCK`` a
      tile stored ``K x C`` (``16 * kblocks`` rows of ``ceil(m / 16)`` blocks, blocked along
      ``C``) that :func:`golden.gemm.reblock` turns into ``C x K`` blocked along ``K``; its
      first ``m`` rows are ``A``;
    * ``B``: ``n`` rows of ``kblocks`` blocks; ``B_REBLOCK`` likewise (``16 * kblocks`` rows of
      ``ceil(n / 16)`` blocks, first ``n`` rows of the re-blocked tile);
    * ``MASK``: a stream of ``m`` rows of ``ceil(n / 16)`` blocks (the forward copy of the
      activations at the output positions); output ``(i, j)`` is computed iff its mantissa is
      nonzero (:func:`golden.gemm.matmul` ``out_mask``).

    The three phases (``docs/numerics.md``, orientation), for a layer with ``N`` samples, ``K``
    inputs and ``Co`` outputs; ``W`` is stored ``Co x K`` blocked along ``K`` and ``W^T``
    ``K x Co`` blocked along ``Co``, both quantized from the same master weights:

    ===== ====================== ============== ============== =================================
    phase C                      m (rows)       n (columns)    K segment (kblocks)
    ===== ====================== ============== ============== =================================
    FP    ``Y = X W^T``          samples of X   outputs of W   inputs: a column tile of ``X``
    BP    ``dX = dY (W^T)^T``    samples of dY  inputs (W^T)   outputs: a column tile of ``dY``
    WG    ``dW = dY^T X``        outputs (dY)   inputs (X)     samples: a row tile of both
    ===== ====================== ============== ============== =================================

    WG sets ``A_REBLOCK`` and ``B_REBLOCK`` (A = a tile of ``dY``, B = a tile of ``X``, both
    stored ``N x C``); BP sets ``MASK`` with the forward copy of the layer's input activations.

Tensors larger than a tile
    A tensor is stored as a grid of tile streams: row tiles of ``R_t`` rows, column tiles of
    ``C_t`` columns (the last ones may be shorter), one HBM stream per tile, written by the
    descriptor that produced the tile (or by the host). HBM streams have no index, so a
    consumer takes a whole stream as one operand: the K segments of a consumer are the column
    tiles (FP, BP) or row tiles (WG) of its operands. Hence one ``(R_t, C_t)`` for every
    tensor of a network, with ``C_t <= min(max_m, max_n, max_k)`` and ``R_t <= min(max_m,
    max_k)``, both multiples of 16 (:mod:`runtime.image` picks the largest), and ``N`` a
    multiple of 16 wherever WG reads it. An output tile ``(i, j)`` is the chain of descriptors
    over its K segments ``s = 0 .. S-1``: segment 0 without ``CARRY``, every later one with
    ``CARRY``; every segment but the last with ``KEEP``. ``KEEP`` leaves the accumulators in the
    output path's buffer and writes no output; ``CARRY`` starts the engine from them instead of
    the reset state. The partials then join the accumulators in ascending block order whatever
    the tiling, so the chain gives exactly :func:`golden.gemm.matmul` over the whole ``K``
    (``init=`` of the previous segment's result). Rules (else ``BAD_CHAIN``): a ``CARRY``
    descriptor must directly follow (``NOP`` s aside) a ``KEEP`` GEMM of the same ``m`` and
    ``n``; a GEMM without ``CARRY`` must not follow a pending ``KEEP``; a job must not end with
    a pending ``KEEP``. Accumulators never pass from one job to the next.

Operand streams
    ``a_len``, ``b_len``, ``mask_len`` are byte *budgets*: a stream is read from its start and
    ends after its last block (it delimits itself once its block count is known); the bytes
    after it inside the budget are ignored, the reader never reads beyond the budget. A stream
    that needs more bytes than its budget is truncated (``BAD_STREAM``). This lets one job chain
    layers whose stream lengths only the hardware knows: the host gives the capacity of the
    region the producer wrote. Within the stream, every :func:`golden.hbm.decode` check applies.

Output (the drain, ``hdl/output_path.py``)
    Unless ``KEEP``: optional ReLU on the accumulators (``RELU``), then either ``RAW``: ``m * n``
    8-byte records (``S`` int32 LE, ``ea`` uint16 LE, two zero bytes), row-major, to
    ``out_addr`` (``out_cap > 0`` required); or HBM: the BFP8 converter over ``m`` rows of
    ``ceil(n / 16)`` blocks (columns ``>= n`` zero), the forward copy's HBM stream to
    ``out_addr`` if ``out_cap > 0``, the filtered copy (:func:`golden.sparsity.filter` with
    ``Threshold(tau_te, tau_tm)`` if ``FILTER`` is set, else threshold 0) to ``filt_addr`` if
    ``filt_cap > 0`` (at least one of the two, else ``NO_OUTPUT``); the statistics
    (:func:`golden.sparsity.stats` of the unfiltered tile with that threshold and
    ``hist_base``) are taken either way. Streams are written without padding (exact byte
    count, byte strobes on the last beat). A stream longer than its capacity is written up to
    the capacity, the rest is dropped, both copies are still written, then the job stops with
    ``OVERFLOW``. Capacities are multiples of 8 bytes (the DMA writer's beats).

Weight update (``Flag.UPDATE``, on the final WG tile of a chain)
    The tile ``C = dW`` (``m`` outputs x ``n`` inputs, accumulators) updates the weights it
    belongs to, element by element in row-major order, with :func:`golden.update.update_records`
    (fixed-point SGD; ``docs/numerics.md`` section 7) and the hyper-parameter registers
    ``lr``, ``momentum``, ``weight_decay`` (:meth:`golden.update.Hyper.from_word`). The
    *state* is ``m * n`` records of :data:`STATE_RECORD_BYTES` (int32 master ``w``, Q8.24, then
    int32 velocity ``v``, little-endian) at ``mask_addr``, ``mask_len`` = ``m * n * 8``, read
    and written back in place (a word of ``-2**31`` reads as ``-(2**31 - 1)``). The new masters
    then give ``W`` (``m`` rows of ``ceil(n / 16)`` blocks, ``quantize_exact`` of ``w *
    2**-24``: the converter fed ``S = w``, ``ea = 250``) to ``out_addr`` if ``out_cap > 0``,
    and ``W^T`` (``n`` rows of ``ceil(m / 16)`` blocks) to ``filt_addr`` if ``filt_cap > 0``,
    written like HBM outputs (capacity, ``OVERFLOW``). ``UPDATE`` excludes ``RELU``,
    ``FILTER``, ``MASK``, ``KEEP`` and ``RAW`` (``BAD_OP``) and needs ``n <= max_m``, ``m <=
    max_n`` (``W^T`` passes through the same buffer; ``BAD_SHAPE``). Its record has no filter
    counters (``flags`` bit 0 clear). No dW goes to DRAM.

Statistics record (:class:`StatsRecord`, :data:`STATS_BYTES` = 176 bytes, little-endian)
    written to ``stats_addr`` after the output of every GEMM descriptor with ``stats_addr !=
    0`` (``KEEP`` segments too: then the filter counters are 0), not for a failing one:

    ====== ======= ===========================================================================
    offset type    field
    ====== ======= ===========================================================================
    0      u32     ``values``: elements the filter saw (``m * 16 * ceil(n / 16)``; 0 for RAW
                   and KEEP)
    4      u32     ``zeros``: zero mantissas in the unfiltered tile
    8      u32     ``filtered_zeros``: zero mantissas after the filter
    12     u8 x 4  ``hist_base``, ``te``, ``tm`` (the threshold applied: 0, 0 without
                   ``FILTER``), ``flags`` (bit 0: the counters are valid, i.e. an HBM drain)
    16     u32x32  ``hist``: exponent histogram (:func:`golden.sparsity.stats`)
    144    u32     ``out_bytes``: bytes written to ``out_addr`` (forward copy or RAW)
    148    u32     ``filt_bytes``: bytes written to ``filt_addr``
    152    u64     ``macs_dense``: ``m * n * 16 * kblocks``
    160    u64     ``macs_nonzero``: MACs with both operands nonzero and, with ``MASK``, an
                   unmasked output: ``sum over computed (i, j) of #{k: A[i,k] != 0 and
                   B[j,k] != 0}`` on the operands as the engine sees them (after re-blocking),
                   the count of ``golden.nn.Numerics.macs``
    168    u32     index of the descriptor in its job
    172    u32     zero
    ====== ======= ===========================================================================

    Counters are 32-bit and saturate (:data:`golden.sparsity.COUNT_W`). Summing the records of
    a tensor's tiles gives its :class:`golden.sparsity.FilterStats`. ``macs_dense`` equals
    ``golden.nn``'s dense count wherever the reduction axis is a multiple of 16 (the hardware
    does not know a logical ``K``; for BP of a layer whose output count is not, it counts the
    padded ``K``).

Errors (:class:`ErrorCode`)
    The job stops at the first error with the code and the index of the failing descriptor
    (for a job ending with a pending ``KEEP``: the index of that descriptor); writes of earlier
    descriptors stay. Checks of a descriptor, in this order, all before any data access of it:
    the descriptor lies inside DRAM (``BAD_ADDRESS``); ``op``, ``phase``, flag bits and reserved
    fields (``BAD_OP``; the op ``UPDATE``: ``UNSUPPORTED``, see ``Flag.UPDATE``); ``m``, ``n``,
    ``kblocks`` (``BAD_SHAPE``); the K chain (``BAD_CHAIN``); an output (``NO_OUTPUT``);
    addresses and lengths of A, B, mask (or state), forward copy, filtered copy, statistics, in that
    order: aligned to 8 bytes, inside ``[0, dram_size)``, input budgets at least 1 byte,
    capacities multiples of 8 (``BAD_ADDRESS``). Then A, B, mask are decoded (``BAD_STREAM``,
    with :func:`golden.hbm.decode`'s reason), the tile is computed and drained (``OVERFLOW``).
    ``BUS_ERROR`` is an SLVERR/DECERR on the bus; the golden DRAM gives it only for the fault
    ranges a test injects (``faults=``): any byte a descriptor reads (descriptor, the bytes of
    its streams) or writes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

import numpy as np

from hdl.descriptor import DESC_BYTES, Flag, Op, Phase, unpack

from . import hbm, sparsity, update
from .bfp import BFPTensor
from .gemm import Accumulator, matmul, reblock

__all__ = [
    "ErrorCode",
    "JobError",
    "JobResult",
    "StatsRecord",
    "STATS_BYTES",
    "RAW_RECORD_BYTES",
    "STATE_RECORD_BYTES",
    "ALIGN",
    "execute",
    "stream_extent",
    "read_stream",
    "hbm_capacity",
    "raw_bytes",
    "parse_raw",
    "limits",
]

STATS_BYTES = 176  #: bytes of a statistics record
RAW_RECORD_BYTES = 8  #: bytes per RAW accumulator record
ALIGN = 8  #: address alignment (bus width in bytes)
BLOCK = 16
_KNOWN_FLAGS = int(Flag.RELU | Flag.FILTER | Flag.MASK | Flag.A_REBLOCK | Flag.B_REBLOCK
                   | Flag.CARRY | Flag.KEEP | Flag.RAW | Flag.UPDATE)
#: flags that UPDATE excludes (it is a final tile whose output is the update)
_NOT_WITH_UPDATE = int(Flag.RELU | Flag.FILTER | Flag.MASK | Flag.KEEP | Flag.RAW)
STATE_RECORD_BYTES = 8  #: a weight's state record: int32 master, int32 velocity (LE)
_RESERVED = ("reserved0", "reserved1", "reserved")
_STATS_FMT = "<3I4B32I2I2Q2I"
assert struct.calcsize(_STATS_FMT) == STATS_BYTES


class ErrorCode(enum.IntEnum):
    """Why a job stopped (the ``ERR_CODE`` register); 0 is success."""
    OK = 0
    BAD_OP = 1  #: unknown op or phase, undefined flag bits or nonzero reserved fields
    BAD_SHAPE = 2  #: m, n or kblocks zero or beyond the engine configuration
    BAD_ADDRESS = 3  #: misaligned or out of DRAM, empty input budget, capacity not whole beats
    BAD_STREAM = 4  #: an operand stream does not decode (truncated within its budget, ...)
    OVERFLOW = 5  #: an output stream is larger than its capacity
    NO_OUTPUT = 6  #: a final (non-KEEP) GEMM with nowhere to write
    BAD_CHAIN = 7  #: CARRY without a matching KEEP, a KEEP not followed by its CARRY
    UNSUPPORTED = 8  #: UPDATE (the on-chip weight update is not defined yet)
    BUS_ERROR = 9  #: SLVERR or DECERR on a read or write
    INTERNAL = 10  #: hardware only: a unit failed on a checked descriptor (a design bug)


class JobError(Exception):
    """A job ended with an error (raised by the runtime when asked to)."""

    def __init__(self, code: ErrorCode, index: int, detail: str = ""):
        self.code, self.index, self.detail = ErrorCode(code), int(index), detail
        super().__init__(f"{self.code.name} at descriptor {self.index}"
                         + (f": {detail}" if detail else ""))


@dataclass(frozen=True)
class StatsRecord:
    """One statistics record (module docstring for the byte layout)."""
    values: int = 0
    zeros: int = 0
    filtered_zeros: int = 0
    hist_base: int = 0
    te: int = 0
    tm: int = 0
    valid: bool = False
    hist: tuple = (0,) * sparsity.HIST_BINS
    out_bytes: int = 0
    filt_bytes: int = 0
    macs_dense: int = 0
    macs_nonzero: int = 0
    index: int = 0

    def pack(self) -> bytes:
        """The record's :data:`STATS_BYTES` bytes."""
        return struct.pack(_STATS_FMT, self.values, self.zeros, self.filtered_zeros,
                           self.hist_base, self.te, self.tm, int(self.valid), *self.hist,
                           self.out_bytes, self.filt_bytes, self.macs_dense, self.macs_nonzero,
                           self.index, 0)

    @classmethod
    def unpack(cls, data) -> StatsRecord:
        """Parse :data:`STATS_BYTES` bytes; ``ValueError`` on a wrong length or flag bits."""
        data = bytes(data)
        if len(data) != STATS_BYTES:
            raise ValueError(f"A statistics record is {STATS_BYTES} bytes, not {len(data)}")
        f = struct.unpack(_STATS_FMT, data)
        if f[6] & ~1:
            raise ValueError(f"Statistics record flags 0x{f[6]:02x} set undefined bits")
        nh = sparsity.HIST_BINS
        return cls(values=f[0], zeros=f[1], filtered_zeros=f[2], hist_base=f[3], te=f[4],
                   tm=f[5], valid=bool(f[6]), hist=tuple(f[7:7 + nh]), out_bytes=f[7 + nh],
                   filt_bytes=f[8 + nh], macs_dense=f[9 + nh], macs_nonzero=f[10 + nh],
                   index=f[11 + nh])

    def filter_stats(self) -> sparsity.FilterStats:
        """The counters as :class:`golden.sparsity.FilterStats` (threshold and base included)."""
        return sparsity.FilterStats(self.values, self.zeros, self.filtered_zeros, self.hist,
                                    self.hist_base, sparsity.Threshold(self.te, self.tm))


@dataclass
class JobResult:
    """Outcome of :func:`execute`.

    Attributes
    ----------
    code : ErrorCode
    index : int
        The failing descriptor's index, or ``count`` on success.
    detail : str
        A readable reason (empty on success).
    records : list of StatsRecord
        One per completed GEMM descriptor, in order (written to DRAM only where
        ``stats_addr != 0``).
    completed : int
        Descriptors run to their end, NOPs included (the ``done_count`` register).
    bytes_written : int
        DRAM bytes the job stored (outputs up to their capacities, statistics records): the
        ``bytes_written`` register.
    """
    code: ErrorCode
    index: int
    detail: str = ""
    records: list = field(default_factory=list)
    completed: int = 0
    bytes_written: int = 0

    @property
    def ok(self) -> bool:
        return self.code == ErrorCode.OK

    def check(self) -> JobResult:
        """Raise :class:`JobError` unless the job succeeded; return ``self``."""
        if not self.ok:
            raise JobError(self.code, self.index, self.detail)
        return self


class _Fail(Exception):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code, self.detail = code, detail


# ----------------------------------------------------------------------------- stream helpers

def hbm_capacity(n_blocks: int) -> int:
    """Largest HBM v1 stream of ``n_blocks`` blocks (all dense), rounded up to 8 bytes."""
    size = 2 * -(-n_blocks // hbm.SUPERBLOCK) + (3 + BLOCK) * n_blocks
    return -(-size // ALIGN) * ALIGN


def stream_extent(data, n_blocks: int) -> int | None:
    """Bytes the HBM v1 stream of ``n_blocks`` blocks at the start of ``data`` occupies.

    Walks the L1 and L2 masks only (no other check); ``None`` if ``data`` ends first.
    """
    pos, size = 0, len(data)
    for sb in range(-(-n_blocks // hbm.SUPERBLOCK)):
        if pos + 2 > size:
            return None
        l1 = data[pos] | data[pos + 1] << 8
        pos += 2
        present = min(hbm.SUPERBLOCK, n_blocks - sb * hbm.SUPERBLOCK)
        for j in range(present):
            if (l1 >> j) & 1:
                if pos + 2 > size:
                    return None
                l2 = data[pos] | data[pos + 1] << 8
                pos += 3 + l2.bit_count()
                if pos > size:
                    return None
    return pos


def read_stream(data, n_blocks: int):
    """Decode the HBM v1 stream at the start of ``data`` (a budget, module docstring).

    Returns ``(exponents, mantissas, length)``; raises ``ValueError`` with
    :func:`golden.hbm.decode`'s reason if the stream is malformed or longer than ``data``.
    """
    data = bytes(data)
    end = stream_extent(data, n_blocks)
    e, m = hbm.decode(data if end is None else data[:end], n_blocks)
    return e, m, end


def raw_bytes(acc: Accumulator) -> bytes:
    """RAW records of a 2-D accumulator tile, row-major."""
    rec = np.zeros(acc.shape + (RAW_RECORD_BYTES,), np.uint8)
    rec[..., 0:4] = acc.mant.astype("<i4").view(np.uint8).reshape(acc.shape + (4,))
    rec[..., 4:6] = acc.exp.astype("<u2").view(np.uint8).reshape(acc.shape + (2,))
    return rec.tobytes()


def parse_raw(data, m: int, n: int) -> Accumulator:
    """The ``m x n`` accumulators of RAW records (``ValueError`` on a wrong length or
    nonzero pad bytes)."""
    data = bytes(data)
    if len(data) != m * n * RAW_RECORD_BYTES:
        raise ValueError(f"RAW data of {len(data)} bytes, expected {m * n * RAW_RECORD_BYTES} "
                         f"for {m} x {n} records")
    rec = np.frombuffer(data, np.uint8).reshape(m, n, RAW_RECORD_BYTES)
    if rec[..., 6:].any():
        raise ValueError("RAW record pad bytes are not zero")
    s = rec[..., 0:4].copy().view("<i4")[..., 0].astype(np.int64)
    ea = rec[..., 4:6].copy().view("<u2")[..., 0].astype(np.int64)
    return Accumulator(s, ea)


def limits(cfg) -> tuple:
    """``(max_m, max_n, max_kblocks)`` from an engine configuration (any object with
    ``max_m``, ``max_n``, ``max_k``)."""
    vals = []
    for name in ("max_m", "max_n", "max_k"):
        v = getattr(cfg, name, None)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TypeError(f"Engine configuration needs a positive integer {name}, not {v!r}")
        vals.append(v)
    if vals[2] % BLOCK:
        raise ValueError(f"max_k must be a multiple of {BLOCK}, not {vals[2]}")
    return vals[0], vals[1], vals[2] // BLOCK


# ----------------------------------------------------------------------------- executor

class _Executor:
    def __init__(self, dram, cfg, faults):
        if not isinstance(dram, bytearray):
            raise TypeError(f"DRAM must be a bytearray, not {type(dram).__name__}")
        self.dram = dram
        self.size = len(dram)
        self.max_m, self.max_n, self.max_kb = limits(cfg)
        self.faults = [(int(lo), int(hi)) for lo, hi in (faults or ())]
        self.pending = None  # (index, m, n, Accumulator) of a KEEP tile
        self.written = 0  # bytes stored

    def _touch(self, addr, n, what):
        for lo, hi in self.faults:
            if addr < hi and lo < addr + n:
                raise _Fail(ErrorCode.BUS_ERROR,
                            f"bus error in {what} at [{max(addr, lo):#x}, {min(addr + n, hi):#x})")

    def _region(self, what, addr, n, *, cap=False):
        if addr % ALIGN:
            raise _Fail(ErrorCode.BAD_ADDRESS, f"{what} address {addr:#x} is not aligned to "
                                               f"{ALIGN} bytes")
        if n < 1:
            raise _Fail(ErrorCode.BAD_ADDRESS, f"{what} length is 0")
        if cap and n % ALIGN:
            raise _Fail(ErrorCode.BAD_ADDRESS, f"{what} capacity {n} is not a multiple of "
                                               f"{ALIGN} bytes")
        if addr + n > self.size:
            raise _Fail(ErrorCode.BAD_ADDRESS, f"{what} [{addr:#x}, {addr + n:#x}) is outside "
                                               f"the DRAM of {self.size:#x} bytes")

    def _read_stream(self, what, addr, budget, n_blocks):
        data = bytes(self.dram[addr:addr + budget])
        try:
            e, m, end = read_stream(data, n_blocks)
        except ValueError as exc:
            end = stream_extent(data, n_blocks)
            self._touch(addr, budget if end is None else end, what)
            raise _Fail(ErrorCode.BAD_STREAM, f"{what}: {exc}") from None
        self._touch(addr, end, what)
        return e, m

    def _tile(self, what, addr, budget, rows, cblocks):
        e, m = self._read_stream(what, addr, budget, rows * cblocks)
        return BFPTensor(e.reshape(rows, cblocks), m.reshape(rows, cblocks * BLOCK))

    def _write(self, what, addr, cap, data):
        n = min(len(data), cap)
        self._touch(addr, n, what)
        self.dram[addr:addr + n] = data[:n]
        self.written += n
        return n

    def run(self, desc_base, count):
        records = []
        for i in range(count):
            try:
                rec = self.descriptor(i, desc_base + i * DESC_BYTES)
            except _Fail as f:
                self.pending = None
                return JobResult(f.code, i, f.detail, records, i, self.written)
            if rec is not None:
                records.append(rec)
        if self.pending is not None:
            idx = self.pending[0]
            self.pending = None
            return JobResult(ErrorCode.BAD_CHAIN, idx,
                             f"the job ends with descriptor {idx}'s KEEP pending", records, count,
                             self.written)
        return JobResult(ErrorCode.OK, count, "", records, count, self.written)

    def descriptor(self, index, at):
        self._region("descriptor", at, DESC_BYTES)
        self._touch(at, DESC_BYTES, "descriptor")
        d = unpack(bytes(self.dram[at:at + DESC_BYTES]))
        for name in _RESERVED:
            if d[name]:
                raise _Fail(ErrorCode.BAD_OP, f"reserved field {name} is {d[name]:#x}, not 0")
        if d["op"] not in tuple(Op):
            raise _Fail(ErrorCode.BAD_OP, f"unknown op {d['op']}")
        if d["op"] == Op.NOP:
            return None
        if d["op"] == Op.UPDATE:
            raise _Fail(ErrorCode.UNSUPPORTED, "UPDATE is not supported yet")
        return self.gemm(index, d)

    def gemm(self, index, d):
        if d["phase"] not in tuple(Phase):
            raise _Fail(ErrorCode.BAD_OP, f"unknown phase {d['phase']}")
        flags = d["flags"]
        if flags & ~_KNOWN_FLAGS:
            raise _Fail(ErrorCode.BAD_OP, f"undefined flag bits {flags & ~_KNOWN_FLAGS:#x}")
        flags = Flag(flags)
        upd = bool(flags & Flag.UPDATE)
        if upd and flags & _NOT_WITH_UPDATE:
            raise _Fail(ErrorCode.BAD_OP, "UPDATE combines only with CARRY, A_REBLOCK and "
                                          "B_REBLOCK")
        m, n, kb = d["m"], d["n"], d["kblocks"]
        for name, v, top in (("m", m, self.max_m), ("n", n, self.max_n),
                             ("kblocks", kb, self.max_kb)):
            if not 1 <= v <= top:
                raise _Fail(ErrorCode.BAD_SHAPE, f"{name} = {v} is outside 1..{top}")
        if upd and (n > self.max_m or m > self.max_n):
            raise _Fail(ErrorCode.BAD_SHAPE, f"UPDATE of a {m} x {n} tile: W^T ({n} x {m}) "
                                             f"exceeds {self.max_m} x {self.max_n}")
        carry, keep = bool(flags & Flag.CARRY), bool(flags & Flag.KEEP)
        if carry:
            if self.pending is None:
                raise _Fail(ErrorCode.BAD_CHAIN, "CARRY without a pending KEEP")
            if self.pending[1:3] != (m, n):
                raise _Fail(ErrorCode.BAD_CHAIN, f"CARRY into a {m} x {n} tile, the pending "
                            f"KEEP tile is {self.pending[1]} x {self.pending[2]}")
        elif self.pending is not None:
            raise _Fail(ErrorCode.BAD_CHAIN, f"GEMM without CARRY while descriptor "
                                             f"{self.pending[0]}'s KEEP is pending")
        raw = bool(flags & Flag.RAW)
        out = not keep and d["out_cap"] > 0
        filt = not keep and not raw and d["filt_cap"] > 0
        if not keep and not out and not filt and not upd:
            raise _Fail(ErrorCode.NO_OUTPUT, "RAW without out_cap" if raw else
                        "neither out_cap nor filt_cap is set")
        a_rb, b_rb = bool(flags & Flag.A_REBLOCK), bool(flags & Flag.B_REBLOCK)
        mask_on = bool(flags & Flag.MASK)
        self._region("A", d["a_addr"], d["a_len"])
        self._region("B", d["b_addr"], d["b_len"])
        if mask_on:
            self._region("mask", d["mask_addr"], d["mask_len"])
        if upd:
            self._region("state", d["mask_addr"], d["mask_len"], cap=True)
            if d["mask_len"] != m * n * STATE_RECORD_BYTES:
                raise _Fail(ErrorCode.BAD_ADDRESS, f"state length {d['mask_len']} is not "
                                                   f"m * n * {STATE_RECORD_BYTES} = "
                                                   f"{m * n * STATE_RECORD_BYTES}")
        if out:
            self._region("forward copy", d["out_addr"], d["out_cap"], cap=True)
        if filt:
            self._region("filtered copy", d["filt_addr"], d["filt_cap"], cap=True)
        if d["stats_addr"]:
            self._region("statistics", d["stats_addr"], STATS_BYTES)

        cb = lambda x: -(-x // BLOCK)  # noqa: E731
        if a_rb:
            a = reblock(self._tile("A", d["a_addr"], d["a_len"], BLOCK * kb, cb(m)))
            a = BFPTensor(a.exponents[:m], a.mantissas[:m])
        else:
            a = self._tile("A", d["a_addr"], d["a_len"], m, kb)
        if b_rb:
            b = reblock(self._tile("B", d["b_addr"], d["b_len"], BLOCK * kb, cb(n)))
            b = BFPTensor(b.exponents[:n], b.mantissas[:n])
        else:
            b = self._tile("B", d["b_addr"], d["b_len"], n, kb)
        mask = None
        if mask_on:
            mt = self._tile("mask", d["mask_addr"], d["mask_len"], m, cb(n))
            mask = mt.mantissas[:, :n] != 0

        init = self.pending[3] if carry else None
        self.pending = None
        acc = matmul(a, b, out_mask=mask, init=init)
        a_nz = (a.mantissas != 0).astype(np.int64)
        b_nz = (b.mantissas != 0).astype(np.int64)
        both = a_nz @ b_nz.T
        nonzero = int(both[mask].sum() if mask is not None else both.sum())
        rec = dict(macs_dense=m * n * BLOCK * kb, macs_nonzero=nonzero, index=index)
        if keep:
            self.pending = (index, m, n, acc)
        else:
            if flags & Flag.RELU:
                acc = acc.relu()
            if upd:
                rec.update(self._update(d, acc, m, n, out, filt))
                over = rec.pop("over")
            elif raw:
                rec["out_bytes"] = self._write("RAW output", d["out_addr"], d["out_cap"],
                                               raw_bytes(acc))
                over = [("RAW output", m * n * RAW_RECORD_BYTES, d["out_cap"])]
            else:
                rec.update(self._drain(d, acc, flags, m, n, out, filt))
                over = rec.pop("over")
            for what, size, cap in over:
                if size > cap:
                    raise _Fail(ErrorCode.OVERFLOW, f"{what} of {size} bytes exceeds its "
                                                    f"capacity of {cap} bytes")
        record = StatsRecord(**rec)
        if d["stats_addr"]:
            self._write("statistics", d["stats_addr"], STATS_BYTES, record.pack())
        return record

    def _update(self, d, acc, m, n, out, filt):
        at, size = d["mask_addr"], m * n * STATE_RECORD_BYTES
        self._touch(at, size, "state")
        st = np.frombuffer(bytes(self.dram[at:at + size]), "<i4").reshape(m, n, 2)
        # -2**31 never comes out of an update; read as -SAT (the unit clamps its inputs)
        w, v = (np.maximum(st[..., k].astype(np.int64), -update.SAT) for k in (0, 1))
        hyper = [update.Hyper.from_word(d[f]) for f in ("lr", "momentum", "weight_decay")]
        w2, v2 = update.update_records(w, v, acc.mant, acc.exp, *hyper)
        self._write("state", at, size, np.stack([w2, v2], -1).astype("<i4").tobytes())
        res = dict(over=[])
        for what, key, cap_key, on, mat in (("W", "out_bytes", "out_cap", out, w2),
                                            ("W^T", "filt_bytes", "filt_cap", filt, w2.T)):
            if not on:
                continue
            r, c = mat.shape
            pad = np.zeros((r, -(-c // BLOCK) * BLOCK), np.int64)
            pad[:, :c] = mat
            t = Accumulator(pad, np.full(pad.shape, update.MASTER_EA, np.int64)).to_bfp(BLOCK)
            s = hbm.encode_tensor(t)
            addr = d["out_addr" if key == "out_bytes" else "filt_addr"]
            res[key] = self._write(what, addr, d[cap_key], s)
            res["over"].append((what, len(s), d[cap_key]))
        return res

    def _drain(self, d, acc, flags, m, n, out, filt):
        width = -(-n // BLOCK) * BLOCK
        mant = np.zeros((m, width), np.int64)
        exp = np.zeros((m, width), np.int64)
        mant[:, :n], exp[:, :n] = acc.mant, acc.exp
        t = Accumulator(mant, exp).to_bfp(BLOCK)
        thr = sparsity.Threshold(d["tau_te"], d["tau_tm"]) if flags & Flag.FILTER \
            else sparsity.Threshold(0, 0)
        st = sparsity.stats(t, threshold=thr, base=d["hist_base"])
        res = dict(values=st.values, zeros=st.zeros, filtered_zeros=st.filtered_zeros,
                   hist_base=st.base, te=thr.te, tm=thr.tm, valid=True, hist=st.hist, over=[])
        if out:
            s = hbm.encode_tensor(t)
            res["out_bytes"] = self._write("forward copy", d["out_addr"], d["out_cap"], s)
            res["over"].append(("forward copy", len(s), d["out_cap"]))
        if filt:
            s = hbm.encode_tensor(sparsity.filter(t, thr))
            res["filt_bytes"] = self._write("filtered copy", d["filt_addr"], d["filt_cap"], s)
            res["over"].append(("filtered copy", len(s), d["filt_cap"]))
        return res


def execute(dram: bytearray, desc_base: int, count: int, cfg, *, faults=()) -> JobResult:
    """Run the ``count`` descriptors at ``desc_base`` on ``dram`` as the hardware does.

    Parameters
    ----------
    dram : bytearray
        The accelerator's memory, modified in place; its length is ``DRAM_SIZE``.
    desc_base : int
        Byte address of the first descriptor (a multiple of 8).
    count : int
        Descriptors to run (0: nothing, success).
    cfg : EngineConfig or object with ``max_m``, ``max_n``, ``max_k``
        The engine configuration whose limits apply.
    faults : iterable of (lo, hi)
        Byte ranges ``[lo, hi)`` where a bus access fails (``BUS_ERROR``), for tests.

    Returns
    -------
    JobResult

    Raises
    ------
    TypeError
        If ``dram`` is not a bytearray, or ``cfg`` lacks its limits.
    ValueError
        If ``desc_base`` or ``count`` is not a non-negative integer.
    """
    for name, v in (("desc_base", desc_base), ("count", count)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, not {v!r}")
    ex = _Executor(dram, cfg, faults)
    return ex.run(int(desc_base), int(count))
