"""DRAM image and descriptor lists of one MLP training step (``docs/system.md``, "Job semantics").

:class:`MLPStep` lays out, for a ``golden.train`` MLP (``Linear`` + ``ReLU`` stages, a final
``Linear`` producing the logits) and a batch of ``N`` samples, every tensor of one training
step as a grid of tile streams (:class:`TiledTensor`) with a bump allocator, and builds two
descriptor lists (one descriptor per engine tile and K segment, :mod:`golden.jobs`):

* ``fp`` job: FP of every layer; hidden stages with ``RELU | FILTER``, writing the forward copy
  ``y{l}`` (unfiltered, the next layer's input and BP's relu' mask) and the filtered copy
  ``s{l}`` (saved for WG); the last layer writes its accumulators RAW (``logits``);
* ``bp`` job: per layer from the last: WG (``A_REBLOCK | B_REBLOCK | RAW``: ``dw{l}``, reduced
  over the samples), then BP (``MASK`` from the forward copy ``y{l-1}``, ``FILTER``: the
  filtered error ``e{l-1}``).

Between the two jobs the host reads the logits, computes the softmax cross-entropy gradient
(:func:`golden.nn.softmax_cross_entropy`) and writes it quantized (``g``); after the ``bp`` job
it reads the weight gradients and updates its FP32 master weights (:class:`golden.nn.SGD`):
**the loss gradient and the weight update run on the host in this version**, as do the
threshold controllers (from the statistics records, :meth:`MLPStep.filter_stats`).

Quantization is :class:`golden.nn.Numerics` ``"bfp8"``'s, from the same master weights:
``W`` (``Co x K`` padded to multiples of 16, blocked along ``K``) for FP and ``W^T``
(``K x Co``, blocked along ``Co``) for BP; the input and the loss gradient are host operands
(``Numerics.operand``). The filter placement is ``golden.train``'s default (``saved,err``,
relu' mask from the forward copy); a threshold of 0 is the plain ``bfp8`` mode.

Tiles: rows in tiles of ``R_t = min(max_m, max_k)``, columns in tiles of ``C_t = min(max_m,
max_n, max_k)``, both rounded down to multiples of 16; ``N`` must be a multiple of 16 (WG
re-blocks along the samples). Each stream region has the capacity of a dense stream
(:func:`golden.jobs.hbm_capacity`), which the consumers use as their byte budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden import nn, sparsity
from golden.bfp import BFPTensor
from golden.gemm import Accumulator
from golden.jobs import (
    ALIGN,
    RAW_RECORD_BYTES,
    STATS_BYTES,
    hbm_capacity,
    limits,
    parse_raw,
    read_stream,
)
from hdl.descriptor import DESC_BYTES, Flag, Op, Phase, pack

__all__ = ["Allocator", "TiledTensor", "Job", "MLPStep", "KINDS"]

BLOCK = 16
KINDS = ("act", "err")  #: tensor kinds that have a threshold: activations and errors


def _cb(x):
    return -(-x // BLOCK)


class Allocator:
    """A bump allocator of ``ALIGN``-aligned regions from ``base`` upward."""

    def __init__(self, base: int = 0x100):
        if isinstance(base, bool) or not isinstance(base, int) or base < 0 or base % ALIGN:
            raise ValueError(f"Allocator base must be a non-negative multiple of {ALIGN}, not "
                             f"{base!r}")
        self.top = base

    def alloc(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Allocation size must be a positive integer, not {n!r}")
        addr = self.top
        self.top += -(-n // ALIGN) * ALIGN
        return addr


@dataclass(eq=False)
class TiledTensor:
    """A ``rows x cols`` tensor stored as a grid of tile streams (HBM v1, or RAW records).

    Tile ``(ri, ci)`` holds rows ``ri * row_tile ..`` and columns ``ci * col_tile ..`` (the last
    ones shorter); an HBM tile covers ``ceil(cols / 16)`` blocks a row (padding columns zero),
    a RAW tile exactly its columns. ``regions[(ri, ci)]`` is its ``(addr, capacity)``.
    """

    name: str
    rows: int
    cols: int
    row_tile: int
    col_tile: int
    raw: bool = False
    regions: dict = field(default_factory=dict)

    def row_range(self, ri):
        return ri * self.row_tile, min(self.rows, (ri + 1) * self.row_tile)

    def col_range(self, ci):
        return ci * self.col_tile, min(self.cols, (ci + 1) * self.col_tile)

    @property
    def grid(self):
        """``(row tiles, column tiles)``."""
        return -(-self.rows // self.row_tile), -(-self.cols // self.col_tile)

    def tiles(self):
        nr, nc = self.grid
        return [(ri, ci) for ri in range(nr) for ci in range(nc)]

    def tile_shape(self, ri, ci):
        r0, r1 = self.row_range(ri)
        c0, c1 = self.col_range(ci)
        return r1 - r0, c1 - c0

    def capacity(self, ri, ci):
        r, c = self.tile_shape(ri, ci)
        if self.raw:
            return -(-(r * c * RAW_RECORD_BYTES) // ALIGN) * ALIGN
        return hbm_capacity(r * _cb(c))

    def allocate(self, alloc: Allocator):
        for key in self.tiles():
            cap = self.capacity(*key)
            self.regions[key] = (alloc.alloc(cap), cap)
        return self

    def encode(self, t: BFPTensor) -> list:
        """``(addr, bytes)`` writes storing ``t`` (``rows x 16 * ceil(cols / 16)``)."""
        from golden import hbm

        want = (self.rows, _cb(self.cols) * BLOCK)
        if not isinstance(t, BFPTensor) or t.shape != want:
            raise ValueError(f"{self.name}: expected a BFPTensor of shape {want}, not "
                             f"{getattr(t, 'shape', t)!r}")
        out = []
        for ri, ci in self.tiles():
            r0, r1 = self.row_range(ri)
            c0, c1 = self.col_range(ci)
            b0, b1 = c0 // BLOCK, _cb(c1)
            tile = BFPTensor(t.exponents[r0:r1, b0:b1], t.mantissas[r0:r1, b0 * BLOCK:b1 * BLOCK])
            out.append((self.regions[(ri, ci)][0], hbm.encode_tensor(tile)))
        return out

    def decode(self, tiles: dict):
        """Assemble the tensor from each tile region's bytes: a :class:`BFPTensor` (HBM) of
        ``rows x 16 * ceil(cols / 16)`` or an :class:`Accumulator` (RAW) of ``rows x cols``."""
        if self.raw:
            mant = np.zeros((self.rows, self.cols), np.int64)
            exp = np.zeros((self.rows, self.cols), np.int64)
        else:
            mant = np.zeros((self.rows, _cb(self.cols) * BLOCK), np.int8)
            exp = np.zeros((self.rows, _cb(self.cols)), np.uint8)
        for ri, ci in self.tiles():
            r0, r1 = self.row_range(ri)
            c0, c1 = self.col_range(ci)
            data = tiles[(ri, ci)]
            if self.raw:
                acc = parse_raw(data[:(r1 - r0) * (c1 - c0) * RAW_RECORD_BYTES], r1 - r0,
                                c1 - c0)
                mant[r0:r1, c0:c1], exp[r0:r1, c0:c1] = acc.mant, acc.exp
            else:
                b0, nb = c0 // BLOCK, _cb(c1 - c0)
                e, m, _ = read_stream(data, (r1 - r0) * nb)
                exp[r0:r1, b0:b0 + nb] = e.reshape(r1 - r0, nb)
                mant[r0:r1, b0 * BLOCK:(b0 + nb) * BLOCK] = m.reshape(r1 - r0, nb * BLOCK)
        return Accumulator(mant, exp) if self.raw else BFPTensor(exp, mant)


@dataclass(frozen=True)
class Job:
    """A descriptor list in DRAM."""
    name: str
    desc_base: int
    count: int


@dataclass(frozen=True)
class _Desc:
    fields: dict
    kind: tuple | None  # (stage, "act"|"err") whose threshold applies, or None
    layer: int
    phase: str
    stats_addr: int


class MLPStep:
    """Layout and descriptors of one MLP training step (module docstring).

    Parameters
    ----------
    sizes : sequence of int
        ``(in_features, hidden..., n_classes)``; hidden sizes are multiples of 16.
    batch : int
        Samples per step, a positive multiple of 16.
    cfg : EngineConfig
        The engine configuration (its ``max_m``, ``max_n``, ``max_k``).
    error_copies : bool
        Also write the unfiltered copy of every error (``ye{l}``), for tests and measurements.
    update : bool
        Update the weights on the chip (``Flag.UPDATE``, :mod:`golden.update`): the final WG
        tiles update the state ``st{l}`` (int32 master and velocity per weight, tiles like
        ``W``'s) and rewrite ``w{l}`` and ``wt{l}``; no ``dw{l}``. Load the initial state
        with :meth:`state_writes`; the hyper-parameters go with :meth:`descriptor_writes`.

    Attributes
    ----------
    tensors : dict of str to TiledTensor
        ``x`` (input), ``w{l}``, ``wt{l}`` (l >= 1), ``y{l}``, ``s{l}``, ``e{l}`` (hidden
        stages), ``logits``, ``g`` (loss gradient), ``dw{l}``; ``ye{l}`` with ``error_copies``.
    jobs : dict of str to Job
        ``fp`` and ``bp``.
    dram_size : int
        Bytes the image spans (a multiple of 4096).
    """

    def __init__(self, sizes, batch: int, cfg, error_copies: bool = False,
                 update: bool = False):
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                                 or v < 1 for v in sizes):
            raise ValueError(f"sizes must be at least two positive integers, not {sizes!r}")
        if any(v % BLOCK for v in sizes[1:-1]):
            raise ValueError(f"hidden sizes must be multiples of {BLOCK}, not {sizes[1:-1]!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 or batch % BLOCK:
            raise ValueError(f"batch must be a positive multiple of {BLOCK}, not {batch!r}")
        max_m, max_n, max_kb = limits(cfg)
        self.row_tile = min(max_m, max_kb * BLOCK) // BLOCK * BLOCK
        self.col_tile = min(max_m, max_n, max_kb * BLOCK) // BLOCK * BLOCK
        if not self.row_tile or not self.col_tile:
            raise ValueError(f"Engine limits max_m={max_m}, max_n={max_n} leave no tile of "
                             f"{BLOCK} rows and columns")
        self.sizes = tuple(int(v) for v in sizes)
        self.batch = batch
        self.layers = len(sizes) - 1
        self.error_copies = bool(error_copies)
        self.update = bool(update)
        alloc = Allocator()
        L = self.layers
        rt, ct = self.row_tile, self.col_tile
        T = {}

        def tensor(name, rows, cols, raw=False, row_tile=rt):
            T[name] = TiledTensor(name, rows, cols, row_tile, ct, raw)

        tensor("x", batch, sizes[0])
        for layer in range(L):
            k, co = sizes[layer], sizes[layer + 1]
            tensor(f"w{layer}", co, k, row_tile=ct)
            if layer:
                tensor(f"wt{layer}", k, co, row_tile=ct)
            # dW as RAW records, or the weights' state records (8 bytes each as well)
            tensor(f"st{layer}" if self.update else f"dw{layer}", co, k, raw=True, row_tile=ct)
            if layer < L - 1:
                for p in ("y", "s", "e") + (("ye",) if error_copies else ()):
                    tensor(f"{p}{layer}", batch, co)
        tensor("logits", batch, sizes[-1], raw=True)
        tensor("g", batch, sizes[-1])
        self.tensors = T
        self._fp = self._fp_descs()
        self._bp = self._bp_descs()
        descs_at = {}
        for name, lst in (("fp", self._fp), ("bp", self._bp)):
            descs_at[name] = alloc.alloc(DESC_BYTES * len(lst))
        for t in T.values():
            t.allocate(alloc)
        stats_of = {}
        for name, lst in (("fp", self._fp), ("bp", self._bp)):
            stats_of[name] = [alloc.alloc(STATS_BYTES) for _ in lst]
        self.jobs = {name: Job(name, descs_at[name], len(lst))
                     for name, lst in (("fp", self._fp), ("bp", self._bp))}
        self._stats = stats_of
        self.dram_size = -(-alloc.top // 4096) * 4096

    # ------------------------------------------------------------------ descriptors
    def _chain(self, out, spec, segments, a_of, b_of, tail, every=0, mask=None):
        """One output tile over its K segments (``segments``: kblocks of each); ``every``:
        flags of every segment, ``tail``: output fields and flags of the last one."""
        for s, kb in enumerate(segments):
            f = (Flag.CARRY if s else 0) | (Flag.KEEP if s < len(segments) - 1 else 0) | every
            d = dict(op=Op.GEMM, flags=int(f), kblocks=kb, **spec)
            d["a_tile"], d["b_tile"] = a_of(s), b_of(s)
            if mask is not None:
                d["mask_tile"] = mask
            if s == len(segments) - 1:
                d["flags"] |= int(tail.pop("flags"))
                d.update(tail)
            out.append(d)

    def _fp_descs(self):
        T, L, out = self.tensors, self.layers, []
        for layer in range(L):
            x = T["x"] if layer == 0 else T[f"y{layer - 1}"]
            w = T[f"w{layer}"]
            last = layer == L - 1
            for ri in range(x.grid[0]):
                m = x.tile_shape(ri, 0)[0]
                for cj in range(w.grid[0]):
                    n = w.tile_shape(cj, 0)[0]
                    segs = [_cb(x.tile_shape(ri, s)[1]) for s in range(x.grid[1])]
                    if last:
                        tail = dict(flags=Flag.RAW, out=("logits", ri, cj))
                    else:
                        tail = dict(flags=Flag.RELU | Flag.FILTER, out=(f"y{layer}", ri, cj),
                                    filt=(f"s{layer}", ri, cj), kind=(layer, "act"))
                    self._chain(out, dict(phase=Phase.FP, m=m, n=n, layer=layer),
                                segs, lambda s, x=x, ri=ri: (x.name, ri, s),
                                lambda s, w=w, cj=cj: (w.name, cj, s), tail)
        return out

    def _bp_descs(self):
        T, L, out = self.tensors, self.layers, []
        for layer in range(L - 1, -1, -1):
            dy = T["g"] if layer == L - 1 else T[f"e{layer}"]
            xs = T["x"] if layer == 0 else T[f"s{layer - 1}"]
            dw = T[f"st{layer}" if self.update else f"dw{layer}"]
            # BP first: with the on-chip update, WG rewrites W^T, which BP reads
            self._bp_layer(out, layer, dy)
            # WG: dW (Co x K) over the samples (row tiles of dY and X)
            for i in range(dw.grid[0]):
                m = dw.tile_shape(i, 0)[0]
                for j in range(dw.grid[1]):
                    n = dw.tile_shape(0, j)[1]
                    segs = [dy.tile_shape(s, 0)[0] // BLOCK for s in range(dy.grid[0])]
                    if self.update:
                        tail = dict(flags=Flag.UPDATE, state=(dw.name, i, j),
                                    out=(f"w{layer}", i, j), hyper=True)
                        if layer:
                            tail["filt"] = (f"wt{layer}", j, i)
                    else:
                        tail = dict(flags=Flag.RAW, out=(dw.name, i, j))
                    self._chain(out, dict(phase=Phase.WG, m=m, n=n, layer=layer), segs,
                                lambda s, dy=dy, i=i: (dy.name, s, i),
                                lambda s, xs=xs, j=j: (xs.name, s, j), tail,
                                every=Flag.A_REBLOCK | Flag.B_REBLOCK)
        return out

    def _bp_layer(self, out, layer, dy):
        T = self.tensors
        if layer:
            # BP: dX (N x K) = dY (N x Co) @ Wt (K x Co).T, masked by the forward copy
            wt, mask = T[f"wt{layer}"], T[f"y{layer - 1}"]
            for ri in range(dy.grid[0]):
                m = dy.tile_shape(ri, 0)[0]
                for cj in range(wt.grid[0]):
                    n = wt.tile_shape(cj, 0)[0]
                    segs = [_cb(dy.tile_shape(ri, s)[1]) for s in range(dy.grid[1])]
                    tail = dict(flags=Flag.FILTER, filt=(f"e{layer - 1}", ri, cj),
                                kind=(layer - 1, "err"))
                    if self.error_copies:
                        tail["out"] = (f"ye{layer - 1}", ri, cj)
                    self._chain(out, dict(phase=Phase.BP, m=m, n=n, layer=layer), segs,
                                lambda s, dy=dy, ri=ri: (dy.name, ri, s),
                                lambda s, wt=wt, cj=cj: (wt.name, cj, s), tail,
                                every=Flag.MASK, mask=(mask.name, ri, cj))

    def _settings(self, thresholds):
        return threshold_settings(thresholds, self.layers)

    def descriptor_writes(self, thresholds=None, hyper=None) -> list:
        """``(addr, bytes)`` of both descriptor lists with the given thresholds.

        ``hyper`` (with ``update``): ``(lr, momentum, weight_decay)``, each a float or a
        :class:`golden.update.Hyper`, for the update registers of this step.

        ``thresholds`` maps ``(stage, kind)`` (stage of a hidden layer, kind ``"act"`` or
        ``"err"``) to a :class:`golden.sparsity.Threshold`, a ``(Threshold, hist_base)`` pair or
        a :class:`golden.sparsity.ThresholdController` (its ``threshold`` and ``base``);
        missing keys filter nothing.
        """
        return pack_lists({"fp": self._fp, "bp": self._bp}, self._stats, self.jobs,
                          self.tensors, self._settings(thresholds),
                          hyper_words(self.update, hyper))

    def _weights(self, weights) -> list:
        """``weights`` as arrays of the layers' shapes ``(out, in)``, or ``ValueError``."""
        weights = [np.asarray(w) for w in weights]
        if len(weights) != self.layers:
            raise ValueError(f"Expected {self.layers} weight matrices, not {len(weights)}")
        for layer, w in enumerate(weights):
            want = (self.sizes[layer + 1], self.sizes[layer])
            if w.shape != want:
                raise ValueError(f"Weights of layer {layer} must have shape {want}, not "
                                 f"{w.shape}")
        return weights

    def state_writes(self, weights) -> list:
        """``(addr, bytes)`` of the on-chip update's initial state (``update=True``): the
        int32 masters :func:`golden.update.to_fixed` of ``weights`` (FP32, ``(out, in)`` per
        layer), zero velocities, and ``W`` / ``W^T`` re-quantized from the masters
        (:func:`golden.update.requantize`), as ``golden.train --update fixed`` starts."""
        if not self.update:
            raise ValueError("state_writes is for an image with update=True")
        return [wr for layer, w in enumerate(self._weights(weights))
                for wr in initial_state_writes(self.tensors, layer, w)]

    def state_tiles(self, layer, master, velocity) -> list:
        """``(addr, bytes)`` of layer ``layer``'s state tiles from int arrays ``(out, in)``."""
        return state_tile_writes(self.tensors[f"st{layer}"], master, velocity)

    def read_state(self, layer: int, tiles: dict):
        """``(master, velocity)`` int64 arrays ``(out, in)`` of layer ``layer`` from the bytes
        of its state tiles (``{(ri, ci): bytes}`` over ``tensors[f"st{layer}"].regions``)."""
        return read_state_tiles(self.tensors[f"st{layer}"], tiles)

    # ------------------------------------------------------------------ host tensors
    def weight_writes(self, weights) -> list:
        """``(addr, bytes)`` of ``W`` and ``W^T`` of every layer, quantized as ``golden.nn``
        does from the FP32 master weights (``weights[l]`` of shape ``(out, in)``)."""
        nx = nn.Numerics("bfp8")
        out = []
        for layer, w in enumerate(self._weights(weights)):
            k, co = self.sizes[layer], self.sizes[layer + 1]
            kp, cop = nn.pad16(k), nn.pad16(co)
            wp = np.zeros((cop, kp), np.float32)
            wp[:co, :k] = w
            wq = nx.operand(wp).bfp  # Co x K blocked along K (Linear._w_fp)
            out += self.tensors[f"w{layer}"].encode(_rows(wq, co))
            if layer:
                wt = np.zeros((kp, cop), np.float32)
                wt[:k, :co] = w.T
                wtq = nx.operand(wt).bfp  # K x Co blocked along Co (Linear.backward)
                out += self.tensors[f"wt{layer}"].encode(_rows(wtq, k))
        return out

    def input_writes(self, x) -> list:
        """``(addr, bytes)`` of the input batch (``batch x in_features``), quantized as
        ``golden.nn`` quantizes a network input."""
        x = np.asarray(x, dtype=np.float32).reshape(self.batch, -1)
        if x.shape[1] != self.sizes[0]:
            raise ValueError(f"Input must have {self.sizes[0]} features, not {x.shape[1]}")
        return self.tensors["x"].encode(nn.Numerics("bfp8").operand(x).bfp)

    def loss_grad_writes(self, grad) -> list:
        """``(addr, bytes)`` of the loss gradient w.r.t. the logits (``batch x n_classes``)."""
        g = np.asarray(grad)
        if g.shape != (self.batch, self.sizes[-1]):
            raise ValueError(f"Loss gradient must have shape {(self.batch, self.sizes[-1])}, "
                             f"not {g.shape}")
        return self.tensors["g"].encode(nn.Numerics("bfp8").operand(g).bfp)

    # ------------------------------------------------------------------ read back
    def stats_regions(self, job: str) -> list:
        """``(addr, STATS_BYTES)`` of every descriptor's statistics record in ``job``."""
        return [(a, STATS_BYTES) for a in self._stats[job]]

    def descriptor_info(self, job: str) -> list:
        """Per descriptor: ``(layer, phase name, kind or None, last segment)``."""
        lst = self._fp if job == "fp" else self._bp
        return [(d["layer"], Phase(d["phase"]).name.lower(), d.get("kind"),
                 not d["flags"] & Flag.KEEP) for d in lst]

    def filter_stats(self, records: dict) -> dict:
        """Sum the statistics records of each filtered tensor: ``{(stage, kind):
        FilterStats}`` (``records[job]`` is the job's list of :class:`StatsRecord`)."""
        acc = {}
        for job in ("fp", "bp"):
            for (_, _, kind, last), rec in zip(self.descriptor_info(job), records[job],
                                               strict=True):
                if kind is None or not last:
                    continue
                a = acc.setdefault(kind, dict(values=0, zeros=0, filtered_zeros=0,
                                              hist=[0] * sparsity.HIST_BINS, rec=rec))
                for k in ("values", "zeros", "filtered_zeros"):
                    a[k] += getattr(rec, k)
                a["hist"] = [h + v for h, v in zip(a["hist"], rec.hist, strict=True)]
        cap = (1 << sparsity.COUNT_W) - 1
        return {k: sparsity.FilterStats(min(a["values"], cap), min(a["zeros"], cap),
                                        min(a["filtered_zeros"], cap),
                                        tuple(min(h, cap) for h in a["hist"]),
                                        a["rec"].hist_base,
                                        sparsity.Threshold(a["rec"].te, a["rec"].tm))
                for k, a in acc.items()}

    def macs(self, records: dict) -> dict:
        """``{(layer, phase): [dense, nonzero]}`` summed over the records (the shape of
        ``golden.nn.Numerics.macs``, keyed by layer index)."""
        out = {}
        for job in ("fp", "bp"):
            for (layer, phase, _, _), rec in zip(self.descriptor_info(job), records[job],
                                                 strict=True):
                e = out.setdefault((layer, phase), [0, 0])
                e[0] += rec.macs_dense
                e[1] += rec.macs_nonzero
        return out


def threshold_settings(thresholds, layers: int) -> dict:
    """``{(stage, kind): (Threshold, hist_base)}`` for every filtered tensor of a network with
    ``layers`` GEMM layers from a user's ``thresholds`` mapping (missing keys filter nothing)."""
    thresholds = dict(thresholds or {})
    valid = {(i, k) for i in range(layers - 1) for k in KINDS}
    for key in thresholds:
        if key not in valid:
            raise ValueError(f"Unknown threshold key {key!r}: expected (stage, kind) with "
                             f"stage in 0..{layers - 2} and kind in {KINDS}")
    out = {}
    for key in valid:
        v = thresholds.get(key, sparsity.Threshold(0, 0))
        if isinstance(v, sparsity.Threshold):
            out[key] = (v, sparsity.DEFAULT_BASE)
        elif hasattr(v, "threshold") and hasattr(v, "base"):
            out[key] = (v.threshold, int(v.base))
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], sparsity.Threshold):
            out[key] = (v[0], int(v[1]))
        else:
            raise TypeError(f"Threshold for {key!r} must be a Threshold, (Threshold, base) "
                            f"or a ThresholdController, not {v!r}")
    return out


def hyper_words(update: bool, hyper) -> dict:
    """The descriptor's update words (``lr``, ``momentum``, ``weight_decay``) of ``hyper``
    (``(lr, momentum, weight_decay)``, floats or :class:`golden.update.Hyper`) for an image
    with ``update``; ``{}`` without it (and ``hyper`` must then be ``None``)."""
    if not update:
        if hyper is not None:
            raise ValueError("hyper-parameters are for an image with update=True")
        return {}
    from golden.update import Hyper

    if hyper is None or len(hyper) != 3:
        raise ValueError("An image with update=True needs hyper=(lr, momentum, "
                         "weight_decay)")
    regs = [h if isinstance(h, Hyper) else Hyper.from_float(h) for h in hyper]
    return dict(zip(("lr", "momentum", "weight_decay"), (h.word for h in regs), strict=True))


_REGION_FIELDS = (("a_tile", ("a_addr", "a_len")), ("b_tile", ("b_addr", "b_len")),
                  ("mask_tile", ("mask_addr", "mask_len")), ("state", ("mask_addr", "mask_len")),
                  ("out", ("out_addr", "out_cap")), ("filt", ("filt_addr", "filt_cap")))


def pack_lists(lists: dict, stats: dict, jobs: dict, tensors: dict, settings: dict,
               words: dict) -> list:
    """``(desc_base, bytes)`` of every job's descriptor list: ``lists[job]`` holds dicts with
    the descriptor's own fields, tiles ``(tensor, ri, ci)`` under ``a_tile``, ``b_tile``,
    ``mask_tile``, ``state``, ``out``, ``filt``, ``kind`` (the threshold's key) and ``hyper``
    (carries the update words); ``stats[job]`` the statistics record addresses."""
    writes = []
    for name, lst in lists.items():
        blob = bytearray()
        for d, stats_addr in zip(lst, stats[name], strict=True):
            f = {k: v for k, v in d.items() if k in ("op", "phase", "flags", "m", "n", "kblocks")}
            for key, (addr_f, len_f) in _REGION_FIELDS:
                if key in d:
                    tname, ri, ci = d[key]
                    f[addr_f], f[len_f] = tensors[tname].regions[(ri, ci)]
            if d.get("hyper"):
                f.update(words)
            if "kind" in d:
                thr, base = settings[d["kind"]]
                f.update(tau_te=thr.te, tau_tm=thr.tm, hist_base=base)
            f["stats_addr"] = stats_addr
            blob += pack(**f)
        writes.append((jobs[name].desc_base, bytes(blob)))
    return writes


def initial_state_writes(tensors: dict, layer: int, w) -> list:
    """``(addr, bytes)`` of layer ``layer``'s initial on-chip update state from its FP32
    weights ``w`` in the GEMM layout of ``W`` (``Co x K``): the int32 masters
    :func:`golden.update.to_fixed` with zero velocities (``st{layer}``), and ``W`` and, where
    the image has it, ``W^T`` re-quantized from the masters (:func:`golden.update.requantize`),
    as ``golden.train --update fixed`` starts."""
    from golden import update

    master = update.to_fixed(w, update.W_FRAC)
    out = state_tile_writes(tensors[f"st{layer}"], master, np.zeros_like(master))
    wq, wtq = update.requantize(master)
    co, k = master.shape
    out += tensors[f"w{layer}"].encode(_rows(wq, co))
    if f"wt{layer}" in tensors:
        out += tensors[f"wt{layer}"].encode(_rows(wtq, k))
    return out


def state_tile_writes(t: TiledTensor, master, velocity) -> list:
    """``(addr, bytes)`` of the state tiles of ``t`` (int32 master and velocity records) from
    int arrays of ``t``'s shape."""
    out = []
    for (ri, ci), (addr, _) in t.regions.items():
        r0, r1 = t.row_range(ri)
        c0, c1 = t.col_range(ci)
        rec = np.stack([master[r0:r1, c0:c1], velocity[r0:r1, c0:c1]], -1)
        out.append((addr, rec.astype("<i4").tobytes()))
    return out


def read_state_tiles(t: TiledTensor, tiles: dict):
    """``(master, velocity)`` int64 arrays of ``t``'s shape from the bytes of its state tiles
    (``{(ri, ci): bytes}`` over ``t.regions``)."""
    master = np.zeros((t.rows, t.cols), np.int64)
    velocity = np.zeros_like(master)
    for (ri, ci) in t.regions:
        r0, r1 = t.row_range(ri)
        c0, c1 = t.col_range(ci)
        n = (r1 - r0) * (c1 - c0) * 8
        rec = np.frombuffer(bytes(tiles[(ri, ci)])[:n], "<i4").reshape(r1 - r0, c1 - c0, 2)
        master[r0:r1, c0:c1], velocity[r0:r1, c0:c1] = rec[..., 0], rec[..., 1]
    return master, velocity


def _rows(t: BFPTensor, rows: int) -> BFPTensor:
    return BFPTensor(t.exponents[:rows], t.mantissas[:rows])

