"""BFP8: 8-bit block floating point, bit-exact (the contract between host, golden model and RTL).

A block of ``block`` values (16 by default) along the last axis of a tensor shares one 8-bit
biased exponent ``E`` (bias 127); each value is an int8 mantissa ``m`` in [-127, 127]
(-128 is never produced). The value of an element is ``m * 2**(E - 127 - 6)``.

Quantizing a block (``docs/formats.md``):

1. the input is taken as float32; FP32 subnormals (``|x| < 2**-126``) flush to zero;
2. ``e = max floor(log2|x|)`` over the block's nonzero values;
3. ``m = clamp(round_half_to_even(x * 2**(6 - e)), -127, 127)``;
4. ``E = e + 127``; a block whose mantissas are all zero has ``E = 0`` (canonical).

:func:`quantize_exact` applies the same rule to float64 values that are exact (the GEMM
accumulator's output, see :mod:`golden.gemm`): there, values below ``2**-126`` flush to zero
and a block whose ``e`` would exceed 127 saturates (``e = 127``, mantissas clamp to +-127).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "BIAS",
    "MANT_FRAC_BITS",
    "MANT_MAX",
    "E_MIN",
    "E_MAX",
    "BFPTensor",
    "quantize",
    "quantize_exact",
    "check_block",
]

BIAS = 127  #: exponent bias
MANT_FRAC_BITS = 6  #: value = m * 2**(E - BIAS - MANT_FRAC_BITS)
MANT_MAX = 127  #: mantissas are clamped to [-MANT_MAX, MANT_MAX]
E_MIN = -126  #: smallest unbiased block exponent (E = 1)
E_MAX = 127  #: largest unbiased block exponent (E = 254)


def check_block(block) -> int:
    """Validate a block size; return it as int. Raises ``ValueError`` with the reason."""
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)):
        raise ValueError(f"Block size must be a positive power of two, not {block!r}")
    block = int(block)
    if block <= 0 or block & (block - 1):
        raise ValueError(f"Block size must be a positive power of two, not {block!r}")
    return block


@dataclass(frozen=True, eq=False)
class BFPTensor:
    """A tensor in BFP8, blocked along its last axis.

    Attributes
    ----------
    exponents : numpy.ndarray of uint8
        Biased block exponents, shape ``shape[:-1] + (shape[-1] // block,)``.
    mantissas : numpy.ndarray of int8
        Mantissas in [-127, 127], shape ``shape``.
    block : int
        Values per block.
    """

    exponents: np.ndarray
    mantissas: np.ndarray
    block: int = 16

    def __post_init__(self):
        block = check_block(self.block)
        exponents = np.asarray(self.exponents)
        mantissas = np.asarray(self.mantissas)
        if exponents.dtype != np.uint8:
            raise ValueError(f"Exponents must be uint8, not {exponents.dtype}")
        if mantissas.dtype != np.int8:
            raise ValueError(f"Mantissas must be int8, not {mantissas.dtype}")
        if mantissas.ndim == 0 or mantissas.shape[-1] % block:
            raise ValueError(
                f"Last axis of mantissas (shape {mantissas.shape}) is not a multiple of "
                f"the block size {block}")
        want = mantissas.shape[:-1] + (mantissas.shape[-1] // block,)
        if exponents.shape != want:
            raise ValueError(f"Exponents have shape {exponents.shape}, expected {want}")
        if np.any(mantissas == -128):
            raise ValueError("Mantissa -128 is not a valid BFP8 value")
        object.__setattr__(self, "block", block)
        object.__setattr__(self, "exponents", exponents)
        object.__setattr__(self, "mantissas", mantissas)

    @property
    def shape(self):
        return self.mantissas.shape

    def blocks(self) -> np.ndarray:
        """Mantissas viewed as ``shape[:-1] + (n_blocks, block)``."""
        return self.mantissas.reshape(self.exponents.shape + (self.block,))

    def dequantize(self) -> np.ndarray:
        """Exact float64 values ``m * 2**(E - 133)``."""
        scale = np.ldexp(1.0, self.exponents.astype(np.int64) - BIAS - MANT_FRAC_BITS)
        return (self.blocks().astype(np.float64) * scale[..., None]).reshape(self.shape)

    def is_canonical(self) -> bool:
        """True iff every all-zero block has E = 0 and every other block is normalized."""
        blk = self.blocks()
        nz = np.any(blk != 0, axis=-1)
        if np.any(self.exponents[~nz] != 0):
            return False
        return bool(np.all(self.exponents[nz] != 0))

    def __eq__(self, other):
        if not isinstance(other, BFPTensor):
            return NotImplemented
        return (self.block == other.block
                and np.array_equal(self.exponents, other.exponents)
                and np.array_equal(self.mantissas, other.mantissas))

    __hash__ = None

    def __repr__(self):
        return f"BFPTensor(shape={self.shape}, block={self.block})"


def quantize_exact(x, block: int = 16) -> BFPTensor:
    """Quantize exact float64 values (no float32 cast); see the module docstring.

    Used for values that float32 may not hold exactly (GEMM accumulators). Values with
    ``|x| < 2**-126`` flush to zero; blocks with ``e > 127`` saturate.
    """
    block = check_block(block)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0:
        raise ValueError("Cannot quantize a scalar: need at least one axis")
    if not np.all(np.isfinite(x)):
        raise ValueError("Cannot quantize NaN or Inf")
    if x.shape[-1] % block:
        raise ValueError(
            f"Last axis has length {x.shape[-1]}, which is not a multiple of the block "
            f"size {block}")
    x = np.where(np.abs(x) < np.ldexp(1.0, E_MIN), 0.0, x)
    blk = x.reshape(x.shape[:-1] + (x.shape[-1] // block, block))
    _, k = np.frexp(blk)  # |x| = f * 2**k, f in [0.5, 1): floor(log2|x|) = k - 1
    elog = np.where(blk != 0, k.astype(np.int64) - 1, np.iinfo(np.int64).min)
    e = elog.max(axis=-1)
    nz = e != np.iinfo(np.int64).min
    e = np.clip(np.where(nz, e, 0), E_MIN, E_MAX)
    scaled = np.ldexp(blk, (MANT_FRAC_BITS - e)[..., None])
    m = np.clip(np.rint(scaled), -MANT_MAX, MANT_MAX).astype(np.int8)
    exps = np.where(nz, e + BIAS, 0).astype(np.uint8)
    return BFPTensor(exps, m.reshape(x.shape), block)


def quantize(x, block: int = 16) -> BFPTensor:
    """Quantize ``x`` (taken as float32) to BFP8 in blocks of ``block`` along the last axis.

    Raises
    ------
    ValueError
        If ``x`` holds NaN or Inf, its last axis is not a multiple of ``block``, or ``block``
        is not a positive power of two.
    """
    block = check_block(block)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"Cannot quantize an array of dtype {x.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = x.astype(np.float32)
    if not np.all(np.isfinite(x32)):
        raise ValueError("Cannot quantize NaN or Inf (or a value out of float32 range)")
    return quantize_exact(x32.astype(np.float64), block)
