"""BFP8 GEMM exactly as the hardware computes it.

One operation serves all three training phases: ``C = A @ B.T`` where ``A`` (M x K) and
``B`` (N x K) are :class:`~golden.bfp.BFPTensor` s blocked along ``K``, the reduction axis.

Per output ``C[i, j]`` and per block index ``kb`` (ascending):

1. the block partial ``p = sum_k mA[i, k] * mB[j, k]`` is an exact integer,
   ``|p| <= 16 * 127**2 < 2**18``, with exponent ``s = EA[i, kb] + EB[j, kb]`` (biased sum);
   its value is ``p * 2**(s - 266)``;
2. a partial with ``p == 0`` (either block all zero, or cancellation) changes nothing; this is
   what lets the hardware skip zero blocks without changing the result;
3. otherwise ``q = p << GUARD`` joins the accumulator ``(S, ea)`` (``S`` a signed ``ACC_W``-bit
   integer, ``ea`` an exponent; reset state ``S = 0, ea = 0``):

   * if ``s > ea``: ``T = (S >> (s - ea)) + q`` and ``ea = s``;
   * else: ``T = S + (q >> (ea - s))``;

   where ``>>`` is an arithmetic (flooring) shift; shifts of ``ACC_W - 1`` or more give 0 or -1;
4. if ``T`` does not fit in ``ACC_W`` signed bits, ``T = T >> 1`` and ``ea += 1``
   (renormalization: the accumulator never saturates and never wraps); ``S = T``.

The accumulator's value is ``S * 2**(ea - 266 - GUARD)``, exact in float64. The BFP8 converter
(:meth:`Accumulator.to_bfp`) quantizes 16 consecutive outputs along the last axis with
:func:`golden.bfp.quantize_exact`.

Orientation (``docs/numerics.md``): every tensor is stored blocked along the axis its consumer
reduces; activations ``X`` as (N x K) and errors ``dY`` as (N x Co), blocked along channels;
weights twice (``W`` as Co x K for FP, ``W.T`` as K x Co for BP); for WG the activations and
errors are re-blocked along ``N`` by :func:`reblock` (a transposer between buffers).

* FP: ``Y  (N x Co) = matmul(X, W)``
* BP: ``dX (N x K)  = matmul(dY, Wt, out_mask=relu'(Y_prev))``
* WG: ``dW (Co x K) = matmul(reblock(dY), reblock(X))``
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bfp import BIAS, MANT_FRAC_BITS, BFPTensor, quantize_exact

__all__ = [
    "ACC_W",
    "GUARD",
    "Accumulator",
    "matmul",
    "fp",
    "bp",
    "wg",
    "reblock",
    "pad_to",
    "error_bound",
]

ACC_W = 32  #: accumulator width in bits (signed)
GUARD = 8  #: guard bits below the partial's LSB
EXP_OFFSET = 2 * (BIAS + MANT_FRAC_BITS)  #: 266: value of p is p * 2**(s - EXP_OFFSET)
_ACC_MIN = -(1 << (ACC_W - 1))
_ACC_MAX = (1 << (ACC_W - 1)) - 1


@dataclass(frozen=True, eq=False)
class Accumulator:
    """GEMM outputs in accumulator format.

    Attributes
    ----------
    mant : numpy.ndarray of int64
        ``S``, within the signed ``ACC_W``-bit range.
    exp : numpy.ndarray of int64
        ``ea`` (0 for an output that received no nonzero partial).
    """

    mant: np.ndarray
    exp: np.ndarray

    @property
    def shape(self):
        return self.mant.shape

    def value(self) -> np.ndarray:
        """Exact float64 value ``S * 2**(ea - 266 - GUARD)``."""
        return np.ldexp(self.mant.astype(np.float64), self.exp - EXP_OFFSET - GUARD)

    def relu(self) -> Accumulator:
        """ReLU on the accumulator: negative outputs become the reset state."""
        neg = self.mant < 0
        return Accumulator(np.where(neg, 0, self.mant), np.where(neg, 0, self.exp))

    def to_bfp(self, block: int = 16) -> BFPTensor:
        """Quantize along the last axis (the BFP8 converter)."""
        return quantize_exact(self.value(), block)


def _check_operands(a: BFPTensor, b: BFPTensor):
    for name, t in (("A", a), ("B", b)):
        if not isinstance(t, BFPTensor):
            raise TypeError(f"Operand {name} must be a BFPTensor, not {type(t).__name__}")
        if t.mantissas.ndim != 2:
            raise ValueError(f"Operand {name} must be 2-D, not of shape {t.shape}")
    if a.block != b.block:
        raise ValueError(f"Operands have different block sizes: {a.block} and {b.block}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"Reduction axes differ: A is {a.shape}, B is {b.shape} (C = A @ B.T needs "
            f"the same K)")


def _asr(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Arithmetic shift right with the shift capped where the result no longer changes."""
    return np.right_shift(x, np.minimum(d, 63))


def matmul(a: BFPTensor, b: BFPTensor, out_mask=None, chunk: int = 1 << 22, *,
           init: Accumulator | None = None) -> Accumulator:
    """``C = A @ B.T`` with the hardware's accumulation rule (module docstring).

    Parameters
    ----------
    a : BFPTensor
        M x K, blocked along K.
    b : BFPTensor
        N x K, blocked along K.
    out_mask : array_like of bool, optional
        M x N; outputs where it is False are not computed (they stay in the reset state).
    chunk : int
        Upper bound on ``n_blocks * M * N`` partials held in memory at once.
    init : Accumulator, optional
        M x N starting state of the accumulators (default: the reset state ``S = 0, ea = 0``).
        The partials of ``A`` and ``B`` join it in ascending block order, so splitting ``K``
        into segments and passing each segment's result as the next one's ``init`` gives
        exactly the accumulators of one call over the whole ``K`` (the engine's carry).
        Outputs outside ``out_mask`` keep their ``init`` state.
    """
    _check_operands(a, b)
    m, n = a.shape[0], b.shape[0]
    nb = a.exponents.shape[1]
    if out_mask is not None:
        out_mask = np.asarray(out_mask, dtype=bool)
        if out_mask.shape != (m, n):
            raise ValueError(f"Output mask has shape {out_mask.shape}, expected {(m, n)}")
    if init is None:
        acc = np.zeros((m, n), dtype=np.int64)
        ea = np.zeros((m, n), dtype=np.int64)
    else:
        if not isinstance(init, Accumulator):
            raise TypeError(f"init must be an Accumulator, not {type(init).__name__}")
        if init.shape != (m, n) or init.exp.shape != (m, n):
            raise ValueError(f"init has shape {init.shape}, expected {(m, n)}")
        acc = np.array(init.mant, dtype=np.int64)
        ea = np.array(init.exp, dtype=np.int64)
    # float64 products and sums of 16 are exact (|p| < 2**18); BLAS does the integer work.
    ma = a.blocks().astype(np.float64).transpose(1, 0, 2)  # nb, M, 16
    mb = b.blocks().astype(np.float64).transpose(1, 2, 0)  # nb, 16, N
    ea_a = a.exponents.astype(np.int64)
    eb_b = b.exponents.astype(np.int64)
    step = max(1, chunk // max(1, m * n))
    for k0 in range(0, nb, step):
        parts = np.matmul(ma[k0:k0 + step], mb[k0:k0 + step]).astype(np.int64)
        for i, p in enumerate(parts):
            kb = k0 + i
            s = ea_a[:, kb, None] + eb_b[None, :, kb]
            live = p != 0
            if out_mask is not None:
                live &= out_mask
            if not live.any():
                continue
            q = p << GUARD
            up = s > ea
            t = np.where(up, _asr(acc, s - ea) + q, acc + _asr(q, ea - s))
            new_ea = np.where(up, s, ea)
            over = (t < _ACC_MIN) | (t > _ACC_MAX)
            t = np.where(over, t >> 1, t)
            new_ea = new_ea + over
            acc = np.where(live, t, acc)
            ea = np.where(live, new_ea, ea)
    return Accumulator(acc, ea)


def error_bound(a: BFPTensor, b: BFPTensor, out: Accumulator) -> np.ndarray:
    """Bound on ``|out.value() - a.dequantize() @ b.dequantize().T|`` per output.

    The product on the right is the exact one (or its correctly rounded float64, e.g. by
    ``math.fsum``): a plain float64 ``@`` can drop small terms next to large ones that cancel
    and be off by far more than this bound. Each nonzero partial adds at most one flooring
    shift of ``q`` and one of ``S`` and at most one renormalization, each losing less than one
    LSB at the final scale ``2**(ea - 266 - GUARD)``: the bound is ``3 * n_blocks`` such LSBs.
    """
    nb = a.exponents.shape[1]
    return 3.0 * nb * np.ldexp(1.0, out.exp - EXP_OFFSET - GUARD)


def reblock(t: BFPTensor) -> BFPTensor:
    """Transpose a 2-D tensor and re-quantize it along the new last axis (the transposer).

    ``(N x C)`` blocked along ``C`` becomes ``(C x N)`` blocked along ``N``. ``N`` must be a
    multiple of the block size (zero-pad with :func:`pad_to`).
    """
    if not isinstance(t, BFPTensor) or t.mantissas.ndim != 2:
        raise ValueError("reblock needs a 2-D BFPTensor")
    if t.shape[0] % t.block:
        raise ValueError(
            f"Cannot re-block along an axis of length {t.shape[0]}: not a multiple of the "
            f"block size {t.block} (pad it first)")
    return quantize_exact(t.dequantize().T, t.block)


def pad_to(x, multiple: int = 16, axis: int = -1) -> np.ndarray:
    """Zero-pad ``x`` along ``axis`` up to a multiple of ``multiple``."""
    x = np.asarray(x)
    extra = (-x.shape[axis]) % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths)


def fp(x: BFPTensor, w: BFPTensor) -> Accumulator:
    """Forward: ``Y (N x Co) = X (N x K) @ W (Co x K).T``."""
    return matmul(x, w)


def bp(dy: BFPTensor, wt: BFPTensor, out_mask=None) -> Accumulator:
    """Backward: ``dX (N x K) = dY (N x Co) @ Wt (K x Co).T``, only where ``out_mask``."""
    return matmul(dy, wt, out_mask=out_mask)


def wg(dy: BFPTensor, x: BFPTensor) -> Accumulator:
    """Weight gradient: ``dW (Co x K) = reblock(dY) @ reblock(X).T`` (reduction over N)."""
    return matmul(reblock(dy), reblock(x))
