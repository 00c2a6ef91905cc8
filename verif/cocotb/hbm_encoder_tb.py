"""cocotb bench for hdl.hbm_encoder.HBMEncoder, scoreboarded against ``golden.hbm.encode``.

Environment: ``SEED`` (replay), ``BUS_WIDTH`` (32 or 64), ``BLOCKS`` (blocks per test, spread
over tensors of random length, sparsity 0 to 0.99, clustered and scattered zeros, exponent and
mantissa extremes, empty tensors). The crossed matrix of input bubbles x output back-pressure
runs in one simulation.
"""

import os

import cocotb
import numpy as np

import golden.hbm
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import (
    Pacer,
    beats_to_bytes,
    bfp_edge_tensor,
    bfp_tensor,
    pack_bfp_block,
    unpack_beat,
)

SEED = int(os.environ.get("SEED", "1"))
BUS_WIDTH = int(os.environ.get("BUS_WIDTH", "64"))
BLOCKS = int(os.environ.get("BLOCKS", "1000"))
SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


def tensors(rng):
    """Random tensors adding up to about ``BLOCKS`` blocks, plus edge cases."""
    out = [bfp_edge_tensor(), bfp_tensor(rng, 0, 0.5), bfp_tensor(rng, 17, 1.0)]
    total = 0
    while total < BLOCKS:
        n = int(rng.integers(1, 200))
        s = float(rng.choice(SPARSITIES))
        out.append(bfp_tensor(rng, n, s, clustered=bool(rng.random() < 0.5),
                              extremes=bool(rng.random() < 0.2)))
        total += n
    return out


def split_packets(words):
    """Group beat payloads into packets at ``last``."""
    packets, cur = [], []
    for w in words:
        beat = unpack_beat(BUS_WIDTH, w)
        cur.append(beat)
        if beat[2]:
            packets.append(cur)
            cur = []
    assert not cur, "beats after the last packet's last"
    return packets


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Byte-exact match under each combination of input bubbles and output back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    ts = tensors(rng)
    want = [golden.hbm.encode(e, m) for e, m in ts]
    start_clock(dut)
    await reset(dut)
    cmd = StreamSource(dut, "cmd")
    src = StreamSource(dut, "i", Pacer(rng, idle))
    sink = StreamSink(dut, "o", Pacer(rng, stall, burst=True))
    cmd.send(len(e) for e, _ in ts)
    src.send(pack_bfp_block(e, m) for t in ts for e, m in zip(*t, strict=True))
    n_beats = sum(max(1, -(-len(w) // (BUS_WIDTH // 8))) for w in want)
    await sink.wait_for(n_beats, timeout=2000)
    for _ in range(10):  # nothing more may come out
        await cocotb.triggers.RisingEdge(dut.clk)
    assert len(sink.words) == n_beats
    assert int(dut.busy.value) == 0
    for s in (cmd, src, sink):
        s.stop()
    packets = split_packets(sink.words)
    assert len(packets) == len(ts)
    for n, (p, w) in enumerate(zip(packets, want, strict=True)):
        got = beats_to_bytes(p, BUS_WIDTH)
        assert got == w, f"tensor {n} ({len(ts[n][0])} blocks): {got.hex()} != {w.hex()}"
