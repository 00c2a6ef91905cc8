"""cocotb bench for hdl.output_path.OutputPath, scoreboarded against the golden model.

Environment: ``CFG`` (the EngineConfig as JSON), ``BUS_WIDTH``, ``TILES`` (tiles per test),
``SEED``. Each test writes engine tiles (``verif.output_path_model.scenario``: golden matmul
results, masked, all-zero, extreme exponents, m = 1, ragged n) as task beats in random order,
drains each one to three times with random commands (HBM with both copies or one, RAW, ReLU,
thresholds, statistics cleared or accumulated), and checks every byte of ``o_fwd`` and
``o_filt`` and the statistics after each ``done``. The crossed matrix of input bubbles x
output back-pressure runs in one simulation; a second test covers the carry read port and the
refused commands.
"""

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from hdl.config import EngineConfig
from hdl.output_path import Status
from verif.cocotb.stream_bfm import StreamSink, StreamSource, reset, start_clock
from verif.output_path_model import (
    Drain,
    Packer,
    StatsModel,
    expected,
    random_tile,
    scenario,
    task_beats,
)
from verif.streams import Pacer, beats_to_bytes, unpack_beat, unpack_counters

SEED = int(os.environ.get("SEED", "1"))
CFG = EngineConfig(**json.loads(os.environ["CFG"]))
BUS_WIDTH = int(os.environ.get("BUS_WIDTH", "64"))
TILES = int(os.environ.get("TILES", "10"))


class TB:
    """Drivers, monitors and the scoreboard of one test."""

    def __init__(self, dut, rng, idle=0.0, stall=0.0):
        self.dut = dut
        self.pk = Packer(CFG)
        self.src = StreamSource(dut, "i", Pacer(rng, idle))
        self.cmd = StreamSource(dut, "cmd")
        self.sinks = (StreamSink(dut, "o_fwd", Pacer(rng, stall, burst=True)),
                      StreamSink(dut, "o_filt", Pacer(rng, stall, burst=True)))
        self.marks = [0, 0]
        self.model = StatsModel()

    def stop(self):
        for s in (self.src, self.cmd, *self.sinks):
            s.stop()

    async def write(self, beats):
        self.src.send(self.pk.beat(*b) for b in beats)
        while not self.src.idle:
            await RisingEdge(self.dut.clk)

    async def command(self, d: Drain, timeout=20_000):
        """Send ``d``, wait for done; returns ``(status, fwd bytes, filt bytes, stats)``."""
        self.cmd.send([self.pk.command(d)])
        for _ in range(timeout):
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if self.dut.done.value:
                break
        else:
            raise AssertionError(f"{d}: no done in {timeout} cycles")
        out = []
        for k, sink in enumerate(self.sinks):
            words = sink.words[self.marks[k]:]
            self.marks[k] = len(sink.words)
            if not words:
                out.append(None)
                continue
            beats = [unpack_beat(BUS_WIDTH, w) for w in words]
            assert beats[-1][2] == 1 and all(b[2] == 0 for b in beats[:-1]), \
                f"{d}: last must be on the final beat only"
            out.append(beats_to_bytes(beats, BUS_WIDTH))
        dut = self.dut
        st = {"values": dut.values.value.to_unsigned(), "zeros": dut.zeros.value.to_unsigned(),
              "filtered_zeros": dut.filtered_zeros.value.to_unsigned(),
              "hist": unpack_counters(dut.hist.value.to_unsigned(), 32, 32)}
        status = Status(dut.status.value.to_unsigned())
        await RisingEdge(dut.clk)
        return status, out[0], out[1], st

    async def run_steps(self, steps):
        for n, step in enumerate(steps):
            if step[0] == "tile":
                await self.write(step[2])
            elif step[0] == "clear":
                status, f, s, st = await self.command(Drain(op="CLEAR_STATS"))
                self.model.clear()
                assert status == Status.OK and f is None and s is None
                assert st == self.model.as_dict()
            else:
                d, acc = step[1], step[2]
                status, f, s, st = await self.command(d)
                assert status == Status.OK, f"step {n}: {status}"
                want = expected(acc, d)
                if d.clear_stats:
                    self.model.clear()
                if want["stats"] is not None:
                    self.model.add(want["stats"])
                assert f == want["fwd"], f"step {n} {d}: o_fwd bytes differ"
                assert s == want["filt"], f"step {n} {d}: o_filt bytes differ"
                assert st == self.model.as_dict(), f"step {n} {d}: statistics differ"


async def _start(dut):
    start_clock(dut)
    dut.carry_en.value = 0
    await reset(dut)


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3], stall=[0.0, 0.5])
async def scoreboard(dut, idle, stall):
    """Random tiles and drains under each combination of input bubbles and back-pressure."""
    rng = np.random.default_rng([SEED, int(idle * 10), int(stall * 10)])
    await _start(dut)
    tb = TB(dut, rng, idle, stall)
    await tb.run_steps(scenario(rng, CFG, TILES))
    tb.stop()


@cocotb.test()
async def carry_and_refused_commands(dut):
    """Carry reads of every task (one per cycle); SHAPE, NO_OUTPUT and CMD verdicts."""
    rng = np.random.default_rng([SEED, 99])
    await _start(dut)
    tb = TB(dut, rng)
    acc = random_tile(rng, CFG.max_m, CFG.max_n, "extreme")
    beats = task_beats(CFG, acc, rng)
    await tb.write(beats)
    want = {(b[0], b[1]): (b[2], b[3]) for b in beats}
    order = [beats[k][:2] for k in rng.permutation(len(beats))]
    prev, checked = None, 0
    for addr in order + [None]:
        await RisingEdge(dut.clk)
        dut.carry_en.value = int(addr is not None)  # this cycle's read
        if addr is not None:
            dut.carry_addr.value = tb.pk.carry_addr(*addr)
        await ReadOnly()
        assert dut.carry_ready.value == 1
        if prev is not None:  # the data of the read issued in the previous cycle
            got = tb.pk.carry_data(dut.carry_data.value.to_unsigned())
            assert got == want[prev], f"carry {prev}: {got} != {want[prev]}"
            checked += 1
        prev = addr
    assert checked == len(beats)
    await RisingEdge(dut.clk)
    dut.carry_en.value = 0
    status, f, s, st = await tb.command(Drain(m=0, n=3, fwd=True, filt=True))
    assert status == Status.SHAPE and f == b"" and s == b"" and st["values"] == 0
    status, f, s, _ = await tb.command(Drain(m=2, n=CFG.max_n + 1, raw=True))
    assert status == Status.SHAPE and f == b"" and s is None
    status, f, s, _ = await tb.command(Drain(m=2, n=3, fwd=False, filt=False))
    assert status == Status.NO_OUTPUT and f is None and s is None
    status, f, s, _ = await tb.command(Drain(m=2, n=3, op=3))
    assert status == Status.CMD and f is None and s is None
    d = Drain(m=CFG.max_m, n=CFG.max_n, relu=True, fwd=True, filt=True, te=128, tm=200,
              clear_stats=True)
    status, f, s, st = await tb.command(d)
    want_d = expected(acc, d)
    assert status == Status.OK and f == want_d["fwd"] and s == want_d["filt"]
    assert st == {k: (list(v) if k == "hist" else v) for k, v in
                  ((k, getattr(want_d["stats"], k)) for k in
                   ("values", "zeros", "filtered_zeros", "hist"))}
    tb.stop()
