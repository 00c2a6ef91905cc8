"""HBM v1, the hierarchical bit-mask stream for sparse BFP8 tensors, and size measures.

The format (``docs/formats.md``, ARCHITECTURE.md section 2) codes a flat sequence of BFP8
blocks of 16 values. Blocks are grouped in superblocks of 16 blocks (256 values); a short last
superblock counts its missing blocks as all-zero blocks. Per superblock, bytes in order:

1. the L1 mask, uint16 little-endian: bit ``j`` set iff block ``j`` of the superblock has a
   nonzero mantissa;
2. for each set bit ``j``, ascending: the L2 mask (uint16 LE, bit ``i`` set iff mantissa ``i``
   of the block is nonzero), the exponent byte ``E``, then the nonzero mantissas in ascending
   ``i``, one int8 byte each.

The stream is canonical, so every tensor has exactly one stream and every stream decodes to at
most one tensor:

* :func:`encode` writes no padding: ``len(encode(e, m)) * 8 == size_bits(m)``;
* :func:`decode` accepts trailing zero bytes, fewer than 8 of them (the last beat of a 64-bit
  bus), and rejects everything else: a truncated stream, a set L1 bit with an empty L2 mask or
  beyond the last block, a mantissa byte 0 or -128 (0x80), an exponent byte 0 for a nonzero
  block, longer or nonzero trailing data. All-zero blocks decode with ``E = 0``.

Array conventions: ``exponents`` is uint8 of shape ``(n_blocks,)``; ``mantissas`` is int8 of
shape ``(n_blocks * 16,)`` (what :func:`decode` returns) or ``(n_blocks, 16)`` (also accepted
by :func:`encode` and the size measures). :func:`encode_tensor` / :func:`decode_tensor` flatten
a :class:`~golden.bfp.BFPTensor` in C order, blocks along the last axis.

Size measures, in bits (exact, no padding; definitions in ``docs/formats.md``):
:func:`size_bits` (HBM v1), :func:`size_bits_bitmask` (flat bit mask), :func:`size_bits_csr`
(CSR with rows of 256 values), :func:`size_bits_rle` (zero run-length tokens) and
:func:`entropy_bound_bits` (ideal code length of the zero mask under an i.i.d. or a two-level
block model). All of them send each nonzero as its 8-bit mantissa and each nonzero block's
exponent as one byte; they differ only in how the positions of the nonzeros are coded.

``python -m golden.hbm --report`` prints bits per value of every measure against sparsity, for
i.i.d. zeros and for clustered zeros (dead rows, dead channels and i.i.d. zeros).
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np

from golden.bfp import BFPTensor, check_block

__all__ = [
    "BLOCK",
    "SUPERBLOCK",
    "encode",
    "decode",
    "encode_tensor",
    "decode_tensor",
    "size_bits",
    "size_bits_bitmask",
    "size_bits_csr",
    "size_bits_rle",
    "entropy_bound_bits",
]

BLOCK = 16  #: values per BFP8 block (bits in an L2 mask)
SUPERBLOCK = 16  #: blocks per superblock (bits in an L1 mask)
CSR_ROW = 256  #: values per CSR row in :func:`size_bits_csr`
MAX_PADDING = 7  #: trailing zero bytes :func:`decode` accepts

_BITS = (1 << np.arange(16)).astype(np.uint32)


# --------------------------------------------------------------------------- validation

def _check_mantissas(mantissas) -> np.ndarray:
    """Validate mantissas; return them as an int8 array of shape ``(n_blocks, 16)``."""
    m = np.asarray(mantissas)
    if m.dtype != np.int8:
        raise ValueError(f"Mantissas must be an int8 array, not {m.dtype}")
    if m.ndim == 1 and m.shape[0] % BLOCK == 0:
        m = m.reshape(-1, BLOCK)
    elif not (m.ndim == 2 and m.shape[1] == BLOCK):
        raise ValueError(
            f"Mantissas must have shape (n_blocks * {BLOCK},) or (n_blocks, {BLOCK}), "
            f"not {m.shape}")
    bad = np.flatnonzero(m.reshape(-1) == -128)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"Mantissa -128 at index {i} (block {i // BLOCK}) is not a valid BFP8 value")
    return m


def _check_n_blocks(n_blocks) -> int:
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) \
            or n_blocks < 0:
        raise ValueError(f"n_blocks must be a non-negative integer, not {n_blocks!r}")
    return int(n_blocks)


# --------------------------------------------------------------------------- codec

def encode(exponents, mantissas) -> bytes:
    """Encode BFP8 blocks of 16 as an HBM v1 stream (no padding).

    Parameters
    ----------
    exponents : numpy.ndarray of uint8, shape (n_blocks,)
        Biased block exponents; 0 exactly for the all-zero blocks.
    mantissas : numpy.ndarray of int8, shape (n_blocks * 16,) or (n_blocks, 16)
        Mantissas in [-127, 127], block after block.

    Returns
    -------
    bytes
        The stream, ``size_bits(mantissas) // 8`` bytes long.

    Raises
    ------
    ValueError
        On a wrong dtype or shape, a mantissa -128, a nonzero block with exponent 0 or an
        all-zero block with a nonzero exponent (non-canonical input).
    """
    e = np.asarray(exponents)
    if e.dtype != np.uint8:
        raise ValueError(f"Exponents must be a uint8 array, not {e.dtype}")
    if e.ndim != 1:
        raise ValueError(f"Exponents must have shape (n_blocks,), not {e.shape}")
    m = _check_mantissas(mantissas)
    if m.shape[0] != e.shape[0]:
        raise ValueError(
            f"Got {e.shape[0]} exponent(s) for {m.shape[0]} block(s) of mantissas")
    nz = m != 0
    blk_nz = nz.any(axis=1)
    bad = np.flatnonzero(blk_nz & (e == 0))
    if bad.size:
        raise ValueError(f"Block {int(bad[0])} has nonzero mantissas but exponent 0")
    bad = np.flatnonzero(~blk_nz & (e != 0))
    if bad.size:
        j = int(bad[0])
        raise ValueError(
            f"Block {j} is all zero but has exponent {int(e[j])} (canonical: 0)")

    # Pad to whole superblocks with zero blocks (they emit nothing).
    n_blocks = m.shape[0]
    if n_blocks == 0:
        return b""
    n_sb = -(-n_blocks // SUPERBLOCK)
    pad = n_sb * SUPERBLOCK - n_blocks
    nz = np.concatenate([nz, np.zeros((pad, BLOCK), bool)])
    m = np.concatenate([m, np.zeros((pad, BLOCK), np.int8)])
    e = np.concatenate([e, np.zeros(pad, np.uint8)])
    blk_nz = nz.any(axis=1)

    # Every block as a fixed 19-byte record [L2 lo, L2 hi, E, nonzeros..., unused...] and
    # every superblock as [L1 lo, L1 hi, 16 records]; a keep-mask selects the bytes in order.
    l2 = (nz * _BITS).sum(axis=1).astype(np.uint16)
    order = np.argsort(~nz, axis=1, kind="stable")  # nonzero positions first, ascending i
    packed = np.take_along_axis(m, order, axis=1).view(np.uint8)
    rec = np.concatenate(
        [(l2 & 0xFF).astype(np.uint8)[:, None], (l2 >> 8).astype(np.uint8)[:, None],
         e[:, None], packed], axis=1)
    count = nz.sum(axis=1)
    keep = np.arange(3 + BLOCK)[None, :] < np.where(blk_nz, 3 + count, 0)[:, None]
    l1 = (blk_nz.reshape(n_sb, SUPERBLOCK) * _BITS).sum(axis=1).astype(np.uint16)
    head = np.stack([(l1 & 0xFF).astype(np.uint8), (l1 >> 8).astype(np.uint8)], axis=1)
    data = np.concatenate([head, rec.reshape(n_sb, -1)], axis=1)
    keep = np.concatenate(
        [np.ones((n_sb, 2), bool), keep.reshape(n_sb, -1)], axis=1)
    return data[keep].tobytes()


def decode(data, n_blocks):
    """Decode an HBM v1 stream of ``n_blocks`` blocks of 16.

    Parameters
    ----------
    data : bytes, bytearray or memoryview
        The stream, optionally followed by up to 7 zero bytes of padding.
    n_blocks : int
        Number of blocks the stream holds (not stored in the stream).

    Returns
    -------
    exponents : numpy.ndarray of uint8, shape (n_blocks,)
        0 for the all-zero blocks.
    mantissas : numpy.ndarray of int8, shape (n_blocks * 16,)

    Raises
    ------
    TypeError
        If ``data`` is not bytes-like.
    ValueError
        If ``n_blocks`` is not a non-negative integer, or the stream is not canonical: truncated,
        a set L1 bit with an empty L2 mask or beyond the last block, a mantissa byte 0 or
        -128, an exponent byte 0, or trailing bytes that are not zero padding of fewer than 8
        bytes. The message names the block and the byte offset.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"HBM data must be bytes-like, not {type(data).__name__}")
    data = bytes(data)
    n_blocks = _check_n_blocks(n_blocks)
    found = []  # (block, E, positions, mantissas); arrays are allocated once the stream is valid
    pos = 0

    def take(n, what):
        nonlocal pos
        if pos + n > len(data):
            raise ValueError(
                f"Truncated HBM stream: {what} needs {n} byte(s) at offset {pos}, "
                f"{len(data) - pos} left")
        chunk = data[pos:pos + n]
        pos += n
        return chunk

    for sb in range(-(-n_blocks // SUPERBLOCK)):
        first = sb * SUPERBLOCK
        present = min(SUPERBLOCK, n_blocks - first)
        l1_at = pos
        l1 = int.from_bytes(take(2, f"superblock {sb} L1 mask"), "little")
        if l1 >> present:
            high = l1 >> present
            raise ValueError(
                f"Superblock {sb} L1 mask 0x{l1:04x} (offset {l1_at}) sets bit "
                f"{(high & -high).bit_length() - 1 + present}, beyond the last block "
                f"(n_blocks = {n_blocks})")
        for j in range(present):
            if not (l1 >> j) & 1:
                continue
            b = first + j
            l2_at = pos
            l2 = int.from_bytes(take(2, f"block {b} L2 mask"), "little")
            if l2 == 0:
                raise ValueError(
                    f"Block {b} has its L1 bit set but an empty L2 mask (offset {l2_at})")
            e_at = pos
            e = take(1, f"block {b} exponent")[0]
            if e == 0:
                raise ValueError(
                    f"Block {b} exponent byte is 0 for a nonzero block (offset {e_at})")
            k = l2.bit_count()
            m_at = pos
            vals = np.frombuffer(take(k, f"block {b} mantissas"), np.int8)
            idx = [i for i in range(BLOCK) if (l2 >> i) & 1]
            for n, (i, v) in enumerate(zip(idx, vals.tolist(), strict=True)):
                if v == 0 or v == -128:
                    raise ValueError(
                        f"Block {b} mantissa {i} is the byte 0x{v & 0xFF:02x} ({v}), "
                        f"not a canonical nonzero (offset {m_at + n})")
            found.append((b, e, idx, vals))

    rest = data[pos:]
    if len(rest) > MAX_PADDING:
        raise ValueError(
            f"Trailing data after the HBM stream: {len(rest)} bytes at offset {pos} "
            f"(only zero padding of fewer than 8 bytes is allowed)")
    if any(rest):
        off = pos + next(i for i, v in enumerate(rest) if v)
        raise ValueError(
            f"Trailing bytes after the HBM stream are not zero padding: byte "
            f"0x{data[off]:02x} at offset {off}")
    exps = np.zeros(n_blocks, np.uint8)
    mants = np.zeros((n_blocks, BLOCK), np.int8)
    for b, e, idx, vals in found:
        exps[b] = e
        mants[b, idx] = vals
    return exps, mants.reshape(-1)


def encode_tensor(t: BFPTensor) -> bytes:
    """Encode a :class:`~golden.bfp.BFPTensor` with blocks of 16, flattened in C order."""
    if not isinstance(t, BFPTensor):
        raise TypeError(f"Expected a BFPTensor, not {type(t).__name__}")
    if t.block != BLOCK:
        raise ValueError(f"HBM v1 codes blocks of {BLOCK} values, not {t.block}")
    return encode(t.exponents.reshape(-1), t.mantissas.reshape(-1))


def decode_tensor(data, shape, block: int = BLOCK) -> BFPTensor:
    """Decode a stream written by :func:`encode_tensor` into a tensor of ``shape``.

    Parameters
    ----------
    data : bytes-like
        The stream (see :func:`decode`).
    shape : tuple of int
        The tensor's shape; the last axis is a multiple of ``block``.
    block : int
        Values per block; HBM v1 supports 16 only.
    """
    block = check_block(block)
    if block != BLOCK:
        raise ValueError(f"HBM v1 codes blocks of {BLOCK} values, not {block}")
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"Shape must be a tuple of non-negative integers, not {shape!r}") \
            from None
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0
                        for d in shape):
        raise ValueError(f"Shape must be a tuple of non-negative integers, not {shape!r}")
    shape = tuple(int(d) for d in shape)
    if shape[-1] % block:
        raise ValueError(
            f"Last axis of shape {shape} is not a multiple of the block size {block}")
    n_blocks = math.prod(shape) // block
    e, m = decode(data, n_blocks)
    return BFPTensor(e.reshape(shape[:-1] + (shape[-1] // block,)), m.reshape(shape), block)


# --------------------------------------------------------------------------- size measures

def _counts(mantissas):
    """(n values, n blocks, nonzero blocks, nonzeros, nonzero mask (n_blocks, 16))."""
    m = _check_mantissas(mantissas)
    nz = m != 0
    return m.size, m.shape[0], int(nz.any(axis=1).sum()), int(nz.sum()), nz


def size_bits(mantissas) -> int:
    """Exact size in bits of the HBM v1 stream of ``mantissas`` (no padding).

    ``16 * ceil(n_blocks / 16) + 24 * (nonzero blocks) + 8 * (nonzeros)``.
    """
    _, nb, bnz, nnz, _ = _counts(mantissas)
    return 16 * -(-nb // SUPERBLOCK) + 24 * bnz + 8 * nnz


def size_bits_bitmask(mantissas) -> int:
    """Flat bit mask: one bit per value, an exponent byte per nonzero block, a byte per nonzero.

    ``n + 8 * (nonzero blocks) + 8 * (nonzeros)``.
    """
    n, _, bnz, nnz, _ = _counts(mantissas)
    return n + 8 * bnz + 8 * nnz


def size_bits_csr(mantissas) -> int:
    """CSR with rows of 256 values: per row a 9-bit nonzero count, per nonzero an 8-bit column
    index and its byte, per nonzero block an exponent byte.

    ``9 * ceil(n / 256) + 16 * (nonzeros) + 8 * (nonzero blocks)``.
    """
    n, _, bnz, nnz, _ = _counts(mantissas)
    return 9 * -(-n // CSR_ROW) + 16 * nnz + 8 * bnz


def size_bits_rle(mantissas, run_bits: int = 4) -> int:
    """Zero run-length tokens ``(run, byte)`` of ``run_bits + 8`` bits each.

    A token stands for ``run`` zeros followed by the byte. A run of ``z`` zeros before a
    nonzero is sent as ``z // 2**run_bits`` escape tokens ``(2**run_bits - 1, 0)`` (each
    standing for ``2**run_bits`` zeros) and one token ``(z % 2**run_bits, value)``; zeros after
    the last nonzero are implied by the length. Plus an exponent byte per nonzero block.

    ``(run_bits + 8) * (nonzeros + escapes) + 8 * (nonzero blocks)``.
    """
    if isinstance(run_bits, bool) or not isinstance(run_bits, (int, np.integer)) \
            or not 1 <= run_bits <= 16:
        raise ValueError(f"run_bits must be an integer in [1, 16], not {run_bits!r}")
    _, _, bnz, nnz, nz = _counts(mantissas)
    pos = np.flatnonzero(nz.reshape(-1))
    runs = np.diff(pos, prepend=-1) - 1
    escapes = int((runs >> int(run_bits)).sum())
    return (int(run_bits) + 8) * (nnz + escapes) + 8 * bnz


def _h2(p: float) -> float:
    return 0.0 if p <= 0.0 or p >= 1.0 else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def entropy_bound_bits(mantissas, model: str = "block") -> float:
    """Ideal code length of the zero mask under a model, plus the bytes every format sends.

    ``model="iid"``: every value is nonzero independently with probability ``p = nnz / n``;
    the mask costs ``n * H2(p)``. ``model="block"``: a block is nonzero with probability
    ``q = bnz / n_blocks``, and inside nonzero blocks each value is nonzero with probability
    ``r = nnz / (16 * bnz)``; the mask costs ``n_blocks * H2(q) + 16 * bnz * H2(r)``
    (never more than HBM v1's ``n_blocks + 16 * bnz`` mask bits). Both add
    ``8 * nnz + 8 * bnz`` for the mantissas and exponents. The model's parameters are taken as
    known (their cost is ignored).
    """
    if model not in ("iid", "block"):
        raise ValueError(f"Entropy model must be 'iid' or 'block', not {model!r}")
    n, nb, bnz, nnz, _ = _counts(mantissas)
    if model == "iid":
        mask = n * _h2(nnz / n) if n else 0.0
    else:
        mask = (nb * _h2(bnz / nb) if nb else 0.0) + \
            (BLOCK * bnz * _h2(nnz / (BLOCK * bnz)) if bnz else 0.0)
    return mask + 8 * nnz + 8 * bnz


# --------------------------------------------------------------------------- report

SPARSITIES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.99)
ROW = 256  #: values per row of the report's tensors (channels); one superblock
RLE_BEST_RANGE = range(1, 9)  #: run widths tried for the report's ``rle_best`` column


def _sample(pattern: str, s: float, n: int, rng: np.random.Generator):
    """Random (exponents, mantissas) of ``n`` values with zero pattern ``pattern``.

    ``"iid"``: each value is zero with probability ``s``. ``"clustered"``: the values form a
    (n / 256) x 256 matrix (rows = samples or pixels, columns = channels, blocks along the
    channels) and three independent sources each zero a fraction ``a`` with
    ``(1 - a)**3 = 1 - s``: whole dead rows (exactly ``round(a * rows)`` of them, like
    whole-sample errors), whole dead channels (``round(a * 256)`` columns, like dead ReLU
    features) and i.i.d. zeros. Nonzero mantissas are uniform in +-[1, 127]; the exponents of
    nonzero blocks are 127 (sizes do not depend on the values).
    """
    if pattern == "iid":
        zero = rng.random(n) < s
    else:
        rows = n // ROW
        a = 1.0 - (1.0 - s) ** (1.0 / 3.0)
        dead_rows = np.zeros(rows, bool)
        dead_rows[rng.choice(rows, round(a * rows), replace=False)] = True
        dead_cols = np.zeros(ROW, bool)
        dead_cols[rng.choice(ROW, round(a * ROW), replace=False)] = True
        zero = (dead_rows[:, None] | dead_cols[None, :] | (rng.random((rows, ROW)) < a))
        zero = zero.reshape(-1)
    mag = rng.integers(1, 128, n)
    m = np.where(zero, 0, np.where(rng.random(n) < 0.5, -mag, mag)).astype(np.int8)
    e = np.where((m.reshape(-1, BLOCK) != 0).any(axis=1), 127, 0).astype(np.uint8)
    return e, m


def report(n: int = 1 << 20, seed: int = 1) -> list[dict]:
    """Bits per value of every measure at each sparsity in :data:`SPARSITIES`, both patterns.

    The HBM column is the length of the actual :func:`encode` output; ``approx`` is
    ARCHITECTURE.md's ``1/16 + 1.5 (1 - s**16) + 8 (1 - s)`` at the measured sparsity ``s``;
    ``rle4`` is :func:`size_bits_rle` with 4-bit runs, ``rle_best`` the smallest over run widths
    1 to 8 chosen per tensor with hindsight (the 3 bits to signal the width are not counted).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0 or n % ROW:
        raise ValueError(f"n must be a positive multiple of {ROW}, not {n!r}")
    rng = np.random.default_rng(seed)
    rows = []
    for pattern in ("iid", "clustered"):
        for target in SPARSITIES:
            e, m = _sample(pattern, target, n, rng)
            stream = encode(e, m)
            s = float(np.mean(m == 0))
            rows.append({
                "pattern": pattern,
                "target": target,
                "sparsity": s,
                "hbm": len(stream) * 8 / n,
                "approx": 1 / 16 + 1.5 * (1 - s ** 16) + 8 * (1 - s),
                "bitmask": size_bits_bitmask(m) / n,
                "csr": size_bits_csr(m) / n,
                "rle4": size_bits_rle(m) / n,
                "rle_best": min(size_bits_rle(m, k) for k in RLE_BEST_RANGE) / n,
                "h_iid": entropy_bound_bits(m, "iid") / n,
                "h_block": entropy_bound_bits(m, "block") / n,
            })
    return rows


_COLUMNS = ("hbm", "approx", "bitmask", "csr", "rle4", "rle_best", "h_iid", "h_block")


def format_report(rows, n: int, seed: int) -> str:
    """The report as a Markdown table (bits per value)."""
    out = [f"HBM v1 size report: bits per value, n = {n} values per case, seed = {seed}",
           "",
           "| zeros | target s | measured s | " + " | ".join(_COLUMNS) + " |",
           "|---|---:|---:|" + "---:|" * len(_COLUMNS)]
    for r in rows:
        out.append(f"| {r['pattern']} | {r['target']:.2f} | {r['sparsity']:.4f} | "
                   + " | ".join(f"{r[c]:.3f}" for c in _COLUMNS) + " |")
    out += ["", "Dense references: BFP8 8.500 bits/value (8 + 8/16), FP16 16.000 bits/value."]
    return "\n".join(out)


def main(argv=None) -> int:
    """Command line: ``python -m golden.hbm --report [--n N] [--seed S] [--json PATH]``."""
    p = argparse.ArgumentParser(
        prog="python -m golden.hbm",
        description="HBM v1 size report: bits per value against sparsity.")
    p.add_argument("--report", action="store_true", help="print the size table")
    p.add_argument("--n", type=int, default=1 << 20,
                   help=f"values per case, a positive multiple of {ROW} (default 2**20)")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    args = p.parse_args(argv)
    if not args.report:
        p.error("nothing to do: pass --report")
    if args.n <= 0 or args.n % ROW:
        p.error(f"--n must be a positive multiple of {ROW}, not {args.n}")
    rows = report(args.n, args.seed)
    print(format_report(rows, args.n, args.seed))
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump({"n": args.n, "seed": args.seed, "rows": rows}, f, indent=1)
        except OSError as exc:
            print(f"python -m golden.hbm: error: cannot write {args.json}: {exc}",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
