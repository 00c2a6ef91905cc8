# amaranth: UnusedElaboratable=no
"""GEMM engine K-segment carry and nonzero-MAC counter, with the output path (Amaranth sim).

The engine and the output path are connected as the accelerator's top connects them: the
engine's task beats go into the output path's C buffer and the carry read ports are wired one
to one (through an AND with a testbench ``hold`` on ``carry_ready``, to stall the engine at
will). A K chain ``RUN carry=0, RUN carry=1, ...`` over K segments, loaded one segment at a
time, must leave in the buffer exactly :func:`golden.gemm.matmul` chained with ``init=`` (which
is one matmul over the whole K); the buffer is read back through a RAW drain. Each RUN's
``macs_nonzero`` is checked against a NumPy count of the nonzero products of enabled outputs.
"""

import numpy as np
import pytest
from amaranth import Module, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from golden.bfp import BFPTensor
from golden.gemm import matmul
from hdl.config import BLOCK, get_config
from hdl.engine import Engine, Status
from hdl.engine_lane import Lane, carry_layout
from hdl.output_path import OutputPath, carry_data_layout
from hdl.output_path import Status as OPStatus
from verif.engine_model import Packer, block_beats, om_words, random_operand
from verif.output_path_model import Drain, raw_bytes
from verif.output_path_model import Packer as OPPacker
from verif.streams import beats_to_bytes, unpack_beat

BUS = 64


class _Top(wiring.Component):
    """Engine -> OutputPath, carry ports one to one (``carry_ready`` ANDed with ``~hold``)."""

    hold: In(1)

    def __init__(self, cfg, carry_bram_lanes=0, align_share=1):
        self.cfg = cfg
        self.eng = Engine(cfg, carry_bram_lanes=carry_bram_lanes, align_share=align_share)
        self.op = OutputPath(cfg, BUS)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        eng, op = self.eng, self.op
        m.submodules.engine = eng
        m.submodules.output_path = op
        wiring.connect(m, eng.o, op.i)
        m.d.comb += [
            op.carry_en.eq(eng.carry_en),
            op.carry_addr.eq(eng.carry_addr),
            eng.carry_data.eq(op.carry_data),
            eng.carry_ready.eq(op.carry_ready & ~self.hold),
        ]
        return m


def _segment(t: BFPTensor, kb0: int, kb1: int) -> BFPTensor:
    return BFPTensor(t.exponents[:, kb0:kb1], t.mantissas[:, kb0 * BLOCK:kb1 * BLOCK], BLOCK)


def _nonzero_macs(a: BFPTensor, b: BFPTensor, mask) -> int:
    both = (a.mantissas != 0).astype(np.int64) @ (b.mantissas != 0).astype(np.int64).T
    return int(both[mask].sum() if mask is not None else both.sum())


class _Bench:
    def __init__(self, cfg, carry_bram_lanes=0, align_share=1):
        self.cfg = cfg
        self.top = _Top(cfg, carry_bram_lanes, align_share)
        self.pk = Packer(cfg)
        self.opk = OPPacker(cfg)
        self.hold_plan = None  # callable(cycle) -> hold, during RUNs
        self.traces = []  # per RUN: (hold, carry_en) per cycle

    async def put(self, ctx, port, word):
        ctx.set(port.valid, 1)
        ctx.set(Value.cast(port.payload), word)
        while True:
            _, _, ready = await ctx.tick().sample(port.ready)
            if ready:
                break
        ctx.set(port.valid, 0)

    async def load(self, ctx, a, b, mask):
        eng = self.top.eng
        await self.put(ctx, eng.cmd, self.pk.command("CLEAR_A"))
        await self.put(ctx, eng.cmd, self.pk.command("CLEAR_B"))
        for beat in block_beats(a):
            await self.put(ctx, eng.a_in, self.pk.a_beat(beat))
        for beat in block_beats(b):
            await self.put(ctx, eng.b_in, self.pk.b_beat(beat))
        if mask is not None:
            for word in om_words(self.cfg, mask):
                await self.put(ctx, eng.om_in, self.pk.om_word(word))

    async def run(self, ctx, m, n, use_mask, carry):
        """RUN; returns (status, cycles, macs_nonzero, output beats seen)."""
        eng, top = self.top.eng, self.top
        await self.put(ctx, eng.cmd, self.pk.command("RUN", m, n, use_mask, carry))
        beats = 0
        trace = []
        self.traces.append(trace)
        for cyc in range(50_000):
            hold = self.hold_plan(cyc) if self.hold_plan else 0
            ctx.set(top.hold, hold)
            _, _, cen, valid, ready, done = await ctx.tick().sample(
                eng.carry_en, eng.o.valid, eng.o.ready, eng.done)
            trace.append((hold, cen))
            beats += valid & ready
            if done:
                break
        else:
            raise AssertionError("engine did not finish")
        ctx.set(top.hold, 0)
        return (Status(ctx.get(eng.status)), ctx.get(eng.cycles), ctx.get(eng.macs_nonzero),
                beats)

    async def drain_raw(self, ctx, m, n) -> bytes:
        op = self.top.op
        ctx.set(op.o_fwd.ready, 1)
        ctx.set(op.o_filt.ready, 1)
        await self.put(ctx, op.cmd, self.opk.command(Drain(m=m, n=n, raw=True)))
        beats = []
        for _ in range(50_000):
            _, _, valid, payload, done = await ctx.tick().sample(
                op.o_fwd.valid, Value.cast(op.o_fwd.payload), op.done)
            if valid:
                beats.append(unpack_beat(BUS, payload))
            if done:
                break
        else:
            raise AssertionError("drain did not finish")
        assert ctx.get(op.status) == OPStatus.OK
        return beats_to_bytes(beats, BUS)

    def simulate(self, body):
        sim = Simulator(self.top)
        sim.add_clock(1e-8)
        sim.add_testbench(body)
        sim.run()


def _chain_case(rng, cfg, m, n, seg_blocks, masked, sparsity):
    kb = sum(seg_blocks)
    a = random_operand(rng, m, BLOCK * kb, sparsity[0],
                       extreme=rng.choice(np.array([None, "exp", "sat"], dtype=object)))
    b = random_operand(rng, n, BLOCK * kb, sparsity[1])
    mask = rng.random((m, n)) < 0.6 if masked else None
    return a, b, mask


async def _run_chain(ctx, bench, a, b, mask, seg_blocks, runs):
    """Load and run every segment (carry = 0 first); check the counter; return golden."""
    m, n = a.shape[0], b.shape[0]
    groups = -(-n // bench.cfg.rows)
    acc = None
    kb0 = 0
    for s, nb in enumerate(seg_blocks):
        sa, sb = _segment(a, kb0, kb0 + nb), _segment(b, kb0, kb0 + nb)
        kb0 += nb
        await bench.load(ctx, sa, sb, mask)
        status, cycles, nzm, beats = await bench.run(ctx, m, n, mask is not None, s > 0)
        assert status == Status.OK
        assert beats == m * groups
        assert nzm == _nonzero_macs(sa, sb, mask), f"segment {s}: macs_nonzero"
        runs.append(cycles)
        acc = matmul(sa, sb, out_mask=mask, init=acc)
    # the chain is one matmul over the whole K (golden's claim, checked on this data)
    whole = matmul(a, b, out_mask=mask)
    assert np.array_equal(whole.mant, acc.mant) and np.array_equal(whole.exp, acc.exp)
    got = await bench.drain_raw(ctx, m, n)
    want = raw_bytes(acc, relu=False)
    if got != want:
        rec = np.frombuffer(got, dtype=np.int32).reshape(-1, 2)
        s_got = rec[:, 0].reshape(m, n)
        bad = np.argwhere(s_got != acc.mant)
        raise AssertionError(f"accumulators differ at {bad[:8].tolist()} "
                             f"(got {s_got[tuple(bad[0])] if len(bad) else '?'})")


# ---- ports ----------------------------------------------------------------------------------


def test_carry_ports_mirror_output_path():
    cfg = get_config("small")
    eng, op = Engine(cfg), OutputPath(cfg)
    for name in ("carry_en", "carry_addr", "carry_data", "carry_ready"):
        assert eng.signature.members[name] == op.signature.members[name].flip(), name
    assert carry_layout(cfg) == carry_data_layout(cfg)
    assert eng.signature.members["macs_nonzero"] == wiring.Out(32)
    lane = Lane(cfg)
    assert lane.signature.members["carry_data"] == In(carry_data_layout(cfg))


# ---- K chains -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, carry_bram_lanes, align_share",
                         [("tiny", 0, 1), ("tiny", 1, 4), ("small", 0, 1), ("small", 1, 2)])
def test_k_chain_bit_exact(name, carry_bram_lanes, align_share, rng):
    """2- and 3-segment chains, with and without output mask, into one buffer (with one of
    small's two lanes keeping its carry queue in block RAM, too; and with shared align
    units, whose phases take the carried accumulators PE by PE)."""
    cfg = get_config(name)
    bench = _Bench(cfg, carry_bram_lanes, align_share)
    if name == "tiny":
        cases = [(7, 10, (1, 2), False, (0.6, 0.2)), (9, 16, (2, 1, 1), True, (0.5, 0.3)),
                 (16, 13, (1, 1, 1), True, (0.8, 0.5))]
    else:
        cases = [(12, 20, (2, 1), False, (0.7, 0.3)), (5, 32, (1, 2, 1), True, (0.6, 0.4))]
    runs = []

    async def body(ctx):
        for m, n, segs, masked, sp in cases:
            a, b, mask = _chain_case(rng, cfg, m, n, segs, masked, sp)
            await _run_chain(ctx, bench, a, b, mask, segs, runs)

    bench.simulate(body)
    # carry reads happen only in carry RUNs, one per task
    k = 0
    for m, n, segs, *_ in cases:
        for s in range(len(segs)):
            reads = sum(cen for _, cen in bench.traces[k])
            assert reads == (m * -(-n // cfg.rows) if s else 0)
            k += 1


def test_carry_costs_no_cycles():
    """The same operands run again with carry 0, then carry 1: same cycle count, also for very
    sparse rows (one-cycle empty tasks keep the most tasks in flight in a lane); the result is
    matmul(a, b, init=matmul(a, b)). The carry queue in block RAM (``carry_bram_lanes=1``)
    gives the same cycles as in distributed RAM."""
    cfg = get_config("tiny")
    cases = [(6, 16, 0.0, 0.0), (16, 16, 0.97, 0.1), (11, 7, 0.5, 0.9)]
    by_variant = []
    for carry_bram_lanes in (0, 1):
        rng = np.random.default_rng(2029)  # the same operands for both variants
        bench = _Bench(cfg, carry_bram_lanes)
        cycles = []

        async def body(ctx, rng=rng, bench=bench, cycles=cycles):
            for m, n, sa, sb in cases:
                a = random_operand(rng, m, 64, sa)
                b = random_operand(rng, n, 64, sb)
                await bench.load(ctx, a, b, None)
                got = []
                for carry in (0, 0, 1):  # the first RUN after a load may take a cycle more
                    status, cyc, nzm, _ = await bench.run(ctx, m, n, False, carry)
                    assert status == Status.OK and nzm == _nonzero_macs(a, b, None)
                    got.append(cyc)
                cycles.append(got[1:])
                acc = matmul(a, b, init=matmul(a, b))
                assert await bench.drain_raw(ctx, m, n) == raw_bytes(acc, relu=False)

        bench.simulate(body)
        for c0, c1 in cycles:
            assert c0 == c1, cycles
        by_variant.append(cycles)
    assert by_variant[0] == by_variant[1], by_variant


def test_carry_ready_low_stalls(rng):
    """While carry_ready is low no task is granted (no carry read) and the run waits; the
    result is still exact. A long hold at the start, then random holds."""
    cfg = get_config("small")
    bench = _Bench(cfg)
    m, n, segs = 10, 24, (1, 1)
    a, b, mask = _chain_case(rng, cfg, m, n, segs, True, (0.5, 0.2))
    pattern = rng.random(4000) < 0.4

    def plan(cyc):
        return int(cyc < 40 or pattern[cyc % len(pattern)])

    runs = []

    async def body(ctx):
        # reference cycle count without holds
        await _run_chain(ctx, bench, a, b, mask, segs, runs)
        bench.hold_plan = plan
        await _run_chain(ctx, bench, a, b, mask, segs, runs)

    bench.simulate(body)
    assert runs[0] == runs[2], "carry = 0 ignores carry_ready"
    held = bench.traces[3]
    assert not any(cen for hold, cen in held if hold), "carry read while not ready"
    assert sum(cen for _, cen in held) == m * -(-n // cfg.rows)
    first = [c for c, (_, cen) in enumerate(held) if cen][0]
    assert first == min(c for c in range(40, 4000) if not plan(c)), \
        "the first grant comes in the first cycle carry_ready is high"
    ref_first = [c for c, (_, cen) in enumerate(bench.traces[1]) if cen][0]
    assert runs[3] >= runs[1] + 40 - ref_first, runs
