"""AXI4 and AXI4-Lite interface signatures (AMBA AXI and ACE Protocol Specification, IHI 0022).

Signatures are declared from the manager's side (``Out`` = driven by the manager); a
subordinate port is ``In(AXI4LiteSignature(...))``. Member names are the specification's
lower-case signal names without the ``axi_`` prefix, so Amaranth's Verilog back end flattens a
port named ``s_axil`` to ``s_axil__awaddr`` etc., which is what cocotbext-axi's
``AxiLiteBus.from_prefix(dut, "s_axil_")`` looks up.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AXI4LiteSignature", "AXI4Signature", "Resp"]


class Resp:
    """AXI response codes (``xRESP``)."""
    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, not {value!r}")


class AXI4LiteSignature(wiring.Signature):
    """AXI4-Lite, manager's view.

    Parameters
    ----------
    addr_width : int
        Address bits (1 to 64).
    data_width : int
        32 or 64.
    """

    def __init__(self, addr_width: int, data_width: int = 32):
        if not isinstance(addr_width, int) or not 1 <= addr_width <= 64:
            raise ValueError(f"Address width must be an integer from 1 to 64, not {addr_width!r}")
        _check("Data width", data_width, {32, 64})
        self.addr_width = addr_width
        self.data_width = data_width
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1),
            "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AXI4Signature(wiring.Signature):
    """AXI4 with bursts (no locks, caches or QoS), manager's view.

    Parameters
    ----------
    addr_width : int
        Address bits (1 to 64).
    data_width : int
        32, 64 or 128.
    id_width : int
        Transaction ID bits (1 to 8).
    """

    def __init__(self, addr_width: int, data_width: int = 64, id_width: int = 1):
        if not isinstance(addr_width, int) or not 1 <= addr_width <= 64:
            raise ValueError(f"Address width must be an integer from 1 to 64, not {addr_width!r}")
        _check("Data width", data_width, {32, 64, 128})
        if not isinstance(id_width, int) or not 1 <= id_width <= 8:
            raise ValueError(f"ID width must be an integer from 1 to 8, not {id_width!r}")
        self.addr_width = addr_width
        self.data_width = data_width
        self.id_width = id_width
        members = {}
        for ch in ("aw", "ar"):
            members.update({
                f"{ch}id": Out(id_width), f"{ch}addr": Out(addr_width), f"{ch}len": Out(8),
                f"{ch}size": Out(3), f"{ch}burst": Out(2), f"{ch}valid": Out(1),
                f"{ch}ready": In(1),
            })
        members.update({
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })
        super().__init__(members)
