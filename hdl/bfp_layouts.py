"""Payload layouts shared by the streaming units between the PE array and external memory.

The numbers here are the contract of ``golden.bfp`` (BFP8), ``golden.gemm`` (accumulator
format) and ``golden.hbm`` (HBM v1), restated for the RTL; ``verif/test_bfp_layouts.py`` checks
that they agree with the golden model.

* :data:`BFP_BLOCK`: one BFP8 block, ``exp`` (biased ``E``, 0 for an all-zero block) and
  ``mant`` (16 int8 mantissas in [-127, 127], element 0 in the low bits).
* :data:`ACC_BLOCK`: 16 GEMM outputs in accumulator format, ``mant`` (signed ``ACC_W``-bit
  ``S``) and ``exp`` (unsigned ``ACC_EXP_W``-bit ``ea``); value ``S * 2**(ea - 274)``.
* :func:`bus_beat`: one beat of a byte stream on a ``bus_width``-bit bus: ``data`` (byte ``k``
  of the beat in bits ``8k .. 8k+7``), ``keep`` (byte enables, contiguous from byte 0) and
  ``last`` (final beat of a tensor).

:func:`popcount` and :func:`prefix_counts` build the mask arithmetic the codec shares.
"""

from amaranth import Const, signed, unsigned
from amaranth.lib import data

__all__ = [
    "BLOCK",
    "BIAS",
    "ACC_W",
    "ACC_EXP_W",
    "GUARD",
    "EXP_OFFSET",
    "BFP_BLOCK",
    "ACC_BLOCK",
    "BUS_WIDTHS",
    "check_bus_width",
    "bus_beat",
    "popcount",
    "prefix_counts",
    "reject",
]

BLOCK = 16  #: values per BFP8 block (fixed by HBM v1: its masks are uint16)
BIAS = 127  #: BFP8 exponent bias
ACC_W = 32  #: accumulator mantissa width (``golden.gemm.ACC_W``)
ACC_EXP_W = 10  #: accumulator exponent field: ``ea <= 2 * 254 + renormalizations < 1024``
GUARD = 8  #: guard bits of the accumulator (``golden.gemm.GUARD``)
EXP_OFFSET = 266  #: ``2 * (BIAS + 6)``: accumulator value is ``S * 2**(ea - EXP_OFFSET - GUARD)``

BFP_BLOCK = data.StructLayout({
    "exp": unsigned(8),
    "mant": data.ArrayLayout(signed(8), BLOCK),
})

ACC_BLOCK = data.StructLayout({
    "mant": data.ArrayLayout(signed(ACC_W), BLOCK),
    "exp": data.ArrayLayout(unsigned(ACC_EXP_W), BLOCK),
})

BUS_WIDTHS = (32, 64)  #: supported byte-stream bus widths


def check_bus_width(bus_width) -> int:
    """Validate a bus width; return it. Raises ``ValueError`` with the reason."""
    if isinstance(bus_width, bool) or not isinstance(bus_width, int) \
            or bus_width not in BUS_WIDTHS:
        raise ValueError(f"Bus width must be 32 or 64, not {bus_width!r}")
    return bus_width


def bus_beat(bus_width: int) -> data.StructLayout:
    """Layout of one beat of the HBM byte stream on a ``bus_width``-bit bus."""
    bus_width = check_bus_width(bus_width)
    return data.StructLayout({
        "data": unsigned(bus_width),
        "keep": unsigned(bus_width // 8),
        "last": unsigned(1),
    })


def popcount(bits):
    """Number of set bits (an adder tree) of a Signal, or of a list of 1-bit values.

    Pass a list rather than a ``Cat`` of expressions: slicing an expression repeats it.
    """
    terms = list(bits) if isinstance(bits, (list, tuple)) else \
        [bits[k] for k in range(len(bits))]
    while len(terms) > 1:
        terms = [terms[k] + terms[k + 1] if k + 1 < len(terms) else terms[k]
                 for k in range(0, len(terms), 2)]
    return terms[0]


def prefix_counts(bits):
    """``[popcount(bits[:k]) for k in range(len(bits))]`` as Amaranth expressions."""
    counts, run = [], None
    for k in range(len(bits)):
        counts.append(Const(0, 1) if run is None else run)
        run = bits[k] if run is None else run + bits[k]
    return counts


def reject(component, exc: Exception):
    """Raise ``exc`` from a component's ``__init__`` (a parameter check failed).

    Amaranth warns about every elaboratable that is created and never elaborated, including one
    whose constructor raised; under ``-W error`` that warning fails whichever test is running
    when the object is collected. A rejected component is marked as not needing elaboration.
    """
    component._MustUse__silence = True
    raise exc
