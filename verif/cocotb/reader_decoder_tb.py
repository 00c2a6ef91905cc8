"""cocotb bench for verif.test_reader_decoder.ReaderDecoder: budgeted operand reads.

Each case stores an HBM v1 stream followed by random bytes in AxiRam, reads a byte budget
from its start with the DMA reader into the decoder in budget mode (``reader.stop =
decoder.tail``) and checks: blocks and verdict against ``golden.jobs.read_stream`` of the
budget; the reader's ``done`` with ``OK``; and the beats read (``beats_read``): for a stream
that ends inside its budget at most the stream's beats plus the decoder's input queue and byte
buffer plus the bursts in flight (``OUTSTANDING * BURST``), well short of a long budget; for a
truncated or malformed stream (``tail`` never rises) the whole budget. Random latency on the
AXI channels and back-pressure on the decoder's output.

Environment: ``SEED``, ``DW``, ``AW``, ``MEM``, ``BURST``, ``OUTSTANDING``, ``FIFO``.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

import golden.hbm
from hdl.dma import DMAError
from hdl.hbm_decoder import DecodeError
from verif.cocotb.axi_mem import FaultyAxiRam
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.stream_budget import decoder_cmd_word, golden_budget
from verif.streams import Pacer, bfp_tensor, unpack_bfp_block

DW = int(os.environ["DW"])
AW = int(os.environ["AW"])
MEM = int(os.environ["MEM"])
BURST = int(os.environ["BURST"])
OUTSTANDING = int(os.environ["OUTSTANDING"])
FIFO = int(os.environ["FIFO"])
SEED = int(os.environ.get("SEED", "1"))
BPB = DW // 8
#: beats a stream's read may run past its end: the decoder's input queue, its 40-byte buffer
#: and pipeline (a few beats), and the bursts in flight when tail rises
SLACK = FIFO + 40 // BPB + 4 + OUTSTANDING * BURST


def beats(n_bytes):
    return -(-n_bytes // BPB)


@cocotb.test()
@cocotb.parametrize(prob=[0.0, 0.3])
async def budget_reads(dut, prob):
    rng = np.random.default_rng([SEED, int(prob * 10)])
    start_clock(dut)
    ram = FaultyAxiRam(dut, "axi_", size=MEM)
    ram.set_pacing(prob, SEED)
    await reset(dut)
    rd_cmd = StreamSource(dut, "rd_cmd")
    dec_cmd = StreamSource(dut, "dec_cmd")
    sink = StreamSink(dut, "o", Pacer(rng, prob, burst=True))
    done = []

    async def watch():
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            if int(dut.rd_done.value):
                done.append(DMAError(int(dut.rd_error.value)))

    cocotb.start_soon(watch())
    kinds = {}
    worst = 0  # most beats read past a stream's end
    saved = 0  # beats of budget not read
    for n in range(40):
        nblk = int(rng.integers(0, 120))
        e, m = bfp_tensor(rng, nblk, float(rng.choice([0.0, 0.5, 0.9, 0.99, 1.0])),
                          clustered=bool(rng.random() < 0.5))
        data = bytearray(golden.hbm.encode(e, m))
        budget = len(data) + int(rng.integers(0, 4000))
        if n % 7 == 3 and data:  # a budget too small: TRUNCATED
            budget = int(rng.integers(1, len(data) + 1))
        if n % 7 == 5 and data:  # a corrupted stream: whatever golden says
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        budget = max(budget, 1)
        addr = int(rng.integers(0, (MEM - max(budget, len(data))) // BPB)) * BPB
        image = rng.integers(0, 256, MEM, dtype=np.uint8)
        image[addr:addr + len(data)] = np.frombuffer(bytes(data), np.uint8)
        ram.write(0, image.tobytes())
        mem = image.tobytes()[addr:addr + budget]
        want, we, wm, end = golden_budget(mem, nblk)
        kinds[want] = kinds.get(want, 0) + 1

        start, nd = len(sink.words), len(done)
        read0 = int(dut.beats_read.value)
        dec_cmd.send([decoder_cmd_word(nblk, True)])
        rd_cmd.send([addr | budget << AW])
        for _ in range(50 * beats(budget) + 2000):
            await RisingEdge(dut.clk)
            if len(done) > nd and dec_cmd.idle and not int(dut.dec_busy.value) \
                    and not int(dut.o__valid.value):
                break
        assert len(done) == nd + 1, f"case {n}: reader not done"
        await RisingEdge(dut.clk)
        assert not int(dut.dec_busy.value), f"case {n}: decoder busy"
        assert done[-1] == DMAError.OK, (n, done[-1])
        code = int(dut.code.value)
        read = int(dut.beats_read.value) - read0
        assert DecodeError(code).name == want, (n, DecodeError(code).name, want)
        blocks = [unpack_bfp_block(w) for w in sink.words[start:]]
        if want == "NONE":
            assert len(blocks) == nblk
            for b, (ge, gm) in enumerate(blocks):
                assert ge == we[b] and np.array_equal(gm, wm[b]), f"case {n} block {b}"
            # the read stopped: the stream, plus at most the queue, buffer and bursts in flight
            assert beats(end) <= read <= min(beats(budget), beats(end) + SLACK), \
                (n, end, budget, read)
            worst = max(worst, read - beats(end))
            saved += beats(budget) - read
        else:  # tail never rose: the whole budget
            assert read == beats(budget), (n, want, read, budget)
    cocotb.log.info(f"kinds {kinds}; most beats read past a stream's end {worst} "
                    f"(bound {SLACK}); budget beats not read {saved}")
    assert kinds.get("NONE", 0) >= 20 and kinds.get("TRUNCATED", 0) >= 3, kinds
    assert saved > 10 * SLACK  # the stop saved reads
    for s in (rd_cmd, dec_cmd, sink):
        s.stop()
