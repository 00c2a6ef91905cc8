"""Named parameter sets of the sparse BFP8 GEMM engine (``ARCHITECTURE.md`` section 4).

An :class:`EngineConfig` fixes the size of the PE array (``rows`` x ``lanes``) and the depths
of the operand buffers, and with them the largest tile one run can compute:

* ``rows`` (R): PE rows per lane, i.e. consecutive output columns one lane computes at once
  (one lane task is one output row ``i`` times one group of R columns ``g``);
* ``lanes`` (L): lanes, each walking the nonzeros of its own task; peak ``R * L`` MACs/cycle;
* ``max_m``, ``max_n``, ``max_k``: largest ``M`` (rows of A), ``N`` (rows of B) and ``K``
  (reduction length) of a tile: ``C (M x N) = A (M x K) @ B (N x K).T``;
* ``a_nz_depth``: nonzero mantissas the compressed A buffer holds (``max_m * max_k`` is a
  dense tile);
* ``a_hdr_depth``: nonzero blocks of A the buffer holds (``max_m * max_k / 16`` is dense);
* ``desc_depth``, ``out_depth``: per-lane queues (block descriptors, finished outputs).

Three named sets (:data:`CONFIGS`):

========= ============= ==== ==== ====== ====== ====== ===========================
name      target         R    L   max_m  max_n  max_k  note
========= ============= ==== ==== ====== ====== ====== ===========================
tiny      iCE40 UP5K      4    1     16     16     64  4 PEs (L=2 needs 6320 LUTs > 5280)
small     ECP5-25F/45F   16    2     32     32    128  32 PEs
default   ECP5-85F       16    4     64     64    256  64 PEs (L=8 needs 113% of LUTs)
========= ============= ==== ==== ====== ====== ====== ===========================

``tiny`` departs from the suggested R=4, L=2 of ``ARCHITECTURE.md``: synthesized for the UP5K
that engine takes 6320 LUT4s (the 5280-LUT part does not fit it), mostly the R x L align
units (a 32-bit barrel shifter and adder each) and the per-lane queues, which the iCE40 can
only build from flip-flops. One lane of 4 PEs fits (``docs/results.md``).

``default`` likewise halves the suggested L=8: with 128 PEs the engine needs 94,598 ECP5 logic
cells (LUT4 + carry + mux cells) for the 83,640 of the 85F, 113 %, again mostly the align
units (128 x ~400 LUT4s); nextpnr cannot place it. With L=4 (64 PEs, 64 of the 156
multipliers) it fits; ``docs/results.md`` has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLOCK", "EngineConfig", "CONFIGS", "get_config"]

BLOCK = 16  #: BFP8 block size along the reduction axis (fixed by the format)


def _is_pow2(x) -> bool:
    return x > 0 and not x & (x - 1)


def _check_int(name: str, value, *, pow2: bool = False, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value!r}")
    if pow2 and not _is_pow2(value):
        raise ValueError(f"{name} must be a power of two, not {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Parameters of one GEMM engine instance (see the module docstring).

    Raises
    ------
    TypeError
        If a parameter is not an integer (or ``name`` not a string).
    ValueError
        If a parameter is out of range: ``rows`` must be a power of two from 1 to 16,
        ``max_k`` a power of two of at least 16, ``max_n`` a multiple of ``rows``, the A
        buffers at least one block deep, the queues at least 2 deep.
    """

    name: str
    rows: int
    lanes: int
    max_m: int
    max_n: int
    max_k: int
    a_nz_depth: int
    a_hdr_depth: int
    desc_depth: int = 4
    out_depth: int = 2

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise TypeError(f"Config name must be a string, not {self.name!r}")
        _check_int("rows", self.rows, pow2=True)
        if self.rows > 16:
            raise ValueError(f"rows must be at most 16, not {self.rows!r}")
        _check_int("lanes", self.lanes)
        _check_int("max_m", self.max_m)
        _check_int("max_n", self.max_n)
        _check_int("max_k", self.max_k, pow2=True, minimum=BLOCK)
        if self.max_n % self.rows:
            raise ValueError(
                f"max_n must be a multiple of rows ({self.rows}), not {self.max_n!r}")
        _check_int("a_nz_depth", self.a_nz_depth, minimum=BLOCK)
        _check_int("a_hdr_depth", self.a_hdr_depth)
        _check_int("desc_depth", self.desc_depth, minimum=2)
        _check_int("out_depth", self.out_depth, minimum=2)

    @property
    def k_blocks(self) -> int:
        """Blocks along K in the largest tile (``max_k // 16``)."""
        return self.max_k // BLOCK

    @property
    def groups(self) -> int:
        """Column groups of R outputs in the widest tile (``max_n // rows``)."""
        return self.max_n // self.rows

    @property
    def peak_macs_per_cycle(self) -> int:
        """``rows * lanes``."""
        return self.rows * self.lanes


CONFIGS = {
    "tiny": EngineConfig("tiny", rows=4, lanes=1, max_m=16, max_n=16, max_k=64,
                         a_nz_depth=1024, a_hdr_depth=64),
    "small": EngineConfig("small", rows=16, lanes=2, max_m=32, max_n=32, max_k=128,
                          a_nz_depth=4096, a_hdr_depth=256),
    "default": EngineConfig("default", rows=16, lanes=4, max_m=64, max_n=64, max_k=256,
                            a_nz_depth=16384, a_hdr_depth=1024),
}  #: the named configurations


def get_config(name: str) -> EngineConfig:
    """The named configuration; ``ValueError`` for an unknown name."""
    try:
        return CONFIGS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown engine config {name!r}; choose one of {sorted(CONFIGS)}") from None
