"""Layers of golden training (golden/nn.py).

Gradients against central finite differences (fp32 mode run in float64), the im2col
convolution against a direct loop, the BFP8 path against the GEMM contract and its blocking
claims, MAC counting against brute force, and every parameter message.
"""

import numpy as np
import pytest

from golden import gemm, nn
from golden.bfp import quantize, quantize_exact


def direct_conv(x, w, stride, padding):
    """Cross-correlation by four nested loops: x (N, H, W, C), w (Co, C, k, k)."""
    n, h, wd, c = x.shape
    co, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    ho = (h + 2 * padding - k) // stride + 1
    wo = (wd + 2 * padding - k) // stride + 1
    y = np.zeros((n, ho, wo, co))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k, :]
            for o in range(co):
                y[:, i, j, o] = np.einsum("nabc,cab->n", patch, w[o])
    return y


@pytest.mark.parametrize("k,stride,padding,hw", [(3, 1, 1, (6, 5)), (3, 2, 1, (7, 7)),
                                                 (2, 2, 0, (4, 6)), (5, 1, 2, (5, 5)),
                                                 (1, 1, 0, (3, 3)), (3, 3, 2, (8, 5))])
def test_conv_forward_matches_direct_loop(rng, k, stride, padding, hw):
    nx = nn.Numerics("fp32", dtype=np.float64)
    for cin, raw in ((1, True), (3, True), (16, False)):
        conv = nn.Conv2d(cin, 5, k, stride, padding)
        conv.init(rng)
        n = 2
        x = rng.standard_normal((n, *hw, cin))
        t = nn.Tensor(x.reshape(-1, cin), None, (n, *hw), raw=raw)
        y, geom, _ = conv.forward(nx, t)
        ref = direct_conv(x, conv.w.astype(np.float64), stride, padding)
        assert geom == (n,) + ref.shape[1:3]
        assert y.shape == (n * ref.shape[1] * ref.shape[2], 16)
        assert np.allclose(y[:, :5].reshape(ref.shape), ref, atol=1e-5)
        assert np.all(y[:, 5:] == 0)  # padded output channels


def numeric_grads(model, nx, x, y, rng, eps=1e-6, per_layer=150):
    """Central differences of the loss for up to ``per_layer`` random weights of each layer."""
    grads = []
    for layer in model.gemm_layers:
        num = np.full(layer.w.shape, np.nan)
        flat, nflat = layer.w.reshape(-1), num.reshape(-1)
        for i in rng.permutation(flat.size)[:per_layer]:
            old = flat[i]
            flat[i] = old + eps
            lp = nn.softmax_cross_entropy(model.forward(nx, x), y)[0]
            flat[i] = old - eps
            lm = nn.softmax_cross_entropy(model.forward(nx, x), y)[0]
            flat[i] = old
            nflat[i] = (lp - lm) / (2 * eps)
        grads.append(num)
    return grads


NETS = {
    "mlp": (lambda: [nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 7), nn.ReLU(),
                     nn.Linear(7, 5)], (3, 4)),
    "cnn-max-stride": (lambda: [nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                nn.Conv2d(16, 16, 3, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                nn.Conv2d(16, 16, 2, stride=2), nn.ReLU(), nn.Flatten(),
                                nn.Linear(16, 5)], (8, 7)),
    "cnn-avg": (lambda: [nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(16, 32, 3, stride=3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(32, 5)], (4, 6, 2)),
}


@pytest.mark.parametrize("net", sorted(NETS))
def test_gradients_match_finite_differences(rng, net):
    make, shape = NETS[net]
    model = nn.Sequential(make(), shape, 5)
    model.init(rng)
    for layer in model.gemm_layers:
        layer.w = layer.w.astype(np.float64)
    nx = nn.Numerics("fp32", dtype=np.float64)
    x = rng.random((3, *shape))
    y = rng.integers(0, 5, 3)
    loss, correct = model.train_step(nx, x, y)
    assert loss == pytest.approx(nn.softmax_cross_entropy(model.forward(nx, x), y)[0])
    assert 0 <= correct <= 3
    for layer, num in zip(model.gemm_layers, numeric_grads(model, nx, x, y, rng), strict=True):
        assert layer.grad.shape == layer.w.shape
        got = layer.grad[~np.isnan(num)]
        num = num[~np.isnan(num)]
        scale = np.abs(num).max()
        assert scale > 0
        assert np.abs(got - num).max() <= 1e-5 * scale, layer.name


def test_softmax_cross_entropy_gradient(rng):
    z = rng.standard_normal((4, 6)) * 3
    y = np.array([0, 5, 2, 2])
    loss, g, correct = nn.softmax_cross_entropy(z, y)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert loss == pytest.approx(-np.log(p[np.arange(4), y]).mean())
    num = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        d = np.zeros_like(z)
        d[i] = 1e-6
        num[i] = (nn.softmax_cross_entropy(z + d, y)[0]
                  - nn.softmax_cross_entropy(z - d, y)[0]) / 2e-6
    assert np.allclose(g, num, atol=1e-8)
    assert correct == int((z.argmax(1) == y).sum())


def test_pooling_forward_backward(rng):
    x = rng.standard_normal((2, 4, 6, 16))
    geom = (2, 4, 6)
    mp = nn.MaxPool2d(2)
    y, g = mp.forward(x.reshape(-1, 16), geom)
    ref = x.reshape(2, 2, 2, 3, 2, 16).max(axis=(2, 4))
    assert g == (2, 2, 3) and np.array_equal(y.reshape(ref.shape), ref)
    d = rng.standard_normal(y.shape)
    back = mp.backward(d).reshape(x.shape)
    # each window sends its error to its maximum only
    for n, i, j, c in np.ndindex(2, 2, 3, 16):
        win = x[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
        bw = back[n, 2 * i:2 * i + 2, 2 * j:2 * j + 2, c]
        a, b = np.unravel_index(win.argmax(), (2, 2))
        assert bw[a, b] == d.reshape(2, 2, 3, 16)[n, i, j, c]
        assert np.count_nonzero(bw) <= 1
    ap = nn.AvgPool2d(2)
    y, _ = ap.forward(x.reshape(-1, 16), geom)
    assert np.allclose(y.reshape(2, 2, 3, 16), x.reshape(2, 2, 2, 3, 2, 16).mean(axis=(2, 4)))
    back = ap.backward(d).reshape(x.shape)
    assert np.allclose(back[:, ::2, ::2], d.reshape(2, 2, 3, 16) / 4)
    assert np.allclose(back[:, 1::2, 1::2], d.reshape(2, 2, 3, 16) / 4)


def test_bfp8_linear_is_the_gemm_contract(rng):
    """FP, BP and WG of a Linear in bfp8 mode are gemm.fp / bp / wg on quantized operands."""
    nx = nn.Numerics("bfp8")
    lin = nn.Linear(32, 20)
    lin.init(rng)
    x = nx.convert(np.maximum(rng.standard_normal((24, 32)), 0))
    y, _, _ = lin.forward(nx, x)
    w = np.zeros((32, 32), np.float32)
    w[:20] = lin.w
    acc = gemm.fp(quantize(x.values), quantize(w))
    assert np.array_equal(y, acc.value())
    dy = nx.convert(rng.standard_normal((24, 32)) * 1e-3 * (np.arange(32) < 20))
    mask = x.values != 0
    dx = lin.backward(nx, dy, x, mask, True)
    ref = gemm.bp(quantize(dy.values), quantize(w.T), out_mask=mask)
    assert np.array_equal(dx, ref.value())
    assert np.all(dx[~mask] == 0)
    dw = gemm.wg(quantize(gemm.pad_to(dy.values, 16, 0)), quantize(gemm.pad_to(x.values, 16, 0)))
    assert np.array_equal(lin.grad, dw.value()[:20, :32].astype(np.float32))


def test_bfp8_conv_im2col_is_a_block_gather(rng):
    """The im2col of a stored BFP8 map (C = 16) equals quantizing the im2col of its values."""
    nx = nn.Numerics("bfp8")
    x = nx.convert(rng.standard_normal((2 * 5 * 6, 16)) * np.exp(rng.standard_normal((60, 1))),
                   (2, 5, 6))
    conv = nn.Conv2d(16, 16, 3, stride=2, padding=1)
    conv.init(rng)
    cols = conv._cols_of(nx, x)
    ref = quantize_exact(nn.im2col(x.values.reshape(2, 5, 6, 16), 3, 2, 1))
    assert cols.bfp == ref
    assert cols.bfp.is_canonical()


def test_bfp8_close_to_fp32(rng):
    """A whole bfp8 CNN step stays close to the fp32 step.

    The difference is BFP8 rounding plus the few ReLUs whose tiny input flips sign or rounds to
    zero (with a batch of 32 the worst of 40 seeds was 0.18)."""
    make, shape = NETS["cnn-avg"]
    m32 = nn.Sequential(make(), shape, 5)
    m32.init(np.random.default_rng(1))
    m8 = nn.Sequential(make(), shape, 5)
    m8.init(np.random.default_rng(1))
    x = rng.random((32, *shape))
    y = rng.integers(0, 5, 32)
    l32, _ = m32.train_step(nn.Numerics("fp32"), x, y)
    l8, _ = m8.train_step(nn.Numerics("bfp8"), x, y)
    assert l8 == pytest.approx(l32, rel=0.05)
    for a, b in zip(m32.gemm_layers, m8.gemm_layers, strict=True):
        rel = np.linalg.norm(a.grad - b.grad) / np.linalg.norm(a.grad)
        assert rel < 0.3, (a.name, rel)
        assert not np.array_equal(a.grad, b.grad)


def test_mac_counts_against_brute_force(rng):
    nx = nn.Numerics("fp32", dtype=np.float64)
    nx.macs = {}
    a = rng.standard_normal((5, 16)) * (rng.random((5, 16)) < 0.5)
    b = rng.standard_normal((3, 16)) * (rng.random((3, 16)) < 0.4)
    mask = rng.random((5, 3)) < 0.6
    nx.matmul(nn.Tensor(a), nn.Tensor(b), layer="l", phase="fp", dense=240)
    nx.matmul(nn.Tensor(a), nn.Tensor(b), mask, layer="l", phase="bp", dense=240)
    nx.wg(nn.Tensor(a.T.copy()), nn.Tensor(b.T.copy()), layer="l", dense=240)
    full = sum(1 for i in range(5) for j in range(3) for k in range(16)
               if a[i, k] != 0 and b[j, k] != 0)
    masked = sum(1 for i in range(5) for j in range(3) for k in range(16)
                 if a[i, k] != 0 and b[j, k] != 0 and mask[i, j])
    assert nx.macs[("l", "fp")] == [240, full]
    assert nx.macs[("l", "bp")] == [240, masked]
    assert nx.macs[("l", "wg")] == [240, full]
    assert 0 < masked < full


def test_sgd_step_rule():
    lin = nn.Linear(2, 1)
    lin.w = np.array([[1.0, -2.0]], np.float32)
    lin.grad = np.array([[0.5, 0.25]], np.float32)
    opt = nn.SGD([lin], lr=0.1, momentum=0.5, weight_decay=0.01)
    opt.step()
    v1 = np.array([0.5 + 0.01, 0.25 - 0.02])
    assert np.allclose(lin.w, [1 - 0.1 * v1[0], -2 - 0.1 * v1[1]])
    w1 = lin.w.copy()
    opt.step(lr=0.2)
    v2 = 0.5 * v1 + np.array([0.5, 0.25]) + 0.01 * w1[0]
    assert np.allclose(lin.w[0], w1[0] - 0.2 * v2)
    assert lin.w.dtype == np.float32


def test_parameter_errors():
    with pytest.raises(ValueError, match="in_features must be an integer >= 1, not 0"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="out_features must be an integer >= 1, not 2.0"):
        nn.Linear(3, 2.0)
    with pytest.raises(ValueError, match=r"padding must be smaller than kernel_size \(3\), not 3"):
        nn.Conv2d(1, 16, 3, padding=3)
    with pytest.raises(ValueError, match="stride must be an integer >= 1, not 0"):
        nn.Conv2d(1, 16, 3, stride=0)
    with pytest.raises(ValueError, match="Unknown numerics mode 'fp16'"):
        nn.Numerics("fp16")
    with pytest.raises(ValueError, match="dtype applies to fp32 mode only"):
        nn.Numerics("bfp8", dtype=np.float64)
    with pytest.raises(ValueError, match="dtype must be float32 or float64, not float16"):
        nn.Numerics("fp32", dtype=np.float16)
    with pytest.raises(ValueError, match="The first layer must be a Linear or Conv2d"):
        nn.Sequential([nn.ReLU(), nn.Linear(4, 2)], (2, 2), 2)
    with pytest.raises(ValueError, match="The last layer must be a Linear producing the logits"):
        nn.Sequential([nn.Linear(4, 2), nn.ReLU()], (2, 2), 2)
    with pytest.raises(ValueError, match="The last layer has 3 outputs, not n_classes=2"):
        nn.Sequential([nn.Linear(4, 3)], (2, 2), 2)
    with pytest.raises(ValueError, match=r"linear1 expects \(5,\) inputs, not \(4,\)"):
        nn.Sequential([nn.Linear(5, 2)], (2, 2), 2)
    with pytest.raises(ValueError, match=r"Flatten needs a channel count that is a multiple of "
                                         r"16 \(so blocks stay blocks\), not 8"):
        nn.Sequential([nn.Conv2d(1, 8, 3), nn.Flatten(), nn.Linear(32, 2)], (4, 4), 2)
    with pytest.raises(ValueError, match=r"MaxPool2d\(2\) needs H and W divisible by 2, not 5x4"):
        nn.Sequential([nn.Conv2d(1, 16, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(160, 2)],
                      (5, 4), 2)
    with pytest.raises(ValueError, match="conv2d2: input channels must be a multiple of 16 "
                                         "after the first layer, not 8"):
        nn.Sequential([nn.Conv2d(1, 8, 1), nn.Conv2d(8, 16, 1), nn.Flatten(),
                       nn.Linear(16, 2)], (1, 1), 2)
    with pytest.raises(TypeError, match="Unsupported layer str"):
        nn.Sequential([nn.Linear(4, 2), "relu", nn.Linear(2, 2)], (2, 2), 2)
    with pytest.raises(ValueError, match=r"Logits \(2, 3\) and labels \(3,\) do not match"):
        nn.softmax_cross_entropy(np.zeros((2, 3)), np.zeros(3, int))
    with pytest.raises(ValueError, match="lr must be a number >= 0, not -1"):
        nn.SGD([], lr=-1)
    lin = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="linear has no gradient: run a training step first|"
                                         " has no gradient"):
        nn.SGD([lin], lr=0.1).step()
    with pytest.raises(ValueError, match="Converter input has 10 columns, not a multiple of 16"):
        nn.Numerics("bfp8").convert(np.zeros((2, 10)))
    model = nn.Sequential([nn.Linear(4, 2)], (2, 2), 2)
    with pytest.raises(ValueError, match="mask_from must be 'saved' or 'forward', not 'x'"):
        model.train_step(nn.Numerics(), np.zeros((1, 2, 2)), np.zeros(1, int), mask_from="x")
