"""UpdatePath (hdl/update_path.py) alone in the Amaranth simulator, against golden.update.

Both passes on ragged tiles (``m``, ``n`` not multiples of R), random state-stream bubbles and
back-pressure: the ``state_out`` words and ``last``, and every task beat on ``o`` (pass 0: the
new masters ``W``; pass 1: ``W^T``; entries outside the tile 0) are checked against values
computed from :func:`golden.update.update_records` here, not from the RTL.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import update
from golden.update import MASTER_EA, Hyper
from hdl.config import get_config
from hdl.update_path import UpdatePath
from verif.streams import Pacer

M32 = (1 << 32) - 1


def _s32(x):
    return x - (1 << 32) if x >> 31 else x


def run_path(cfg_name, m, n, rng, hp, in_prob=0.3, out_prob=0.3):
    cfg = get_config(cfg_name)
    R = cfg.rows
    groups_n = -(-n // R)
    dut = UpdatePath(cfg)
    # the C buffer: task (row, grp) -> R (S, ea) accumulators (dW of the tile)
    S = rng.integers(-(1 << 31), (1 << 31) - 1, (m, groups_n * R), endpoint=True)
    S = np.where(rng.random(S.shape) < 0.3, rng.integers(-3000, 3000, S.shape), S)
    EA = rng.integers(250 - 30, 250 + 4, S.shape)
    w0 = rng.integers(-(1 << 31), (1 << 31) - 1, (m, n), endpoint=True)  # -2**31 read as -SAT
    v0 = rng.integers(-(1 << 28), 1 << 28, (m, n))
    cbuf = {(i, g): ([int(x) for x in S[i, g * R:(g + 1) * R]],
                     [int(x) for x in EA[i, g * R:(g + 1) * R]])
            for i in range(m) for g in range(groups_n)}
    res = {}

    async def carry(ctx):
        async for _, _, en, row, grp in ctx.tick().sample(
                dut.carry_en, dut.carry_addr.row, dut.carry_addr.grp):
            if en:
                mant, exp = cbuf[(row, grp)]
                for r in range(R):
                    ctx.set(dut.carry_data.mant[r], mant[r])
                    ctx.set(dut.carry_data.exp[r], exp[r])

    async def obeats(ctx):
        async for _, _, valid, row, grp, mant, exp, mode in ctx.tick().sample(
                dut.o.valid, dut.o.payload.row, dut.o.payload.grp, dut.o.payload.mant,
                dut.o.payload.exp, dut.mode):
            if valid:
                beat = ([_s32(int(x) & M32) for x in mant], [int(x) for x in exp])
                res.setdefault(mode, []).append((row, grp, beat))

    async def bench(ctx):
        for port, h in ((dut.lr, hp[0]), (dut.momentum, hp[1]), (dut.weight_decay, hp[2])):
            ctx.set(port.mant, h.mant)
            ctx.set(port.shift, h.shift)
        ctx.set(dut.m, m)
        ctx.set(dut.n, n)
        words = [(int(w0[i, j]) & M32) | ((int(v0[i, j]) & M32) << 32)
                 for i in range(m) for j in range(n)]
        for mode in (0, 1):
            ctx.set(dut.mode, mode)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            inp, outp = Pacer(rng, in_prob), Pacer(rng, out_prob)
            k, got, cycles = 0, [], 0
            while True:
                if mode == 0 and k < len(words) and not inp.stall():
                    ctx.set(dut.state_in.valid, 1)
                    ctx.set(dut.state_in.payload.data, words[k])
                else:
                    ctx.set(dut.state_in.valid, 0)
                ready = mode == 0 and not outp.stall()
                ctx.set(dut.state_out.ready, int(ready))
                _, _, iv, ir, ov, od, ol, done = await ctx.tick().sample(
                    dut.state_in.valid, dut.state_in.ready, dut.state_out.valid,
                    dut.state_out.payload.data, dut.state_out.payload.last, dut.done)
                if iv and ir:
                    k += 1
                if ov and ready:
                    got.append((od, ol))
                if done:
                    break
                cycles += 1
                assert cycles < 20 * (m * n + 50) * R
            ctx.set(dut.state_in.valid, 0)
            res[f"state{mode}"] = got
            res[f"cycles{mode}"] = cycles
            for _ in range(3):
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(carry)
    sim.add_process(obeats)
    sim.add_testbench(bench)
    sim.run()

    # golden
    wc = np.where(w0 == -(1 << 31), -update.SAT, w0)
    gw, gv = update.update_records(wc, v0, S[:, :n], EA[:, :n], *hp)
    gw, gv = np.asarray(gw).reshape(m, n), np.asarray(gv).reshape(m, n)
    exp_state = [((int(gw[i, j]) & M32) | ((int(gv[i, j]) & M32) << 32),
                  int(i == m - 1 and j == n - 1)) for i in range(m) for j in range(n)]
    assert res["state0"] == exp_state
    assert res["state1"] == []

    def beats(rows, cols, val):
        out = []
        for a in range(rows):
            for g in range(-(-cols // R)):
                mant = [val(a, g * R + r) if g * R + r < cols else 0 for r in range(R)]
                exp = [MASTER_EA if g * R + r < cols else 0 for r in range(R)]
                out.append((a, g, (mant, exp)))
        return out

    assert res[0] == beats(m, n, lambda i, j: int(gw[i, j]))
    assert res[1] == beats(n, m, lambda j, i: int(gw[i, j]))
    return res


@pytest.mark.parametrize("cfg,m,n", [
    ("tiny", 7, 10), ("tiny", 16, 16), ("tiny", 1, 1), ("tiny", 5, 4), ("small", 3, 21),
])
def test_both_passes_ragged(cfg, m, n, rng):
    hp = (Hyper.from_float(0.01), Hyper.from_float(0.9), Hyper.from_float(1e-4))
    run_path(cfg, m, n, rng, hp)


def test_full_rate(rng):
    """No bubbles: pass 0 takes about one cycle per element, pass 1 one per task row."""
    hp = (Hyper.from_float(0.05), Hyper.from_float(0.5), Hyper(0, 0))
    res = run_path("tiny", 12, 16, rng, hp, in_prob=0.0, out_prob=0.0)
    assert res["cycles0"] <= 12 * 16 + 12 * 4 * 2 + 20
    assert res["cycles1"] <= 16 * 12 + 20
