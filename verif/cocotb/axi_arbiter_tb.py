"""cocotb testbench for hdl.axi_arbiter: DMA readers and writers sharing one AxiRam port.

The DUT is a :class:`verif.test_axi_arbiter.ArbiterSystem`: DMA engines (kinds in ``KINDS``,
in arbiter port order) behind an :class:`hdl.axi_arbiter.AXI4Arbiter` whose manager port
(``axi__*``) goes to cocotbext-axi's AxiRam (through :class:`verif.cocotb.axi_mem.FaultyAxiRam`,
which answers ``SLVERR`` at and above ``MEM``). Every engine runs its own sequence of random
transfers at the same time as the others; memory latency and back-pressure on all five channels
and stream pacing are random. Checked: data against a Python memory image, each engine's status
(an ``SLVERR`` reaches the engine that caused it and no other), the round-robin bound (a waiting
port sees at most ``k - 1`` grants to the other ``k - 1`` ports using that channel) and the AXI
rule that ``m``'s AR/AW request stays put until accepted.
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
KINDS = os.environ["KINDS"].split(",")
BPB = DW // 8
SEED = int(os.environ.get("SEED", "1"))

READERS = [f"rd{k}" for k in range(KINDS.count("rd"))]
WRITERS = [f"wr{k}" for k in range(KINDS.count("wr"))]
PORT = {}  # engine name -> arbiter port
for _i, _kind in enumerate(KINDS):
    PORT[f"{_kind}{sum(1 for k in KINDS[:_i] if k == _kind)}"] = _i
RD_AREA = MEM // 2  # readers read [0, RD_AREA); writer k owns a slice above it
WR_SLICE = (MEM - RD_AREA) // len(WRITERS) // BPB * BPB


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.rng = np.random.default_rng(SEED)
        start_clock(dut)
        self.ram = FaultyAxiRam(dut, "axi_", size=2 * MEM, limit=MEM)
        self.cmd = {name: StreamSource(dut, f"{name}_cmd") for name in READERS + WRITERS}
        self.out = {name: StreamSink(dut, f"{name}_out") for name in READERS}
        self.inp = {name: StreamSource(dut, f"{name}_inp") for name in WRITERS}
        self.done = {name: [] for name in READERS + WRITERS}
        self.max_wait = {"ar": [0] * len(KINDS), "aw": [0] * len(KINDS)}
        cocotb.start_soon(self._watch())

    def set_pacing(self, prob):
        for port in list(self.out.values()) + list(self.inp.values()):
            port._pacer = Pacer(self.rng, prob)
        self.ram.set_pacing(prob, SEED)

    async def _watch(self):
        """Completions, the per-port wait for a grant, and stability of ``m``'s requests."""
        dut = self.dut
        waits = {"ar": [0] * len(KINDS), "aw": [0] * len(KINDS)}
        pending = {"ar": None, "aw": None}
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            for name in self.done:
                if dut[f"{name}_done"].value:
                    extra = {}
                    if name in WRITERS:
                        extra["written"] = int(dut[f"{name}_written"].value)
                    self.done[name].append((DMAError(int(dut[f"{name}_error"].value)),
                                            int(dut[f"{name}_bus_resp"].value), extra))
            for ch in ("ar", "aw"):
                req = int(dut[f"{ch}_req"].value)
                gnt = int(dut[f"{ch}_gnt"].value)
                others = bin(gnt).count("1")
                for i in range(len(KINDS)):
                    if gnt >> i & 1:
                        self.max_wait[ch][i] = max(self.max_wait[ch][i], waits[ch][i])
                        waits[ch][i] = 0
                    elif req >> i & 1:
                        waits[ch][i] += others
                    else:
                        waits[ch][i] = 0
                # the request on m must not change or drop before it is accepted
                req_m = tuple(int(dut[f"axi__{ch}{x}"].value)
                              for x in ("valid", "addr", "len", "size", "burst"))
                if pending[ch] is not None:
                    assert req_m == pending[ch], f"{ch} request changed before {ch}ready"
                ready = int(dut[f"axi__{ch}ready"].value)
                pending[ch] = req_m if req_m[0] and not ready else None

    async def wait_done(self, name, count, timeout=100_000):
        for _ in range(timeout):
            if len(self.done[name]) >= count:
                return self.done[name][count - 1]
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"{name}: no done after {timeout} cycles")

    async def read(self, name, addr, length):
        n = len(self.done[name])
        start = len(self.out[name].words)
        self.cmd[name].send([addr | length << AW])
        res = await self.wait_done(name, n + 1)
        beats = [unpack_beat(DW, w) for w in self.out[name].words[start:]]
        return res, beats

    async def write(self, name, addr, capacity, payload: bytes):
        n = len(self.done[name])
        self.cmd[name].send([addr | capacity << AW])
        self.inp[name].send(pack_beat(DW, *b) for b in bytes_to_beats(payload, DW))
        return await self.wait_done(name, n + 1)


async def _start(dut):
    tb = TB(dut)
    await reset(dut)
    return tb


async def _all(coros):
    tasks = [cocotb.start_soon(c) for c in coros]
    for t in tasks:
        await t


@cocotb.test()
async def concurrent_random(dut):
    """All engines at once: random reads, random writes into per-writer slices, random pacing."""
    tb = await _start(dut)
    image = bytearray(tb.rng.integers(0, 256, 2 * MEM, dtype=np.uint8).tobytes())
    tb.ram.write(0, bytes(image))

    async def reader(name, rng, n):
        for _ in range(n):
            length = int(rng.integers(1, 1500))
            addr = int(rng.integers(0, (RD_AREA - length) // BPB)) * BPB
            (err, _, _), beats = await tb.read(name, addr, length)
            assert err == DMAError.OK, (name, addr, length, err)
            assert beats_to_bytes(beats, DW) == bytes(image[addr:addr + length]), \
                (name, addr, length)

    async def writer(name, rng, n):
        base = RD_AREA + WRITERS.index(name) * WR_SLICE
        for _ in range(n):
            length = int(rng.integers(1, 1500))
            addr = base + int(rng.integers(0, (WR_SLICE - length - 2 * BPB) // BPB)) * BPB
            payload = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
            cap = -(-length // BPB) * BPB + BPB * int(rng.integers(0, 3))
            err, _, extra = await tb.write(name, addr, cap, payload)
            assert err == DMAError.OK and extra["written"] == length, (name, err, extra)
            image[addr:addr + length] = payload
            assert tb.ram.read(addr, length) == payload, (name, addr, length)

    for prob in (0.0, 0.3):
        tb.set_pacing(prob)
        rngs = {name: np.random.default_rng([SEED, k, int(prob * 10)])
                for k, name in enumerate(READERS + WRITERS)}
        await _all([reader(r, rngs[r], 6) for r in READERS]
                   + [writer(w, rngs[w], 6) for w in WRITERS])
        # nothing outside the written bytes changed (a misrouted W beat would show here)
        assert tb.ram.read(0, MEM) == bytes(image[:MEM])

    # fairness: a waiting port saw at most one grant to each other port using the channel
    for ch, users in (("ar", READERS), ("aw", WRITERS)):
        waits = [tb.max_wait[ch][PORT[u]] for u in users]
        dut._log.info(f"{ch}: longest wait per port (in other ports' grants): {waits}")
        assert max(waits) <= len(users) - 1, (ch, waits)
        assert max(waits) >= 1, f"{ch}: no contention seen, the test proves nothing"


@cocotb.test()
async def errors_routed(dut):
    """SLVERR on some engines while the others transfer: each engine gets its own status."""
    tb = await _start(dut)
    image = tb.rng.integers(0, 256, MEM, dtype=np.uint8).tobytes()
    tb.ram.write(0, image)
    bad_rd = MEM - 2 * BPB  # the burst crosses the limit: the last beats fail
    bad_wr = MEM - BPB

    async def reader(name, fail):
        addr, length = (bad_rd, 6 * BPB) if fail else (64, 40 * BPB)
        (err, resp, _), beats = await tb.read(name, addr, length)
        if fail:
            assert err == DMAError.BUS and resp == 2 and len(beats) == 6, (name, err, resp)
        else:
            assert err == DMAError.OK and resp == 0, (name, err, resp)
            assert beats_to_bytes(beats, DW) == image[addr:addr + length], name
        assert beats[-1][2] == 1

    async def writer(name, fail):
        base = RD_AREA + WRITERS.index(name) * WR_SLICE
        addr = bad_wr if fail else base
        payload = bytes((WRITERS.index(name) * 37 + i) & 0xFF for i in range(30 * BPB))
        err, resp, _ = await tb.write(name, addr, len(payload), payload)
        if fail:
            assert err == DMAError.BUS and resp == 2, (name, err, resp)
        else:
            assert err == DMAError.OK and resp == 0, (name, err, resp)
            assert tb.ram.read(addr, len(payload)) == payload, name

    for rnd, prob in enumerate((0.0, 0.3, 0.3)):
        tb.set_pacing(prob)
        await _all([reader(r, (k + rnd) % 2 == 1) for k, r in enumerate(READERS)]
                   + [writer(w, (k + rnd) % 2 == 0) for k, w in enumerate(WRITERS)])
