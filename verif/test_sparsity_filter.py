"""Sparsity filter against ``golden.sparsity`` (filter and statistics): Amaranth sim, Verilator."""

# amaranth: UnusedElaboratable=no

import numpy as np
import pytest
from amaranth.hdl import Fragment, Value
from amaranth.sim import Simulator

import golden.sparsity
from hdl.sparsity_filter import HIST_BINS, LANES, SparsityFilter
from verif.harness import run_cocotb
from verif.streams import (
    Pacer,
    bfp_edge_tensor,
    bfp_tensor,
    pack_bfp_block,
    ref_filter,
    stream_get,
    stream_put,
    unpack_bfp_block,
)


@pytest.mark.parametrize("count_w", [0, 65, -1, 8.0, "32", True, None])
def test_count_width_is_validated(count_w):
    with pytest.raises(ValueError,
                       match=rf"^Counter width must be an integer in \[1, 64\], not {count_w!r}$"):
        SparsityFilter(count_w)


@pytest.mark.parametrize("lanes", [0, 3, 32, -1, 16.0, True, "16", None])
def test_lanes_are_validated(lanes):
    with pytest.raises(ValueError, match=rf"^Lanes must be one of 16, 8, 4, 2, 1, not {lanes!r}$"):
        SparsityFilter(lanes=lanes)


def test_constants_match_golden():
    assert HIST_BINS == golden.sparsity.HIST_BINS
    dut = SparsityFilter()
    assert dut.count_w == golden.sparsity.COUNT_W
    assert dut.lanes == 16
    Fragment.get(dut, None)
    for lanes in LANES:
        dut = SparsityFilter(lanes=lanes)
        assert dut.lanes == lanes
        Fragment.get(dut, None)


LANE_CASES = [16, 8, 4, 1]  # 8 and more lanes bin by rotation, 4 and fewer by decoding


def run_filter(jobs, count_w=32, rng=None, in_prob=0.0, out_prob=0.0, lanes=16):
    """Filter each job ``(exp, mant, te, tm, base)`` as one tensor: clear, stream, read counters.

    Returns ``[(E_out, m_out, stats dict)]``.
    """
    dut = SparsityFilter(count_w, lanes=lanes)
    results = []

    async def tb(ctx):
        for exp, mant, te, tm, base in jobs:
            ctx.set(dut.te, te)
            ctx.set(dut.tm, tm)
            ctx.set(dut.base, base)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            words = []
            # Producer and consumer interleave inside this one testbench, cycle by cycle.
            pending = [pack_bfp_block(e, m) for e, m in zip(exp, mant, strict=True)]
            in_pacer = Pacer(rng, in_prob) if in_prob else None
            out_pacer = Pacer(rng, out_prob) if out_prob else None
            idle = 0
            while len(words) < len(exp):
                offer = bool(pending) and not (in_pacer and in_pacer.stall())
                take = not (out_pacer and out_pacer.stall())
                ctx.set(dut.i.valid, int(offer))
                if offer:
                    ctx.set(Value.cast(dut.i.payload), pending[0])
                ctx.set(dut.o.ready, int(take))
                _, _, i_ready, o_valid, o_payload = await ctx.tick().sample(
                    dut.i.ready, dut.o.valid, Value.cast(dut.o.payload))
                if offer and i_ready:
                    pending.pop(0)
                if take and o_valid:
                    words.append(o_payload)
                    idle = 0
                else:
                    idle += 1
                    assert idle < 1000, "filter output stuck"
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)
            await ctx.tick().until(dut.stats_busy == 0)
            blocks = [unpack_bfp_block(w) for w in words]
            stats = {"values": ctx.get(dut.values), "zeros": ctx.get(dut.zeros),
                     "filtered_zeros": ctx.get(dut.filtered_zeros),
                     "hist": [ctx.get(dut.hist[i]) for i in range(HIST_BINS)]}
            results.append((np.array([b[0] for b in blocks], np.uint8).reshape(-1),
                            np.stack([b[1] for b in blocks]) if blocks
                            else np.zeros((0, 16), np.int8), stats))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def check(jobs, results, count_w=32):
    for n, ((exp, mant, te, tm, base), (e, m, st)) in enumerate(zip(jobs, results, strict=True)):
        we, wm, wst = ref_filter(exp, mant, te, tm, base, count_w)
        assert np.array_equal(e, we), f"job {n}: exponents"
        assert np.array_equal(m, wm), f"job {n}: mantissas"
        assert st == wst, f"job {n}: statistics {st} != {wst}"


def threshold_jobs(rng):
    """Thresholds at and around each block's exponent, boundary ties, extremes."""
    exp, mant = bfp_edge_tensor()
    jobs = [(exp, mant, 0, 0, 109), (exp, mant, 255, 255, 0), (exp, mant, 0, 255, 255)]
    e, m = bfp_tensor(rng, 40, 0.3, extremes=True)
    for d in (-20, -9, -8, -7, -1, 0, 1, 7, 8, 9, 20):
        te = int(np.clip(127 + d, 0, 255))
        jobs.append((e, m, te, int(rng.integers(1, 256)), int(rng.integers(0, 256))))
    # Exact ties: |m| * 2**E == tm * 2**te is kept (strict comparison).
    e = np.full(4, 130, np.uint8)
    m = np.tile(np.array([64, -64, 63, 65, 32, 1, 127, -127, 2, 4, 8, 16, 0, 0, -1, 3],
                         np.int8), (4, 1))
    for tm, te in ((64, 130), (128, 129), (16, 132), (255, 122), (1, 136)):
        jobs.append((e, m, te, tm, 120))
    return jobs


@pytest.mark.parametrize("lanes", LANE_CASES)
def test_thresholds_and_ties(rng, lanes):
    jobs = threshold_jobs(rng)
    check(jobs, run_filter(jobs, rng=rng, lanes=lanes))


@pytest.mark.parametrize("lanes", LANE_CASES)
def test_random_tensors_with_flow_control(rng, lanes):
    jobs = []
    for s in (0.0, 0.5, 0.9, 0.99):
        e, m = bfp_tensor(rng, int(rng.integers(1, 60)), s, clustered=bool(rng.random() < .5))
        jobs.append((e, m, int(rng.integers(100, 160)), int(rng.integers(0, 256)),
                     int(rng.integers(90, 130))))
    check(jobs, run_filter(jobs, rng=rng, in_prob=0.3, out_prob=0.4, lanes=lanes))


@pytest.mark.slow
@pytest.mark.parametrize("lanes", LANES)
def test_random_tensors_long(rng, lanes):
    jobs = []
    for s in (0.0, 0.3, 0.7, 0.95):
        for clustered in (False, True):
            e, m = bfp_tensor(rng, int(rng.integers(100, 300)), s, clustered=clustered)
            jobs.append((e, m, int(rng.integers(90, 170)), int(rng.integers(0, 256)),
                         int(rng.integers(80, 140))))
    check(jobs, run_filter(jobs, rng=rng, in_prob=0.2, out_prob=0.3, lanes=lanes))
    check(jobs[:3], run_filter(jobs[:3], rng=rng, lanes=lanes))


@pytest.mark.parametrize("lanes", LANE_CASES)
def test_counters_saturate(rng, lanes):
    # 6-bit counters: values saturates after 4 blocks, the histogram soon after.
    e, m = bfp_tensor(rng, 30, 0.1)
    jobs = [(e, m, 127, 100, 120), (e[:3], m[:3], 127, 100, 120)]
    results = run_filter(jobs, count_w=6, rng=rng, lanes=lanes)
    check(jobs, results, count_w=6)
    assert results[0][2]["values"] == 63 and results[1][2]["values"] == 48


@pytest.mark.parametrize("lanes", LANE_CASES)
@pytest.mark.parametrize("count_w", [1, 3, 4, 5])
def test_narrow_counters_saturate(rng, lanes, count_w):
    # Counters narrower than (and as wide as) one cycle's increment.
    e, m = bfp_tensor(rng, 6, 0.2, extremes=True)
    jobs = [(e, m, 127, 100, 120), (e[:1], m[:1], 127, 100, 125), (e[:0], m[:0], 0, 0, 0)]
    check(jobs, run_filter(jobs, count_w=count_w, rng=rng, lanes=lanes), count_w=count_w)


@pytest.mark.parametrize("lanes", LANE_CASES)
def test_clear_while_streaming(rng, lanes):
    """A clear pulse in the middle of a stream: exactly the blocks accepted from its cycle on."""
    e, m = bfp_tensor(rng, 24, 0.3)
    te, tm, base = 127, 60, 118
    dut = SparsityFilter(lanes=lanes)
    res = {}

    async def tb(ctx):
        ctx.set(dut.te, te)
        ctx.set(dut.tm, tm)
        ctx.set(dut.base, base)
        ctx.set(dut.o.ready, 1)
        pacer = Pacer(rng, 0.3)
        pending = [pack_bfp_block(a, b) for a, b in zip(e, m, strict=True)]
        clear_at = int(rng.integers(4, 20)) * (16 // lanes)
        cycle, first_counted = 0, None
        while pending:
            offer = not pacer.stall()
            ctx.set(dut.i.valid, int(offer))
            ctx.set(Value.cast(dut.i.payload), pending[0])
            ctx.set(dut.clear, int(cycle == clear_at))
            ctx.set(dut.o.ready, int(rng.random() < 0.7))  # back-pressure holds a block in work
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            if offer and ready:
                if cycle >= clear_at and first_counted is None:
                    first_counted = len(e) - len(pending)
                pending.pop(0)
            cycle += 1
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.clear, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick().until(dut.stats_busy == 0)
        assert first_counted is not None and first_counted > 0
        res["first"] = first_counted
        res["stats"] = {"values": ctx.get(dut.values), "zeros": ctx.get(dut.zeros),
                        "filtered_zeros": ctx.get(dut.filtered_zeros),
                        "hist": [ctx.get(dut.hist[i]) for i in range(HIST_BINS)]}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    k = res["first"]
    assert res["stats"] == ref_filter(e[k:], m[k:], te, tm, base)[2]


@pytest.mark.parametrize("lanes", LANES)
def test_block_rate_and_latency(rng, lanes):
    e, m = bfp_tensor(rng, 50, 0.5)
    dut = SparsityFilter(lanes=lanes)
    result = {}

    async def put(ctx):
        ctx.set(dut.tm, 40)
        ctx.set(dut.te, 127)
        await stream_put(ctx, dut.i, [pack_bfp_block(a, b) for a, b in zip(e, m, strict=True)])

    async def get(ctx):
        result["c"] = (await stream_get(ctx, dut.o, len(e)))[1]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(put)
    sim.add_testbench(get)
    sim.run()
    if lanes == 16:
        assert result["c"] == list(range(1, 51))  # latency 1, then one block per cycle
    else:  # one block every 16 / lanes cycles, latency 16 / lanes + 1
        period = 16 // lanes
        assert result["c"] == [period * (k + 1) for k in range(50)]


@pytest.mark.cocotb
def test_verilator(seed):
    run_cocotb(SparsityFilter(), name="sparsity_filter",
               test_module="verif.cocotb.sparsity_filter_tb", test_id="sparsity_filter",
               seed=seed, extra_env={"BLOCKS": 2000})


@pytest.mark.cocotb
def test_verilator_lanes4(seed):
    run_cocotb(SparsityFilter(lanes=4), name="sparsity_filter",
               test_module="verif.cocotb.sparsity_filter_tb", test_id="sparsity_filter_l4",
               seed=seed, extra_env={"BLOCKS": 1000})


@pytest.mark.cocotb
@pytest.mark.slow
def test_verilator_long(seed):
    run_cocotb(SparsityFilter(), name="sparsity_filter",
               test_module="verif.cocotb.sparsity_filter_tb", test_id="sparsity_filter_long",
               seed=seed, extra_env={"BLOCKS": 40000})
