"""cocotb bench for hdl.hbm_decoder.HBMDecoder, scoreboarded against ``golden.hbm.decode``.

Environment: ``SEED`` (replay), ``BUS_WIDTH`` (32 or 64), ``BLOCKS`` (blocks of valid random
tensors per test). Each test decodes valid tensors (sparsity 0 to 0.99, clustered and scattered
zeros, extremes, padding) interleaved with malformed streams of every error kind, each followed
by a good stream (recovery), then random byte corruptions; about a third of the cases are
read in budget mode (``cmd.budget``, scoreboarded against ``golden.jobs.read_stream``) with
random bytes after the stream; beats carry random ``keep`` holes and null beats. The crossed
matrix of input bubbles x output back-pressure runs in one simulation.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

import golden.hbm
from hdl.hbm_decoder import DecodeError
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.stream_budget import decoder_cmd_word, golden_budget
from verif.streams import (
    Pacer,
    bfp_edge_tensor,
    bfp_tensor,
    bytes_to_beats,
    golden_decode,
    malformed_streams,
    pack_beat,
    scatter_beats,
    unpack_bfp_block,
)

SEED = int(os.environ.get("SEED", "1"))
BUS_WIDTH = int(os.environ.get("BUS_WIDTH", "64"))
BLOCKS = int(os.environ.get("BLOCKS", "1000"))
SPARSITIES = (0.0, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99, 1.0)


def _garbage(rng):
    n = int(rng.integers(0, 100))
    if rng.random() < 0.5:
        return bytes(n)
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def budget_cases(rng, out):
    """``out`` with a budget flag per case: about a third read inside a budget, which then
    holds random bytes after the stream (not after a truncated one: they would extend it)."""
    res = []
    for data, n_blocks, tensor, emitted in out:
        if rng.random() < 0.35:
            if golden_decode(data, n_blocks)[0] in ("TRAILING_DATA", "BAD_PADDING", "NONE"):
                emitted = None
            if golden_budget(data, n_blocks)[0] != "TRUNCATED":
                data = data + _garbage(rng)
            res.append((data, n_blocks, tensor, emitted, True))
        else:
            res.append((data, n_blocks, tensor, emitted, False))
    return res


def cases(rng):
    """``[(data, n_blocks, tensor or None, expected emitted count or None, budget)]``."""
    out = []
    e, m = bfp_edge_tensor()
    out.append((golden.hbm.encode(e, m), len(e), (e, m), None))
    total = 0
    while total < BLOCKS:
        n = int(rng.integers(0, 150))
        e, m = bfp_tensor(rng, n, float(rng.choice(SPARSITIES)),
                          clustered=bool(rng.random() < 0.5), extremes=bool(rng.random() < 0.2))
        total += n
        out.append((golden.hbm.encode(e, m) + bytes(int(rng.integers(0, 8))), n, (e, m), None))
        if rng.random() < 0.3:
            for kind, data, emitted in malformed_streams(rng, e, m):
                assert golden_decode(data, n)[0] == kind
                out.append((data, n, (e, m), emitted))
                out.append((golden.hbm.encode(e, m), n, (e, m), None))
    for _ in range(20):
        e, m = bfp_tensor(rng, int(rng.integers(1, 40)), float(rng.choice([0.3, 0.8, 0.97])))
        d = bytearray(golden.hbm.encode(e, m))
        d[int(rng.integers(0, len(d)))] = int(rng.integers(0, 256))
        out.append((bytes(d), len(e), None, None))
    return budget_cases(rng, out)


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Golden verdicts and blocks under each combination of bubbles and back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    start_clock(dut)
    await reset(dut)
    cmd = StreamSource(dut, "cmd")
    src = StreamSource(dut, "i", Pacer(rng, idle))
    sink = StreamSink(dut, "o", Pacer(rng, stall, burst=True))
    for n, (data, n_blocks, tensor, emitted, budget) in enumerate(cases(rng)):
        scatter = rng.random() < 0.5
        beats = scatter_beats(rng, data, BUS_WIDTH) if scatter else bytes_to_beats(data, BUS_WIDTH)
        start = len(sink.words)
        cmd.send([decoder_cmd_word(n_blocks, budget)])
        src.send(pack_beat(BUS_WIDTH, *b) for b in beats)
        limit = 100 * (len(data) + n_blocks) + 1000
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        for _ in range(limit):  # never hangs: done within a bound set by the stream's length
            if not src.idle or not cmd.idle or int(dut.busy.value):
                await RisingEdge(dut.clk)
            else:
                break
        assert src.idle and cmd.idle and not int(dut.busy.value), f"case {n}: still busy"
        await RisingEdge(dut.clk)
        code = DecodeError(int(dut.code.value)).name
        assert int(dut.error.value) == (code != "NONE")
        blocks = [unpack_bfp_block(w) for w in sink.words[start:]]
        want, we, wm = (golden_budget(data, n_blocks)[:3] if budget
                        else golden_decode(data, n_blocks))
        assert code == want, f"case {n}: code {code}, golden says {want}"
        if want == "NONE":
            assert len(blocks) == n_blocks, f"case {n}: {len(blocks)} blocks for {n_blocks}"
            for b, (e, m) in enumerate(blocks):
                assert e == we[b] and np.array_equal(m, wm[b]), f"case {n} block {b}"
        else:
            assert len(blocks) <= n_blocks
            if emitted is not None:
                assert len(blocks) == emitted, f"case {n}: {len(blocks)} blocks, want {emitted}"
            if tensor is not None:
                for b, (e, m) in enumerate(blocks):
                    assert e == tensor[0][b] and np.array_equal(m, tensor[1][b]), \
                        f"case {n} block {b}"
    for s in (cmd, src, sink):
        s.stop()
