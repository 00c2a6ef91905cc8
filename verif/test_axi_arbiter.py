# amaranth: UnusedElaboratable=no
"""AXI4 arbiter (hdl.axi_arbiter): real DMA readers and writers sharing one port to AxiRam."""

import pytest
from amaranth import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from hdl.axi import AXI4Signature
from hdl.axi_arbiter import AXI4Arbiter
from hdl.bfp_layouts import bus_beat
from hdl.dma import LEN_W, DMAError, DMAReader, DMAWriter, dma_command
from verif.harness import run_cocotb


class ArbiterSystem(wiring.Component):
    """DMA engines of the given kinds (``"rd"``/``"wr"``, in arbiter port order) on one arbiter.

    Engine ``k`` of each kind has ports ``rd{k}_cmd``/``rd{k}_out`` or ``wr{k}_cmd``/
    ``wr{k}_inp`` plus ``_done``, ``_error``, ``_bus_resp`` (and ``wr{k}_written``); the
    arbiter's manager port is ``axi``. ``ar_req``/``ar_gnt``/``aw_req``/``aw_gnt`` (one bit per
    arbiter port) expose each port's ``xVALID`` and ``xVALID & xREADY`` for the fairness check.
    """

    def __init__(self, kinds, addr_width, data_width, max_burst, max_outstanding):
        self.kinds = tuple(kinds)
        self.arb = AXI4Arbiter(len(kinds), addr_width, data_width,
                               max_outstanding=max_outstanding)
        self.dmas = []
        members = {}
        cmd = dma_command(addr_width)
        count = {"rd": 0, "wr": 0}
        for kind in self.kinds:
            name = f"{kind}{count[kind]}"
            count[kind] += 1
            if kind == "rd":
                dma = DMAReader(addr_width, data_width, max_burst, 4)
                members[f"{name}_out"] = Out(stream.Signature(bus_beat(data_width)))
            else:
                dma = DMAWriter(addr_width, data_width, max_burst)
                members[f"{name}_inp"] = In(stream.Signature(bus_beat(data_width)))
                members[f"{name}_written"] = Out(LEN_W)
            members[f"{name}_cmd"] = In(stream.Signature(cmd))
            members[f"{name}_done"] = Out(1)
            members[f"{name}_error"] = Out(DMAError)
            members[f"{name}_bus_resp"] = Out(2)
            self.dmas.append((name, dma))
        n = len(kinds)
        members.update({"ar_req": Out(n), "ar_gnt": Out(n), "aw_req": Out(n), "aw_gnt": Out(n),
                        "axi": Out(AXI4Signature(addr_width, data_width))})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.arb = arb = self.arb
        for i, (name, dma) in enumerate(self.dmas):
            m.submodules[name] = dma
            wiring.connect(m, dma.axi, arb.s[i])
            wiring.connect(m, wiring.flipped(getattr(self, f"{name}_cmd")), dma.cmd)
            if isinstance(dma, DMAReader):
                wiring.connect(m, dma.out, wiring.flipped(getattr(self, f"{name}_out")))
            else:
                wiring.connect(m, wiring.flipped(getattr(self, f"{name}_inp")), dma.inp)
                m.d.comb += getattr(self, f"{name}_written").eq(dma.written)
            for x in ("done", "error", "bus_resp"):
                m.d.comb += getattr(self, f"{name}_{x}").eq(getattr(dma, x))
        wiring.connect(m, arb.m, wiring.flipped(self.axi))
        s = arb.s
        m.d.comb += [
            self.ar_req.eq(Cat(p.arvalid for p in s)),
            self.ar_gnt.eq(Cat(p.arvalid & p.arready for p in s)),
            self.aw_req.eq(Cat(p.awvalid for p in s)),
            self.aw_gnt.eq(Cat(p.awvalid & p.awready for p in s)),
        ]
        return m


def test_parameters_validated():
    with pytest.raises(ValueError, match=r"^Port count must be an integer from 1 to 16, not 0$"):
        AXI4Arbiter(0, 32, 64)
    with pytest.raises(ValueError, match=r"^Port count must be an integer from 1 to 16, not 17$"):
        AXI4Arbiter(17, 32, 64)
    with pytest.raises(ValueError, match=r"^Port count must be an integer from 1 to 16, "
                                         r"not True$"):
        AXI4Arbiter(True, 32, 64)
    with pytest.raises(ValueError, match=r"^Outstanding bursts must be an integer from 1 to "
                                         r"256, not 0$"):
        AXI4Arbiter(2, 32, 64, max_outstanding=0)
    with pytest.raises(ValueError, match=r"^Outstanding bursts must be an integer from 1 to "
                                         r"256, not 2.0$"):
        AXI4Arbiter(2, 32, 64, max_outstanding=2.0)
    with pytest.raises(ValueError, match=r"^Data width must be one of \[32, 64, 128\], not 48$"):
        AXI4Arbiter(2, 32, 48)
    with pytest.raises(ValueError, match=r"^Address width must be an integer from 1 to 64, "
                                         r"not 0$"):
        AXI4Arbiter(2, 0, 64)
    with pytest.raises(ValueError, match=r"^ID width must be an integer from 1 to 8, not 9$"):
        AXI4Arbiter(2, 32, 64, id_width=9)


def test_ports():
    arb = AXI4Arbiter(3, 20, 32, id_width=2, max_outstanding=5)
    assert (arb.n_ports, arb.addr_width, arb.data_width, arb.id_width,
            arb.max_outstanding) == (3, 20, 32, 2, 5)
    assert len(arb.s) == 3
    sig = arb.signature.members
    assert sig["s"].flow == In and sig["s"].dimensions == (3,)
    assert sig["m"].flow == Out
    assert sig["m"].signature.members == AXI4Signature(20, 32, 2).members
    assert sig["s"].signature.flip().members == AXI4Signature(20, 32, 2).members


def _sim(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def test_read_round_robin_and_routing():
    """Three ports always requesting: grants 0, 1, 2, 0, 1, 2; R beats and IDs go back in
    grant order; ``m`` issues ID 0."""
    dut = AXI4Arbiter(3, 16, 32, id_width=2, max_outstanding=8)
    grants = []

    async def tb(ctx):
        for i, p in enumerate(dut.s):
            ctx.set(p.arvalid, 1)
            ctx.set(p.arid, i + 1)
            ctx.set(p.araddr, 0x100 * (i + 1))
            ctx.set(p.rready, 1)
        ctx.set(dut.m.arready, 1)
        for _ in range(6):
            assert ctx.get(dut.m.arid) == 0
            fired = [i for i, p in enumerate(dut.s) if ctx.get(p.arready)]
            assert len(fired) == 1
            assert ctx.get(dut.m.araddr) == 0x100 * (fired[0] + 1)
            grants.append(fired[0])
            await ctx.tick()
        for p in dut.s:
            ctx.set(p.arvalid, 0)
        ctx.set(dut.m.rvalid, 1)
        ctx.set(dut.m.rlast, 1)
        for k in range(6):
            ctx.set(dut.m.rdata, k)
            seen = [i for i, p in enumerate(dut.s) if ctx.get(p.rvalid)]
            assert seen == [grants[k]], (k, seen)
            assert ctx.get(dut.s[seen[0]].rid) == seen[0] + 1
            assert ctx.get(dut.m.rready)
            await ctx.tick()
        assert not any(ctx.get(p.rvalid) for p in dut.s)  # order FIFO empty
        assert not ctx.get(dut.m.rready)

    _sim(dut, tb)
    assert grants == [0, 1, 2, 0, 1, 2]


def test_write_lock_and_b_order():
    """W stays with the AW winner until its wlast (even while it has no data); the next AW
    waits for that; an early WVALID of the waiting port does not leak; B goes in AW order."""
    dut = AXI4Arbiter(2, 16, 32, id_width=2, max_outstanding=2)

    async def tb(ctx):
        m, s0, s1 = dut.m, dut.s[0], dut.s[1]
        ctx.set(m.awready, 1)
        ctx.set(m.wready, 1)
        for i, p in enumerate(dut.s):
            ctx.set(p.awvalid, 1)
            ctx.set(p.awid, 2 + i)
            ctx.set(p.awaddr, 0x40 * (i + 1))
            ctx.set(p.awlen, 1)
            ctx.set(p.bready, 1)
        ctx.set(s1.wvalid, 1)  # port 1 offers data before its AW is taken
        ctx.set(s1.wdata, 0x1111)
        assert ctx.get(s0.awready) and not ctx.get(s1.awready)
        assert ctx.get(m.awaddr) == 0x40 and ctx.get(m.awid) == 0
        await ctx.tick()
        ctx.set(s0.awvalid, 0)
        for _ in range(3):  # port 0 holds W without data: nobody else gets AW or W
            assert not ctx.get(m.awvalid) and not ctx.get(m.wvalid)
            assert not ctx.get(s1.awready) and not ctx.get(s1.wready)
            await ctx.tick()
        ctx.set(s0.wvalid, 1)
        for k in range(2):
            ctx.set(s0.wdata, 0xA0 + k)
            ctx.set(s0.wlast, k == 1)
            assert ctx.get(m.wvalid) and ctx.get(m.wdata) == 0xA0 + k
            assert ctx.get(m.wlast) == (k == 1)
            assert ctx.get(s0.wready) and not ctx.get(s1.wready)
            assert not ctx.get(m.awvalid)
            await ctx.tick()
        ctx.set(s0.wvalid, 0)
        assert ctx.get(s1.awready) and ctx.get(m.awaddr) == 0x80  # W free: port 1's AW
        assert not ctx.get(m.wvalid)
        await ctx.tick()
        ctx.set(s1.awvalid, 0)
        assert ctx.get(m.wvalid) and ctx.get(m.wdata) == 0x1111 and ctx.get(s1.wready)
        ctx.set(m.bvalid, 1)
        ctx.set(m.bresp, 2)
        for port in (0, 1):
            seen = [i for i, p in enumerate(dut.s) if ctx.get(p.bvalid)]
            assert seen == [port]
            assert ctx.get(dut.s[port].bid) == 2 + port and ctx.get(dut.s[port].bresp) == 2
            await ctx.tick()
        assert not any(ctx.get(p.bvalid) for p in dut.s) and not ctx.get(m.bready)

    _sim(dut, tb)


def test_order_fifo_full_stops_requests():
    """With ``max_outstanding`` bursts unanswered no further AR goes out."""
    dut = AXI4Arbiter(1, 16, 64, max_outstanding=3)

    async def tb(ctx):
        p = dut.s[0]
        ctx.set(p.arvalid, 1)
        ctx.set(p.rready, 1)
        ctx.set(dut.m.arready, 1)
        for _ in range(3):
            assert ctx.get(p.arready)
            await ctx.tick()
        assert not ctx.get(dut.m.arvalid) and not ctx.get(p.arready)
        ctx.set(dut.m.rvalid, 1)
        ctx.set(dut.m.rlast, 1)
        assert ctx.get(p.rvalid) and ctx.get(dut.m.rready)
        await ctx.tick()
        ctx.set(dut.m.rvalid, 0)
        assert ctx.get(dut.m.arvalid) and ctx.get(p.arready)

    _sim(dut, tb)


@pytest.mark.cocotb
def test_arbiter_verilator(seed):
    aw, dw, mem = 16, 64, 1 << 14
    kinds = ("wr", "rd", "wr", "rd", "wr")  # 3 writers and 2 readers, interleaved
    run_cocotb(ArbiterSystem(kinds, aw, dw, max_burst=8, max_outstanding=4),
               name="axi_arbiter_sys", test_module="verif.cocotb.axi_arbiter_tb",
               test_id="axi_arbiter", seed=seed,
               extra_env={"DW": dw, "AW": aw, "MEM": mem, "KINDS": ",".join(kinds)})
