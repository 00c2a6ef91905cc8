"""On-chip weight update: fixed-point SGD with momentum and weight decay, bit-exact.

The update unit (``hdl/update_unit.py``) runs this per weight element, with integer adders,
shifters and 32 x 16-bit multipliers only. It is the fixed-point counterpart of
:class:`golden.nn.SGD` and has the same structure::

    v <- momentum * v + (g + weight_decay * w)
    w <- w - lr * v                                  (the new v)

Formats (all integers; ``SAT = 2**31 - 1``):

``w`` (master weight)
    int32, Q8.24 (sign, 7 integer bits, ``W_FRAC = 24`` fraction bits): value ``w * 2**-24``,
    range +-128, LSB ``2**-24 = 6.0e-8``. Saturated to ``[-SAT, SAT]`` (symmetric: ``-2**31``
    never occurs).
``v`` (velocity)
    int32, Q8.24 (``V_FRAC = 24``), same range and saturation.
``g`` (gradient)
    not stored: taken directly from the WG output's RAW accumulator record ``(S, ea)``
    (``golden.jobs.raw_bytes``; value ``S * 2**(ea - 274)``, :mod:`golden.gemm`).
hyper-parameters (``lr``, ``momentum``, ``weight_decay``)
    each an unsigned 16-bit mantissa ``m`` and a 6-bit shift ``s``: value ``m * 2**-s``
    (:class:`Hyper`; ``Hyper.from_float`` keeps 16 significant bits, round half to even).

Per element, with ``rne(x, r)`` = ``x * 2**-r`` rounded to an integer, half to even (for
``r <= 0`` the exact left shift ``x << -r``), and ``sat(x)`` = ``x`` clamped to
``[-SAT, SAT]``:

1. ``g  = sat(rne(S, 274 - V_FRAC - ea))``: the record aligned to the velocity's LSB (a right
   shift by ``274 - 24 - ea = 250 - ea`` with round half to even, or a left shift for
   ``ea > 250``), saturated. ``S = 0`` gives ``g = 0`` whatever ``ea``.
2. ``mv = rne(mom.m * v, mom.s)``, ``wd = rne(wd.m * w, wd.s + W_FRAC - V_FRAC)``: 48-bit
   products, each rounded once to the velocity's LSB (not saturated).
3. ``v' = sat(mv + g + wd)``: one exact sum, then one saturation.
4. ``lv = rne(lr.m * v', lr.s + V_FRAC - W_FRAC)``, ``w' = sat(w - lv)``.

Nothing ever wraps: every result that does not fit saturates (steps 1, 3, 4). Rounding is half
to even everywhere (unbiased: the update of a weight whose gradient hovers around one LSB does
not drift). Rounding happens exactly four times per element (g, momentum term, decay term,
step); the sums are exact. In hardware ``rne(x, r)`` for ``r > 0`` is a two's complement
arithmetic shift (floor) plus an increment when the guard bit (bit ``r - 1``) is set and either
a sticky bit below it or the LSB of the shifted result is set; shifts of 61 or more give 0 for
every operand here (``|x| < 2**60``).

Why Q8.24 for both:

* range: in the reference trainings the largest weight magnitude reached is 2.1 and the largest
  velocity 0.09 (``docs/numerics.md``, "Weight update"); +-128 leaves 6 octaves of headroom, so
  saturation is a guard against divergence, not a working regime;
* resolution: ``2**-24`` is the FP32 resolution of weights in [0.5, 1) (coarser below: 16x for
  weights around 0.05); a step ``lr * v`` above ``2**-25`` moves a weight. Measured, 12
  fraction bits already train as well as FP32 and 8 lose 0.75 points: 24 leave 12 bits of
  margin;
* one format for both: the decay term and the step need no relative shift (``W_FRAC = V_FRAC``),
  and the master maps onto the BFP8 converter's accumulator input with a constant exponent:
  ``S = w``, ``ea = 274 - W_FRAC = 250`` gives the value ``w * 2**-24`` exactly.

Re-quantization (:func:`requantize`): the BFP8 copies of the weights are
:func:`golden.bfp.quantize_exact` of the master's exact value ``w * 2**-W_FRAC``: ``W``
blocked along K (rows of the master) and ``W^T`` blocked along Co (columns), each zero-padded
to whole blocks. That is exactly :meth:`golden.gemm.Accumulator.to_bfp` of
``Accumulator(S=w, ea=250)``: the BFP8 converter (``hdl/bfp_converter.py``) produces it from a
stream of masters in the right order (no flush: ``|v| >= 2**-24``; no saturation: ``|v| < 2**7``).

:class:`FixedSGD` runs this update in the golden training loop (``golden.train --update
fixed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bfp import check_block
from .gemm import EXP_OFFSET, GUARD, Accumulator

__all__ = [
    "W_FRAC",
    "V_FRAC",
    "WORD_W",
    "SAT",
    "HP_MANT_W",
    "HP_SHIFT_W",
    "REC_EXP_W",
    "MASTER_EA",
    "Hyper",
    "rne_shift",
    "grad_to_fixed",
    "to_fixed",
    "to_value",
    "update",
    "requantize",
    "FixedSGD",
]

W_FRAC = 24  #: fraction bits of the master weight (Q8.24 in an int32)
V_FRAC = 24  #: fraction bits of the velocity (Q8.24 in an int32)
WORD_W = 32  #: width of the master and velocity words
SAT = (1 << (WORD_W - 1)) - 1  #: saturation bound: results are clamped to [-SAT, SAT]
HP_MANT_W = 16  #: hyper-parameter mantissa width (unsigned)
HP_SHIFT_W = 6  #: hyper-parameter shift width: value = mant * 2**-shift, shift 0..63
REC_EXP_W = 16  #: width of the RAW record's exponent field (uint16)
ACC_SHIFT = EXP_OFFSET + GUARD  #: 274: accumulator value is S * 2**(ea - 274)
MASTER_EA = ACC_SHIFT - W_FRAC  #: 250: the converter's ea for a master word (S = w)
_MAX_FRAC_DIFF = 8  #: |frac_v - frac_w| allowed (left shifts of the 48-bit products)
_SHIFT_CAP = 61  #: rne_shift of |x| < 2**60 by 61 or more gives 0


def _check_frac(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value < WORD_W:
        raise ValueError(f"{name} must be an integer in [0, {WORD_W - 1}], not {value!r}")
    return int(value)


def _check_fracs(frac_w, frac_v):
    frac_w = _check_frac("frac_w", frac_w)
    frac_v = _check_frac("frac_v", frac_v)
    if abs(frac_w - frac_v) > _MAX_FRAC_DIFF:
        raise ValueError(f"frac_w and frac_v may differ by at most {_MAX_FRAC_DIFF}, not "
                         f"{frac_w} and {frac_v}")
    return frac_w, frac_v


@dataclass(frozen=True)
class Hyper:
    """A hyper-parameter register: value ``mant * 2**-shift``.

    Attributes
    ----------
    mant : int
        Unsigned ``HP_MANT_W``-bit mantissa, 0 .. 65535.
    shift : int
        Unsigned ``HP_SHIFT_W``-bit right shift, 0 .. 63.
    """

    mant: int
    shift: int

    def __post_init__(self):
        for name, val, bits in (("mant", self.mant, HP_MANT_W), ("shift", self.shift,
                                                                HP_SHIFT_W)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) \
                    or not 0 <= val < (1 << bits):
                raise ValueError(f"Hyper.{name} must be an integer in [0, {(1 << bits) - 1}], "
                                 f"not {val!r}")
            object.__setattr__(self, name, int(val))

    @property
    def value(self) -> float:
        """The exact value ``mant * 2**-shift``."""
        return math.ldexp(self.mant, -self.shift)

    @property
    def word(self) -> int:
        """The 22-bit register word: ``mant`` in bits 15:0, ``shift`` in bits 21:16 (the
        descriptor's ``lr``, ``momentum`` and ``weight_decay`` fields)."""
        return self.mant | self.shift << HP_MANT_W

    @classmethod
    def from_word(cls, word: int) -> Hyper:
        """The register of a 22-bit word (:attr:`word`)."""
        if isinstance(word, bool) or not isinstance(word, (int, np.integer)) \
                or not 0 <= word < (1 << (HP_MANT_W + HP_SHIFT_W)):
            raise ValueError(f"A hyper-parameter word must be a {HP_MANT_W + HP_SHIFT_W}-bit "
                             f"unsigned integer, not {word!r}")
        return cls(int(word) & ((1 << HP_MANT_W) - 1), int(word) >> HP_MANT_W)

    @classmethod
    def from_float(cls, x) -> Hyper:
        """The register nearest to ``x`` with the most significant bits kept.

        ``shift`` is the largest in 0..63 that keeps ``mant < 2**16``; ``mant`` is ``x *
        2**shift`` rounded half to even. ``x = 0`` gives ``Hyper(0, 0)``.

        Raises
        ------
        ValueError
            If ``x`` is not a finite number in ``[0, 65535.5)``.
        """
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise ValueError(f"A hyper-parameter must be a number, not {x!r}")
        x = float(x)
        if not math.isfinite(x) or x < 0 or x >= (1 << HP_MANT_W) - 0.5:
            raise ValueError(f"A hyper-parameter must be finite and in [0, 65535.5), not {x!r}")
        if x == 0:
            return cls(0, 0)
        top = (1 << HP_SHIFT_W) - 1
        shift = min(max(HP_MANT_W - math.frexp(x)[1], 0), top)  # x * 2**shift in [2**15, 2**16)
        mant = int(np.rint(math.ldexp(x, shift)))  # exact scaling, then half to even
        if mant >> HP_MANT_W:  # rounded up to 2**16
            mant, shift = mant >> 1, shift - 1
        return cls(mant, shift)


def rne_shift(x, r):
    """``x * 2**-r`` rounded to an integer, half to even (``r <= 0``: the exact ``x << -r``).

    Parameters
    ----------
    x : array_like of int
        Integers with ``|x| < 2**60`` (and ``|x << -r| < 2**63`` where ``r < 0``).
    r : array_like of int
        Shift amounts (broadcast against ``x``).

    Returns
    -------
    numpy.ndarray of int64
    """
    x = np.asarray(x, dtype=np.int64)
    r = np.asarray(r, dtype=np.int64)
    if np.any(np.abs(x) >= 1 << 60):
        raise ValueError("rne_shift needs |x| < 2**60")
    x, r = np.broadcast_arrays(x, r)
    rr = np.clip(r, 1, _SHIFT_CAP)
    q = x >> rr
    rem = x - (q << rr)  # 0 <= rem < 2**rr (floor division)
    half = np.int64(1) << (rr - 1)
    up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    right = q + up
    left = x << np.clip(-r, 0, 62)
    return np.where(r > 0, right, left).astype(np.int64)


def _sat(x):
    return np.clip(x, -SAT, SAT).astype(np.int64)


def grad_to_fixed(mant, exp, frac_v: int = V_FRAC) -> np.ndarray:
    """RAW accumulator records ``(S, ea)`` to gradients in the velocity's format (step 1).

    ``g = sat(rne(S, 274 - frac_v - ea))``: the value ``S * 2**(ea - 274)`` times
    ``2**frac_v``, rounded half to even and saturated to ``[-SAT, SAT]``.

    Parameters
    ----------
    mant : array_like of int
        ``S``, signed 32-bit.
    exp : array_like of int
        ``ea``, unsigned 16-bit (the RAW record's field).
    frac_v : int
        Fraction bits of the velocity.

    Returns
    -------
    numpy.ndarray of int64
    """
    frac_v = _check_frac("frac_v", frac_v)
    s = np.asarray(mant)
    ea = np.asarray(exp)
    if not (np.issubdtype(s.dtype, np.integer) and np.issubdtype(ea.dtype, np.integer)):
        raise ValueError("Accumulator records must be integer arrays")
    s = s.astype(np.int64)
    ea = ea.astype(np.int64)
    if np.any(s < -(1 << 31)) or np.any(s > SAT):
        raise ValueError("S must be a signed 32-bit integer")
    if np.any(ea < 0) or np.any(ea >= 1 << REC_EXP_W):
        raise ValueError(f"ea must be an unsigned {REC_EXP_W}-bit integer")
    s, ea = np.broadcast_arrays(s, ea)
    d = ea - ACC_SHIFT + frac_v  # left shift by d (right shift by -d)
    huge = (d >= WORD_W - 1) & (s != 0)  # |S| << 31 >= 2**31 > SAT
    g = rne_shift(s, np.where(huge, 0, -d))
    return np.where(huge, np.sign(s) * SAT, _sat(g)).astype(np.int64)


def to_fixed(x, frac: int) -> np.ndarray:
    """Exact float values to ``frac``-fraction-bit integers: round half to even, saturate.

    Every float64 value whose scaled magnitude is below ``2**53`` rounds exactly as the integer
    rule would (the scaling by ``2**frac`` is exact). For an accumulator value ``x = S *
    2**(ea - 274)`` this equals :func:`grad_to_fixed` (pinned in ``verif/test_update.py``).
    """
    frac = _check_frac("frac", frac)
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("Cannot convert NaN or Inf to fixed point")
    scaled = np.clip(np.ldexp(x, frac), -2.0 * SAT, 2.0 * SAT)
    return _sat(np.rint(scaled).astype(np.int64))


def to_value(q, frac: int) -> np.ndarray:
    """Exact float64 value ``q * 2**-frac`` of fixed-point integers."""
    frac = _check_frac("frac", frac)
    return np.ldexp(np.asarray(q, dtype=np.int64).astype(np.float64), -frac)


def _check_word(name, a):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, not {a.dtype}")
    a = a.astype(np.int64)
    if np.any(np.abs(a) > SAT):
        raise ValueError(f"{name} must lie in [-SAT, SAT] = [-(2**31 - 1), 2**31 - 1]")
    return a


def _check_hyper(name, h):
    if not isinstance(h, Hyper):
        raise TypeError(f"{name} must be a Hyper (use Hyper.from_float), not "
                        f"{type(h).__name__}")
    return h


def update(w, v, g, lr: Hyper, momentum: Hyper, weight_decay: Hyper, *,
           frac_w: int = W_FRAC, frac_v: int = V_FRAC):
    """One fixed-point SGD step per element (steps 2-4 of the module docstring).

    Parameters
    ----------
    w, v : array_like of int
        Master weights and velocities, each in ``[-SAT, SAT]``.
    g : array_like of int
        Gradients in the velocity's format (:func:`grad_to_fixed`), in ``[-SAT, SAT]``.
    lr, momentum, weight_decay : Hyper
        The hyper-parameter registers.
    frac_w, frac_v : int
        Fraction bits of ``w`` and ``v`` (differing by at most 8).

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The new ``w`` and ``v`` (int64 arrays holding int32 values), shape of the broadcast.
    """
    frac_w, frac_v = _check_fracs(frac_w, frac_v)
    w = _check_word("w", w)
    v = _check_word("v", v)
    g = _check_word("g", g)
    lr = _check_hyper("lr", lr)
    momentum = _check_hyper("momentum", momentum)
    weight_decay = _check_hyper("weight_decay", weight_decay)
    w, v, g = np.broadcast_arrays(w, v, g)
    mv = rne_shift(momentum.mant * v, momentum.shift)
    wd = rne_shift(weight_decay.mant * w, weight_decay.shift + frac_w - frac_v)
    v_new = _sat(mv + g + wd)
    step = rne_shift(lr.mant * v_new, lr.shift + frac_v - frac_w)
    w_new = _sat(w - step)
    return w_new, v_new


def update_records(w, v, mant, exp, lr: Hyper, momentum: Hyper, weight_decay: Hyper, *,
                   frac_w: int = W_FRAC, frac_v: int = V_FRAC):
    """The whole per-element operation of the update unit: :func:`grad_to_fixed` of the RAW
    records ``(mant, exp)`` = ``(S, ea)``, then :func:`update`. Returns ``(w', v')``."""
    g = grad_to_fixed(mant, exp, frac_v)
    return update(w, v, g, lr, momentum, weight_decay, frac_w=frac_w, frac_v=frac_v)


def requantize(w, frac_w: int = W_FRAC, block: int = 16):
    """The two BFP8 copies of a 2-D master (Co x K): ``(W, W^T)``.

    ``W`` is blocked along K (the master's rows, zero-padded to whole blocks along K and to a
    multiple of ``block`` rows), ``W^T`` (K x Co) along Co, both the converter's output for
    ``Accumulator(S=w, ea=274 - frac_w)`` (module docstring).

    Returns
    -------
    (BFPTensor, BFPTensor)
    """
    frac_w = _check_frac("frac_w", frac_w)
    block = check_block(block)
    w = _check_word("w", w)
    if w.ndim != 2:
        raise ValueError(f"requantize needs a 2-D master (Co x K), not shape {w.shape}")
    co, k = w.shape
    pad = np.zeros((-(-co // block) * block, -(-k // block) * block), np.int64)
    pad[:co, :k] = w
    ea = np.full(pad.shape, ACC_SHIFT - frac_w, np.int64)
    return Accumulator(pad, ea).to_bfp(block), Accumulator(pad.T.copy(), ea.T.copy()).to_bfp(block)


class FixedSGD:
    """:class:`golden.nn.SGD` with the fixed-point update (the update unit's numerics).

    Keeps, per GEMM layer, the int32 master ``w`` (Q8.24) and velocity ``v`` (Q8.24) in
    :attr:`master` and :attr:`velocity`, and writes the master's exact value (float64) into
    ``layer.w`` after every step, so that the layers quantize their BFP8 copies from it (with
    ``Numerics.exact_weights``: ``quantize_exact``, the converter's rule). The gradient is the
    exact WG output ``layer.grad_exact`` (an accumulator value, converted by :func:`to_fixed`,
    which equals :func:`grad_to_fixed` of its record). ``lr`` is re-encoded every step (the
    host writes the register per step, e.g. for a cosine schedule).

    Parameters
    ----------
    layers : list
        GEMM layers (``w`` float array; ``grad_exact`` set by each training step).
    lr, momentum, weight_decay : float
        As :class:`golden.nn.SGD`; encoded with :meth:`Hyper.from_float`.
    frac_w, frac_v : int
        Fraction bits of the master and the velocity.
    """

    def __init__(self, layers, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, *,
                 frac_w: int = W_FRAC, frac_v: int = V_FRAC):
        for name, val in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
                raise ValueError(f"{name} must be a number >= 0, not {val!r}")
        self.frac_w, self.frac_v = _check_fracs(frac_w, frac_v)
        self.layers = list(layers)
        self.lr = float(lr)
        self.momentum = Hyper.from_float(momentum)
        self.weight_decay = Hyper.from_float(weight_decay)
        Hyper.from_float(lr)  # validate the range now
        self.master = [to_fixed(layer.w, self.frac_w) for layer in self.layers]
        self.velocity = [np.zeros_like(m) for m in self.master]
        self.saturated = 0  #: elements of w or v that hit +-SAT so far
        for layer, m in zip(self.layers, self.master, strict=True):
            layer.w = to_value(m, self.frac_w)

    def step(self, lr: float | None = None):
        """One update of every layer from its ``grad_exact``."""
        hl = Hyper.from_float(self.lr if lr is None else lr)
        for i, layer in enumerate(self.layers):
            grad = getattr(layer, "grad_exact", None)
            if grad is None:
                raise ValueError(f"{layer.name} has no gradient: run a training step first")
            g = to_fixed(grad, self.frac_v)
            w, v = update(self.master[i], self.velocity[i], g, hl, self.momentum,
                          self.weight_decay, frac_w=self.frac_w, frac_v=self.frac_v)
            self.saturated += int(np.count_nonzero(np.abs(w) == SAT)
                                  + np.count_nonzero(np.abs(v) == SAT))
            self.master[i], self.velocity[i] = w, v
            layer.w = to_value(w, self.frac_w)
