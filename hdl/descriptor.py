"""Job descriptors, defined once: the host runtime packs them, the sequencer's layout is built
from the same table.

A job is a list of 64-byte descriptors in DRAM (``docs/system.md``); each is one engine tile
(``GEMM``; with ``Flag.UPDATE`` a WG tile also updates the weights it belongs to). Fields are
packed from bit 0 of the first byte upward in the order of :data:`FIELDS` (little-endian, like
every multi-byte value here), so a descriptor is eight 64-bit little-endian words. This module
is pure Python; :func:`layout` builds the Amaranth ``StructLayout`` when Amaranth is there.

Byte lengths are at most 2**24 - 1, addresses 32-bit byte addresses aligned to the bus width
(8 bytes). A ``*_len`` of 0 means the operand is not used (only where the op allows it).
"""

from __future__ import annotations

import enum

__all__ = ["Op", "Phase", "Flag", "FIELDS", "DESC_BYTES", "pack", "unpack", "layout"]

DESC_BYTES = 64


class Op(enum.IntEnum):
    """What a descriptor does."""
    NOP = 0  #: nothing (counts as executed)
    GEMM = 1  #: one engine tile: load A and B (and the BP mask), run, output
    UPDATE = 2  #: reserved for a stand-alone update (``UNSUPPORTED``: use ``Flag.UPDATE``)


class Phase(enum.IntEnum):
    """Which training phase a GEMM belongs to (selects the counters it adds to)."""
    FP = 0
    BP = 1
    WG = 2


class Flag(enum.IntFlag):
    """GEMM options."""
    RELU = 1 << 0  #: ReLU on the accumulators before conversion
    FILTER = 1 << 1  #: sparsity filter with (tau_te, tau_tm); statistics are kept either way
    MASK = 1 << 2  #: BP: compute only outputs whose saved activation (mask stream) is nonzero
    A_REBLOCK = 1 << 3  #: WG: A goes through the transposer (stored N x C, used C x N)
    B_REBLOCK = 1 << 4  #: WG: B goes through the transposer
    CARRY = 1 << 5  #: start from the accumulators of the previous GEMM (K split over tiles)
    KEEP = 1 << 6  #: leave the accumulators for a following CARRY tile: no output
    RAW = 1 << 7  #: write the accumulators themselves (8 bytes each: S, ea) instead of BFP8
    UPDATE = 1 << 8  #: WG: the tile (dW) updates the weights in place (golden.update): state
    #: (master, velocity) at mask_addr, the new W to out_addr and W^T to filt_addr


#: (name, bits, description): packed LSB first in this order.
FIELDS = (
    ("op", 4, "Op"),
    ("phase", 2, "Phase"),
    ("flags", 10, "Flag bits"),
    ("m", 16, "rows of A (output rows)"),
    ("n", 16, "rows of B (output columns) of this tile"),
    ("kblocks", 16, "K / 16, the reduction length in blocks"),
    ("a_addr", 32, "A: HBM v1 stream"),
    ("a_len", 24, "A: stream bytes"),
    ("reserved0", 8, "zero"),
    ("b_addr", 32, "B: HBM v1 stream"),
    ("b_len", 24, "B: stream bytes"),
    ("reserved1", 8, "zero"),
    ("mask_addr", 32, "BP mask: HBM v1 stream of the saved activations (m x n); UPDATE: the "
                      "state, m x n records (int32 master, int32 velocity)"),
    ("mask_len", 24, "BP mask: stream bytes; UPDATE: m * n * 8"),
    ("tau_te", 8, "filter threshold exponent register"),
    ("out_addr", 32, "forward copy: unfiltered HBM v1 stream (or RAW accumulators)"),
    ("out_cap", 24, "forward copy: capacity in bytes (0: not written)"),
    ("tau_tm", 8, "filter threshold mantissa register"),
    ("stats_addr", 32, "where the statistics record goes after the output (0: nowhere)"),
    ("hist_base", 8, "histogram base register"),
    ("lr", 22, "UPDATE flag: learning rate register, mantissa (15:0) and shift (21:16)"),
    ("momentum", 22, "UPDATE flag: momentum register, as lr"),
    ("weight_decay", 22, "UPDATE flag: weight decay register, as lr"),
    ("filt_addr", 32, "filtered copy: HBM v1 stream after the sparsity filter (UPDATE: W^T)"),
    ("filt_cap", 24, "filtered copy: capacity in bytes (0: not written)"),
    ("reserved", 30, "zero"),
)

_OFFSETS = {}
_pos = 0
for _name, _bits, _ in FIELDS:
    _OFFSETS[_name] = (_pos, _bits)
    _pos += _bits
assert _pos == DESC_BYTES * 8, _pos
del _pos


def pack(**values) -> bytes:
    """The 64 bytes of a descriptor; fields not given are 0.

    Raises ``ValueError`` for an unknown field or a value that does not fit its bits.
    """
    word = 0
    for name, value in values.items():
        if name not in _OFFSETS:
            raise ValueError(f"Unknown descriptor field {name!r}")
        lsb, bits = _OFFSETS[name]
        value = int(value)
        if not 0 <= value < (1 << bits):
            raise ValueError(f"Descriptor field {name} = {value} does not fit {bits} bits")
        word |= value << lsb
    return word.to_bytes(DESC_BYTES, "little")


def unpack(data: bytes) -> dict:
    """Field values of a descriptor's 64 bytes."""
    if len(data) != DESC_BYTES:
        raise ValueError(f"A descriptor is {DESC_BYTES} bytes, not {len(data)}")
    word = int.from_bytes(data, "little")
    return {name: (word >> lsb) & ((1 << bits) - 1) for name, (lsb, bits) in _OFFSETS.items()}


def layout():
    """The Amaranth ``StructLayout`` of a descriptor (fields as in :data:`FIELDS`)."""
    from amaranth.lib import data

    return data.StructLayout({name: bits for name, bits, _ in FIELDS})


def markdown() -> str:
    """The descriptor table for the documentation."""
    lines = ["| bits | field | description |", "|---|---|---|"]
    for name, bits, doc in FIELDS:
        lsb, _ = _OFFSETS[name]
        lines.append(f"| {lsb + bits - 1}:{lsb} | `{name}` | {doc} |")
    return "\n".join(lines) + "\n"
