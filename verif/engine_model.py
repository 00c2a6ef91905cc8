"""Stimulus and checking shared by the GEMM engine's testbenches (Amaranth sim and cocotb).

* :func:`block_beats` turns a :class:`~golden.bfp.BFPTensor` into the engine's block stream
  (a header per nonzero block, then its nonzero mantissas), the form the HBM decoder delivers;
* :class:`Packer` packs and unpacks the flat payload vectors of the engine's ports, using the
  engine's own layouts (field offsets), so both simulators drive the same bits;
* :func:`expected_beats` gives the output beats the engine must produce, from
  :func:`golden.gemm.matmul` (the contract), keyed by ``(row, grp)``;
* :func:`random_operand` draws BFP8 tensors with a given unstructured sparsity, including
  exponent extremes and saturated mantissas.
"""

from __future__ import annotations

import numpy as np

from golden.bfp import BFPTensor
from golden.gemm import matmul
from hdl.config import BLOCK, EngineConfig
from hdl.engine import Op, cmd_layout, om_layout
from hdl.engine_lane import out_layout, widths
from hdl.engine_load import beat_layout

__all__ = ["block_beats", "Packer", "expected_beats", "random_operand", "om_words", "golden"]


def block_beats(t: BFPTensor) -> list[dict]:
    """The block stream of a 2-D tensor: row by row, ascending kb, zero blocks omitted."""
    blk = t.blocks()
    beats = []
    for row in range(blk.shape[0]):
        for kb in range(blk.shape[1]):
            mant = blk[row, kb]
            nz = np.flatnonzero(mant)
            if not len(nz):
                continue
            mask = int(sum(1 << int(k) for k in nz))
            beats.append({"hdr": 1, "row": row, "kb": kb, "mask": mask,
                          "exp": int(t.exponents[row, kb])})
            beats.extend({"hdr": 0, "mant": int(mant[k])} for k in nz)
    return beats


def om_words(cfg: EngineConfig, out_mask: np.ndarray) -> list[dict]:
    """Output-mask words ``{row, grp, bits}`` covering an M x N boolean mask."""
    m, n = out_mask.shape
    words = []
    for row in range(m):
        for g in range(-(-n // cfg.rows)):
            bits = 0
            for r in range(cfg.rows):
                j = g * cfg.rows + r
                if j < n and out_mask[row, j]:
                    bits |= 1 << r
            words.append({"row": row, "grp": g, "bits": bits})
    return words


def _fields(layout):
    out = {}
    for name, field in layout:
        out[name] = (field.offset, field.width)
    return out


class Packer:
    """Packs port payloads of an engine configuration into integers and back."""

    def __init__(self, cfg: EngineConfig):
        w = widths(cfg)
        self.cfg = cfg
        self.a = _fields(beat_layout(w["m"], w["kb"]))
        self.b = _fields(beat_layout(w["n"], w["kb"]))
        self.cmd = _fields(cmd_layout(cfg))
        self.om = _fields(om_layout(cfg))
        self.out = _fields(out_layout(cfg))

    @staticmethod
    def _pack(fields, values: dict) -> int:
        word = 0
        for name, v in values.items():
            off, width = fields[name]
            word |= (int(v) & ((1 << width) - 1)) << off
        return word

    def a_beat(self, beat: dict) -> int:
        return self._pack(self.a, beat)

    def b_beat(self, beat: dict) -> int:
        return self._pack(self.b, beat)

    def om_word(self, word: dict) -> int:
        return self._pack(self.om, word)

    def command(self, op: str, m: int = 0, n: int = 0, use_mask: bool = False,
                carry: bool = False) -> int:
        return self._pack(self.cmd, {"op": Op[op].value, "m": m, "n": n,
                                     "use_mask": int(use_mask), "carry": int(carry)})

    def unpack_out(self, word: int):
        """``(row, grp, mant list, exp list)`` of one output beat."""
        def get(name):
            off, width = self.out[name]
            return (word >> off) & ((1 << width) - 1)

        r = self.cfg.rows
        mant_all, exp_all = get("mant"), get("exp")
        mants = []
        for i in range(r):
            v = (mant_all >> (32 * i)) & 0xFFFFFFFF
            mants.append(v - (1 << 32) if v >> 31 else v)
        exps = [(exp_all >> (10 * i)) & 0x3FF for i in range(r)]
        return get("row"), get("grp"), mants, exps


def golden(a: BFPTensor, b: BFPTensor, out_mask=None):
    """The contract: :func:`golden.gemm.matmul`."""
    return matmul(a, b, out_mask=out_mask)


def expected_beats(cfg: EngineConfig, a: BFPTensor, b: BFPTensor, out_mask=None) -> dict:
    """``{(row, grp): (mants, exps)}`` from the golden model; columns >= N are (0, 0)."""
    acc = golden(a, b, out_mask)
    m, n = acc.shape
    exp = {}
    for row in range(m):
        for g in range(-(-n // cfg.rows)):
            mants, exps = [], []
            for r in range(cfg.rows):
                j = g * cfg.rows + r
                mants.append(int(acc.mant[row, j]) if j < n else 0)
                exps.append(int(acc.exp[row, j]) if j < n else 0)
            exp[(row, g)] = (mants, exps)
    return exp


def random_operand(rng: np.random.Generator, rows: int, k: int, sparsity: float,
                   *, extreme: str | None = None) -> BFPTensor:
    """A canonical BFP8 tensor (rows x k, k a multiple of 16) with about ``sparsity`` zeros.

    ``extreme``: ``None`` (exponents 100..150), ``"sat"`` (mantissas +-127, large exponents),
    ``"exp"`` (exponents drawn from {1, 2, 253, 254} and random), ``"wide"`` (any exponent
    1..254).
    """
    if k % BLOCK:
        raise ValueError(f"k must be a multiple of {BLOCK}, not {k}")
    mant = rng.integers(-127, 128, size=(rows, k))
    if extreme == "sat":
        mant = np.where(rng.random((rows, k)) < 0.5, 127, -127)
    mant = np.where(rng.random((rows, k)) < sparsity, 0, mant).astype(np.int8)
    nb = k // BLOCK
    if extreme == "sat":
        exps = rng.integers(240, 255, size=(rows, nb))
    elif extreme == "exp":
        exps = rng.choice(np.array([1, 2, 3, 128, 252, 253, 254]), size=(rows, nb))
    elif extreme == "wide":
        exps = rng.integers(1, 255, size=(rows, nb))
    else:
        exps = rng.integers(100, 151, size=(rows, nb))
    nz = np.any(mant.reshape(rows, nb, BLOCK) != 0, axis=-1)
    exps = np.where(nz, exps, 0).astype(np.uint8)
    return BFPTensor(exps, mant, BLOCK)
