"""DRAM image, jobs and host steps of one CNN training step (``docs/system.md``, "CNN steps").

v1 of the accelerator runs GEMMs only; the **host** does the im2col re-packing, the
max-pooling decisions and their backward routing between jobs, with NumPy, exactly as
:mod:`golden.nn` computes them. Everything the accelerator computes (every MAC, ReLU, the
BFP8 converter, the sparsity filter, the statistics) is bit-exact with ``golden.train``'s
``bfp8-ss`` step (``verif/test_runtime_cnn.py``).

Supported networks (:meth:`golden.nn.Sequential` layouts, e.g. ``golden.train.build_model("cnn",
...)``): one or more ``Conv2d`` stages (stride 1, channels out a multiple of 16) each followed by
``ReLU, MaxPool2d`` (the last one also by ``Flatten``), then one ``Linear`` producing the logits.

Why pooling costs two passes. ``golden.nn`` pools the exact accumulator values and converts the
pooled map; pooling the converted BFP8 map instead rounds twice (each pixel's block has its own
exponent) and is not bit-exact. So a conv stage runs as two jobs:

* ``fp{l}``: the convolution over every output pixel (im2col operand ``c{l}``, natural pixel
  order, as ``golden.nn``) with ``RAW`` output ``z{l}``; the host reads the accumulators,
  applies ReLU and finds each pooling window's argmax (first maximum wins, as
  :class:`golden.nn.MaxPool2d`), then writes one *selection mask* ``m{l}.{j}`` per window
  position ``j`` (pooled pixels x channels: 1 where position ``j`` is the argmax);
* ``sel{l}``: per output tile a ``CARRY`` chain over the window positions, each segment the
  im2col rows of position ``j`` (``c{l}.{j}``) with ``MASK`` = ``m{l}.{j}``: an output keeps the
  reset state until its argmax segment, accumulates there exactly as in ``fp{l}`` (same
  operands, same block order from the same reset state) and keeps the value afterwards. The
  tail drains with ``RELU | FILTER``: forward copy ``y{l}`` and filtered copy ``s{l}`` of the
  pooled activations, statistics by the chip. (The FP phase counters therefore count the conv
  twice; :meth:`CNNStep.macs` reports the selection pass under phase ``"sel"``.)

The host then re-packs ``y{l}`` (im2col, a gather of whole blocks) into the next stage's
operands ``c{l+1}`` and ``c{l+1}.{j}``, ``s{l}`` into the WG operand ``cs{l+1}``; after the
last conv stage it flattens ``y`` and ``s`` into ``xf`` and ``sf`` (the linear layer's input
and WG operand). ``fp{L-1}``: the linear layer, RAW ``logits``. The loss gradient ``g`` is the
host's, as in :mod:`runtime.image`. ``bp{L-1}``: WG (``dw{L-1}``) and BP masked by ``xf``
(``FILTER``: ``e{L-2}``, the flattened error). Per conv stage ``l`` downward the host routes
the error ``e{l}`` back through the pooling (to the argmax pixel), applies relu' from ``z{l}``,
converts (:func:`golden.bfp.quantize_exact`, ``golden.nn.Numerics.convert``) into ``dy{l}``
and, for ``l > 0``, writes the BP operand ``dc{l}`` (im2col of ``dy{l}`` padded by
``k - 1 - padding``); ``bp{l}``: WG (``A = dy{l}``, ``B = c0`` for ``l = 0``, else
``cs{l}``) and, for ``l > 0``, BP with the flipped weights ``wt{l}``, masked by ``y{l-1}``,
``FILTER``: ``e{l-1}``.

Layout and tiling are those of :class:`runtime.image.MLPStep` (row tiles ``R_t``, column tiles
``C_t``, one stream per tile, dense capacities as budgets, one statistics record per
descriptor).

On-chip update (``update=True``, ``docs/system.md`` "On-chip update of a CNN"): the last WG
tile of every weight tile carries ``Flag.UPDATE`` and updates the state ``st{l}`` (int32 master
and velocity per element of ``W``, ``Co x k*k*C``), rewriting ``w{l}`` and ``wt{l}`` = ``W^T``
(``k*k*C x Co``, natural order). Conv BP reads ``W^T`` in flipped order: a block of the
flipped kernel at ``(c, kh, kw)`` is the block of ``W^T`` at row ``(k-1-kh, k-1-kw, c)``, so
BP's K segment ``(p, Co tile)`` takes the ``W^T`` tile of kernel position ``k*k-1-p``; column
tiles become ``gcd(C_t, every conv's Co)`` so that tile edges fall on kernel positions. BP
descriptors precede their layer's WG (the update rewrites ``W^T``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from golden import nn, sparsity
from golden.bfp import BFPTensor, quantize, quantize_exact
from golden.jobs import STATS_BYTES, limits
from hdl.descriptor import DESC_BYTES, Flag, Op, Phase

from .driver import StepResult, step_writes
from .image import (
    Allocator,
    Job,
    TiledTensor,
    hyper_words,
    initial_state_writes,
    pack_lists,
    read_state_tiles,
    threshold_settings,
)

__all__ = ["CNNStep", "CNNStepResult", "cnn_train_step"]

BLOCK = 16


def _cb(x):
    return -(-x // BLOCK)


def _rows(t: BFPTensor, rows) -> BFPTensor:
    return BFPTensor(t.exponents[rows], t.mantissas[rows])


def _im2col_bfp(t: BFPTensor, geom, k: int, padding: int) -> BFPTensor:
    """im2col (stride 1) of a stored BFP8 map: a gather of whole blocks (``golden.nn``)."""
    n, h, w = geom
    c = t.shape[1]
    m = nn.im2col(t.mantissas.reshape(n, h, w, c), k, 1, padding)
    e = nn.im2col(t.exponents.reshape(n, h, w, c // BLOCK), k, 1, padding)
    return BFPTensor(e, m)


@dataclass(frozen=True)
class _Conv:
    """Geometry of one conv stage (input ``N x h x w x c_stored``)."""
    k: int
    padding: int
    cin: int
    c_stored: int  # channels of the stored input (1 for the raw image, else a multiple of 16)
    co: int
    h: int
    w: int
    ho: int
    wo: int
    pool: int

    @property
    def kdim(self):
        return self.k * self.k * self.c_stored

    @property
    def windows(self):
        return self.pool * self.pool

    @property
    def pooled(self):
        return self.ho // self.pool, self.wo // self.pool


class CNNStep:
    """Layout, descriptors and host steps of one CNN training step (module docstring).

    Parameters
    ----------
    model : golden.nn.Sequential
        The network (only its structure is used; weights are given per step).
    batch : int
        Images per step, a positive multiple of 16.
    cfg : EngineConfig
        The engine configuration (its ``max_m``, ``max_n``, ``max_k``).
    error_copies : bool
        Also write the unfiltered copy of every error (``ye{l}``), for tests and measurements.
    update : bool
        Update the weights on the chip (module docstring): state tensors ``st{l}`` instead of
        ``dw{l}``, ``wt{l}`` = ``W^T``; load the initial state with :meth:`state_writes`, give
        the hyper-parameters to :meth:`descriptor_writes`.

    Attributes
    ----------
    convs : list of _Conv
        Geometry of the conv stages (stage index = position).
    layers : int
        GEMM layers (conv stages and the final linear layer).
    tensors : dict of str to TiledTensor
    jobs : dict of str to Job
        In :attr:`job_order`: ``fp{l}``, ``sel{l}`` per conv stage, ``fp{L-1}``, then
        ``bp{L-1}`` .. ``bp0``.
    dram_size : int
    """

    def __init__(self, model, batch: int, cfg, error_copies: bool = False,
                 update: bool = False):
        if not isinstance(model, nn.Sequential):
            raise TypeError(f"model must be a golden.nn.Sequential, not {type(model).__name__}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1 or batch % BLOCK:
            raise ValueError(f"batch must be a positive multiple of {BLOCK}, not {batch!r}")
        stages = model.stages
        if len(stages) < 2 or not all(isinstance(s.gemm, nn.Conv2d) for s in stages[:-1]) \
                or not isinstance(stages[-1].gemm, nn.Linear) or stages[-1].post:
            raise ValueError("CNNStep supports Conv2d stages followed by one Linear producing "
                             "the logits")
        h, w, c = model.input_shape
        c_stored = c
        self.convs = []
        for i, st in enumerate(stages[:-1]):
            cv = st.gemm
            kinds = [type(p) for p in st.post]
            last = i == len(stages) - 2
            want = [nn.ReLU, nn.MaxPool2d] + ([nn.Flatten] if last else [])
            if kinds != want:
                raise ValueError(f"{cv.name}: CNNStep supports the post-processing "
                                 f"{[k.__name__ for k in want]}, not "
                                 f"{[k.__name__ for k in kinds]}")
            if cv.stride != 1:
                raise ValueError(f"{cv.name}: CNNStep supports stride 1 only, not {cv.stride}")
            if cv.out_channels % BLOCK:
                raise ValueError(f"{cv.name}: output channels must be a multiple of {BLOCK}, "
                                 f"not {cv.out_channels}")
            ho, wo, _ = cv.output_shape((h, w, cv.in_channels))
            p = st.post[1].size
            self.convs.append(_Conv(cv.k, cv.padding, cv.in_channels, c_stored,
                                    cv.out_channels, h, w, ho, wo, p))
            h, w, c_stored = ho // p, wo // p, cv.out_channels
        lin = stages[-1].gemm
        self.features = h * w * c_stored  # flattened width (stored = logical: c_stored % 16 == 0)
        if lin.in_features != self.features:
            raise ValueError(f"{lin.name} has {lin.in_features} inputs, the flattened map "
                             f"{self.features}")
        self.n_classes = lin.out_features
        self.batch = batch
        self.layers = len(stages)
        self.error_copies = bool(error_copies)
        self.names = [s.gemm.name for s in stages]
        max_m, max_n, max_kb = limits(cfg)
        self.row_tile = min(max_m, max_kb * BLOCK) // BLOCK * BLOCK
        self.col_tile = min(max_m, max_n, max_kb * BLOCK) // BLOCK * BLOCK
        if not self.row_tile or not self.col_tile:
            raise ValueError(f"Engine limits max_m={max_m}, max_n={max_n} leave no tile of "
                             f"{BLOCK} rows and columns")
        self.update = bool(update)
        if self.update:
            # W^T row tiles must start at kernel positions (see "On-chip update" above)
            self.col_tile = math.gcd(self.col_tile, *(g.co for g in self.convs))
        rt, ct = self.row_tile, self.col_tile
        T = {}

        def tensor(name, rows, cols, raw=False, row_tile=rt):
            T[name] = TiledTensor(name, rows, cols, row_tile, ct, raw)

        n, L = batch, self.layers
        for i, g in enumerate(self.convs):
            pix, pooled = n * g.ho * g.wo, n * g.pooled[0] * g.pooled[1]
            tensor(f"c{i}", pix, g.kdim)
            for j in range(g.windows):
                tensor(f"c{i}.{j}", pooled, g.kdim)
                tensor(f"m{i}.{j}", pooled, g.co)
            tensor(f"z{i}", pix, g.co, raw=True)
            tensor(f"y{i}", pooled, g.co)
            tensor(f"s{i}", pooled, g.co)
            tensor(f"w{i}", g.co, g.kdim, row_tile=ct)
            # dW as RAW records, or the weights' state records (8 bytes each as well)
            tensor(f"st{i}" if update else f"dw{i}", g.co, g.kdim, raw=True, row_tile=ct)
            tensor(f"dy{i}", pix, g.co)
            if i:
                tensor(f"cs{i}", pix, g.kdim)
                tensor(f"dc{i}", n * g.h * g.w, g.k * g.k * g.co)
                if update:  # W^T: the update writes it, BP walks it in flipped order
                    tensor(f"wt{i}", g.kdim, g.co, row_tile=ct)
                else:  # the flipped kernel of golden.nn.Conv2d.backward
                    tensor(f"wt{i}", g.c_stored, g.k * g.k * g.co, row_tile=ct)
                for p in ("e", "ye") if error_copies else ("e",):
                    tensor(f"{p}{i - 1}", n * g.h * g.w, g.c_stored)
        f, nc = self.features, self.n_classes
        tensor("xf", n, f)
        tensor("sf", n, f)
        tensor(f"w{L - 1}", nc, f, row_tile=ct)
        tensor(f"wt{L - 1}", f, nc, row_tile=ct)
        tensor(f"st{L - 1}" if update else f"dw{L - 1}", nc, f, raw=True, row_tile=ct)
        tensor("logits", n, nc, raw=True)
        tensor("g", n, nc)
        for p in ("e", "ye") if error_copies else ("e",):
            tensor(f"{p}{L - 2}", n, f)
        self.tensors = T

        lists = {}
        for i in range(L - 1):
            lists[f"fp{i}"] = self._conv_fp(i)
            lists[f"sel{i}"] = self._conv_sel(i)
        lists[f"fp{L - 1}"] = self._linear_fp()
        lists[f"bp{L - 1}"] = self._linear_bp()
        for i in range(L - 2, -1, -1):
            lists[f"bp{i}"] = self._conv_bp(i)
        self.job_order = list(lists)
        self._lists = lists
        alloc = Allocator()
        descs_at = {name: alloc.alloc(DESC_BYTES * len(lst)) for name, lst in lists.items()}
        for t in T.values():
            t.allocate(alloc)
        self._stats = {name: [alloc.alloc(STATS_BYTES) for _ in lst]
                       for name, lst in lists.items()}
        self.jobs = {name: Job(name, descs_at[name], len(lst)) for name, lst in lists.items()}
        self.dram_size = -(-alloc.top // 4096) * 4096

    # ------------------------------------------------------------------ descriptors
    @staticmethod
    def _chain(out, spec, segments, tail, every=0):
        """One output tile over its K segments: ``segments`` is a list of ``(kblocks, a, b,
        mask or None)``; ``every``: flags of every segment, ``tail``: output fields and flags
        of the last one."""
        for s, (kb, a, b, mask) in enumerate(segments):
            f = (Flag.CARRY if s else 0) | (Flag.KEEP if s < len(segments) - 1 else 0) | every
            d = dict(op=Op.GEMM, flags=int(f), kblocks=kb, a_tile=a, b_tile=b, **spec)
            if mask is not None:
                d["flags"] |= int(Flag.MASK)
                d["mask_tile"] = mask
            if s == len(segments) - 1:
                tail = dict(tail)
                d["flags"] |= int(tail.pop("flags"))
                d.update(tail)
            out.append(d)

    def _fp(self, out, x, w, layer, label, tail_of, windows=None):
        """FP tiles of ``x @ w.T``; with ``windows`` the selection chain over
        ``(A tensor, mask tensor)`` pairs."""
        T = self.tensors
        for ri in range(x.grid[0]):
            m = x.tile_shape(ri, 0)[0]
            for cj in range(w.grid[0]):
                n = w.tile_shape(cj, 0)[0]
                segs = []
                for a_name, m_name in windows or [(x.name, None)]:
                    a = T[a_name]
                    for s in range(a.grid[1]):
                        segs.append((_cb(a.tile_shape(ri, s)[1]), (a_name, ri, s),
                                     (w.name, cj, s),
                                     None if m_name is None else (m_name, ri, cj)))
                self._chain(out, dict(phase=Phase.FP, m=m, n=n, layer=layer, label=label),
                            segs, tail_of(ri, cj))

    def _conv_fp(self, i):
        out = []
        self._fp(out, self.tensors[f"c{i}"], self.tensors[f"w{i}"], i, "fp",
                 lambda ri, cj: dict(flags=Flag.RAW, out=(f"z{i}", ri, cj)))
        return out

    def _conv_sel(self, i):
        out = []
        wins = [(f"c{i}.{j}", f"m{i}.{j}") for j in range(self.convs[i].windows)]
        self._fp(out, self.tensors[f"c{i}.0"], self.tensors[f"w{i}"], i, "sel",
                 lambda ri, cj: dict(flags=Flag.RELU | Flag.FILTER, out=(f"y{i}", ri, cj),
                                     filt=(f"s{i}", ri, cj), kind=(i, "act")), windows=wins)
        return out

    def _linear_fp(self):
        out, L = [], self.layers
        self._fp(out, self.tensors["xf"], self.tensors[f"w{L - 1}"], L - 1, "fp",
                 lambda ri, cj: dict(flags=Flag.RAW, out=("logits", ri, cj)))
        return out

    def _wg(self, out, dy, xs, dw, layer):
        for i in range(dw.grid[0]):
            m = dw.tile_shape(i, 0)[0]
            for j in range(dw.grid[1]):
                n = dw.tile_shape(0, j)[1]
                segs = [(dy.tile_shape(s, 0)[0] // BLOCK, (dy.name, s, i), (xs.name, s, j), None)
                        for s in range(dy.grid[0])]
                if self.update:
                    tail = dict(flags=Flag.UPDATE, state=(dw.name, i, j),
                                out=(f"w{layer}", i, j), hyper=True)
                    if f"wt{layer}" in self.tensors:
                        tail["filt"] = (f"wt{layer}", j, i)
                else:
                    tail = dict(flags=Flag.RAW, out=(dw.name, i, j))
                self._chain(out, dict(phase=Phase.WG, m=m, n=n, layer=layer, label="wg"), segs,
                            tail, every=Flag.A_REBLOCK | Flag.B_REBLOCK)

    def _bp(self, out, dy, wt, mask, stage, layer, b_tile=None):
        """BP tiles of ``dy @ wt.T`` masked by ``mask``: the error at the output of
        ``stage``. ``b_tile(cj, s)``: the B tile of output column tile ``cj`` and K segment
        ``s`` (default ``(wt, cj, s)``)."""
        b_tile = b_tile or (lambda cj, s: (wt.name, cj, s))
        for ri in range(dy.grid[0]):
            m = dy.tile_shape(ri, 0)[0]
            for cj in range(mask.grid[1]):
                n = mask.tile_shape(0, cj)[1]
                segs = [(_cb(dy.tile_shape(ri, s)[1]), (dy.name, ri, s), b_tile(cj, s),
                         (mask.name, ri, cj)) for s in range(dy.grid[1])]
                tail = dict(flags=Flag.FILTER, filt=(f"e{stage}", ri, cj), kind=(stage, "err"))
                if self.error_copies:
                    tail["out"] = (f"ye{stage}", ri, cj)
                self._chain(out, dict(phase=Phase.BP, m=m, n=n, layer=layer, label="bp"),
                            segs, tail)

    def _dw(self, layer):
        return self.tensors[f"st{layer}" if self.update else f"dw{layer}"]

    def _linear_bp(self):
        T, L, out = self.tensors, self.layers, []
        bp = []  # with the on-chip update BP goes first: WG rewrites W^T, which BP reads
        self._bp(bp, T["g"], T[f"wt{L - 1}"], T["xf"], L - 2, L - 1)
        if self.update:
            out += bp
        self._wg(out, T["g"], T["sf"], self._dw(L - 1), L - 1)
        return out if self.update else out + bp

    def _conv_bp(self, i):
        T, out, bp = self.tensors, [], []
        if i:
            b_tile = None
            if self.update:  # segment s = (kernel position p, Co tile): W^T rows of k*k-1-p
                g, kt = self.convs[i], self.col_tile
                kk, nco, nct = g.k * g.k, g.co // kt, g.c_stored // kt

                def b_tile(cj, s):
                    return f"wt{i}", (kk - 1 - s // nco) * nct + cj, s % nco
            self._bp(bp, T[f"dc{i}"], T[f"wt{i}"], T[f"y{i - 1}"], i - 1, i, b_tile)
        if self.update:
            out += bp
        self._wg(out, T[f"dy{i}"], T["c0" if i == 0 else f"cs{i}"], self._dw(i), i)
        return out if self.update else out + bp

    def _settings(self, thresholds):
        return threshold_settings(thresholds, self.layers)

    def descriptor_writes(self, thresholds=None, hyper=None) -> list:
        """``(addr, bytes)`` of every job's descriptor list with the given thresholds
        (``{(stage, kind): Threshold | (Threshold, base) | ThresholdController}``) and, with
        ``update``, the hyper-parameters ``(lr, momentum, weight_decay)`` of this step's
        update (as :meth:`runtime.image.MLPStep.descriptor_writes`)."""
        return pack_lists(self._lists, self._stats, self.jobs, self.tensors,
                          self._settings(thresholds), hyper_words(self.update, hyper))

    # ------------------------------------------------------------------ host tensors
    def weight_writes(self, weights) -> list:
        """``(addr, bytes)`` of ``W`` (and ``W^T`` where BP needs it) of every layer, quantized
        as ``golden.nn`` does from the FP32 masters (conv ``(Co, Ci, k, k)``, linear
        ``(out, in)``)."""
        if self.update:
            raise ValueError("With the on-chip update the weights live on the chip: load them "
                             "once with state_writes")
        nx = nn.Numerics("bfp8")
        weights = self._weights(weights)
        out = []
        for i, g in enumerate(self.convs):
            w = weights[i]
            wq = nx.weight(self._conv_matrix(i, w)).bfp  # Conv2d.forward
            out += self.tensors[f"w{i}"].encode(wq)
            if i:
                wb = np.zeros((g.c_stored, g.k, g.k, g.co), np.float32)
                wb[:g.cin] = w[:, :, ::-1, ::-1].transpose(1, 2, 3, 0)  # flipped
                wbq = nx.weight(wb.reshape(g.c_stored, -1)).bfp  # Conv2d.backward
                out += self.tensors[f"wt{i}"].encode(wbq)
        L, f, nc = self.layers, self.features, self.n_classes
        w = weights[-1]
        out += self.tensors[f"w{L - 1}"].encode(nx.weight(w).bfp)  # Linear._w_fp
        wt = np.zeros((f, nn.pad16(nc)), np.float32)
        wt[:, :nc] = w.T
        out += self.tensors[f"wt{L - 1}"].encode(nx.weight(wt).bfp)  # Linear.backward
        return out

    def _weights(self, weights) -> list:
        """``weights`` as arrays of the layers' shapes (conv ``(Co, Ci, k, k)``, linear
        ``(out, in)``), or ``ValueError``."""
        weights = [np.asarray(w) for w in weights]
        if len(weights) != self.layers:
            raise ValueError(f"Expected {self.layers} weight arrays, not {len(weights)}")
        shapes = [(g.co, g.cin, g.k, g.k) for g in self.convs]
        shapes.append((self.n_classes, self.features))
        for i, (w, want) in enumerate(zip(weights, shapes, strict=True)):
            if w.shape != want:
                raise ValueError(f"Weights of layer {i} must have shape {want}, not {w.shape}")
        return weights

    def _conv_matrix(self, i, w):
        """Conv weights ``(Co, Ci, k, k)`` as the GEMM's ``W`` (``Co x k*k*C_stored``,
        columns ``(kh, kw, c)``, stored channels beyond ``Ci`` zero)."""
        g = self.convs[i]
        wk = np.zeros((g.co, g.k, g.k, g.c_stored), w.dtype)
        wk[..., :g.cin] = w.transpose(0, 2, 3, 1)
        return wk.reshape(g.co, -1)

    def state_writes(self, weights) -> list:
        """``(addr, bytes)`` of the on-chip update's initial state (``update=True``): per layer
        the int32 masters :func:`golden.update.to_fixed` of ``weights`` (FP32, the layers'
        shapes) in the GEMM layout of ``W``, zero velocities, and ``W`` / ``W^T``
        re-quantized from the masters (:func:`golden.update.requantize`), as ``golden.train
        --update fixed`` starts."""
        if not self.update:
            raise ValueError("state_writes is for an image with update=True")
        out = []
        for layer, w in enumerate(self._weights(weights)):
            if layer < len(self.convs):
                w = self._conv_matrix(layer, w)
            out += initial_state_writes(self.tensors, layer, w)
        return out

    def read_state(self, layer: int, tiles: dict):
        """``(master, velocity)`` int64 arrays of layer ``layer`` in its ``golden.nn`` shape
        (as :class:`golden.update.FixedSGD` holds them) from the bytes of its state tiles
        (``{(ri, ci): bytes}`` over ``tensors[f"st{layer}"].regions``)."""
        master, velocity = read_state_tiles(self.tensors[f"st{layer}"], tiles)
        if layer < len(self.convs):
            g = self.convs[layer]

            def shape(a):
                return a.reshape(g.co, g.k, g.k, g.c_stored)[..., :g.cin].transpose(0, 3, 1, 2)
            master, velocity = shape(master), shape(velocity)
        return master, velocity

    def _window_rows(self, i):
        """Per window position ``j``: the rows (output pixels, natural order) at ``j`` of
        every pooled pixel, in pooled-pixel order (``golden.nn.MaxPool2d``'s window order)."""
        g = self.convs[i]
        p = g.pool
        idx = np.arange(self.batch * g.ho * g.wo).reshape(self.batch, g.ho // p, p, g.wo // p,
                                                          p)
        return [idx[:, :, a, :, b].reshape(-1) for a in range(p) for b in range(p)]

    def _cols_writes(self, i, cols: BFPTensor) -> list:
        out = self.tensors[f"c{i}"].encode(cols)
        for j, rows in enumerate(self._window_rows(i)):
            out += self.tensors[f"c{i}.{j}"].encode(_rows(cols, rows))
        return out

    def input_writes(self, x) -> list:
        """``(addr, bytes)`` of the first layer's im2col operand (natural order and per
        window position) from the images ``x`` (``batch x H x W [x C]``), quantized as
        ``golden.nn`` quantizes the raw input's im2col."""
        g = self.convs[0]
        x = np.asarray(x, dtype=np.float32)
        if x.size != self.batch * g.h * g.w * g.c_stored:
            raise ValueError(f"Input must hold {self.batch} images of {g.h}x{g.w}x"
                             f"{g.c_stored}, not shape {x.shape}")
        x4 = x.reshape(self.batch, g.h, g.w, g.c_stored)
        cols = nn.Numerics("bfp8").operand(nn.im2col(x4, g.k, 1, g.padding)).bfp
        return self._cols_writes(0, cols)

    def loss_grad_writes(self, grad) -> list:
        """``(addr, bytes)`` of the loss gradient w.r.t. the logits (``batch x n_classes``)."""
        g = np.asarray(grad)
        if g.shape != (self.batch, self.n_classes):
            raise ValueError(f"Loss gradient must have shape {(self.batch, self.n_classes)}, "
                             f"not {g.shape}")
        return self.tensors["g"].encode(nn.Numerics("bfp8").operand(g).bfp)

    # ---- between jobs (pure NumPy; cnn_train_step does the DRAM traffic)
    def pool_select(self, i, z) -> tuple:
        """After ``fp{i}``: from the RAW conv output ``z`` (an Accumulator, pixels x Co),
        the argmax of every pooling window after ReLU (``(pooled pixels, Co)`` window
        positions, first maximum wins) and the ``(addr, bytes)`` of the selection masks."""
        v = z.value()
        v = np.where(v > 0, v, 0.0)
        rows = self._window_rows(i)
        win = np.stack([v[r] for r in rows], axis=-1)  # pooled, Co, k*k
        arg = win.argmax(axis=-1)
        out = []
        for j in range(len(rows)):
            m = quantize((arg == j).astype(np.float32))
            out += self.tensors[f"m{i}.{j}"].encode(m)
        return arg, out

    def next_operand_writes(self, i, y: BFPTensor, s: BFPTensor) -> list:
        """After ``sel{i}``: the re-packed forward copy ``y`` and filtered copy ``s`` of stage
        ``i`` as the operands of stage ``i + 1`` (im2col, or the flattened linear input)."""
        if i == len(self.convs) - 1:
            n = self.batch
            return (self.tensors["xf"].encode(BFPTensor(y.exponents.reshape(n, -1),
                                                        y.mantissas.reshape(n, -1)))
                    + self.tensors["sf"].encode(BFPTensor(s.exponents.reshape(n, -1),
                                                          s.mantissas.reshape(n, -1))))
        g = self.convs[i + 1]
        geom = (self.batch, g.h, g.w)
        return (self._cols_writes(i + 1, _im2col_bfp(y, geom, g.k, g.padding))
                + self.tensors[f"cs{i + 1}"].encode(_im2col_bfp(s, geom, g.k, g.padding)))

    def error_writes(self, i, e: BFPTensor, z, arg) -> list:
        """Before ``bp{i}``: the error ``e`` at stage ``i``'s output (as ``bp{i+1}`` wrote it)
        routed back through the pooling to each window's argmax, times relu' of the conv
        output ``z``, converted: ``dy{i}``; for ``i > 0`` also the BP operand ``dc{i}``."""
        g = self.convs[i]
        d = e.dequantize().reshape(-1, g.co)  # unflatten (Flatten.backward)
        full = np.zeros((self.batch * g.ho * g.wo, g.co))
        for j, rows in enumerate(self._window_rows(i)):
            full[rows] = np.where(arg == j, d, 0.0)  # MaxPool2d.backward
        full = np.where(z.value() > 0, full, 0.0)  # ReLU.backward
        dy = quantize_exact(full, BLOCK)  # Numerics.convert
        out = self.tensors[f"dy{i}"].encode(dy)
        if i:
            lo = g.k - 1 - g.padding
            hi_h, hi_w = g.h + g.padding - g.ho, g.w + g.padding - g.wo
            widths = ((0, 0), (lo, hi_h), (lo, hi_w), (0, 0))
            m = np.pad(dy.mantissas.reshape(self.batch, g.ho, g.wo, g.co), widths)
            ex = np.pad(dy.exponents.reshape(self.batch, g.ho, g.wo, g.co // BLOCK), widths)
            dc = BFPTensor(nn.im2col(ex, g.k), nn.im2col(m, g.k))
            out += self.tensors[f"dc{i}"].encode(dc)
        return out

    def grads(self, dws) -> list:
        """The FP32 weight gradients (``golden.nn`` layer shapes) from the RAW ``dw{l}``
        accumulators."""
        out = []
        for i, g in enumerate(self.convs):
            dw = dws[i].value().reshape(g.co, g.k, g.k, g.c_stored)[..., :g.cin]
            out.append(dw.transpose(0, 3, 1, 2).astype(np.float32))
        out.append(dws[-1].value().astype(np.float32))
        return out

    # ------------------------------------------------------------------ read back
    def stats_regions(self, job: str) -> list:
        """``(addr, STATS_BYTES)`` of every descriptor's statistics record in ``job``."""
        return [(a, STATS_BYTES) for a in self._stats[job]]

    def descriptor_info(self, job: str) -> list:
        """Per descriptor: ``(layer, label, kind or None, last segment)``; label ``fp``,
        ``sel`` (the selection pass), ``bp`` or ``wg``."""
        return [(d["layer"], d["label"], d.get("kind"), not d["flags"] & Flag.KEEP)
                for d in self._lists[job]]

    def filter_stats(self, records: dict) -> dict:
        """``{(stage, kind): FilterStats}`` summed over the records (``records[job]``)."""
        acc = {}
        for job in self.job_order:
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
        """``{(layer, label): [dense, nonzero]}`` summed over the records."""
        out = {}
        for job in self.job_order:
            for (layer, label, _, _), rec in zip(self.descriptor_info(job), records[job],
                                                 strict=True):
                e = out.setdefault((layer, label), [0, 0])
                e[0] += rec.macs_dense
                e[1] += rec.macs_nonzero
        return out


@dataclass
class CNNStepResult(StepResult):
    """:class:`runtime.driver.StepResult` plus ``argmax``: per conv stage the pooling
    window position chosen for each pooled output (``(pooled pixels, Co)``)."""
    argmax: list = None


async def cnn_train_step(acc, step: CNNStep, weights, x, labels,
                         thresholds=None, hyper=None) -> CNNStepResult:
    """One training step of ``step`` on ``acc`` (an :class:`runtime.driver.Accelerator`):
    the jobs of :attr:`CNNStep.job_order` with the host's work between them (module
    docstring). Returns the loss, the FP32 weight gradients, every job's statistics records
    (``records[job]``) and the filter statistics; raises :class:`golden.jobs.JobError` if a
    job fails. The threshold controllers are the caller's, and so is the weight update
    unless ``step.update``.

    With ``step.update`` the weights live on the chip (load them once with
    ``step.state_writes``): ``weights`` must be ``None``, ``hyper`` gives ``(lr, momentum,
    weight_decay)`` for this step's update, and ``grads`` is ``None`` (dW never leaves the
    chip)."""
    T = step.tensors
    await acc.load(step_writes(step, weights, x, thresholds, hyper))
    zs, args = [], []
    for i in range(len(step.convs)):
        await acc.run(step.jobs[f"fp{i}"])
        z = await acc.read_tensor(T[f"z{i}"])
        arg, writes = step.pool_select(i, z)
        zs.append(z)
        args.append(arg)
        await acc.load(writes)
        await acc.run(step.jobs[f"sel{i}"])
        y = await acc.read_tensor(T[f"y{i}"])
        s = await acc.read_tensor(T[f"s{i}"])
        await acc.load(step.next_operand_writes(i, y, s))
    L = step.layers
    await acc.run(step.jobs[f"fp{L - 1}"])
    logits = (await acc.read_tensor(T["logits"])).value()
    loss, g, correct = nn.softmax_cross_entropy(logits, labels)
    await acc.load(step.loss_grad_writes(g))
    await acc.run(step.jobs[f"bp{L - 1}"])
    for i in range(len(step.convs) - 1, -1, -1):
        e = await acc.read_tensor(T[f"e{i}"])
        await acc.load(step.error_writes(i, e, zs[i], args[i]))
        await acc.run(step.jobs[f"bp{i}"])
    grads = None
    if not step.update:
        grads = step.grads([await acc.read_tensor(T[f"dw{i}"]) for i in range(L)])
    records = {job: await acc.read_stats(step.stats_regions(job)) for job in step.job_order}
    return CNNStepResult(loss, correct, grads, records, step.filter_stats(records), logits,
                         args)
