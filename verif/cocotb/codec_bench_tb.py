"""Throughput of the HBM v1 encoder, decoder and loopback under Verilator (no back-pressure).

Environment: ``SEED``, ``BUS_WIDTH``, ``BLOCKS`` (blocks per tensor), ``BENCH_OUT`` (JSON path
for the rows). For each zero pattern (i.i.d., clustered) and sparsity, one tensor goes

* into the encoder alone, blocks offered every cycle, output always taken: blocks per cycle
  from the first block accepted to the last beat out;
* into the decoder alone, its golden stream offered one full beat every cycle, output always
  taken: blocks per cycle from the first beat accepted to the last block out;
* through encoder and decoder back to back: first block in to last block out.

Every run is also checked (bytes against ``golden.hbm.encode``, blocks against the input), so
a fast but wrong design cannot report a number. Two references: the bus bound
``min(1, (bus_width / 8) * n_blocks / stream bytes)`` blocks per cycle (perfect smoothing over
the whole tensor), and the per-block bound ``n_blocks / sum(max(1, bytes_b / (bus_width / 8)))``
(each block alone at one block or one beat per cycle, what a codec without queues reaches).
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

import golden.hbm
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import (
    beats_to_bytes,
    bfp_tensor,
    bytes_to_beats,
    pack_beat,
    pack_bfp_block,
    unpack_beat,
    unpack_bfp_block,
)

SEED = int(os.environ.get("SEED", "1"))
BUS_WIDTH = int(os.environ.get("BUS_WIDTH", "64"))
BLOCKS = int(os.environ.get("BLOCKS", "2048"))
BENCH_OUT = os.environ.get("BENCH_OUT")
SPARSITIES = (0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def per_block_bound(mant) -> float:
    """Blocks per cycle if every block took ``max(1, its bytes / bytes per beat)`` cycles."""
    k = (mant != 0).sum(axis=1)
    nbytes = np.where(k > 0, 3 + k, 0) + np.where(np.arange(len(k)) % 16 == 0, 2, 0)
    return len(k) / float(np.maximum(1.0, nbytes / (BUS_WIDTH // 8)).sum())


async def settle(dut, *sources):
    for s in sources:
        s.stop()
    for _ in range(5):
        await RisingEdge(dut.clk)


async def run_encoder(dut, exp, mant, stream):
    dut.loop.value = 0
    cmd = StreamSource(dut, "enc_cmd")
    src = StreamSource(dut, "i")
    sink = StreamSink(dut, "bus_o")
    cmd.send([len(exp)])
    src.send(pack_bfp_block(e, m) for e, m in zip(exp, mant, strict=True))
    beats = max(1, -(-len(stream) // (BUS_WIDTH // 8)))
    await sink.wait_for(beats, timeout=1000)
    got = beats_to_bytes([unpack_beat(BUS_WIDTH, w) for w in sink.words], BUS_WIDTH)
    assert got == stream, "encoder output differs from golden.hbm.encode"
    cycles = sink.cycles[-1] - src.sent[0] + 1
    await settle(dut, cmd, src, sink)
    return cycles


async def run_decoder(dut, exp, mant, stream):
    dut.loop.value = 0
    cmd = StreamSource(dut, "dec_cmd")
    src = StreamSource(dut, "bus_i")
    sink = StreamSink(dut, "o")
    cmd.send([len(exp)])
    src.send(pack_beat(BUS_WIDTH, *b) for b in bytes_to_beats(stream, BUS_WIDTH))
    await sink.wait_for(len(exp), timeout=1000)
    for b, w in enumerate(sink.words):
        e, m = unpack_bfp_block(w)
        assert e == exp[b] and np.array_equal(m, mant[b]), f"decoder block {b}"
    cycles = sink.cycles[-1] - src.sent[0] + 1
    await settle(dut, cmd, src, sink)
    assert int(dut.code.value) == 0
    return cycles


async def run_loopback(dut, exp, mant):
    dut.loop.value = 1
    enc_cmd = StreamSource(dut, "enc_cmd")
    dec_cmd = StreamSource(dut, "dec_cmd")
    src = StreamSource(dut, "i")
    sink = StreamSink(dut, "o")
    enc_cmd.send([len(exp)])
    dec_cmd.send([len(exp)])
    src.send(pack_bfp_block(e, m) for e, m in zip(exp, mant, strict=True))
    await sink.wait_for(len(exp), timeout=1000)
    for b, w in enumerate(sink.words):
        e, m = unpack_bfp_block(w)
        assert e == exp[b] and np.array_equal(m, mant[b]), f"loopback block {b}"
    cycles = sink.cycles[-1] - src.sent[0] + 1
    await settle(dut, enc_cmd, dec_cmd, src, sink)
    assert int(dut.code.value) == 0
    return cycles


@cocotb.test()
async def throughput(dut):
    """Sustained blocks per cycle against sparsity, both zero patterns."""
    rng = np.random.default_rng(SEED)
    start_clock(dut)
    dut.loop.value = 0
    dut.bus_i__valid.value = 0
    dut.bus_o__ready.value = 0
    await reset(dut)
    rows = []
    for clustered in (False, True):
        for s in SPARSITIES:
            exp, mant = bfp_tensor(rng, BLOCKS, s, clustered=clustered)
            stream = golden.hbm.encode(exp, mant)
            enc = await run_encoder(dut, exp, mant, stream)
            dec = await run_decoder(dut, exp, mant, stream)
            loop = await run_loopback(dut, exp, mant)
            rows.append({
                "bus_width": BUS_WIDTH,
                "pattern": "clustered" if clustered else "iid",
                "target": s,
                "sparsity": float(np.mean(mant == 0)),
                "blocks": BLOCKS,
                "bytes_per_block": len(stream) / BLOCKS,
                "bound": min(1.0, (BUS_WIDTH // 8) * BLOCKS / len(stream)),
                "per_block": per_block_bound(mant),
                "encoder": BLOCKS / enc,
                "decoder": BLOCKS / dec,
                "loopback": BLOCKS / loop,
            })
            dut._log.info("%s", rows[-1])
    if BENCH_OUT:
        with open(BENCH_OUT, "w") as f:
            json.dump(rows, f, indent=1)
