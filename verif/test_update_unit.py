# amaranth: UnusedElaboratable=no
"""UpdateUnit (hdl/update_unit.py) against golden.update.update_records, Amaranth simulator."""

import numpy as np
import pytest
from amaranth import Value
from amaranth.sim import Simulator

from golden import update
from golden.update import SAT, Hyper
from hdl import update_unit
from hdl.bfp_converter import BFPConverter
from hdl.update_unit import UPDATE_IN, UPDATE_OUT, UpdateUnit
from verif.streams import Pacer, pack_acc_block, stream_get, stream_put, unpack_bfp_block

M32 = (1 << 32) - 1


def pack_in(s, ea, w, v) -> int:
    return (s & M32) | (ea << 32) | ((w & M32) << 48) | ((v & M32) << 80)


def _signed32(x):
    return x - (1 << 32) if x >> 31 else x


def unpack_out(word):
    return _signed32(word & M32), _signed32(word >> 32)


def run_unit(elements, hypers, frac_w=24, frac_v=24, in_pacer=None, out_pacer=None):
    """Simulate; ``elements`` = [(S, ea, w, v)], ``hypers`` = [(lr, mom, wd)] per element.

    Returns ``(outs [(w, v)], accept_cycles, out_cycles)``.
    """
    dut = UpdateUnit(frac_w, frac_v)
    result = {}

    async def put(ctx):
        cycle, accepted = 0, []
        for (s, ea, w, v), (lr, mom, wd) in zip(elements, hypers, strict=True):
            while in_pacer is not None and in_pacer.stall():
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 1)
            ctx.set(Value.cast(dut.i.payload), pack_in(s, ea, w, v))
            # the registers may change with every element: the unit samples them with it
            for port, h in ((dut.lr, lr), (dut.momentum, mom), (dut.weight_decay, wd)):
                ctx.set(port.mant, h.mant)
                ctx.set(port.shift, h.shift)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    accepted.append(cycle)
                    cycle += 1
                    break
                cycle += 1
            # scramble the registers between elements: they must not matter any more
            for port in (dut.lr, dut.momentum, dut.weight_decay):
                ctx.set(port.mant, 0xA5A5)
                ctx.set(port.shift, 63)
        ctx.set(dut.i.valid, 0)
        result["accepted"] = accepted

    async def get(ctx):
        result["out"] = await stream_get(ctx, dut.o, len(elements), out_pacer)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    words, cycles = result["out"]
    return [unpack_out(x) for x in words], result["accepted"], cycles


def golden_outs(elements, hypers, frac_w=24, frac_v=24):
    out = []
    for (s, ea, w, v), hp in zip(elements, hypers, strict=True):
        gw, gv = update.update_records([w], [v], [s], [ea], *hp, frac_w=frac_w, frac_v=frac_v)
        out.append((int(gw[0]), int(gv[0])))
    return out


def random_elements(rng, n, frac_v=24):
    lsb_ea = 274 - frac_v
    s = rng.integers(-(1 << 31), SAT, n, endpoint=True)
    small = rng.integers(-300, 300, n)
    s = np.where(rng.random(n) < 0.3, small, s)
    pick = rng.random(n)
    s = np.where(pick < 0.08, 0, s)  # zero gradients
    s = np.where((pick >= 0.08) & (pick < 0.14),
                 rng.choice([-(1 << 31), SAT, -SAT, 1, -1], n), s)
    ea = rng.integers(lsb_ea - 40, lsb_ea + 8, n)
    kind = rng.random(n)
    ea = np.where(kind < 0.1, rng.integers(0, 1 << 16, n), ea)  # any exponent
    ea = np.where((kind >= 0.1) & (kind < 0.15), rng.integers(lsb_ea - 36, lsb_ea - 28, n), ea)
    ea = np.where((kind >= 0.15) & (kind < 0.2), rng.integers(lsb_ea + 28, lsb_ea + 34, n), ea)
    ea = np.where((kind >= 0.2) & (kind < 0.22), rng.choice([0, 65535], n), ea)

    def words():
        x = rng.integers(-SAT, SAT, n, endpoint=True)
        x = np.where(rng.random(n) < 0.4, rng.integers(-(1 << 20), 1 << 20, n), x)
        return np.where(rng.random(n) < 0.08, rng.choice([SAT, -SAT, 0, 1, -1], n), x)

    w, v = words(), words()
    return [tuple(int(a) for a in e) for e in zip(s, ea, w, v, strict=True)]


def random_hypers(rng, n):
    def one():
        k = rng.random()
        if k < 0.1:
            return Hyper(int(rng.integers(0, 1 << 16)), int(rng.integers(0, 6)))  # huge
        if k < 0.15:
            return Hyper(int(rng.integers(0, 1 << 16)), int(rng.integers(40, 64)))  # tiny
        if k < 0.2:
            return Hyper(0, int(rng.integers(0, 64)))
        return Hyper.from_float(float(np.exp(rng.uniform(-12, 0))))
    return [(one(), one(), one()) for _ in range(n)]


def test_constants_match_golden():
    assert update_unit.WORD_W == update.WORD_W
    assert update_unit.REC_EXP_W == update.REC_EXP_W
    assert update_unit.HP_MANT_W == update.HP_MANT_W
    assert update_unit.HP_SHIFT_W == update.HP_SHIFT_W
    assert UPDATE_IN.size == 32 + 16 + 32 + 32 and UPDATE_OUT.size == 64
    assert update_unit.HYPER.size == 22
    dut = UpdateUnit()
    assert (dut.frac_w, dut.frac_v) == (update.W_FRAC, update.V_FRAC)


def test_pinned_values():
    """Hand-computed values (golden/update.py docstring): independent of the golden code."""
    lr, mom, zero = Hyper(1, 3), Hyper(1, 1), Hyper(0, 0)
    els = [(3, 250, 1 << 24, 0), (5, 249, 0, 0), (7, 249, 0, 0), (-5, 249, 0, 0),
           (0, 65535, 7, 0), (1, 281, 0, 0), (-1, 65535, 0, 0), (12, 250, 0, 0),
           (20, 250, 0, 0), (0, 0, 100, 7)]
    outs, _, _ = run_unit(els, [(lr, mom, zero)] * len(els))
    # v' = v/2 + g (ties to even), w' = w - v'/8 (ties to even); SAT / 8 rounds to 2**28
    assert outs == [(1 << 24, 3), (0, 2), (0, 4), (0, -2), (7, 0), (-(1 << 28), SAT),
                    (1 << 28, -SAT), (-2, 12), (-2, 20), (100, 4)]


def test_random_bit_exact_with_backpressure(rng):
    n = 300
    els, hps = random_elements(rng, n), random_hypers(rng, n)
    outs, _, _ = run_unit(els, hps, in_pacer=Pacer(rng, 0.3, burst=True),
                          out_pacer=Pacer(rng, 0.4, burst=True))
    want = golden_outs(els, hps)
    for k in range(n):
        assert outs[k] == want[k], (k, els[k], hps[k])
    assert any(abs(w) == SAT for w, _ in want) and any(abs(v) == SAT for _, v in want)


def test_training_like_values(rng):
    """Values of a real update: small gradients around the LSB, lr 0.05, momentum 0.9."""
    n = 200
    hp = (Hyper.from_float(0.05), Hyper.from_float(0.9), Hyper.from_float(5e-4))
    s = rng.integers(-(1 << 24), 1 << 24, n)
    ea = rng.integers(200, 245, n)
    w = rng.integers(-(1 << 24), 1 << 24, n)
    v = rng.integers(-(1 << 20), 1 << 20, n)
    els = [tuple(int(a) for a in e) for e in zip(s, ea, w, v, strict=True)]
    outs, _, _ = run_unit(els, [hp] * n, out_pacer=Pacer(rng, 0.2))
    assert outs == golden_outs(els, [hp] * n)


@pytest.mark.parametrize("fracs", [(24, 28), (28, 20)])
def test_other_formats(rng, fracs):
    n = 120
    els, hps = random_elements(rng, n, fracs[1]), random_hypers(rng, n)
    outs, _, _ = run_unit(els, hps, *fracs, out_pacer=Pacer(rng, 0.3))
    assert outs == golden_outs(els, hps, *fracs)


def test_one_per_cycle_latency_6(rng):
    n = 40
    els, hps = random_elements(rng, n), random_hypers(rng, n)
    outs, accepted, out_cycles = run_unit(els, hps)
    assert outs == golden_outs(els, hps)
    assert accepted == list(range(n))
    assert out_cycles == list(range(UpdateUnit.latency, UpdateUnit.latency + n))


@pytest.mark.parametrize("kw,exc", [
    (dict(frac_w=24.0), TypeError), (dict(frac_v=True), TypeError),
    (dict(frac_w=32), ValueError), (dict(frac_v=-1), ValueError),
    (dict(frac_w=10, frac_v=24), ValueError), (dict(frac_w=30, frac_v=21), ValueError),
])
def test_rejects_parameters(kw, exc):
    with pytest.raises(exc):
        UpdateUnit(**kw)


def test_converts_to_rtlil():
    from amaranth.back import rtlil

    assert "module" in rtlil.convert(UpdateUnit(), name="update_unit")


def test_converter_requantizes_the_master(rng):
    """The unchanged BFP8 converter, fed masters with ea = 250, gives golden.update.requantize:
    W from 16 masters of a row, W^T from 16 masters of a column."""
    w = rng.integers(-SAT, SAT, (32, 48), endpoint=True)
    w = np.where(rng.random(w.shape) < 0.5, rng.integers(-(1 << 22), 1 << 22, w.shape), w)
    w[0, :16] = 0
    w[1, :16] = [SAT, -SAT, 1, -1] * 4
    w[:16, 16] = 3
    want_w, want_wt = update.requantize(w)
    ea = [update.MASTER_EA] * 16
    rows = [w[r, c:c + 16] for r in range(32) for c in range(0, 48, 16)]
    cols = [w[r:r + 16, c] for c in range(48) for r in range(0, 32, 16)]
    dut = BFPConverter()
    words = [pack_acc_block(b.tolist(), ea) for b in rows + cols]
    result = {}

    async def put(ctx):
        await stream_put(ctx, dut.i, words)

    async def get(ctx):
        result["out"] = await stream_get(ctx, dut.o, len(words), Pacer(rng, 0.2))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    blocks = [unpack_bfp_block(x) for x in result["out"][0]]
    e = np.array([b[0] for b in blocks], np.uint8)
    m = np.stack([b[1] for b in blocks]).astype(np.int8)
    n = len(rows)
    assert np.array_equal(e[:n].reshape(32, 3), want_w.exponents)
    assert np.array_equal(m[:n].reshape(32, 48), want_w.mantissas)
    assert np.array_equal(e[n:].reshape(48, 2), want_wt.exponents)
    assert np.array_equal(m[n:].reshape(48, 32), want_wt.mantissas)
