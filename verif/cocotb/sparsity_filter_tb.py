"""cocotb bench for hdl.sparsity_filter.SparsityFilter, scoreboarded against golden.sparsity.

Environment: ``SEED`` (replay), ``BLOCKS`` (blocks per test). Tensors of random length and
sparsity (0 to 0.99, clustered or scattered zeros, extremes) each get a random threshold near
their exponents and a random histogram base; the statistics are cleared before each tensor and
compared after it. The crossed matrix of input bubbles x output back-pressure runs in one
simulation.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import (
    Pacer,
    bfp_edge_tensor,
    bfp_tensor,
    pack_bfp_block,
    ref_filter,
    unpack_bfp_block,
    unpack_counters,
)

SEED = int(os.environ.get("SEED", "1"))
BLOCKS = int(os.environ.get("BLOCKS", "1000"))
SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


def jobs(rng):
    e, m = bfp_edge_tensor()
    out = [(e, m, 0, 0, 109), (e, m, 255, 255, 0), (e, m, 130, 1, 255)]
    total = 0
    while total < BLOCKS:
        n = int(rng.integers(1, 120))
        e, m = bfp_tensor(rng, n, float(rng.choice(SPARSITIES)),
                          clustered=bool(rng.random() < 0.5), extremes=bool(rng.random() < 0.3))
        live = e[e != 0]
        centre = int(rng.choice(live)) if live.size else 127
        te = int(np.clip(centre + rng.integers(-10, 11), 0, 255))
        tm = 0 if rng.random() < 0.1 else int(rng.integers(1, 256))
        out.append((e, m, te, tm, int(rng.integers(0, 256))))
        total += n
    return out


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Filtered blocks and statistics under each combination of bubbles and back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    start_clock(dut)
    dut.clear.value = 0
    await reset(dut)
    src = StreamSource(dut, "i", Pacer(rng, idle))
    sink = StreamSink(dut, "o", Pacer(rng, stall, burst=True))
    for n, (exp, mant, te, tm, base) in enumerate(jobs(rng)):
        await RisingEdge(dut.clk)
        dut.te.value, dut.tm.value, dut.base.value = te, tm, base
        dut.clear.value = 1
        await RisingEdge(dut.clk)
        dut.clear.value = 0
        start = len(sink.words)
        src.send(pack_bfp_block(e, m) for e, m in zip(exp, mant, strict=True))
        await sink.wait_for(start + len(exp), timeout=1000)
        for _ in range(10):
            if not int(dut.stats_busy.value):
                break
            await RisingEdge(dut.clk)
        assert not int(dut.stats_busy.value)
        we, wm, wst = ref_filter(exp, mant, te, tm, base)
        for b, w in enumerate(sink.words[start:]):
            e, m = unpack_bfp_block(w)
            assert e == we[b] and np.array_equal(m, wm[b]), (
                f"job {n} block {b}: te={te} tm={tm}: got E={e} m={m.tolist()}, "
                f"want E={we[b]} m={wm[b].tolist()}")
        got = {"values": dut.values.value.to_unsigned(), "zeros": dut.zeros.value.to_unsigned(),
               "filtered_zeros": dut.filtered_zeros.value.to_unsigned(),
               "hist": unpack_counters(dut.hist.value.to_unsigned(), 32, 32)}
        assert got == wst, f"job {n}: statistics {got} != {wst}"
    src.stop()
    sink.stop()
