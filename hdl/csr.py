"""AXI4-Lite CSR subordinate generated from a :class:`hdl.regmap.RegisterMap`.

Each field of the map becomes a port named ``<register>_<field>``:

* ``rw``: ``Out(width)``, the value the host wrote (reset value after reset);
* ``ro``: ``In(width)``, sampled when the host reads;
* ``w1p``: ``Out(1)``, high for one cycle after the host writes 1 to it;
* ``w1c``: ``In(1)`` named ``<register>_<field>_set`` sets a sticky bit, exposed as
  ``Out(1)`` ``<register>_<field>``; the host clears it by writing 1.

Bus behaviour: the write address and write data channels are accepted independently; the
write happens when both have arrived, with ``wstrb`` honoured per byte for ``rw`` fields (a
``w1p`` or ``w1c`` bit acts only when its byte is strobed). A read returns the register a cycle
after the address is accepted. Addresses select 32-bit words (the two low bits are ignored; byte
lanes come from ``wstrb``). An access to a word the map does not define completes with
``SLVERR`` and reads return 0: the bus never hangs. One transaction of each
kind is in flight at a time.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .axi import AXI4LiteSignature, Resp
from .regmap import RegisterMap

__all__ = ["CSRBlock"]


class CSRBlock(wiring.Component):
    """AXI4-Lite (32-bit data) subordinate holding the registers of ``regmap``.

    Parameters
    ----------
    regmap : RegisterMap
        The registers to implement.
    addr_width : int, optional
        Address bits; at least enough for ``regmap.size``. Defaults to that.

    Attributes
    ----------
    bus : In(AXI4LiteSignature(addr_width, 32))
        The host's port.
    <register>_<field> : see the module docstring.
    """

    def __init__(self, regmap: RegisterMap, addr_width: int | None = None):
        if not isinstance(regmap, RegisterMap):
            raise TypeError(f"Register map must be a RegisterMap, not {regmap!r}")
        need = max(2, (regmap.size - 1).bit_length())
        if addr_width is None:
            addr_width = need
        if not isinstance(addr_width, int) or addr_width < need:
            raise ValueError(f"Address width must be an integer of at least {need} for this "
                             f"map, not {addr_width!r}")
        self._regmap = regmap
        self._addr_width = addr_width
        members = {"bus": In(AXI4LiteSignature(addr_width, 32))}
        for r in regmap:
            for f in r.fields:
                port = f"{r.name}_{f.name}"
                if f.access == "ro":
                    members[port] = In(f.width)
                elif f.access == "w1c":
                    members[port] = Out(1)
                    members[port + "_set"] = In(1)
                else:
                    members[port] = Out(f.width, init=f.reset)
        super().__init__(members)

    @property
    def regmap(self):
        return self._regmap

    @property
    def addr_width(self):
        return self._addr_width

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        aw_full = Signal()
        aw_addr = Signal(self._addr_width)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)

        m.d.comb += [
            bus.awready.eq(~aw_full & ~bus.bvalid),
            bus.wready.eq(~w_full & ~bus.bvalid),
            bus.arready.eq(~bus.rvalid),
        ]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)

        # Pulses last one cycle.
        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full)
        for r in self._regmap:
            for f in r.fields:
                port = getattr(self, f"{r.name}_{f.name}")
                if f.access == "w1p":
                    m.d.sync += port.eq(0)

        # Write.
        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(Resp.SLVERR)]
            with m.Switch(aw_addr[2:]):
                for r in self._regmap:
                    with m.Case(r.offset >> 2):
                        m.d.sync += bus.bresp.eq(Resp.OKAY)
                        for f in r.fields:
                            port = getattr(self, f"{r.name}_{f.name}")
                            lsb = r.lsbs[f.name]
                            if f.access == "rw":
                                for bit in range(f.width):
                                    byte = (lsb + bit) // 8
                                    with m.If(w_strb[byte]):
                                        m.d.sync += port[bit].eq(w_data[lsb + bit])
                            elif f.access in ("w1p", "w1c"):
                                hit = w_strb[lsb // 8] & w_data[lsb]
                                with m.If(hit):
                                    m.d.sync += port.eq(1 if f.access == "w1p" else 0)

        # A hardware event and a host clear in the same cycle: the event wins (none is lost).
        for r in self._regmap:
            for f in r.fields:
                if f.access == "w1c":
                    with m.If(getattr(self, f"{r.name}_{f.name}_set")):
                        m.d.sync += getattr(self, f"{r.name}_{f.name}").eq(1)

        # Read.
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rdata.eq(0), bus.rresp.eq(Resp.SLVERR)]
            with m.Switch(bus.araddr[2:]):
                for r in self._regmap:
                    with m.Case(r.offset >> 2):
                        parts = []
                        for f in r.fields:
                            if f.access == "w1p":
                                parts.append(Const(0, f.width))
                            else:
                                parts.append(getattr(self, f"{r.name}_{f.name}"))
                        m.d.sync += [bus.rdata.eq(Cat(*parts)), bus.rresp.eq(Resp.OKAY)]
        return m
