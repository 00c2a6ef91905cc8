"""GEMM engine: parameters, the PE's align step, and small tiles in the Amaranth simulator.

The Verilator runs over phases and edge cases are in ``test_engine_cocotb.py``; these are the
fast checks (pure Python simulation of the ``tiny`` configuration).
"""

import re

import numpy as np
import pytest
from amaranth import ResetInserter, Signal
from amaranth.sim import Simulator

from golden.bfp import BFPTensor
from golden.gemm import ACC_W, GUARD, matmul, reblock
from hdl.accelerator import Accelerator
from hdl.config import CONFIGS, EngineConfig, get_config
from hdl.engine import Engine, Status
from hdl.engine_lane import Lane
from hdl.pe import AlignUnit
from verif.engine_model import Packer, block_beats, expected_beats, om_words, random_operand

# ---- parameters -----------------------------------------------------------------------------


def _cfg(**kw):
    base = dict(name="t", rows=4, lanes=2, max_m=8, max_n=8, max_k=32, a_nz_depth=256,
                a_hdr_depth=16)
    base.update(kw)
    return EngineConfig(**base)


@pytest.mark.parametrize("kw, exc, msg", [
    ({"rows": 3}, ValueError, "rows must be a power of two, not 3"),
    ({"rows": 32}, ValueError, "rows must be at most 16, not 32"),
    ({"rows": 2.0}, TypeError, "rows must be an integer, not 2.0"),
    ({"lanes": 0}, ValueError, "lanes must be at least 1, not 0"),
    ({"lanes": True}, TypeError, "lanes must be an integer, not True"),
    ({"max_k": 48}, ValueError, "max_k must be a power of two, not 48"),
    ({"max_k": 8}, ValueError, "max_k must be at least 16, not 8"),
    ({"max_n": 6}, ValueError, "max_n must be a multiple of rows (4), not 6"),
    ({"max_m": 0}, ValueError, "max_m must be at least 1, not 0"),
    ({"a_nz_depth": 15}, ValueError, "a_nz_depth must be at least 16, not 15"),
    ({"a_hdr_depth": 0}, ValueError, "a_hdr_depth must be at least 1, not 0"),
    ({"desc_depth": 1}, ValueError, "desc_depth must be at least 2, not 1"),
    ({"out_depth": 1}, ValueError, "out_depth must be at least 2, not 1"),
    ({"name": 3}, TypeError, "Config name must be a string, not 3"),
])
def test_config_validation(kw, exc, msg):
    with pytest.raises(exc, match="^" + msg.replace("(", r"\(").replace(")", r"\)") + "$"):
        _cfg(**kw)


def test_named_configs():
    assert set(CONFIGS) == {"tiny", "small", "default"}
    assert (get_config("tiny").rows, get_config("tiny").lanes) == (4, 1)
    assert (get_config("small").rows, get_config("small").lanes) == (16, 2)
    assert get_config("default").peak_macs_per_cycle == 64
    for cfg in CONFIGS.values():  # every buffer holds a dense tile of the largest shape
        assert cfg.a_nz_depth >= cfg.max_m * cfg.max_k
        assert cfg.a_hdr_depth >= cfg.max_m * cfg.k_blocks
    with pytest.raises(ValueError, match=r"^Unknown engine config 'huge'; choose one of "
                                         r"\['default', 'small', 'tiny'\]$"):
        get_config("huge")


def test_engine_rejects_non_config():
    with pytest.raises(TypeError, match=r"^cfg must be an EngineConfig, not 'tiny'$"):
        Engine("tiny")


@pytest.mark.parametrize("bad", [0, 3, 8, -2, True, 2.0, "2"])
def test_align_share_validated(bad):
    msg = rf"^align_share must be a power of two from 1 to rows \(4\), not {re.escape(repr(bad))}$"
    for build in (lambda: Engine(get_config("tiny"), align_share=bad),
                  lambda: Lane(get_config("tiny"), align_share=bad),
                  lambda: Accelerator(get_config("tiny"), align_share=bad)):
        with pytest.raises(ValueError, match=msg):
            build()


# ---- the align step -------------------------------------------------------------------------

_MIN, _MAX = -(1 << (ACC_W - 1)), (1 << (ACC_W - 1)) - 1


def _step(acc, ea, p, s):
    """The accumulation rule as written in golden/gemm.py's docstring (checked below)."""
    if p == 0:
        return acc, ea
    q = p << GUARD
    if s > ea:
        t, ea = (acc >> min(s - ea, 63)) + q, s
    else:
        t = acc + (q >> min(ea - s, 63))
    if t < _MIN or t > _MAX:
        t, ea = t >> 1, ea + 1
    return t, ea


def test_step_reference_matches_golden(rng):
    # the test's reference step, fed the golden model's own block partials, gives its result
    for _ in range(20):
        nb = int(rng.integers(1, 8))
        a = random_operand(rng, 1, 16 * nb, 0.3, extreme=rng.choice([None, "sat", "exp"]))
        b = random_operand(rng, 1, 16 * nb, 0.3, extreme=rng.choice([None, "sat", "exp"]))
        acc, ea = 0, 0
        for kb in range(nb):
            p = int(np.dot(a.blocks()[0, kb].astype(np.int64), b.blocks()[0, kb]))
            acc, ea = _step(acc, ea, p, int(a.exponents[0, kb]) + int(b.exponents[0, kb]))
        out = matmul(a, b)
        assert (acc, ea) == (int(out.mant[0, 0]), int(out.exp[0, 0]))


def test_align_unit(rng):
    dut = AlignUnit()
    cases = [(0, 0, 1, 2), (0, 0, -1, 508), ((1 << 31) - 1, 300, 258064, 300),
             (-(1 << 31), 300, -258064, 300), (5, 10, 3, 500), (-5, 500, 7, 2),
             ((1 << 30), 200, 1, 170), (-1, 20, -1, 52), (123, 40, 0, 90)]
    # shift distances around the cap, both ways (s - ea and ea - s = 1, 31, 32, 33)
    for d in (1, 31, 32, 33):
        for acc in (-(1 << 31), (1 << 31) - 1, -3, 12345):
            cases += [(acc, 100, -258064, 100 + d), (acc, 100 + d, 258064, 100)]
    for _ in range(400):
        cases.append((int(rng.integers(_MIN, _MAX + 1)), int(rng.integers(0, 600)),
                      int(rng.integers(-258064, 258065)), int(rng.integers(2, 509))))
    got = []

    async def tb(ctx):
        for acc, ea, p, s in cases:
            # every step, then the idle step (p, s) = (0, 0) the lane sends for a zero
            # partial or a disabled PE, which must leave the accumulator as it is
            for pp, ss in ((p, s if p else 0), (0, 0)):
                ctx.set(dut.acc_s, acc)
                ctx.set(dut.acc_e, ea)
                ctx.set(dut.p, pp)
                ctx.set(dut.s, ss)
                await ctx.delay(1e-9)
                got.append((ctx.get(dut.new_s), ctx.get(dut.new_e)))

    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()
    want = []
    for acc, ea, p, s in cases:
        want += [_step(acc, ea, p, s), (acc, ea)]
    assert got == want


# ---- the engine in the Amaranth simulator ---------------------------------------------------


def run_amaranth(cfg, a, b, out_mask=None, *, n_runs=1, reset_after=None, align_share=1):
    """Load A, B (and the mask), RUN; return the output beats, the counters and the status.

    With ``reset_after = c``, a first RUN is cut by a data-path reset (a ``ResetInserter``,
    as the accelerator applies after an error) ``c`` cycles after its command, then
    everything is loaded and run again. ``align_share`` is the engine's."""
    dut = Engine(cfg, align_share=align_share)
    soft_rst = Signal()
    pk = Packer(cfg)
    m_, n_ = a.shape[0], b.shape[0]
    res = {"beats": [], "status": None}

    async def tb(ctx):
        if reset_after is not None:
            await load_and_run(ctx, 1, cut=reset_after)
            ctx.set(soft_rst, 1)
            await ctx.tick()
            ctx.set(soft_rst, 0)
        await load_and_run(ctx, n_runs)
        res["status"] = ctx.get(dut.status)
        res["cycles"] = ctx.get(dut.cycles)
        res["mac_cycles"] = ctx.get(dut.mac_cycles)
        res["macs_nonzero"] = ctx.get(dut.macs_nonzero)

    async def load_and_run(ctx, n_runs, cut=None):
        async def put(port, word):
            ctx.set(port.valid, 1)
            ctx.set(port.payload.as_value(), word)
            while True:
                _, _, ready = await ctx.tick().sample(port.ready)
                if ready:
                    break
            ctx.set(port.valid, 0)

        await put(dut.cmd, pk.command("CLEAR_A"))
        await put(dut.cmd, pk.command("CLEAR_B"))
        for beat in block_beats(a):
            await put(dut.a_in, pk.a_beat(beat))
        for beat in block_beats(b):
            await put(dut.b_in, pk.b_beat(beat))
        if out_mask is not None:
            for word in om_words(cfg, out_mask):
                await put(dut.om_in, pk.om_word(word))
        for _ in range(n_runs):
            res["beats"] = []
            await put(dut.cmd, pk.command("RUN", m_, n_, out_mask is not None))
            ctx.set(dut.o.ready, 1)
            for cycle in range(20000):
                if cycle == cut:
                    return
                _, _, valid, payload, done = await ctx.tick().sample(
                    dut.o.valid, dut.o.payload.as_value(), dut.done)
                if valid:
                    res["beats"].append(pk.unpack_out(payload))
                if done:
                    break
            else:
                raise AssertionError("engine did not finish")
        assert cut is None, "the run ended before the reset"

    sim = Simulator(ResetInserter(soft_rst)(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res


def check(cfg, res, a, b, out_mask=None):
    want = expected_beats(cfg, a, b, out_mask)
    got = {}
    for row, grp, mants, exps in res["beats"]:
        assert (row, grp) not in got, f"task {(row, grp)} came out twice"
        got[(row, grp)] = (mants, exps)
    assert set(got) == set(want)
    for key in want:
        assert got[key] == want[key], f"task {key}: got {got[key]}, want {want[key]}"


@pytest.mark.parametrize("align_share", [1, 2, 4])
@pytest.mark.parametrize("phase", ["fp", "bp", "wg"])
def test_engine_amaranth_sim(phase, align_share, rng):
    cfg = get_config("tiny")
    if phase == "wg":
        dy = random_operand(rng, 16, 16, 0.6)   # (N x Co) blocked along Co
        x = random_operand(rng, 16, 16, 0.6)    # (N x K)
        a, b = reblock(dy), reblock(x)          # (Co x N), (K x N)
        out_mask = None
    else:
        a = random_operand(rng, 5, 48, 0.7)
        b = random_operand(rng, 7, 48, 0.0 if phase == "fp" else 0.1)
        out_mask = rng.random((5, 7)) < 0.5 if phase == "bp" else None
    res = run_amaranth(cfg, a, b, out_mask, align_share=align_share)
    assert res["status"] == Status.OK
    check(cfg, res, a, b, out_mask)
    both = (a.mantissas != 0).astype(int) @ (b.mantissas != 0).astype(int).T
    assert res["macs_nonzero"] == (both[out_mask] if out_mask is not None else both).sum()


def _dense(rng, rows, k):
    t = random_operand(rng, rows, k, 0.0)
    return BFPTensor(t.exponents, np.where(t.mantissas == 0, 1, t.mantissas).astype(np.int8))


def test_engine_amaranth_dense_rate(rng):
    # dense data: each lane feeds one nonzero per cycle with no bubble between blocks or
    # tasks; what is left is the fixed pipeline fill and drain of a run
    cfg = _cfg(max_k=64, a_nz_depth=512, a_hdr_depth=32)  # R=4, L=2
    b = _dense(rng, 8, 64)
    cycles = []
    for rows in (4, 8):
        a = _dense(rng, rows, 64)
        res = run_amaranth(cfg, a, b)
        check(cfg, res, a, b)
        assert res["mac_cycles"] == rows * 2 * 64
        cycles.append(res["cycles"])
    # 4 more rows = 8 more tasks of 64 cycles over 2 lanes: exactly 256 more cycles
    assert cycles[1] - cycles[0] == 256, cycles
    assert cycles[0] <= 256 + 20, cycles


@pytest.mark.parametrize("cut", [12, 19, 26])
def test_engine_data_path_reset_mid_block(cut, rng):
    # dense 16-nonzero blocks: a reset some cycles into the run lands inside a block, with
    # partial sums in the PEs (reset-less registers, zeroed the cycle after a reset); the
    # run after the reset must not see them
    cfg = _cfg(max_k=64, a_nz_depth=512, a_hdr_depth=32)
    a, b = _dense(rng, 4, 64), _dense(rng, 8, 64)
    res = run_amaranth(cfg, a, b, reset_after=cut)
    assert res["status"] == Status.OK
    check(cfg, res, a, b)


def _one_per_block(rng, rows, k):
    """Dense exponents, exactly one nonzero mantissa per block (at a random position)."""
    t = random_operand(rng, rows, k, 0.0)
    mant = np.zeros_like(t.mantissas)
    for i in range(rows):
        for kb in range(k // 16):
            mant[i, kb * 16 + rng.integers(16)] = rng.choice([-1, 1]) * rng.integers(1, 128)
    return BFPTensor(t.exponents, mant)


@pytest.mark.parametrize("cut", range(14, 24))
def test_engine_shared_align_reset_between_phases(cut, rng):
    # one-nonzero blocks keep the shared align units stepping back to back; a reset at
    # every cycle of a stretch of the run lands in each of their phases
    cfg = _cfg(max_k=64, a_nz_depth=512, a_hdr_depth=32)
    a, b = _one_per_block(rng, 4, 64), _dense(rng, 8, 64)
    res = run_amaranth(cfg, a, b, reset_after=cut, align_share=4)
    assert res["status"] == Status.OK
    check(cfg, res, a, b)


def test_engine_shared_align_cycles(rng):
    # with S PEs per align unit a block's last token waits S cycles after the previous
    # block's: dense blocks (16 nonzeros) cost nothing more, one-nonzero blocks S cycles;
    # the run's last block leaves the align stage S - 1 cycles later
    cfg = _cfg(lanes=1, max_k=64, a_nz_depth=512, a_hdr_depth=32)  # R=4, one lane
    b = _dense(rng, 8, 64)
    tasks = 4 * 2  # 4 rows x 2 column groups, 4 blocks each
    for a, per_block in ((_dense(rng, 4, 64), 16), (_one_per_block(rng, 4, 64), 1)):
        cycles = {}
        for share in (1, 2, 4):
            res = run_amaranth(cfg, a, b, align_share=share)
            check(cfg, res, a, b)
            assert res["mac_cycles"] == tasks * 4 * per_block
            cycles[share] = res["cycles"]
        for share in (2, 4):
            # one-nonzero blocks: S - 1 more cycles after each of the 32 (31 gaps, the tail)
            more = (share - 1) * (1 if per_block == 16 else 32)
            assert cycles[share] - cycles[1] == more, cycles


# ---- FPGA flow entry points -----------------------------------------------------------------


def test_fpga_harness_and_targets(tmp_path):
    from amaranth.back import rtlil

    from fpga.build import TARGETS, build
    from fpga.harness import EngineHarness

    assert set(TARGETS) == {"ice40-tiny", "ecp5-default"}
    with pytest.raises(ValueError, match=r"^Unknown FPGA target 'gowin'; choose from "
                                         r"\['ecp5-default', 'ice40-tiny'\]$"):
        build("gowin", tmp_path)
    with pytest.raises(TypeError, match=r"^cfg must be an EngineConfig, not 4$"):
        EngineHarness(4)
    text = rtlil.convert(EngineHarness(get_config("tiny")), name="top")
    assert "module \\top" in text and "engine.lane0" in text
