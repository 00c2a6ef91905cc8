"""Neural-network layers for golden training, with every MAC on the chip's numerics.

A network is a :class:`Sequential` of layers: :class:`Linear` and :class:`Conv2d` (the GEMM
layers), :class:`ReLU`, :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`Flatten`, and the loss
:func:`softmax_cross_entropy`. The layers are split into *stages*: one GEMM layer followed by its
post-processing layers (ReLU, pooling, flatten), which is what the chip runs in one pass
(GEMM engine, then the post-processing unit, then the BFP8 converter). The output of a stage is
an *interim tensor*: it goes to DRAM and is what the sparsity filter acts on.

Numerics (:class:`Numerics`):

- ``bfp8``: every MAC of FP, BP and WG is :func:`golden.gemm.matmul` on BFP8 operands
  (blocks of 16 along the reduction axis, see :mod:`golden.gemm` for the orientation). A stage's
  output is quantized by the converter (:func:`golden.bfp.quantize_exact` of the exact
  accumulator values after ReLU and pooling, which run on exact float64 values). Host-side
  operands (input data, the loss gradient, the weights) are quantized with
  :func:`golden.bfp.quantize` from float32. The weights are quantized twice per step from the
  FP32 master copy: ``W`` (Co x K, blocked along K) for FP and the transposed (for a convolution:
  transposed and flipped) copy blocked along Co for BP.
- ``fp32``: the same dataflow in float32 (``dtype`` may be set to float64 for gradient checks).

Every channel axis is stored zero-padded to a multiple of 16 (in both modes, so shapes agree);
rows (N, or N x H x W pixels for a convolution) are padded to 16 only inside WG. A convolution is
lowered to a GEMM by im2col with the reduction axis ordered (kh, kw, C): when C is a multiple of
16, the im2col of a BFP8 tensor is a pure gather of its blocks (no re-quantization). BP of a
convolution is itself a GEMM: the im2col of the error dilated by the stride and padded by
``k - 1 - padding``, times the flipped weights; its output mask (``relu'``) then applies directly
to the input activation map. The relu' mask of BP is the nonzero bit-mask of a stored copy of
the activations (the chip already holds it in the HBM masks): the forward copy, or the copy saved
for the backward pass when that one is filtered (``mask_from`` of :meth:`Sequential.train_step`).

There are no biases: the chip's GEMM has no bias adder.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import gemm
from .bfp import BFPTensor, quantize, quantize_exact

__all__ = [
    "MODES",
    "Tensor",
    "Numerics",
    "Linear",
    "Conv2d",
    "ReLU",
    "MaxPool2d",
    "AvgPool2d",
    "Flatten",
    "Sequential",
    "SGD",
    "softmax_cross_entropy",
    "im2col",
    "pad16",
]

MODES = ("fp32", "bfp8")
BLOCK = 16


def pad16(n: int) -> int:
    """``n`` rounded up to a multiple of 16."""
    return -(-n // BLOCK) * BLOCK


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def _pad_axis(x, axis, size):
    extra = size - x.shape[axis]
    if extra == 0:
        return x
    if extra < 0:
        raise ValueError(f"Cannot pad axis {axis} of length {x.shape[axis]} to {size}")
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return np.pad(x, widths)


@dataclass(eq=False)
class Tensor:
    """A tensor as the chip stores it.

    Attributes
    ----------
    values : numpy.ndarray
        2-D ``(rows, columns)``: the exact values (float64 in ``bfp8`` mode, the BFP8 values
        dequantized; float32 in ``fp32`` mode). Columns are channels, zero-padded.
    bfp : BFPTensor or None
        The BFP8 form (``bfp8`` mode only), blocked along the columns.
    geom : tuple or None
        ``(N, H, W)`` when the rows are the pixels of N images, else None (rows = samples).
    raw : bool
        True for host data that is not yet an operand (the network's input).
    """

    values: np.ndarray
    bfp: BFPTensor | None = None
    geom: tuple | None = None
    raw: bool = False

    @property
    def shape(self):
        return self.values.shape

    def nonzero(self) -> np.ndarray:
        """Boolean mask of the nonzero elements."""
        if self.bfp is not None:
            return self.bfp.mantissas != 0
        return self.values != 0


def im2col(x4: np.ndarray, k: int, stride: int = 1, padding: int = 0) -> np.ndarray:
    """Lower ``x4`` (N, H, W, C) to ``(N*Ho*Wo, k*k*C)``, columns ordered (kh, kw, C).

    Zero padding of ``padding`` pixels on each side; ``Ho = (H + 2p - k) // stride + 1``.
    """
    n, h, w, c = x4.shape
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"Kernel {k} with padding {padding} does not fit a {h}x{w} input")
    xp = np.pad(x4, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    cols = np.empty((n, ho, wo, k, k, c), dtype=x4.dtype)
    for a in range(k):
        for b in range(k):
            cols[:, :, :, a, b, :] = xp[:, a:a + stride * (ho - 1) + 1:stride,
                                        b:b + stride * (wo - 1) + 1:stride, :]
    return cols.reshape(n * ho * wo, k * k * c)


def _im2col_tensor(t: Tensor, k: int, stride: int, padding: int) -> Tensor:
    """im2col of a stored tensor; for BFP8 a gather of whole blocks (exact)."""
    n, h, w = t.geom
    c = t.values.shape[1]
    vals = im2col(t.values.reshape(n, h, w, c), k, stride, padding)
    bfp = None
    if t.bfp is not None:
        m = im2col(t.bfp.mantissas.reshape(n, h, w, c), k, stride, padding)
        e = im2col(t.bfp.exponents.reshape(n, h, w, c // BLOCK), k, stride, padding)
        bfp = BFPTensor(e, m, BLOCK)
    return Tensor(vals, bfp)


def _dilate_pad(x4: np.ndarray, stride: int, lo: int, hi_h: int, hi_w: int) -> np.ndarray:
    """Insert ``stride - 1`` zeros between pixels, pad ``lo`` before and ``hi`` after."""
    n, ho, wo, c = x4.shape
    lh, lw = (ho - 1) * stride + 1, (wo - 1) * stride + 1
    out = np.zeros((n, lo + lh + hi_h, lo + lw + hi_w, c), dtype=x4.dtype)
    out[:, lo:lo + lh:stride, lo:lo + lw:stride, :] = x4
    return out


class Numerics:
    """The arithmetic of one training run: ``"bfp8"`` (the chip) or ``"fp32"``.

    Parameters
    ----------
    mode : str
        ``"bfp8"`` or ``"fp32"``.
    dtype : numpy dtype, optional
        Float type of ``fp32`` mode (float32 by default; float64 for gradient checks).

    Attributes
    ----------
    macs : dict or None
        When a dict, every GEMM adds ``[dense, nonzero]`` MACs under ``(layer, phase)``:
        ``dense`` counts every MAC of the layer's operation, ``nonzero`` those whose two
        operands are both nonzero (and, in BP, whose output is not masked).
    trace : list or None
        When a list, every GEMM appends a dict with its operands and result (for dumps).
    exact_weights : bool
        False (default): the weight masters are FP32 and :meth:`weight` quantizes them like
        any host operand. True (opt-in, the fixed-point update of :mod:`golden.update`): the
        masters are exact float64 values, quantized by :func:`golden.bfp.quantize_exact`.
    """

    def __init__(self, mode: str = "fp32", dtype=None):
        if mode not in MODES:
            raise ValueError(f"Unknown numerics mode {mode!r}: expected one of {MODES}")
        self.mode = mode
        if mode == "bfp8":
            if dtype is not None:
                raise ValueError("dtype applies to fp32 mode only")
            self.dtype = np.dtype(np.float64)
        else:
            self.dtype = np.dtype(np.float32 if dtype is None else dtype)
            if self.dtype not in (np.float32, np.float64):
                raise ValueError(f"dtype must be float32 or float64, not {self.dtype}")
        self.macs = None
        self.trace = None
        self.exact_weights = False

    @property
    def is_bfp(self) -> bool:
        return self.mode == "bfp8"

    def convert(self, values, geom=None) -> Tensor:
        """The converter: exact stage outputs to their stored form (columns padded to 16)."""
        values = np.asarray(values)
        if values.shape[-1] % BLOCK:
            raise ValueError(f"Converter input has {values.shape[-1]} columns, not a multiple "
                             f"of {BLOCK}")
        if self.is_bfp:
            q = quantize_exact(values, BLOCK)
            return Tensor(q.dequantize(), q, geom)
        return Tensor(values.astype(self.dtype, copy=False), None, geom)

    def operand(self, values, geom=None) -> Tensor:
        """A host-side operand (data, loss gradient, weights): columns padded, then quantized."""
        values = gemm.pad_to(np.asarray(values, dtype=np.float32 if self.is_bfp else self.dtype),
                             BLOCK, -1)
        if self.is_bfp:
            q = quantize(values, BLOCK)
            return Tensor(q.dequantize(), q, geom)
        return Tensor(values, None, geom)

    def weight(self, values) -> Tensor:
        """A BFP8 weight copy quantized from the master (columns padded, then quantized).

        By default the master is FP32 and this is :meth:`operand`. With
        :attr:`exact_weights` (opt-in, set for the fixed-point update of
        :mod:`golden.update`) the master values are exact float64 (``w * 2**-W_FRAC``) and are
        quantized without a float32 cast (:func:`golden.bfp.quantize_exact`, the converter's
        rule).
        """
        if not (self.is_bfp and self.exact_weights):
            return self.operand(values)
        values = gemm.pad_to(np.asarray(values, dtype=np.float64), BLOCK, -1)
        q = quantize_exact(values, BLOCK)
        return Tensor(q.dequantize(), q)

    def _count(self, layer, phase, dense, a_nz, b_nz, mask=None):
        if self.macs is None:
            return
        if mask is None:
            nonzero = int(np.dot(a_nz.sum(axis=0, dtype=np.int64),
                                 b_nz.sum(axis=0, dtype=np.int64)))
        else:
            both = a_nz.astype(np.float32) @ b_nz.T.astype(np.float32)  # counts < 2**24: exact
            nonzero = int(both[mask].sum(dtype=np.float64))
        entry = self.macs.setdefault((layer, phase), [0, 0])
        entry[0] += int(dense)
        entry[1] += nonzero

    def _trace(self, **record):
        if self.trace is not None:
            self.trace.append(record)

    def matmul(self, a: Tensor, b: Tensor, out_mask=None, *, layer="", phase="",
               dense=0) -> np.ndarray:
        """``A @ B.T`` (FP or BP); outputs outside ``out_mask`` are 0. Returns the values."""
        if self.is_bfp:
            acc = gemm.matmul(a.bfp, b.bfp, out_mask=out_mask)
            out = acc.value()
            self._trace(layer=layer, phase=phase, a=a.bfp, b=b.bfp, out_mask=out_mask, acc=acc)
        else:
            out = a.values @ b.values.T
            if out_mask is not None:
                out = np.where(out_mask, out, 0).astype(self.dtype, copy=False)
        self._count(layer, phase, dense, a.nonzero(), b.nonzero(), out_mask)
        return out

    def wg(self, dy: Tensor, x: Tensor, *, layer="", dense=0) -> np.ndarray:
        """Weight gradient ``dY.T @ X`` (rows reduced); in BFP8 both are re-blocked along N."""
        if self.is_bfp:
            rows = pad16(dy.shape[0])
            a = gemm.reblock(_pad_rows(dy.bfp, rows))
            b = gemm.reblock(_pad_rows(x.bfp, rows))
            acc = gemm.matmul(a, b)
            self._trace(layer=layer, phase="wg", a=a, b=b, out_mask=None, acc=acc)
            self._count(layer, "wg", dense, a.mantissas != 0, b.mantissas != 0)
            return acc.value()
        self._count(layer, "wg", dense, dy.values.T != 0, x.values.T != 0)
        return dy.values.T @ x.values


def _pad_rows(t: BFPTensor, rows: int) -> BFPTensor:
    if t.shape[0] == rows:
        return t
    return BFPTensor(_pad_axis(t.exponents, 0, rows), _pad_axis(t.mantissas, 0, rows), t.block)


class _GemmLayer:
    """Common parts of :class:`Linear` and :class:`Conv2d`: FP32 master weights and momentum.

    After a training step ``grad`` holds the weight gradient as float32 (what :class:`SGD`
    uses) and ``grad_exact`` the same gradient unrounded (in ``bfp8`` the exact WG accumulator
    values; what :class:`golden.update.FixedSGD` uses).
    """

    name = ""
    w: np.ndarray
    grad: np.ndarray | None
    grad_exact: np.ndarray | None = None

    def _init_weights(self, rng, shape, fan_in):
        self.w = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.grad = None


class Linear(_GemmLayer):
    """Fully connected layer ``Y = X @ W.T`` (no bias), ``W`` of shape (out, in).

    Parameters
    ----------
    in_features, out_features : int
        Logical sizes (stored padded to multiples of 16).
    """

    def __init__(self, in_features: int, out_features: int):
        self.in_features = _check_int("in_features", in_features, 1)
        self.out_features = _check_int("out_features", out_features, 1)
        self.w = np.zeros((self.out_features, self.in_features), np.float32)
        self.grad = None

    def init(self, rng):
        self._init_weights(rng, (self.out_features, self.in_features), self.in_features)

    def output_shape(self, shape):
        if len(shape) != 1 or shape[0] != self.in_features:
            raise ValueError(f"{self.name or 'Linear'} expects ({self.in_features},) inputs, "
                             f"not {shape} (add a Flatten?)")
        return (self.out_features,)

    def _w_fp(self, nx, k_stored):
        w = _pad_axis(_pad_axis(self.w, 1, k_stored), 0, pad16(self.out_features))
        return nx.weight(w)

    def forward(self, nx: Numerics, x: Tensor):
        """FP. Returns ``(values (N x out_padded), geom, operand kept for WG)``."""
        if x.raw:
            x = nx.operand(x.values.reshape(x.values.shape[0], -1))
        n = x.shape[0]
        y = nx.matmul(x, self._w_fp(nx, x.shape[1]), layer=self.name, phase="fp",
                      dense=n * self.out_features * self.in_features)
        return y, None, x

    def backward(self, nx: Numerics, dy: Tensor, x_saved: Tensor, out_mask, need_dx: bool,
                 operand: Tensor | None = None):
        """WG (sets :attr:`grad`) and, if ``need_dx``, BP. Returns dX values or None.

        ``operand`` is the FP operand of ``x_saved`` when the caller already has it.
        """
        n = dy.shape[0]
        dense = n * self.out_features * self.in_features
        if operand is not None:
            x_saved = operand
        elif x_saved.raw:
            x_saved = nx.operand(x_saved.values.reshape(n, -1))
        dw = nx.wg(dy, x_saved, layer=self.name, dense=dense)
        self.grad_exact = dw[:self.out_features, :self.in_features]
        self.grad = self.grad_exact.astype(np.float32)
        if not need_dx:
            return None
        k_stored = x_saved.shape[1]
        wt = _pad_axis(_pad_axis(self.w.T, 1, dy.shape[1]), 0, k_stored)  # K x Co
        return nx.matmul(dy, nx.weight(wt), out_mask, layer=self.name, phase="bp",
                         dense=dense)


class Conv2d(_GemmLayer):
    """2-D convolution (cross-correlation) by im2col, no bias, weights (out, in, k, k).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Square kernel side.
    stride : int
    padding : int
        Zero padding on each side, ``0 <= padding < kernel_size``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0):
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.k = _check_int("kernel_size", kernel_size, 1)
        self.stride = _check_int("stride", stride, 1)
        self.padding = _check_int("padding", padding, 0)
        if self.padding >= self.k:
            raise ValueError(f"padding must be smaller than kernel_size ({self.k}), not "
                             f"{padding!r}")
        self.w = np.zeros((self.out_channels, self.in_channels, self.k, self.k), np.float32)
        self.grad = None
        self._cols = None

    def init(self, rng):
        self._init_weights(rng, self.w.shape, self.in_channels * self.k * self.k)

    def output_shape(self, shape):
        if len(shape) != 3 or shape[2] != self.in_channels:
            raise ValueError(f"{self.name or 'Conv2d'} expects (H, W, {self.in_channels}) "
                             f"inputs, not {shape}")
        h, w = shape[0], shape[1]
        ho = (h + 2 * self.padding - self.k) // self.stride + 1
        wo = (w + 2 * self.padding - self.k) // self.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"Kernel {self.k} with padding {self.padding} does not fit a "
                             f"{h}x{w} input")
        return (ho, wo, self.out_channels)

    def _cols_of(self, nx, x: Tensor):
        """The im2col operand of an input: gathered blocks, or host-quantized for raw data."""
        if x.raw:
            n, h, w = x.geom
            x4 = x.values.reshape(n, h, w, -1)
            return nx.operand(im2col(x4, self.k, self.stride, self.padding))
        return _im2col_tensor(x, self.k, self.stride, self.padding)

    def _dense(self, n, ho, wo):
        return n * ho * wo * self.out_channels * self.in_channels * self.k * self.k

    def forward(self, nx: Numerics, x: Tensor):
        """FP. Returns ``(values (N*Ho*Wo x out_padded), (N, Ho, Wo), im2col operand)``."""
        n, h, w = x.geom
        ho, wo, _ = self.output_shape((h, w, self.in_channels))
        cols = self._cols_of(nx, x)
        c_stored = x.values.shape[1]
        wk = _pad_axis(self.w.transpose(0, 2, 3, 1), 3, c_stored)  # Co, kh, kw, C
        wk = _pad_axis(wk.reshape(self.out_channels, -1), 0, pad16(self.out_channels))
        y = nx.matmul(cols, nx.weight(wk), layer=self.name, phase="fp",
                      dense=self._dense(n, ho, wo))
        return y, (n, ho, wo), cols

    def backward(self, nx: Numerics, dy: Tensor, x_saved: Tensor, out_mask, need_dx: bool,
                 operand: Tensor | None = None):
        """WG (sets :attr:`grad`) and, if ``need_dx``, BP. Returns dX values or None.

        ``operand`` is the im2col of ``x_saved`` when the caller already has it.
        """
        n, h, w = x_saved.geom
        _, ho, wo = dy.geom
        dense = self._dense(n, ho, wo)
        cols = operand if operand is not None else self._cols_of(nx, x_saved)
        dw = nx.wg(dy, cols, layer=self.name, dense=dense)
        c_stored = x_saved.values.shape[1] if not x_saved.raw else self.in_channels
        dw = dw[:self.out_channels, :self.k * self.k * c_stored]
        dw = dw.reshape(self.out_channels, self.k, self.k, c_stored)[..., :self.in_channels]
        self.grad_exact = dw.transpose(0, 3, 1, 2)
        self.grad = self.grad_exact.astype(np.float32)
        if not need_dx:
            return None
        if x_saved.raw:
            raise ValueError("BP into the raw network input is never needed")
        co_stored = dy.shape[1]
        lo = self.k - 1 - self.padding
        lh, lw = (ho - 1) * self.stride + 1, (wo - 1) * self.stride + 1
        hi_h, hi_w = h + self.padding - lh, w + self.padding - lw

        def spread(a4):
            return _dilate_pad(a4, self.stride, lo, hi_h, hi_w)

        dvals = im2col(spread(dy.values.reshape(n, ho, wo, co_stored)), self.k)
        dbfp = None
        if dy.bfp is not None:
            m = im2col(spread(dy.bfp.mantissas.reshape(n, ho, wo, co_stored)), self.k)
            e = im2col(spread(dy.bfp.exponents.reshape(n, ho, wo, co_stored // BLOCK)), self.k)
            dbfp = BFPTensor(e, m, BLOCK)
        dcols = Tensor(dvals, dbfp)
        wb = self.w[:, :, ::-1, ::-1].transpose(1, 2, 3, 0)  # Cin, kh, kw, Co (flipped)
        wb = _pad_axis(_pad_axis(wb, 3, co_stored).reshape(self.in_channels, -1), 0, c_stored)
        return nx.matmul(dcols, nx.weight(wb), out_mask, layer=self.name, phase="bp",
                         dense=dense)


class ReLU:
    """``max(x, 0)``; on the accumulator this is :meth:`golden.gemm.Accumulator.relu`."""

    name = ""

    def output_shape(self, shape):
        return shape

    def forward(self, v, geom):
        self._mask = v > 0
        return np.where(self._mask, v, 0).astype(v.dtype, copy=False), geom

    def backward(self, d):
        return np.where(self._mask, d, 0).astype(d.dtype, copy=False)


class _Pool:
    name = ""

    def __init__(self, size: int):
        self.size = _check_int("size", size, 1)

    def output_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"{type(self).__name__} needs (H, W, C) inputs, not {shape}")
        h, w, c = shape
        if h % self.size or w % self.size:
            raise ValueError(f"{type(self).__name__}({self.size}) needs H and W divisible by "
                             f"{self.size}, not {h}x{w}")
        return (h // self.size, w // self.size, c)

    def _windows(self, v, geom):
        n, h, w = geom
        k = self.size
        c = v.shape[1]
        x = v.reshape(n, h // k, k, w // k, k, c).transpose(0, 1, 3, 5, 2, 4)
        return x.reshape(n, h // k, w // k, c, k * k), (n, h // k, w // k)

    def _unwindows(self, x, geom_in):
        n, h, w = geom_in
        k = self.size
        c = x.shape[3]
        x = x.reshape(n, h // k, w // k, c, k, k).transpose(0, 1, 4, 2, 5, 3)
        return x.reshape(n * h * w, c)


class MaxPool2d(_Pool):
    """Max pooling over ``size x size`` windows, stride ``size`` (first maximum wins)."""

    def forward(self, v, geom):
        x, gout = self._windows(v, geom)
        self._idx = x.argmax(axis=-1)
        self._geom = geom
        out = np.take_along_axis(x, self._idx[..., None], axis=-1)[..., 0]
        return out.reshape(-1, v.shape[1]), gout

    def backward(self, d):
        n, h, w = self._geom
        k = self.size
        c = d.shape[1]
        x = np.zeros((n, h // k, w // k, c, k * k), dtype=d.dtype)
        np.put_along_axis(x, self._idx[..., None], d.reshape(n, h // k, w // k, c, 1), axis=-1)
        return self._unwindows(x, self._geom)


class AvgPool2d(_Pool):
    """Average pooling over ``size x size`` windows, stride ``size``."""

    def forward(self, v, geom):
        x, gout = self._windows(v, geom)
        self._geom = geom
        out = x.sum(axis=-1) / (self.size * self.size)
        return out.reshape(-1, v.shape[1]).astype(v.dtype, copy=False), gout

    def backward(self, d):
        n, h, w = self._geom
        k = self.size
        c = d.shape[1]
        x = np.broadcast_to((d / (k * k)).reshape(n, h // k, w // k, c, 1),
                            (n, h // k, w // k, c, k * k))
        return self._unwindows(np.ascontiguousarray(x), self._geom).astype(d.dtype, copy=False)


class Flatten:
    """(N, H, W, C) pixels to (N, H*W*C) samples; blocks of channels stay blocks."""

    name = ""

    def output_shape(self, shape):
        if len(shape) != 3:
            raise ValueError(f"Flatten needs (H, W, C) inputs, not {shape}")
        if shape[2] % BLOCK:
            raise ValueError(f"Flatten needs a channel count that is a multiple of {BLOCK} "
                             f"(so blocks stay blocks), not {shape[2]}")
        return (shape[0] * shape[1] * shape[2],)

    def forward(self, v, geom):
        self._geom = geom
        return v.reshape(geom[0], -1), None

    def backward(self, d):
        return d.reshape(-1, d.shape[1] // (self._geom[1] * self._geom[2]))


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy over the batch, in float64.

    Returns
    -------
    loss : float
    grad : numpy.ndarray of float64
        ``(softmax(logits) - onehot(labels)) / N``, the loss gradient w.r.t. the logits.
    correct : int
        Number of samples whose largest logit is the label.
    """
    z = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"Logits {z.shape} and labels {labels.shape} do not match")
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = z.shape[0]
    loss = float(-logp[np.arange(n), labels].mean())
    grad = np.exp(logp)
    grad[np.arange(n), labels] -= 1.0
    correct = int((z.argmax(axis=1) == labels).sum())
    return loss, grad / n, correct


class _Hooks:
    """Identity hooks: no filter, no statistics (see :meth:`Sequential.train_step`)."""

    def activation(self, stage, t):
        return t, t

    def error(self, stage, t):
        return t


@dataclass(eq=False)
class _Stage:
    gemm: object
    post: list
    relu_out: bool  # a zero output means relu' = 0 (ReLU, then only pooling / flatten)


class Sequential:
    """A network: GEMM layers, each followed by its post-processing layers.

    Parameters
    ----------
    layers : list
        Starts with a GEMM layer (:class:`Linear` or :class:`Conv2d`); ends with a
        :class:`Linear` producing the logits.
    input_shape : tuple
        ``(H, W)`` or ``(H, W, C)`` of one image.
    n_classes : int
    """

    def __init__(self, layers, input_shape, n_classes: int):
        layers = list(layers)
        if not layers or not isinstance(layers[0], (Linear, Conv2d)):
            raise ValueError("The first layer must be a Linear or Conv2d")
        if not isinstance(layers[-1], Linear):
            raise ValueError("The last layer must be a Linear producing the logits")
        self.n_classes = _check_int("n_classes", n_classes, 2)
        if layers[-1].out_features != self.n_classes:
            raise ValueError(f"The last layer has {layers[-1].out_features} outputs, not "
                             f"n_classes={self.n_classes}")
        self.input_shape = tuple(input_shape) if len(input_shape) == 3 else (*input_shape, 1)
        self.stages: list[_Stage] = []
        counts = {}
        shape = self.input_shape
        if isinstance(layers[0], Linear):
            shape = (int(np.prod(shape)),)
        for layer in layers:
            if not isinstance(layer, (Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten)):
                raise TypeError(f"Unsupported layer {type(layer).__name__}")
            kind = type(layer).__name__.lower()
            counts[kind] = counts.get(kind, 0) + 1
            layer.name = f"{kind}{counts[kind]}"
            if isinstance(layer, (Linear, Conv2d)):
                if self.stages and isinstance(layer, Conv2d) and len(shape) == 3 \
                        and shape[2] % BLOCK:
                    raise ValueError(f"{layer.name}: input channels must be a multiple of "
                                     f"{BLOCK} after the first layer, not {shape[2]}")
                self.stages.append(_Stage(layer, [], False))
            else:
                st = self.stages[-1]
                st.post.append(layer)
                if isinstance(layer, ReLU):
                    st.relu_out = True
            shape = layer.output_shape(shape)
        self.layers = layers

    @property
    def gemm_layers(self):
        return [s.gemm for s in self.stages]

    def init(self, rng):
        """Initialize every weight (He normal) from ``rng``."""
        for layer in self.gemm_layers:
            layer.init(rng)

    def _input(self, x):
        x = np.asarray(x, dtype=np.float32)
        n = x.shape[0]
        if isinstance(self.stages[0].gemm, Linear):
            return Tensor(x.reshape(n, -1), None, None, raw=True)
        h, w, c = self.input_shape
        return Tensor(x.reshape(n * h * w, c), None, (n, h, w), raw=True)

    def _stage_forward(self, nx, st, t):
        y, geom, operand = st.gemm.forward(nx, t)
        gemm_geom = geom
        for layer in st.post:
            y, geom = layer.forward(y, geom)
        return y, geom, operand, gemm_geom

    def forward(self, nx: Numerics, x, hooks=None) -> np.ndarray:
        """Inference: the logits (N x n_classes). ``hooks.activation`` may filter the path."""
        hooks = hooks or _Hooks()
        t = self._input(x)
        last = len(self.stages) - 1
        for i, st in enumerate(self.stages):
            y, geom, _, _ = self._stage_forward(nx, st, t)
            if i == last:
                return np.asarray(y[:, :self.n_classes])
            t, _ = hooks.activation(i, nx.convert(y, geom))

    def train_step(self, nx: Numerics, x, labels, hooks=None, mask_from: str = "forward"):
        """Forward, loss and backward for one batch; sets each GEMM layer's ``grad``.

        ``hooks.activation(i, t) -> (t_forward, t_saved)`` is called with the converted output
        of every stage ``i`` but the last: ``t_forward`` feeds stage ``i + 1`` in FP,
        ``t_saved`` is kept for the backward pass (WG of stage ``i + 1`` and its relu' mask).
        ``hooks.error(i, t) -> t`` is called with every error that BP writes (the error at
        the output of stage ``i``). The relu' mask of BP (the outputs it computes) is read from
        the saved copy (``mask_from="saved"``) or from the forward one (``"forward"``).
        Returns ``(loss, correct)``.
        """
        if mask_from not in ("saved", "forward"):
            raise ValueError(f"mask_from must be 'saved' or 'forward', not {mask_from!r}")
        hooks = hooks or _Hooks()
        t = t_saved = self._input(x)
        last = len(self.stages) - 1
        fwd_in, saved_in, operands, gemm_geoms = [], [], [], []
        for i, st in enumerate(self.stages):
            fwd_in.append(t)
            saved_in.append(t_saved)
            y, geom, operand, gemm_geom = self._stage_forward(nx, st, t)
            operands.append(operand)
            gemm_geoms.append(gemm_geom)
            if i < last:
                t, t_saved = hooks.activation(i, nx.convert(y, geom))
            else:
                logits = np.asarray(y[:, :self.n_classes])
        loss, g, correct = softmax_cross_entropy(logits, labels)
        e = nx.operand(g)
        for i in range(last, -1, -1):
            st = self.stages[i]
            if st.post:
                d = e.values
                for layer in reversed(st.post):
                    d = layer.backward(d)
                # exact for ReLU, max pooling, flatten and 2x2 average pooling (a /4)
                dy = nx.convert(d, gemm_geoms[i])
            else:
                dy = Tensor(e.values, e.bfp, gemm_geoms[i])
            x_saved = saved_in[i]
            need_dx = i > 0
            mask = None
            if need_dx and self.stages[i - 1].relu_out:
                mask = (x_saved if mask_from == "saved" else fwd_in[i]).nonzero()
            operand = operands[i] if x_saved is fwd_in[i] else None
            dx = st.gemm.backward(nx, dy, x_saved, mask, need_dx, operand)
            if need_dx:
                e = hooks.error(i - 1, nx.convert(dx, x_saved.geom))
        return loss, correct


class SGD:
    """SGD with momentum and L2 weight decay on the FP32 master weights.

    ``v = momentum * v + (grad + weight_decay * w)``; ``w -= lr * v`` (all float32).
    """

    def __init__(self, layers, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        for name, val in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not val >= 0:
                raise ValueError(f"{name} must be a number >= 0, not {val!r}")
        self.layers = list(layers)
        self.lr = float(lr)
        self.momentum = np.float32(momentum)
        self.weight_decay = np.float32(weight_decay)
        self.velocity = [np.zeros_like(layer.w) for layer in self.layers]

    def step(self, lr: float | None = None):
        lr = np.float32(self.lr if lr is None else lr)
        for layer, v in zip(self.layers, self.velocity, strict=True):
            if layer.grad is None:
                raise ValueError(f"{layer.name} has no gradient: run a training step first")
            v *= self.momentum
            v += layer.grad + self.weight_decay * layer.w
            layer.w -= lr * v
