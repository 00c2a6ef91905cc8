"""The sparsity filter, its statistics and the threshold controller (bit-exact, integer-only).

The filter sits after the BFP8 converter and sees one BFP8 block at a time. It zeroes every
element whose magnitude is below a threshold ``tau``, counts what it saw, and keeps a small
exponent histogram from which a controller sets the next ``tau`` (``docs/numerics.md``,
"The sparsity filter").

Threshold
    ``tau = tm * 2**(te - 133)`` with ``tm`` and ``te`` unsigned 8-bit registers: the BFP8 value
    grid with an 8-bit (unsigned) mantissa. An element ``m`` of a block with exponent ``E``
    (value ``m * 2**(E - 133)``) is dropped iff ``|m| * 2**E < tm * 2**te``. With
    ``d = E - te`` the hardware compares ``|m| << clamp(d, 0, 8)`` with ``tm << clamp(-d, 0, 8)``
    (two 16-bit operands); the clamps at 8 never change the outcome because ``|m| <= 127`` and
    ``tm <= 255``. ``tm = 0`` is ``tau = 0`` and drops nothing.

Filter
    Dropped mantissas become 0; a block left with no nonzero mantissa gets ``E = 0`` (canonical);
    every other block keeps its ``E``, with no renormalization. Since one ``tau`` applies to a
    whole block and the comparison is monotonic in ``|m|``, the largest element of a block is
    dropped only together with the whole block, so a normalized block stays normalized and the
    renormalization the quantizer would apply is never needed.

Statistics (:func:`stats`), computed on the *unfiltered* tensor (the filter's input)
    ``values``: elements seen; ``zeros``: zero mantissas in the input; ``filtered_zeros``: zero
    mantissas in the output, with the threshold the filter used; ``hist``: :data:`HIST_BINS`
    counters over the element exponent of the nonzero input elements. For ``m != 0`` let
    ``lead = floor(log2|m|)`` (the position of the leading one of ``|m|``, 0..6) and
    ``u = E + lead`` (9 bits; the element's value is in ``[2**(u-133), 2**(u-132))``). Its bin is
    ``clamp(u - base, 0, HIST_BINS - 1)``: bin ``i`` for ``0 < i < 31`` counts the octave
    ``u = base + i``, bin 0 everything at or below ``base``, bin 31 everything at or above
    ``base + 31``. ``base`` is an 8-bit register. Every counter is :data:`COUNT_W` = 32 bits
    unsigned and saturates at ``2**32 - 1``.

Controller (:class:`ThresholdController`), once per tensor, integer arithmetic only
    Target and aim are Q0.16 fractions. Feedback: if the statistics were measured with the
    threshold the controller chose (nonzero, or zero and the tensor ended below the target),
    ``aim += (target - measured) >> gain_shift`` (``measured = (filtered_zeros << 16) //
    values``), clamped to ``target +- max_correction``.
    Then ``need = ceil(aim * values / 2**16)`` elements must be zero: if ``zeros >= need`` the
    next threshold is 0; else the first bin ``i`` where ``zeros + hist[0..i]`` reaches ``need``
    is found in one pass over the counters, and within its octave the threshold's mantissa is
    interpolated linearly, ``tm = 128 + ((need - below) << 7) // hist[i]``, ``te = base + i - 7``.
    It runs on the host (or a sequencer) from the 35 counters read over the CSR bus: one pass
    over 32 counters with an adder and a comparator, one multiply (16 x 32 bits), two divisions
    (48 / 32 bits for the measured sparsity, 39 / 32 bits with an 8-bit quotient for ``tm``),
    shifts and clamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .bfp import BIAS, MANT_FRAC_BITS, BFPTensor

__all__ = [
    "HIST_BINS",
    "COUNT_W",
    "DEFAULT_BASE",
    "TARGET_BITS",
    "Threshold",
    "FilterStats",
    "ThresholdController",
    "filter",
    "stats",
]

HIST_BINS = 32  #: histogram counters (one octave each)
COUNT_W = 32  #: width of every statistics counter; counters saturate at 2**COUNT_W - 1
DEFAULT_BASE = 109  #: default histogram base: bins 1..30 are the octaves 2**-23 .. 2**6
TARGET_BITS = 16  #: the controller's fractions (target, aim, measured sparsity) are Q0.16
_OFFSET = BIAS + MANT_FRAC_BITS  #: 133: value = m * 2**(E - 133) = tm * 2**(te - 133)
_SHIFT_CAP = 8  #: comparison shifts are clamped to this without changing the outcome
_ONE = 1 << TARGET_BITS
# floor(log2|m|) for |m| in 0..127 (entry 0 unused): the leading-one position
_LEAD = np.array([0] + [int(v).bit_length() - 1 for v in range(1, 128)], dtype=np.int64)


def _check_u8(name, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"Threshold {name} must be an integer, not {v!r}")
    if not 0 <= v <= 255:
        raise ValueError(f"Threshold {name} must be in [0, 255], not {v!r}")
    return int(v)


@dataclass(frozen=True)
class Threshold:
    """A filter threshold as the hardware holds it: ``tau = tm * 2**(te - 133)``.

    Parameters
    ----------
    te : int
        Exponent register, unsigned 8-bit.
    tm : int
        Mantissa register, unsigned 8-bit; 0 means ``tau = 0`` (the filter drops nothing).

    Raises
    ------
    TypeError
        If ``te`` or ``tm`` is not an integer.
    ValueError
        If ``te`` or ``tm`` is outside [0, 255].

    Notes
    -----
    A value has several representations (``tm = 2, te = 6`` equals ``tm = 1, te = 7``); equality
    compares the registers. :meth:`from_float` returns the normalized one (``tm >= 128``
    whenever ``te > 0``), or ``Threshold(0, 0)`` for zero.
    """

    te: int = 0
    tm: int = 0

    def __post_init__(self):
        object.__setattr__(self, "te", _check_u8("exponent te", self.te))
        object.__setattr__(self, "tm", _check_u8("mantissa tm", self.tm))

    @property
    def value(self) -> float:
        """``tm * 2**(te - 133)`` as an exact float64."""
        return math.ldexp(float(self.tm), self.te - _OFFSET)

    @classmethod
    def from_float(cls, tau, mode: str = "floor") -> Threshold:
        """The representable threshold nearest to ``tau`` in the direction of ``mode``.

        Parameters
        ----------
        tau : float
            A finite, non-negative threshold.
        mode : {"floor", "ceil"}
            ``"floor"``: the largest representable value ``<= tau`` (``tau`` above the largest
            representable value, ``255 * 2**122``, gives that value). ``"ceil"``: the smallest
            representable value ``>= tau``.

        Raises
        ------
        TypeError
            If ``tau`` is not a real number.
        ValueError
            If ``tau`` is negative, NaN or infinite, ``mode`` is unknown, or (``"ceil"``) ``tau``
            exceeds the largest representable value.
        """
        if mode not in ("floor", "ceil"):
            raise ValueError(f"Rounding mode must be 'floor' or 'ceil', not {mode!r}")
        if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)):
            raise TypeError(f"Threshold must be a real number, not {tau!r}")
        tau = float(tau)
        if not math.isfinite(tau) or tau < 0:
            raise ValueError(f"Threshold must be finite and non-negative, not {tau!r}")
        if tau == 0:
            return cls(0, 0)
        _, k = math.frexp(tau)  # tau = f * 2**k, f in [0.5, 1): floor(log2 tau) = k - 1
        te = k - 1 - 7 + _OFFSET  # so that tm = tau * 2**(133 - te) is in [128, 256)
        if te < 0:
            te = 0
        scaled = math.ldexp(tau, _OFFSET - te)  # exact: a power-of-two scaling
        tm = math.floor(scaled) if mode == "floor" else math.ceil(scaled)
        if tm == 256:
            tm, te = 128, te + 1
        if te > 255:
            if mode == "floor":
                return cls(255, 255)
            raise ValueError(
                f"Threshold {tau!r} exceeds the largest representable value 255 * 2**122")
        return cls(te, tm)

    def __str__(self):
        return f"{self.tm} * 2**({self.te} - 133) = {self.value!r}"


def _as_threshold(tau) -> Threshold:
    if isinstance(tau, Threshold):
        return tau
    thr = Threshold.from_float(tau, "floor")
    if thr.value != float(tau):
        raise ValueError(
            f"Threshold {tau!r} is not exactly representable as tm * 2**(te - 133) with 8-bit "
            f"tm and te; use Threshold.from_float({tau!r}) to round it")
    return thr


def _check_tensor(t):
    if not isinstance(t, BFPTensor):
        raise TypeError(f"Expected a BFPTensor, not {type(t).__name__}")


def _dropped(t: BFPTensor, thr: Threshold) -> np.ndarray:
    """Boolean mask (shape of ``t``): mantissas the filter sets to zero (zeros included)."""
    if thr.tm == 0:
        return np.zeros(t.shape, dtype=bool)
    mag = np.abs(t.blocks().astype(np.int64))
    d = t.exponents.astype(np.int64)[..., None] - thr.te
    lhs = mag << np.clip(d, 0, _SHIFT_CAP)
    rhs = thr.tm << np.clip(-d, 0, _SHIFT_CAP)
    return (lhs < rhs).reshape(t.shape)


def filter(t: BFPTensor, tau) -> BFPTensor:
    """Zero every element of ``t`` whose magnitude is below ``tau`` (module docstring).

    Parameters
    ----------
    t : BFPTensor
        The tensor, any shape, blocked along its last axis.
    tau : Threshold or float
        The threshold; a float must be exactly representable (else use
        :meth:`Threshold.from_float`). ``0`` leaves ``t`` unchanged.

    Returns
    -------
    BFPTensor
        Same shape and block; all-zero blocks have ``E = 0``, the others keep their ``E``.

    Raises
    ------
    TypeError
        If ``t`` is not a BFPTensor or ``tau`` is not a Threshold or real number.
    ValueError
        If a float ``tau`` is negative, not finite or not exactly representable.
    """
    _check_tensor(t)
    thr = _as_threshold(tau)
    m = np.where(_dropped(t, thr), 0, t.mantissas).astype(np.int8)
    nz = np.any(m.reshape(t.exponents.shape + (t.block,)) != 0, axis=-1)
    e = np.where(nz, t.exponents, 0).astype(np.uint8)
    return BFPTensor(e, m, t.block)


@dataclass(frozen=True)
class FilterStats:
    """What the filter counts over one tensor (the counters the host reads back).

    Attributes
    ----------
    values : int
        Elements seen.
    zeros : int
        Zero mantissas in the filter's input (the unfiltered tensor).
    filtered_zeros : int
        Zero mantissas in the filter's output (with :attr:`threshold`).
    hist : tuple of int
        :data:`HIST_BINS` counters of the input's nonzero elements by element exponent:
        bin ``clamp(E + floor(log2|m|) - base, 0, HIST_BINS - 1)``.
    base : int
        The histogram base register (0..255) the counts were taken with.
    threshold : Threshold
        The threshold the filter used (``filtered_zeros`` is measured with it).

    All counts saturate at ``2**COUNT_W - 1`` in hardware (:func:`stats` applies the same).
    """

    values: int
    zeros: int
    filtered_zeros: int
    hist: tuple
    base: int = DEFAULT_BASE
    threshold: Threshold = Threshold(0, 0)

    def __post_init__(self):
        for name in ("values", "zeros", "filtered_zeros"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"FilterStats.{name} must be a non-negative integer, not {v!r}")
            object.__setattr__(self, name, int(v))
        hist = tuple(self.hist)
        if len(hist) != HIST_BINS:
            raise ValueError(f"FilterStats.hist must have {HIST_BINS} counters, not {len(hist)}")
        for v in hist:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(
                    f"FilterStats.hist counters must be non-negative integers, not {v!r}")
        object.__setattr__(self, "hist", tuple(int(v) for v in hist))
        object.__setattr__(self, "base", _check_base(self.base))
        if not isinstance(self.threshold, Threshold):
            raise TypeError(
                f"FilterStats.threshold must be a Threshold, not {type(self.threshold).__name__}")

    @property
    def sparsity(self) -> float:
        """Fraction of zeros in the unfiltered tensor (0.0 for an empty tensor)."""
        return self.zeros / self.values if self.values else 0.0

    @property
    def filtered_sparsity(self) -> float:
        """Fraction of zeros after the filter with :attr:`threshold` (0.0 for an empty tensor)."""
        return self.filtered_zeros / self.values if self.values else 0.0


def _check_base(base) -> int:
    if isinstance(base, bool) or not isinstance(base, (int, np.integer)) \
            or not 0 <= base <= 255:
        raise ValueError(f"Histogram base must be an integer in [0, 255], not {base!r}")
    return int(base)


def stats(t: BFPTensor, threshold=None, base=None, count_w: int = COUNT_W) -> FilterStats:
    """The filter's counters over ``t``, which must be the *unfiltered* tensor.

    Parameters
    ----------
    t : BFPTensor
        The filter's input (the pre-filter tensor): ``zeros`` and ``hist`` describe it, so a
        controller can predict the sparsity any threshold would give.
    threshold : Threshold or float, optional
        The threshold the filter applies (default 0); only ``filtered_zeros`` depends on it.
    base : int, optional
        Histogram base register, 0..255 (default :data:`DEFAULT_BASE`; a controller suggests
        one in :attr:`ThresholdController.base`).
    count_w : int
        Counter width; counts saturate at ``2**count_w - 1``. The hardware has
        :data:`COUNT_W`; other widths exist for tests.

    Raises
    ------
    TypeError
        If ``t`` is not a BFPTensor.
    ValueError
        If ``base`` or ``count_w`` is out of range, or ``threshold`` is invalid.
    """
    _check_tensor(t)
    thr = _as_threshold(0.0 if threshold is None else threshold)
    base = DEFAULT_BASE if base is None else _check_base(base)
    if isinstance(count_w, bool) or not isinstance(count_w, (int, np.integer)) \
            or not 1 <= count_w <= 64:
        raise ValueError(f"Counter width must be an integer in [1, 64], not {count_w!r}")
    cap = (1 << int(count_w)) - 1
    m = t.blocks().astype(np.int64)
    nz = m != 0
    u = t.exponents.astype(np.int64)[..., None] + _LEAD[np.abs(m)]
    bins = np.clip(u - base, 0, HIST_BINS - 1)[nz]
    hist = np.bincount(bins, minlength=HIST_BINS)
    values = int(m.size)
    zeros = values - int(nz.sum())
    fzeros = zeros + int((_dropped(t, thr).reshape(m.shape) & nz).sum())
    return FilterStats(min(values, cap), min(zeros, cap), min(fzeros, cap),
                       tuple(min(int(h), cap) for h in hist), base, thr)


class ThresholdController:
    """Steers the filter's threshold so the filtered sparsity approaches ``target``.

    One controller per layer and tensor kind. Each tensor: filter it with :attr:`threshold`,
    take ``stats(unfiltered, threshold=ctrl.threshold, base=ctrl.base)`` and call
    :meth:`update`, which returns the threshold for the next tensor of the same kind. Statistics
    taken with another threshold (for example ``stats(t)``, threshold 0) still work: the
    controller then places the threshold from the histogram alone, without the feedback term.

    Parameters
    ----------
    target : float
        Target fraction of zeros after the filter, ``0 <= target < 1``; held as
        ``round(target * 2**16)`` (at most ``2**16 - 1``).
    base : int
        Initial histogram base (0..255).
    gain_shift : int
        Feedback gain ``2**-gain_shift`` (0..8): 1 halves the remaining error each step.
    max_correction : float
        Bound on ``|aim - setpoint|`` the feedback may build up, in (0, 1).
    margin : float
        The controller regulates the filtered sparsity to the *setpoint* ``target + margin``
        (``margin >= 0``, ``target + margin < 1``). With 0 the target is a set point: the mean
        sparsity settles on it, a little above or below. A small margin makes it a floor for
        tensors whose sparsity swings from step to step (``docs/numerics.md``).

    Attributes
    ----------
    threshold : Threshold
        The threshold for the next tensor (starts at 0: the first tensor is not filtered).
    base : int
        Histogram base to program for the next tensor: 16 octaves below the threshold's, so the
        threshold sits in the middle of the 32 bins.
    aim : float
        The quantile of the histogram the controller currently aims at (target + correction).

    Raises
    ------
    TypeError
        If a parameter is not a number.
    ValueError
        If a parameter is out of range.
    """

    def __init__(self, target, base: int = DEFAULT_BASE, gain_shift: int = 1,
                 max_correction: float = 0.25, margin: float = 0.0):
        if isinstance(target, bool) or not isinstance(target, (int, float, np.integer,
                                                               np.floating)):
            raise TypeError(f"Target sparsity must be a real number, not {target!r}")
        if not 0 <= target < 1:  # also rejects NaN
            raise ValueError(f"Target sparsity must be in [0, 1), not {target!r}")
        if isinstance(gain_shift, bool) or not isinstance(gain_shift, (int, np.integer)) \
                or not 0 <= gain_shift <= 8:
            raise ValueError(f"Gain shift must be an integer in [0, 8], not {gain_shift!r}")
        if isinstance(max_correction, bool) or not isinstance(
                max_correction, (int, float, np.integer, np.floating)) \
                or not 0 < max_correction < 1:
            raise ValueError(f"Maximum correction must be in (0, 1), not {max_correction!r}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float, np.integer,
                                                               np.floating)) \
                or not (margin >= 0 and target + margin < 1):
            raise ValueError(f"Margin must be >= 0 with target + margin < 1, not {margin!r}")
        self._requested = min(round(float(target) * _ONE), _ONE - 1)
        self._target = min(round(float(target + margin) * _ONE), _ONE - 1)  # the setpoint
        self._aim = self._target
        self._max_corr = max(1, round(float(max_correction) * _ONE))
        self._gain_shift = int(gain_shift)
        self._base = _check_base(base)
        self._threshold = Threshold(0, 0)
        self._updated = False  # the threshold has been chosen by update() at least once

    @property
    def target(self) -> float:
        """The target sparsity as held (Q0.16)."""
        return self._requested / _ONE

    @property
    def setpoint(self) -> float:
        """``target + margin`` as held (Q0.16): what the feedback regulates to."""
        return self._target / _ONE

    @property
    def aim(self) -> float:
        return self._aim / _ONE

    @property
    def threshold(self) -> Threshold:
        return self._threshold

    @property
    def base(self) -> int:
        return self._base

    def __repr__(self):
        return (f"ThresholdController(target={self.target!r}, threshold={self._threshold!r}, "
                f"base={self._base})")

    def update(self, stats: FilterStats) -> Threshold:
        """Take one tensor's statistics; return (and hold) the threshold for the next tensor.

        Raises
        ------
        TypeError
            If ``stats`` is not a :class:`FilterStats`.
        """
        if not isinstance(stats, FilterStats):
            raise TypeError(f"Expected FilterStats, not {type(stats).__name__}")
        v = stats.values
        if v == 0:
            return self._threshold
        updated, self._updated = self._updated, True
        # 1. feedback from the sparsity measured with the threshold we set: always after a
        # nonzero threshold; after a zero one we chose, only when it left the tensor short of
        # the target (a tensor sparser than the target needs no correction, and taking one
        # would wind the aim down while nothing is filtered)
        measured = (stats.filtered_zeros << TARGET_BITS) // v
        ours = stats.threshold == self._threshold and updated
        if ours and (self._threshold.tm != 0 or measured < self._target):
            aim = self._aim + ((self._target - measured) >> self._gain_shift)
            lo = max(0, self._target - self._max_corr)
            hi = min(_ONE - 1, self._target + self._max_corr)
            self._aim = min(max(aim, lo), hi)
        # 2. the histogram quantile
        need = (self._aim * v + _ONE - 1) >> TARGET_BITS
        if stats.zeros >= need:
            self._threshold = Threshold(0, 0)
            return self._threshold
        below = stats.zeros
        last = HIST_BINS - 1
        i = last
        for j, h in enumerate(stats.hist):
            if below + h >= need:
                i = j
                break
            below += h
        if i == 0:  # the quantile is somewhere at or below the base octave: drop all of bin 0
            u, tm = stats.base + 1, 128
        elif i == last:  # the quantile is at or above the top octave: drop all of it
            u, tm = stats.base + last + 1, 128
        else:
            u, tm = stats.base + i, 128 + ((need - below) << 7) // stats.hist[i]
            if tm == 256:
                u, tm = u + 1, 128
        self._threshold = _octave_threshold(u, tm)
        if self._threshold.tm:
            lead = self._threshold.tm.bit_length() - 1
            self._base = min(max(self._threshold.te + lead - HIST_BINS // 2, 0), 255)
        return self._threshold


def _octave_threshold(u: int, tm: int) -> Threshold:
    """``tm * 2**(u - 7 - 133)`` with ``tm`` in [128, 255], floored onto the register ranges."""
    te = u - 7
    if te < 0:
        tm, te = tm >> -te, 0
    if te > 255:
        tm, te = 255, 255
    return Threshold(te, tm)
