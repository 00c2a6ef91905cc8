"""cocotb bench for hdl.bfp_converter.BFPConverter, scoreboarded against the golden model.

Environment: ``SEED`` (replay), ``BLOCKS`` (random blocks per test), ``INTERVAL`` and
``LATENCY`` (the converter's cycles per block and latency at full rate: 1 and 4 for the default
``lanes=16``). The crossed matrix of input bubbles x output back-pressure runs in one
simulation.
"""

import os

import cocotb
import numpy as np

from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import (
    Pacer,
    acc_edge_cases,
    acc_random,
    pack_acc_block,
    ref_convert,
    unpack_bfp_block,
)

SEED = int(os.environ.get("SEED", "1"))
BLOCKS = int(os.environ.get("BLOCKS", "200"))
INTERVAL = int(os.environ.get("INTERVAL", "1"))
LATENCY = int(os.environ.get("LATENCY", "4"))


def stimulus(rng):
    """Edge cases, then random blocks over sparsity 0..0.99 and narrow/wide exponent spreads."""
    parts = [acc_edge_cases(rng)]
    per = max(1, BLOCKS // 8)
    for sparsity in (0.0, 0.5, 0.9, 0.99):
        for spread in (0, 40):
            parts.append(acc_random(rng, per, sparsity=sparsity, exp_spread=spread))
    mant = np.concatenate([p[0] for p in parts])
    exp = np.concatenate([p[1] for p in parts])
    return mant, exp


async def check(dut, rng, idle: float, stall: float):
    mant, exp = stimulus(rng)
    want_e, want_m = ref_convert(mant, exp)
    start_clock(dut)
    await reset(dut)
    src = StreamSource(dut, "i", Pacer(rng, idle))
    sink = StreamSink(dut, "o", Pacer(rng, stall, burst=True))
    src.send(pack_acc_block(a, b) for a, b in zip(mant, exp, strict=True))
    await sink.wait_for(len(mant), timeout=1000)
    src.stop()
    sink.stop()
    assert len(sink.words) == len(mant)
    for n, word in enumerate(sink.words):
        e, m = unpack_bfp_block(word)
        assert e == want_e[n] and np.array_equal(m, want_m[n]), (
            f"block {n}: S={mant[n].tolist()} ea={exp[n].tolist()}: got E={e} m={m.tolist()}, "
            f"want E={want_e[n]} m={want_m[n].tolist()}")
    return src, sink


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Golden match under each combination of input bubbles and output back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    src, sink = await check(dut, rng, idle, stall)
    if idle == 0 and stall == 0:
        # Full rate: one block every INTERVAL cycles, the first LATENCY cycles after it went in.
        assert sink.cycles[0] - src.sent[0] == LATENCY
        assert np.all(np.diff(sink.cycles) == INTERVAL)
