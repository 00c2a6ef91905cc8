# amaranth: UnusedElaboratable=no
"""AXI4 arbiter (hdl.axi_arbiter): real DMA readers and writers sharing one port to AxiRam."""

import pytest
from amaranth import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

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


@pytest.mark.cocotb
def test_arbiter_verilator(seed):
    aw, dw, mem = 16, 64, 1 << 14
    kinds = ("wr", "rd", "wr", "rd", "wr")  # 3 writers and 2 readers, interleaved
    run_cocotb(ArbiterSystem(kinds, aw, dw, max_burst=8, max_outstanding=4),
               name="axi_arbiter_sys", test_module="verif.cocotb.axi_arbiter_tb",
               test_id="axi_arbiter", seed=seed,
               extra_env={"DW": dw, "AW": aw, "MEM": mem, "KINDS": ",".join(kinds)})
