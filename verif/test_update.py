"""The fixed-point weight update (golden/update.py) against exact rational references."""

import math
from fractions import Fraction

import numpy as np
import pytest

from golden import bfp, gemm, jobs, nn, train, update
from golden.update import SAT, Hyper

M31 = -(1 << 31)


def rne_ref(x: Fraction) -> int:
    """Round half to even (Python's round of a Fraction)."""
    return round(x)


def clamp(x: int) -> int:
    return max(-SAT, min(SAT, x))


def grad_ref(s: int, ea: int, frac_v: int = 24) -> int:
    return clamp(rne_ref(Fraction(s) * Fraction(2) ** (ea - 274 + frac_v)))


def update_ref(w, v, g, lr, mom, wd, frac_w=24, frac_v=24):
    """Scalar rule of the module docstring in exact rationals."""
    def h(x):
        return Fraction(x.mant, 1 << x.shift)
    mv = rne_ref(h(mom) * v)
    wdw = rne_ref(h(wd) * w * Fraction(2) ** (frac_v - frac_w))
    v2 = clamp(mv + g + wdw)
    w2 = clamp(w - rne_ref(h(lr) * v2 * Fraction(2) ** (frac_w - frac_v)))
    return w2, v2


# -- hyper-parameter registers ----------------------------------------------------------------

def test_hyper_from_float_pinned():
    assert Hyper.from_float(0.9) == Hyper(58982, 16)  # 0.9 * 2**16 = 58982.4
    assert Hyper.from_float(0.05) == Hyper(52429, 20)  # 52428.8
    assert Hyper.from_float(5e-4) == Hyper(33554, 26)  # 33554.432
    assert Hyper.from_float(1.0) == Hyper(32768, 15)
    assert Hyper.from_float(0) == Hyper(0, 0)
    assert Hyper.from_float(65535) == Hyper(65535, 0)
    # rounds up to 2**16: one bit less
    assert Hyper.from_float(65535.75 * 2.0 ** -20) == Hyper(32768, 19)
    # tiny: the shift saturates at 63 and the mantissa loses bits
    assert Hyper.from_float(3 * 2.0 ** -63) == Hyper(3, 63)
    assert Hyper.from_float(2.0 ** -70) == Hyper(0, 63)
    assert Hyper(3, 2).value == 0.75


def test_hyper_from_float_precision(rng):
    for x in np.exp(rng.uniform(math.log(1e-9), math.log(60000), 500)):
        h = Hyper.from_float(x)
        assert abs(h.value - x) <= x * 2.0 ** -16
        assert h.mant >= 1 << 15


@pytest.mark.parametrize("bad", [-1e-3, float("nan"), float("inf"), 65536.0, True, "0.1", None])
def test_hyper_from_float_rejects(bad):
    with pytest.raises(ValueError):
        Hyper.from_float(bad)


@pytest.mark.parametrize("mant,shift", [(-1, 0), (1 << 16, 0), (0, -1), (0, 64), (1.5, 0),
                                        (True, 0)])
def test_hyper_rejects(mant, shift):
    with pytest.raises(ValueError):
        Hyper(mant, shift)


# -- rounding and the gradient ----------------------------------------------------------------

def test_rne_shift_against_fractions(rng):
    x = np.concatenate([rng.integers(-(1 << 48), 1 << 48, 2000),
                        rng.integers(-64, 64, 500), [0, 1, -1, 2, -2, 3, -3, 5, -5]])
    r = rng.integers(-8, 64, x.size)
    r[:200] = rng.integers(1, 4, 200)  # many ties
    got = update.rne_shift(x, r)
    for xi, ri, gi in zip(x.tolist(), r.tolist(), got.tolist(), strict=True):
        assert gi == rne_ref(Fraction(xi) / Fraction(2) ** ri), (xi, ri)


def test_rne_shift_ties_to_even():
    assert update.rne_shift([5, 7, -5, -7, 6, -6, 1, -1, 3], [1, 1, 1, 1, 2, 2, 1, 1, 1]).tolist() \
        == [2, 4, -2, -4, 2, -2, 0, 0, 2]


def test_rne_shift_rejects_wide():
    with pytest.raises(ValueError):
        update.rne_shift([1 << 60], [1])


def test_grad_pinned():
    # ea = 250 is the velocity's LSB (274 - 24): S enters unshifted
    s = [3, 5, 7, -5, -7, 1, -1, 0, 12345, 1, M31, SAT, 1, -1, 0]
    ea = [250, 249, 249, 249, 249, 248, 248, 60000, 0, 280, 250, 251, 281, 281, 65535]
    assert update.grad_to_fixed(s, ea).tolist() == [
        3, 2, 4, -2, -4, 0, 0, 0, 0, 1 << 30, -SAT, SAT, SAT, -SAT, 0]


def test_grad_against_fractions(rng):
    n = 3000
    s = rng.integers(M31, SAT, n, endpoint=True)
    s[:300] = rng.integers(-3, 4, 300)
    s[300:320] = [M31, SAT, -SAT] * 6 + [0, 0]
    ea = rng.integers(180, 300, n)
    ea[:500] = rng.integers(0, 1 << 16, 500)
    got = update.grad_to_fixed(s, ea)
    for si, ei, gi in zip(s.tolist(), ea.tolist(), got.tolist(), strict=True):
        assert gi == grad_ref(si, ei), (si, ei)


def test_grad_of_value_equals_grad_of_record(rng):
    s = rng.integers(M31, SAT, 4000, endpoint=True)
    ea = rng.integers(150, 320, 4000)
    acc = gemm.Accumulator(s, ea)
    for fv in (20, 24, 28):
        assert np.array_equal(update.to_fixed(acc.value(), fv), update.grad_to_fixed(s, ea, fv))


def test_grad_from_raw_records(rng):
    """The unit reads the WG output as RAW records: parse them back and convert."""
    acc = gemm.Accumulator(rng.integers(M31, SAT, (16, 32), endpoint=True),
                           rng.integers(0, 1024, (16, 32)))
    back = jobs.parse_raw(jobs.raw_bytes(acc), 16, 32)
    assert np.array_equal(update.grad_to_fixed(back.mant, back.exp),
                          update.grad_to_fixed(acc.mant, acc.exp))


@pytest.mark.parametrize("kw", [dict(mant=[1 << 31], exp=[0]), dict(mant=[M31 - 1], exp=[0]),
                                dict(mant=[1], exp=[-1]), dict(mant=[1], exp=[1 << 16]),
                                dict(mant=[1.0], exp=[0]), dict(mant=[1], exp=[0], frac_v=32)])
def test_grad_rejects(kw):
    with pytest.raises(ValueError):
        update.grad_to_fixed(**kw)


# -- the update -------------------------------------------------------------------------------

def test_update_pinned():
    lr, mom, wd = Hyper(1, 3), Hyper(1, 1), Hyper(0, 0)  # 0.125, 0.5, 0
    w, v = update.update([1 << 24, 100, 100], [0, 6, 7], [3, 0, 0], lr, mom, wd)
    # v' = 0.5 v + g: 3, 3, 4 (3.5 rounds to even); w' = w - rne(v' / 8): 0, 0, 0 (0.5 to 0)
    assert v.tolist() == [3, 3, 4]
    assert w.tolist() == [1 << 24, 100, 100]
    w, v = update.update([0, 0], [0, 0], [12, 20], lr, mom, wd)
    assert v.tolist() == [12, 20] and w.tolist() == [-2, -2]  # -1.5 -> -2, -2.5 -> -2
    # weight decay 2**-4 of w = 1.0 enters the velocity as 2**20
    w, v = update.update([1 << 24], [0], [0], Hyper(0, 0), Hyper(0, 0), Hyper(1, 4))
    assert v.tolist() == [1 << 20] and w.tolist() == [1 << 24]


def test_update_saturates_never_wraps():
    one = Hyper(1, 0)
    w, v = update.update([SAT, -SAT, -5], [SAT, -SAT, SAT], [SAT, -SAT, SAT], one, one, one)
    assert v.tolist() == [SAT, -SAT, SAT]
    assert w.tolist() == [0, 0, -SAT]
    # momentum 65535 (no shift) on v = SAT: the 48-bit product saturates the velocity
    w, v = update.update([0], [SAT], [0], Hyper(0, 0), Hyper(65535, 0), Hyper(0, 0))
    assert v.tolist() == [SAT] and w.tolist() == [0]
    w, v = update.update([-7], [-SAT], [0], Hyper(65535, 0), Hyper(65535, 0), Hyper(0, 0))
    assert v.tolist() == [-SAT] and w.tolist() == [SAT]


def _random_words(rng, n):
    x = rng.integers(-SAT, SAT, n, endpoint=True)
    small = rng.integers(-(1 << 12), 1 << 12, n)
    pick = rng.random(n)
    x = np.where(pick < 0.4, small, x)
    x = np.where(pick > 0.97, rng.choice([SAT, -SAT, 0, 1, -1], n), x)
    return x


def _random_hyper(rng):
    kind = rng.random()
    if kind < 0.1:
        return Hyper(int(rng.integers(0, 1 << 16)), int(rng.integers(0, 8)))  # large
    if kind < 0.15:
        return Hyper(int(rng.integers(0, 1 << 16)), int(rng.integers(40, 64)))  # tiny
    return Hyper.from_float(float(np.exp(rng.uniform(-12, 0))))


@pytest.mark.parametrize("fracs", [(24, 24), (24, 28), (26, 22)])
def test_update_against_fractions(rng, fracs):
    fw, fv = fracs
    for _ in range(20):
        lr, mom, wd = (_random_hyper(rng) for _ in range(3))
        w, v, g = (_random_words(rng, 60) for _ in range(3))
        gw, gv = update.update(w, v, g, lr, mom, wd, frac_w=fw, frac_v=fv)
        for k in range(w.size):
            assert (gw[k], gv[k]) == update_ref(int(w[k]), int(v[k]), int(g[k]), lr, mom, wd,
                                                fw, fv), (w[k], v[k], g[k], lr, mom, wd)


def test_update_records_is_grad_then_update(rng):
    s = rng.integers(M31, SAT, 500, endpoint=True)
    ea = rng.integers(200, 300, 500)
    w, v = _random_words(rng, 500), _random_words(rng, 500)
    hp = (Hyper.from_float(0.01), Hyper.from_float(0.9), Hyper.from_float(5e-4))
    got = update.update_records(w, v, s, ea, *hp)
    for k in range(0, 500, 7):
        g = grad_ref(int(s[k]), int(ea[k]))
        assert (got[0][k], got[1][k]) == update_ref(int(w[k]), int(v[k]), g, *hp)


@pytest.mark.parametrize("kw,exc", [
    (dict(w=[SAT + 1]), ValueError), (dict(v=[M31]), ValueError), (dict(g=[0.5]), ValueError),
    (dict(lr=0.1), TypeError), (dict(frac_w=32), ValueError), (dict(frac_w=10), ValueError),
])
def test_update_rejects(kw, exc):
    args = dict(w=[0], v=[0], g=[0], lr=Hyper(1, 1), momentum=Hyper(1, 1),
                weight_decay=Hyper(0, 0))
    args.update(kw)
    with pytest.raises(exc):
        update.update(**args)


# -- re-quantization --------------------------------------------------------------------------

def test_requantize_is_the_converter_on_the_master(rng):
    w = _random_words(rng, 40 * 50).reshape(40, 50)
    w[3] = 0
    wq, wtq = update.requantize(w)
    assert wq.shape == (48, 64) and wtq.shape == (64, 48)
    pad = np.zeros((48, 64), np.int64)
    pad[:40, :50] = w
    # S = w, ea = 250 is what the BFP8 converter receives
    acc = gemm.Accumulator(pad, np.full(pad.shape, update.MASTER_EA))
    assert wq == acc.to_bfp() and update.MASTER_EA == 250
    assert wtq == gemm.Accumulator(pad.T.copy(), np.full((64, 48), 250)).to_bfp()
    assert wq.is_canonical() and wtq.is_canonical()


def test_requantize_matches_float_quantizer_when_exact(rng):
    # masters with at most 24 significant bits are exact in float32: quantize() agrees
    w = (rng.integers(-(1 << 23), 1 << 23, (32, 48)) << rng.integers(0, 8, (32, 48)))
    w = np.clip(w, -SAT, SAT)
    wq, wtq = update.requantize(w)
    x = (w * 2.0 ** -24).astype(np.float32)
    assert wq == bfp.quantize(x) and wtq == bfp.quantize(x.T)


def test_requantize_rejects():
    with pytest.raises(ValueError):
        update.requantize(np.zeros(16, np.int64))
    with pytest.raises(ValueError):
        update.requantize(np.full((2, 2), 1 << 31))


# -- training ---------------------------------------------------------------------------------

def _small_step(rng, fixed: bool):
    model = train.build_model("mlp", (8, 8), 10, (32, 16))
    model.init(np.random.default_rng(1))
    nx = nn.Numerics("bfp8")
    nx.trace = []
    opt = None
    if fixed:
        opt = update.FixedSGD(model.gemm_layers, 0.05, 0.9, 5e-4)
        nx.exact_weights = True
    x = rng.random((24, 64)) * 16
    y = rng.integers(0, 10, 24)
    model.train_step(nx, x, y)
    return model, nx, opt


def test_fixed_sgd_step_uses_records_and_requantizes(rng):
    model, nx, opt = _small_step(rng, fixed=True)
    wg = {r["layer"]: r["acc"] for r in nx.trace if r["phase"] == "wg"}
    before = [(m.copy(), v.copy()) for m, v in zip(opt.master, opt.velocity, strict=True)]
    opt.step(0.03)
    hp = (Hyper.from_float(0.03), Hyper.from_float(0.9), Hyper.from_float(5e-4))
    for i, layer in enumerate(model.gemm_layers):
        co, k = layer.w.shape
        acc = wg[layer.name]
        w, v = update.update_records(*before[i], acc.mant[:co, :k], acc.exp[:co, :k], *hp)
        assert np.array_equal(opt.master[i], w) and np.array_equal(opt.velocity[i], v)
        assert np.any(w != before[i][0])
        assert np.array_equal(layer.w, update.to_value(w, 24))
        # the BFP8 copies the next step uses are the converter's output on the master
        wq, wtq = update.requantize(w)
        assert nx.weight(_pad(layer.w, wq.shape)).bfp == wq
        assert nx.weight(_pad(layer.w.T, wtq.shape)).bfp == wtq


def _pad(a, shape):
    return nn._pad_axis(nn._pad_axis(a, 0, shape[0]), 1, shape[1])


def test_default_numerics_quantize_weights_through_float32(rng):
    nx = nn.Numerics("bfp8")
    w = np.array([[1 + 2.0 ** -30] + [0.0] * 15])
    assert nx.weight(w).bfp == nx.operand(w).bfp
    nx.exact_weights = True
    assert nx.weight(w).bfp == bfp.quantize_exact(w)


def test_fixed_sgd_rejects():
    lin = nn.Linear(16, 16)
    with pytest.raises(ValueError):
        update.FixedSGD([lin], lr=-1)
    with pytest.raises(ValueError):
        update.FixedSGD([lin], lr=0.1, frac_w=40)
    opt = update.FixedSGD([lin], lr=0.1)
    with pytest.raises(ValueError, match="no gradient"):
        opt.step()


def test_train_fixed_learns_and_validates():
    cfg = dict(mode="bfp8-ss", epochs=3, limit_train=400, limit_test=200, lr=0.1,
               update="fixed")
    res = train.train(cfg)
    ref = train.train(dict(cfg, update="fp32"))
    assert res["config"]["update"] == "fixed" and ref["config"]["update"] == "fp32"
    assert res["test_accuracy"] > 0.75
    assert abs(res["test_accuracy"] - ref["test_accuracy"]) < 0.05
    with pytest.raises(ValueError, match="update"):
        train.train(dict(cfg, update="fp16"))
    assert train.DEFAULTS["update"] == "fp32"
