"""cocotb testbench for hdl.dma: reader and writer against cocotbext-axi's AxiRam.

The DUT is a :class:`verif.test_dma.DMAPair`: a reader and a writer sharing one AXI4 port
(``axi__*``), with the reader's output looped to nothing (``rd_out``) and the writer's input
(``wr_inp``) driven by the bench. Memory latency and back-pressure are randomized with
AxiRam's pause generators; stream bubbles and back-pressure with :class:`verif.streams.Pacer`.
A monitor records the read address channel, the R handshakes and the reader's ``stop`` every
cycle, so the stop tests can check that no burst is issued after ``stop``.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from hdl.dma import DMAError
from verif.cocotb.axi_mem import FaultyAxiRam
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.streams import Pacer, beats_to_bytes, bytes_to_beats, pack_beat, unpack_beat

DW = int(os.environ["DW"])
AW = int(os.environ["AW"])
MEM = int(os.environ["MEM"])
BPB = DW // 8
SEED = int(os.environ.get("SEED", "1"))


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.rng = np.random.default_rng(SEED)
        start_clock(dut)
        # 2 * MEM of storage, but accesses at or above MEM fail with SLVERR
        self.ram = FaultyAxiRam(dut, "axi_", size=2 * MEM, limit=MEM)
        self.rd_cmd = StreamSource(dut, "rd_cmd")
        self.wr_cmd = StreamSource(dut, "wr_cmd")
        self.rd_out = StreamSink(dut, "rd_out")
        self.wr_inp = StreamSource(dut, "wr_inp")
        self.done = {"rd": [], "wr": []}
        self.cycle = 0
        self.ar = []  # (cycle arvalid rose for it, address, beats) per AR handshake
        self.r = []  # (cycle, rresp) per R handshake
        self.stop_at = []  # cycles with stop high while the reader is busy
        dut.rd_stop.value = 0
        cocotb.start_soon(self._watch_done())
        cocotb.start_soon(self._watch_axi())

    async def _watch_axi(self):
        rose = None
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            self.cycle += 1
            d = self.dut
            valid, ready = int(d.axi__arvalid.value), int(d.axi__arready.value)
            if valid and rose is None:
                rose = self.cycle
            if valid and ready:
                self.ar.append((rose, int(d.axi__araddr.value), int(d.axi__arlen.value) + 1))
                rose = None
            if int(d.axi__rvalid.value) and int(d.axi__rready.value):
                self.r.append((self.cycle, int(d.axi__rresp.value)))
            if int(d.rd_stop.value) and int(d.rd_busy.value):
                self.stop_at.append(self.cycle)

    def set_pacing(self, prob):
        """Random stalls on every AXI channel and both streams with probability ``prob``."""
        self.rd_out._pacer = Pacer(self.rng, prob)
        self.wr_inp._pacer = Pacer(self.rng, prob)
        self.ram.set_pacing(prob, SEED)

    async def _watch_done(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            for side in ("rd", "wr"):
                if self.dut[f"{side}_done"].value:
                    err = DMAError(int(self.dut[f"{side}_error"].value))
                    resp = int(self.dut[f"{side}_bus_resp"].value)
                    extra = {}
                    if side == "wr":
                        extra["written"] = int(self.dut.wr_written.value)
                    self.done[side].append((err, resp, extra))

    async def wait_done(self, side, count, timeout=50_000):
        for _ in range(timeout):
            if len(self.done[side]) >= count:
                return self.done[side][count - 1]
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"{side}: no done after {timeout} cycles")

    async def read(self, addr, length, stop_after=None):
        """One read; with ``stop_after``, ``stop`` rises that many cycles after the command is
        queued and falls after ``done``."""
        n = len(self.done["rd"])
        start = len(self.rd_out.words)
        self.rd_cmd.send([addr | length << AW])
        if stop_after is not None:
            for _ in range(stop_after):
                await RisingEdge(self.dut.clk)
            self.dut.rd_stop.value = 1
        res = await self.wait_done("rd", n + 1)
        self.dut.rd_stop.value = 0
        beats = [unpack_beat(DW, w) for w in self.rd_out.words[start:]]
        return res, beats

    async def write(self, addr, capacity, payload: bytes):
        n = len(self.done["wr"])
        self.wr_cmd.send([addr | capacity << AW])
        self.wr_inp.send(pack_beat(DW, *b) for b in bytes_to_beats(payload, DW))
        return await self.wait_done("wr", n + 1)


async def _start(dut):
    tb = TB(dut)
    await reset(dut)
    return tb


@cocotb.test()
async def read_random(dut):
    """Random aligned reads, 4 KiB crossings, partial last beats, random latency."""
    tb = await _start(dut)
    for prob in (0.0, 0.3):
        tb.set_pacing(prob)
        image = tb.rng.integers(0, 256, MEM, dtype=np.uint8).tobytes()
        tb.ram.write(0, image)
        cases = [(0, 1), (0, BPB), (4096 - BPB, 2 * BPB), (4096 - 3 * BPB, 100)]
        cases += [(int(tb.rng.integers(0, (MEM - 5000) // BPB)) * BPB,
                   int(tb.rng.integers(1, 5000))) for _ in range(12)]
        for addr, length in cases:
            (err, resp, _), beats = await tb.read(addr, length)
            assert err == DMAError.OK, (addr, length, err)
            assert beats[-1][2] == 1 and all(b[2] == 0 for b in beats[:-1])
            assert beats_to_bytes(beats, DW) == image[addr:addr + length], (addr, length)


@cocotb.test()
async def write_random(dut):
    """Random writes of unknown length into a capacity, 4 KiB crossings, random latency."""
    tb = await _start(dut)
    for prob in (0.0, 0.3):
        tb.set_pacing(prob)
        tb.ram.write(0, bytes(2 * MEM))
        for n in range(12):
            length = int(tb.rng.integers(1, 3000)) if n else 1
            addr = int(tb.rng.integers(0, (MEM - 4000) // BPB)) * BPB if n > 1 else 4096 - BPB
            payload = tb.rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            before = tb.ram.read(0, MEM)
            cap = -(-length // BPB) * BPB + BPB * int(tb.rng.integers(0, 3))
            err, resp, extra = await tb.write(addr, cap, payload)
            assert err == DMAError.OK and extra["written"] == length, (err, extra, length)
            after = tb.ram.read(0, MEM)
            assert after[addr:addr + length] == payload
            # nothing outside the written bytes changed
            assert after[:addr] == before[:addr]
            assert after[addr + length:] == before[addr + length:]


@cocotb.test()
async def errors_then_recovery(dut):
    """Bad commands, bus errors and overflow end in a status; the next command works."""
    tb = await _start(dut)
    image = tb.rng.integers(0, 256, MEM, dtype=np.uint8).tobytes()
    tb.ram.write(0, image)
    # reader: zero length, misaligned address -> BAD_COMMAND, no data
    for addr, length in ((0, 0), (BPB // 2, 16)):
        (err, _, _), beats = await tb.read(addr, length)
        assert err == DMAError.BAD_COMMAND and beats == []
    # reader: beyond the RAM -> SLVERR, every beat still delivered up to last
    (err, resp, _), beats = await tb.read(MEM - 2 * BPB, 6 * BPB)
    assert err == DMAError.BUS and resp == 2 and len(beats) == 6 and beats[-1][2] == 1
    (err, _, _), beats = await tb.read(64, 40)
    assert err == DMAError.OK and beats_to_bytes(beats, DW) == image[64:104]
    # writer: bad command drains the input to last and writes nothing
    tb.ram.write(0, bytes(2 * MEM))
    for addr, cap in ((0, 0), (BPB // 2, 64), (0, BPB + 1)):
        err, _, extra = await tb.write(addr, cap, bytes(range(1, 50)))
        assert err == DMAError.BAD_COMMAND and extra["written"] == 0
    assert tb.ram.read(0, 2 * MEM) == bytes(2 * MEM)
    # writer: overflow keeps what fits
    err, _, extra = await tb.write(256, 2 * BPB, bytes(range(1, 41)))
    assert err == DMAError.OVERFLOW and extra["written"] == 2 * BPB
    assert tb.ram.read(256, 2 * BPB + 8) == bytes(range(1, 2 * BPB + 1)) + bytes(8)
    # writer: beyond the RAM -> SLVERR
    err, resp, _ = await tb.write(MEM - BPB, 4 * BPB, bytes(4 * BPB))
    assert err == DMAError.BUS and resp == 2
    # and it still works
    err, _, extra = await tb.write(512, 64, bytes(range(7, 30)))
    assert err == DMAError.OK and extra["written"] == 23
    assert tb.ram.read(512, 23) == bytes(range(7, 30))


@cocotb.test()
async def read_stop(dut):
    """``stop`` at random times: no burst after it, the stream ends with last, done pulses."""
    tb = await _start(dut)
    stopped_early = extra_beats = 0
    for prob in (0.0, 0.3):
        tb.set_pacing(prob)
        image = tb.rng.integers(0, 256, 2 * MEM, dtype=np.uint8).tobytes()
        tb.ram.write(0, image)
        for n in range(40):
            if n % 10 == 9:  # into the SLVERR region: BUS if a delivered beat had an error
                addr = MEM - BPB * int(tb.rng.integers(1, 40))
            else:
                addr = int(tb.rng.integers(0, (MEM - 5000) // BPB)) * BPB
            length = int(tb.rng.integers(1, 5000))
            stop_after = None if n % 8 == 7 else 0 if n == 0 else int(tb.rng.integers(0, 300))
            ar0, r0, s0, c0 = len(tb.ar), len(tb.r), len(tb.stop_at), tb.cycle
            beats_read0 = int(dut.rd_beats_read.value)
            (err, resp, _), beats = await tb.read(addr, length, stop_after)
            ars, rs, stops = tb.ar[ar0:], tb.r[r0:], tb.stop_at[s0:]
            # the stream: exactly one last, on the final beat; bytes a prefix of the command's
            assert beats and beats[-1][2] == 1 and all(b[2] == 0 for b in beats[:-1]), n
            got = beats_to_bytes(beats, DW)
            ok = max(0, min(len(got), MEM - addr))  # failing beats (SLVERR) carry no data
            assert got[:ok] == image[addr:addr + ok], (n, addr, length)
            # every R beat delivered, no more and no fewer than the bursts issued
            assert len(rs) == sum(b for *_, b in ars) == int(dut.rd_beats_read.value) \
                - beats_read0, n
            data_beats = [b for b in beats if b[1]]
            assert len(rs) == len(beats) - (beats[-1][1] == 0), n
            assert len(data_beats) == len(beats) - (beats[-1][1] == 0)
            # bursts contiguous from addr, all within the command
            at = addr
            for _, a, k in ars:
                assert a == at, n
                at += k * BPB
            assert at <= addr + -(-length // BPB) * BPB
            if stops:
                first = stops[0]
                # no address presented from the stop cycle on (one already waiting may stay)
                late = [(rose, a) for rose, a, _ in ars if rose >= first]
                assert not late, (n, first, late)
                if len(got) < length:
                    stopped_early += 1
            else:
                assert len(got) == length, n
            extra_beats += beats[-1][1] == 0
            want_err = DMAError.BUS if any(r != 0 for _, r in rs) else DMAError.OK
            assert err == want_err, (n, err, rs)
            assert all(c > c0 for c, _ in rs)
    assert stopped_early >= 10, stopped_early  # the stops did cut reads short
    assert extra_beats >= 1, extra_beats  # and some ended with an empty beat
    # still works without stop
    (err, _, _), beats = await tb.read(64, 40)
    assert err == DMAError.OK and beats_to_bytes(beats, DW) == image[64:104]
