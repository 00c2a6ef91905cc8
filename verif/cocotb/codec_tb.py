"""cocotb bench for verif.codec_loopback.CodecLoopback: encoder output fed to the decoder.

Environment: ``SEED`` (replay), ``BUS_WIDTH``, ``BLOCKS`` (blocks per test). Random tensors
(sparsity 0 to 1, clustered and scattered, extremes, empty) go into the encoder and must come
back unchanged out of the decoder with ``code == NONE``; the crossed matrix of input bubbles x
output back-pressure runs in one simulation.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from hdl.hbm_decoder import DecodeError
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import Pacer, bfp_edge_tensor, bfp_tensor, pack_bfp_block, unpack_bfp_block

SEED = int(os.environ.get("SEED", "1"))
BLOCKS = int(os.environ.get("BLOCKS", "1000"))
SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def loopback(dut, idle, stall):
    """decode(encode(t)) == t, tensor after tensor, with random flow control."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    start_clock(dut)
    dut.loop.value = 1
    dut.bus_o__ready.value = 0
    dut.bus_i__valid.value = 0
    await reset(dut)
    enc_cmd = StreamSource(dut, "enc_cmd")
    dec_cmd = StreamSource(dut, "dec_cmd")
    src = StreamSource(dut, "i", Pacer(rng, idle))
    sink = StreamSink(dut, "o", Pacer(rng, stall, burst=True))
    tensors = [bfp_edge_tensor(), bfp_tensor(rng, 0, 0.0)]
    total = 0
    while total < BLOCKS:
        n = int(rng.integers(1, 150))
        tensors.append(bfp_tensor(rng, n, float(rng.choice(SPARSITIES)),
                                  clustered=bool(rng.random() < 0.5),
                                  extremes=bool(rng.random() < 0.2)))
        total += n
    for n, (exp, mant) in enumerate(tensors):
        start = len(sink.words)
        enc_cmd.send([len(exp)])
        dec_cmd.send([len(exp)])
        src.send(pack_bfp_block(e, m) for e, m in zip(exp, mant, strict=True))
        await sink.wait_for(start + len(exp), timeout=2000)
        for _ in range(200):
            if not (int(dut.dec_busy.value) or int(dut.enc_busy.value)):
                break
            await RisingEdge(dut.clk)
        assert not int(dut.dec_busy.value) and not int(dut.enc_busy.value), f"tensor {n}: busy"
        assert DecodeError(int(dut.code.value)) == DecodeError.NONE, f"tensor {n}"
        assert len(sink.words) == start + len(exp)
        for b, w in enumerate(sink.words[start:]):
            e, m = unpack_bfp_block(w)
            assert e == exp[b] and np.array_equal(m, mant[b]), f"tensor {n} block {b}"
    for s in (enc_cmd, dec_cmd, src, sink):
        s.stop()
